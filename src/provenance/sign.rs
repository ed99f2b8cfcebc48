//! Image signatures in cosign's format: an ECDSA P-256 / SHA-256 signature over a "simple
//! signing" payload that names the manifest digest, stored as one layer of the manifest at the
//! tag `sha256-<hex>.sig` (cosign's tag-based discovery, which `cosign verify --key` reads).
//!
//! Pure: keys from PEM text, payloads, signatures and signature manifests are values; the
//! registry side is in [`super::remote`] and the registry sink. Signatures are deterministic
//! (RFC 6979 nonces), so the same key and digest always give the same layer: a rebuild adds no
//! duplicate.

use base64::Engine as _;
use p256::ecdsa::signature::{Signer as _, Verifier as _};
use p256::ecdsa::{DerSignature, Signature, SigningKey, VerifyingKey};
use p256::pkcs8::{DecodePrivateKey as _, DecodePublicKey as _, EncodePublicKey as _};
use serde_json::{Value, json};

use crate::image::{CONFIG_MEDIA_TYPE, Document, MANIFEST_MEDIA_TYPE, canonical};

/// The media type of a signature layer (the payload).
pub const SIMPLESIGNING_MEDIA_TYPE: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// The layer annotation holding the base64 DER signature.
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
/// `critical.type` of a cosign container image signature.
pub const PAYLOAD_TYPE: &str = "cosign container image signature";
/// A payload larger than this is not read (cosign's are ~250 bytes).
pub const MAX_PAYLOAD_BYTES: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(
        "{origin}: not a PEM PKCS#8 EC P-256 private key ({message})\n  hint: make one with \
         `openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out key.pem`"
    )]
    Private { origin: String, message: String },
    #[error(
        "{origin}: not a PEM EC P-256 public key ({message})\n  hint: write it from the private \
         key with `openssl pkey -in key.pem -pubout -out key.pub`"
    )]
    Public { origin: String, message: String },
}

/// An ECDSA P-256 private key that signs image digests.
#[derive(Clone)]
pub struct Signer {
    key: SigningKey,
    /// Where it came from (a file path), for messages.
    pub origin: String,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Signer({})", self.origin)
    }
}

impl Signer {
    /// A PEM `PRIVATE KEY` (PKCS#8, as `openssl genpkey` writes) or `EC PRIVATE KEY` (SEC1, as
    /// `openssl ecparam -genkey` writes), unencrypted.
    pub fn from_pem(pem: &str, origin: &str) -> Result<Signer, KeyError> {
        let err = |message: String| KeyError::Private {
            origin: origin.to_string(),
            message,
        };
        let key = if pem.contains("-----BEGIN EC PRIVATE KEY-----") {
            let sk = p256::SecretKey::from_sec1_pem(pem).map_err(|e| err(e.to_string()))?;
            SigningKey::from(sk)
        } else if pem.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----")
            || pem.contains("ENCRYPTED SIGSTORE PRIVATE KEY")
        {
            return Err(err(
                "the key is encrypted; mlimg reads unencrypted keys only (keep it in a CI \
                 secret file)"
                    .into(),
            ));
        } else {
            SigningKey::from_pkcs8_pem(pem).map_err(|e| err(e.to_string()))?
        };
        Ok(Signer {
            key,
            origin: origin.to_string(),
        })
    }

    /// The public key as PEM SubjectPublicKeyInfo (what `openssl pkey -pubout` writes).
    pub fn public_pem(&self) -> String {
        self.key
            .verifying_key()
            .to_public_key_pem(p256::pkcs8::LineEnding::LF)
            .unwrap_or_default()
    }

    /// The base64 of the DER signature of `payload` (SHA-256, RFC 6979 deterministic nonce).
    pub fn sign(&self, payload: &[u8]) -> String {
        let sig: Signature = self.key.sign(payload);
        let der: DerSignature = sig.to_der();
        base64::engine::general_purpose::STANDARD.encode(der.as_bytes())
    }
}

/// An ECDSA P-256 public key that checks signatures.
#[derive(Debug, Clone)]
pub struct PublicKey(VerifyingKey);

impl PublicKey {
    /// A PEM `PUBLIC KEY` (SubjectPublicKeyInfo: `openssl pkey -pubout`, `cosign.pub`).
    pub fn from_pem(pem: &str, origin: &str) -> Result<PublicKey, KeyError> {
        VerifyingKey::from_public_key_pem(pem)
            .map(PublicKey)
            .map_err(|e| KeyError::Public {
                origin: origin.to_string(),
                message: e.to_string(),
            })
    }

