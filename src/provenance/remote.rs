//! Reading a document back from a registry (`mlimg sbom REF`, `mlimg provenance REF`): the
//! image's platform manifest, its referrers through the `sha256-<hex>` tag schema, then the
//! referrer's one layer, checked against its digest. The only I/O of `provenance`.

use std::io::Read as _;

use serde_json::Value;

use crate::platform::Platform;
use crate::registry::{Reference, RegistryClient, RegistryError};

/// A document larger than this is not read (an SBOM of a large model is a few MiB).
pub const MAX_DOCUMENT_BYTES: u64 = 256 << 20;

#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(
        "{reference}: no image for {platform} (the index has {available}); choose one with --platform"
    )]
    Platform {
        reference: String,
        platform: String,
        available: String,
    },
    #[error(
        "{reference}: no {artifact_type} referrer of {subject} (no {tag} tag listing one)\n  hint: was it built with --no-sbom / --no-provenance, or pushed by another tool?"
    )]
    Missing {
        reference: String,
        artifact_type: String,
        subject: String,
        tag: String,
    },
    #[error("{reference}: {what}: {message}")]
    Invalid {
        reference: String,
        what: String,
        message: String,
    },
}

/// A document found for an image.
#[derive(Debug, Clone)]
pub struct RemoteDocument {
    /// The platform image manifest it is about.
    pub subject: String,
    /// The referrer (artifact manifest) digest.
    pub referrer: String,
    pub bytes: Vec<u8>,
}

/// The newest `artifact_type` document attached to `r`'s image for `platform` (a single-platform
/// image: its only manifest, whatever `platform` says).
pub fn fetch_document(
    client: &RegistryClient,
    r: &Reference,
    platform: &Platform,
    artifact_type: &str,
) -> Result<RemoteDocument, RemoteError> {
    let reference = r.to_string();
    let invalid = |what: &str, message: String| RemoteError::Invalid {
        reference: reference.clone(),
        what: what.to_string(),
        message,
    };
    let (_top, platforms) = client.resolve_digests(r)?;
    let subject = match platforms.as_slice() {
        [(_, d)] => d.clone(),
        many => many
            .iter()
            .find(|(p, _)| platform.matches(p) || p.matches(platform))
            .map(|(_, d)| d.clone())
            .ok_or_else(|| RemoteError::Platform {
                reference: reference.clone(),
                platform: platform.to_string(),
                available: many
                    .iter()
                    .map(|(p, _)| p.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            })?,
    };
    let repo = Reference {
        tag: None,
        digest: None,
        ..r.clone()
    };
    let tag = subject.replacen(':', "-", 1);
    let missing = || RemoteError::Missing {
        reference: reference.clone(),
        artifact_type: artifact_type.to_string(),
        subject: subject.clone(),
        tag: tag.clone(),
    };
    let index = match client.fetch_manifest(&Reference {
        tag: Some(tag.clone()),
        ..repo.clone()
    }) {
        Ok(m) => m,
        Err(e) if e.status() == Some(404) => return Err(missing()),
        Err(e) => return Err(e.into()),
    };
    let index: Value = serde_json::from_slice(&index.bytes)
        .map_err(|e| invalid(&format!("tag {tag}"), e.to_string()))?;
    // the last one listed is the newest
    let referrer = index["manifests"]
        .as_array()
        .and_then(|ms| ms.iter().rev().find(|m| m["artifactType"] == artifact_type))
        .and_then(|m| m["digest"].as_str())
        .ok_or_else(missing)?
        .to_string();
    let m = client.fetch_manifest(&Reference {
        digest: Some(referrer.clone()),
        ..repo.clone()
    })?;
    let m: Value = serde_json::from_slice(&m.bytes)
        .map_err(|e| invalid(&format!("referrer {referrer}"), e.to_string()))?;
    if m["subject"]["digest"] != subject.as_str() {
        return Err(invalid(
            &format!("referrer {referrer}"),
            format!("its subject is {}, not {subject}", m["subject"]["digest"]),
        ));
    }
    let layer = &m["layers"][0];
    let (Some(digest), Some(size)) = (layer["digest"].as_str(), layer["size"].as_u64()) else {
        return Err(invalid(
            &format!("referrer {referrer}"),
            "no document layer".into(),
        ));
    };
    if size > MAX_DOCUMENT_BYTES {
        return Err(invalid(
            &format!("referrer {referrer}"),
            format!("document of {size} bytes is over the {MAX_DOCUMENT_BYTES}-byte limit"),
        ));
    }
    let mut bytes = Vec::new();
    client
        .blob_reader(&repo, digest, size)?
        .read_to_end(&mut bytes)
        .map_err(|e| invalid(&format!("document {digest}"), e.to_string()))?;
    let got = crate::digest::Digest::of(&bytes);
    if bytes.len() as u64 != size || got.as_str() != digest {
        return Err(invalid(
            &format!("document {digest}"),
            format!("got {} bytes hashing to {got}", bytes.len()),
        ));
    }
    Ok(RemoteDocument {
        subject,
        referrer,
        bytes,
    })
}

/// Why `mlimg verify` failed.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(
        "{reference}: no signature for {digest} (no {tag} tag)\n  hint: was it pushed with --sign-key? a tag moved to another manifest has no signature until that one is signed"
    )]
    Unsigned {
        reference: String,
        digest: String,
        tag: String,
    },
    #[error("{reference}: no signature of {digest} verifies with {key}:\n{}", reasons.join("\n"))]
    Failed {
        reference: String,
        digest: String,
        key: String,
        /// One line per signature layer: which one, and why it fails.
        reasons: Vec<String>,
    },
}