    /// Whether `signature_b64` (base64 of a DER ECDSA signature) signs `payload`.
    pub fn verify(&self, payload: &[u8], signature_b64: &str) -> Result<(), String> {
        let der = base64::engine::general_purpose::STANDARD
            .decode(signature_b64.trim())
            .map_err(|e| format!("the signature is not base64: {e}"))?;
        let sig = Signature::from_der(&der)
            .map_err(|e| format!("the signature is not a DER ECDSA signature: {e}"))?;
        // Go's crypto/ecdsa (cosign) may write a high S; it verifies as its low-S twin.
        let sig = sig.normalize_s();
        self.0
            .verify(payload, &sig)
            .map_err(|_| "the signature does not match the payload with this key".to_string())
    }
}

/// The simple-signing payload cosign signs for `digest` in `docker_reference` (`host/repo`):
/// the bytes Go's `json.Marshal` writes for it (keys in field order, which is sorted order).
pub fn payload(docker_reference: &str, digest: &str) -> Vec<u8> {
    canonical(&json!({
        "critical": {
            "identity": {"docker-reference": docker_reference},
            "image": {"docker-manifest-digest": digest},
            "type": PAYLOAD_TYPE,
        },
        "optional": null,
    }))
}

/// The manifest digest a payload vouches for, after checking its type.
pub fn payload_digest(payload: &[u8]) -> Result<String, String> {
    let v: Value =
        serde_json::from_slice(payload).map_err(|e| format!("the payload is not JSON: {e}"))?;
    let critical = &v["critical"];
    if critical["type"] != PAYLOAD_TYPE {
        return Err(format!(
            "the payload's critical.type is {}, not {PAYLOAD_TYPE:?}",
            critical["type"]
        ));
    }
    critical["image"]["docker-manifest-digest"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| "the payload has no critical.image.docker-manifest-digest".to_string())
}

/// The tag cosign keeps a digest's signatures at: `sha256-<hex>.sig`.
pub fn signature_tag(digest: &str) -> String {
    format!("{}.sig", digest.replacen(':', "-", 1))
}

/// One signature: the payload (a blob) and its layer descriptor in the `.sig` manifest.
#[derive(Debug, Clone)]
pub struct SignatureLayer {
    pub payload: Document,
    pub signature: String,
}

impl SignatureLayer {
    pub fn new(signer: &Signer, docker_reference: &str, digest: &str) -> SignatureLayer {
        let bytes = payload(docker_reference, digest);
        let signature = signer.sign(&bytes);
        SignatureLayer {
            payload: Document::new(SIMPLESIGNING_MEDIA_TYPE, bytes),
            signature,
        }
    }

    /// Its descriptor in the signature manifest.
    pub fn descriptor(&self) -> Value {
        let d = &self.payload.descriptor;
        json!({
            "mediaType": d.media_type,
            "digest": d.digest,
            "size": d.size,
            "annotations": {SIGNATURE_ANNOTATION: self.signature},
        })
    }
}

/// The `.sig` manifest listing `layers` (descriptors, kept in order), and its config (what
/// go-containerregistry writes for an image of these layers, which is what cosign pushes).
pub fn signature_manifest(layers: &[Value]) -> (Document, Document) {
    let diff_ids: Vec<&Value> = layers.iter().map(|l| &l["digest"]).collect();
    let epoch = "0001-01-01T00:00:00Z";
    let config = json!({
        "architecture": "",
        "config": {},
        "created": epoch,
        "history": layers.iter().map(|_| json!({"created": epoch})).collect::<Vec<_>>(),
        "os": "",
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    });
    let config = Document::new(CONFIG_MEDIA_TYPE, canonical(&config));
    let c = &config.descriptor;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "config": {"mediaType": c.media_type, "digest": c.digest, "size": c.size},
        "layers": layers,
    });
    (
        Document::new(MANIFEST_MEDIA_TYPE, canonical(&manifest)),
        config,
    )
}

/// The layers of an existing `.sig` manifest plus `new` when it is not there yet (same payload
/// digest and signature); `None` when nothing changes.
pub fn merged_layers(existing: Option<&[u8]>, new: &SignatureLayer) -> Option<Vec<Value>> {
    let mut layers: Vec<Value> = existing
        .and_then(|b| serde_json::from_slice::<Value>(b).ok())
        .and_then(|m| m.get("layers").and_then(Value::as_array).cloned())
        .unwrap_or_default();
    let d = new.descriptor();
    let present = layers.iter().any(|l| {
        l["digest"] == d["digest"]
            && l["annotations"][SIGNATURE_ANNOTATION] == d["annotations"][SIGNATURE_ANNOTATION]
    });
    if present {
        return None;
    }
    layers.push(d);
    Some(layers)
}

#[cfg(test)]
mod tests {
    use super::*;