/// A signature that verified.
#[derive(Debug, Clone, serde::Serialize)]
pub struct VerifiedSignature {
    /// The payload blob's digest.
    pub payload: String,
    /// `critical.identity.docker-reference` (informational; cosign ignores it too).
    pub docker_reference: String,
}

/// What `mlimg verify` checked.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Verification {
    pub reference: String,
    /// The manifest (or index) digest the reference resolves to, and the signatures vouch for.
    pub digest: String,
    /// The `.sig` tag and its manifest's digest.
    pub tag: String,
    pub signature_manifest: String,
    pub verified: Vec<VerifiedSignature>,
    /// Signature layers that did not verify with this key (other signers' keys, say).
    pub others: usize,
}

/// Checks `r`'s cosign signatures (the `sha256-<hex>.sig` tag of the digest it resolves to)
/// with `key`: a signature layer counts when its payload blob matches its digest, the
/// payload names exactly that manifest digest, and the ECDSA signature over the payload's
/// bytes verifies. At least one must.
pub fn verify_signatures(
    client: &RegistryClient,
    r: &Reference,
    key: &super::sign::PublicKey,
    key_name: &str,
) -> Result<Verification, VerifyError> {
    use super::sign;
    let reference = r.to_string();
    // The digest the reference names: fetched (and its bytes hashed) even when pinned, so a
    // registry cannot answer for a digest it does not have.
    let digest = client.fetch_manifest(r)?.digest;
    let tag = sign::signature_tag(&digest);
    let repo = Reference {
        tag: None,
        digest: None,
        ..r.clone()
    };
    let sig = match client.fetch_manifest(&repo.with_tag(&tag)) {
        Ok(m) => m,
        Err(e) if e.status() == Some(404) => {
            return Err(VerifyError::Unsigned {
                reference,
                digest,
                tag,
            });
        }
        Err(e) => return Err(e.into()),
    };
    let m: Value = serde_json::from_slice(&sig.bytes).unwrap_or(Value::Null);
    let layers = m["layers"].as_array().cloned().unwrap_or_default();
    let mut verified = Vec::new();
    let mut reasons = Vec::new();
    for (i, l) in layers.iter().enumerate() {
        let what = format!(
            "  layer {i} ({})",
            l["digest"].as_str().unwrap_or("no digest")
        );
        let check = || -> Result<VerifiedSignature, String> {
            if l["mediaType"] != sign::SIMPLESIGNING_MEDIA_TYPE {
                return Err(format!("media type {} is not a signature", l["mediaType"]));
            }
            let (Some(d), Some(size)) = (l["digest"].as_str(), l["size"].as_u64()) else {
                return Err("no digest or size".into());
            };
            let Some(signature) = l["annotations"][sign::SIGNATURE_ANNOTATION].as_str() else {
                return Err(format!("no {} annotation", sign::SIGNATURE_ANNOTATION));
            };
            if size > sign::MAX_PAYLOAD_BYTES {
                return Err(format!("a payload of {size} bytes is too large"));
            }
            let mut payload = Vec::new();
            client
                .blob_reader(&repo, d, size)
                .map_err(|e| e.to_string())?
                .read_to_end(&mut payload)
                .map_err(|e| format!("reading the payload: {e}"))?;
            let got = crate::digest::Digest::of(&payload);
            if got.as_str() != d || payload.len() as u64 != size {
                return Err(format!(
                    "the payload blob is {} bytes hashing to {got}",
                    payload.len()
                ));
            }
            let claimed = sign::payload_digest(&payload)?;
            if claimed != digest {
                return Err(format!(
                    "the payload is about {claimed}, not {digest} (digest mismatch)"
                ));
            }
            key.verify(&payload, signature)?;
            let v: Value = serde_json::from_slice(&payload).unwrap_or(Value::Null);
            Ok(VerifiedSignature {
                payload: d.to_string(),
                docker_reference: v["critical"]["identity"]["docker-reference"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
            })
        };
        match check() {
            Ok(v) => verified.push(v),
            Err(e) => reasons.push(format!("{what}: {e}")),
        }
    }
    if layers.is_empty() {
        reasons.push(format!("  {tag} lists no signature layer"));
    }
    if verified.is_empty() {
        return Err(VerifyError::Failed {
            reference,
            digest,
            key: key_name.to_string(),
            reasons,
        });
    }
    Ok(Verification {
        reference,
        digest,
        tag,
        signature_manifest: sig.digest,
        verified,
        others: reasons.len(),
    })
}