    // a throwaway key made with `openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256`
    const KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgEI5pQJOGYeVey0cY
sQ3YyYbVLvECx3auqMStbxKZfEChRANCAAQYlwjaRKhuLsW/U67Z6H349K4qTXuE
owCsUWMcpIacU3RPfHg+0fjMS1pgyIOx8APmKWZbGl6JrBILa6hO0JAl
-----END PRIVATE KEY-----
";

    #[test]
    fn payload_is_cosigns_shape() {
        let p = payload("localhost:5000/acme/app", "sha256:ab");
        assert_eq!(
            String::from_utf8(p.clone()).unwrap(),
            r#"{"critical":{"identity":{"docker-reference":"localhost:5000/acme/app"},"image":{"docker-manifest-digest":"sha256:ab"},"type":"cosign container image signature"},"optional":null}"#
        );
        assert_eq!(payload_digest(&p).unwrap(), "sha256:ab");
        assert_eq!(signature_tag("sha256:ab"), "sha256-ab.sig");
    }

    #[test]
    fn signatures_are_deterministic_and_verify() {
        let s = Signer::from_pem(KEY, "key.pem").unwrap();
        let a = SignatureLayer::new(&s, "r/a", "sha256:01");
        let b = SignatureLayer::new(&s, "r/a", "sha256:01");
        assert_eq!(a.signature, b.signature);
        assert_eq!(a.descriptor(), b.descriptor());
        let pubkey = PublicKey::from_pem(&s.public_pem(), "pub").unwrap();
        pubkey.verify(&a.payload.bytes, &a.signature).unwrap();
        assert!(pubkey.verify(b"other", &a.signature).is_err());
        assert!(pubkey.verify(&a.payload.bytes, "not base64!").is_err());
        assert!(Signer::from_pem("nope", "k").is_err());
        assert!(PublicKey::from_pem(KEY, "k").is_err());
    }

    #[test]
    fn sec1_keys_load_and_other_curves_do_not() {
        // `openssl ecparam -genkey -name prime256v1 -noout`
        let sec1 = "-----BEGIN EC PRIVATE KEY-----
MHcCAQEEIHpEvb4+I/9O+DsYrNNWtgqOn+wUss+I1s5rbQahL2z4oAoGCCqGSM49
AwEHoUQDQgAEekXnTsaYN2U3oCcPnfdOzAYLwr9Z1+ig4tsZGwbPh/H2E/IWx22q
KdBKsFAWfOGKf2lphy0kQthIV+pm76PuJg==
-----END EC PRIVATE KEY-----
";
        let s = Signer::from_pem(sec1, "sec1.pem").unwrap();
        let pk = PublicKey::from_pem(&s.public_pem(), "pub").unwrap();
        pk.verify(b"x", &s.sign(b"x")).unwrap();
        // a P-384 key (PKCS#8)
        let p384 = "-----BEGIN PRIVATE KEY-----
MIG2AgEAMBAGByqGSM49AgEGBSuBBAAiBIGeMIGbAgEBBDAZPh4T/6kO5O4zoMNH
BcPW76bY3wESMT1T3RyucULJ3eN/+DxorkjhN7a5XcPvuJyhZANiAARgTfpanRSf
nHq5qJNo87AwW2BI/213Hwoxo6LWyJohsfRobtV78HNvivhaSKd6cjgsCta2uDcB
AvXd1ekRhx5FyWiqedo563sUVVb5jHEY01Ls4+8lKaTRbiubb6jlps4=
-----END PRIVATE KEY-----
";
        let e = Signer::from_pem(p384, "p384.pem").unwrap_err().to_string();
        assert!(e.contains("p384.pem") && e.contains("P-256"), "{e}");
        let enc =
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n";
        let e = Signer::from_pem(enc, "enc.pem").unwrap_err().to_string();
        assert!(e.contains("encrypted"), "{e}");
    }

    #[test]
    fn merging_adds_a_signature_once() {
        let s = Signer::from_pem(KEY, "key.pem").unwrap();
        let a = SignatureLayer::new(&s, "r/a", "sha256:01");
        let layers = merged_layers(None, &a).unwrap();
        let (m, c) = signature_manifest(&layers);
        assert!(merged_layers(Some(&m.bytes), &a).is_none());
        let other = SignatureLayer {
            signature: "MEUC".into(),
            ..a.clone()
        };
        assert_eq!(merged_layers(Some(&m.bytes), &other).unwrap().len(), 2);
        let mv: Value = serde_json::from_slice(&m.bytes).unwrap();
        assert_eq!(mv["layers"][0]["mediaType"], SIMPLESIGNING_MEDIA_TYPE);
        assert_eq!(mv["config"]["digest"], c.descriptor.digest.as_str());
        let cv: Value = serde_json::from_slice(&c.bytes).unwrap();
        assert_eq!(
            cv["rootfs"]["diff_ids"][0],
            a.payload.descriptor.digest.as_str()
        );
    }
}
