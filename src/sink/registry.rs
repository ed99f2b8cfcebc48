//! The registry sink (`--push`, `-o registry:REF`): sends the image set to a repository with
//! its tags. Blobs that are in a repository already (a registry base, a layer found in the
//! target) are skipped, mounted (same registry) or streamed from there; the rest come from
//! their source (cache file, regenerated layer, bytes). Blobs first, in parallel, then
//! manifests by digest, tags last.

use std::fmt;
use std::sync::Arc;

use super::{Sink, SinkError, SinkReport};
use crate::image::{Artifact, Blob, BlobSource, ImageSet};
use crate::progress::Progress;
use crate::registry::{
    BlobAction, BlobOrigin, PushBlob, PushEvent, PushManifest, PushReport, PushRequest, Reference,
    RegistryClient,
};

pub struct RegistrySink<'a> {
    pub client: &'a RegistryClient,
    pub target: Reference,
    pub tags: Vec<String>,
    /// Also push the set's artifacts (`[model]`) to their own names, after the image.
    pub artifacts: bool,
    /// Sign what the tags point at (and each platform manifest) in cosign's format, last.
    pub signer: Option<&'a crate::provenance::sign::Signer>,
}

impl fmt::Display for RegistrySink<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "registry:{}", self.target)
    }
}

impl Sink for RegistrySink<'_> {
    fn write(&self, images: &ImageSet, progress: &dyn Progress) -> Result<SinkReport, SinkError> {
        let mut summary = push(self.client, images, &self.target, &self.tags, progress)?;
        if self.artifacts {
            for a in &images.artifacts {
                summary.artifacts.push(push_artifact(
                    self.client,
                    images,
                    a,
                    &self.target,
                    progress,
                )?);
            }
        }
        summary.referrers = push_referrers(self.client, images, &self.target, progress)?;
        if let Some(signer) = self.signer {
            summary.signatures = push_signatures(
                self.client,
                images,
                &self.target,
                &summary.digest,
                signer,
                progress,
            )?;
        }
        Ok(SinkReport {
            target: self.to_string(),
            reference: Some(summary.reference.clone()),
            push: Some(summary),
        })
    }

    fn needs_bytes(&self) -> bool {
        false
    }
}

/// What a push did, for the report.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PushSummary {
    /// `host/repo@sha256:…` of what the tags point at.
    pub reference: String,
    pub digest: String,
    /// `host/repo:tag@sha256:…` per tag.
    pub pushed: Vec<String>,
    /// Bytes sent for blobs, retries included.
    pub bytes_sent: u64,
    pub blobs: Vec<BlobReport>,
    /// `[model]`'s artifacts, each pushed to its own name after the image.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub artifacts: Vec<ArtifactPush>,
    /// The SBOM and provenance referrers, pushed by digest after the image.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub referrers: Vec<ReferrerPush>,
    /// The cosign signatures (`--sign-key`), one per signed manifest.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub signatures: Vec<SignaturePush>,
}

/// One manifest signed in cosign's format.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SignaturePush {
    /// The signed manifest (or index) digest.
    pub digest: String,
    /// `sha256-<hex>.sig`.
    pub tag: String,
    /// The `.sig` manifest's digest.
    pub manifest_digest: String,
    /// The payload blob's digest (the signature's layer).
    pub payload_digest: String,
    /// The signature (base64 DER).
    pub signature: String,
    /// False when the `.sig` manifest already held this signature (a rebuild).
    pub added: bool,
}

/// One referrer (SBOM or provenance) pushed beside the image.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReferrerPush {
    pub artifact_type: String,
    /// The platform image manifest it is about.
    pub subject: String,
    pub digest: String,
    /// The referrers tag (`sha256-<hex of subject>`) whose index lists it.
    pub tag: String,
}

/// The push of one artifact.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ArtifactPush {
    pub kind: &'static str,
    /// `host/repo@sha256:…`.
    pub reference: String,
    pub digest: String,
    pub pushed: Vec<String>,
    pub bytes_sent: u64,
    pub blobs: Vec<BlobReport>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct BlobReport {
    pub digest: String,
    /// `uploaded`, `mounted` or `skipped`.
    pub action: &'static str,
    pub bytes_sent: u64,
}

pub fn action_name(a: BlobAction) -> &'static str {
    match a {
        BlobAction::Uploaded => "uploaded",
        BlobAction::Mounted => "mounted",
        BlobAction::Skipped => "skipped",
    }
}

fn push(
    client: &RegistryClient,
    images: &ImageSet,
    target: &Reference,
    tags: &[String],
    progress: &dyn Progress,
) -> Result<PushSummary, SinkError> {
    let blobs = images.blobs().into_iter().map(push_blob).collect();
    let manifests = images.documents().into_iter().map(push_manifest).collect();
    let req = PushRequest {
        target: target.clone(),
        tags: tags.to_vec(),
        blobs,
        manifests,
    };
    let report = send(client, &req, progress)?;
    Ok(PushSummary {
        reference: format!("{}@{}", target.repo_name(), report.manifest_digest),
        digest: report.manifest_digest.clone(),
        pushed: report.pushed.clone(),
        bytes_sent: report.blobs.iter().map(|b| b.2).sum(),
        blobs: blob_reports(&report),
        artifacts: Vec::new(),
        referrers: Vec::new(),
        signatures: Vec::new(),
    })
}

/// Pushes the referrers (by digest, after the image), then keeps the referrers tag schema of
/// the OCI distribution spec 1.1 up to date: for each subject, the `sha256-<hex>` tag points
/// at an index listing every referrer with its `artifactType` (the ones already there are
/// kept). Registries with the referrers API serve the same list from `/referrers/`; the tag
/// is what the others (distribution 2.x, Docker Hub, GHCR) offer, and clients (oras, cosign)
/// fall back to it.
fn push_referrers(
    client: &RegistryClient,
    images: &ImageSet,
    target: &Reference,
    progress: &dyn Progress,
) -> Result<Vec<ReferrerPush>, SinkError> {
    let mut out = Vec::new();
    let mut by_subject: std::collections::BTreeMap<String, Vec<&crate::image::Referrer>> =
        Default::default();
    for r in &images.referrers {
        let req = PushRequest {
            target: target.clone(),
            tags: Vec::new(),
            blobs: vec![push_blob(r.config.blob()), push_blob(r.document.blob())],
            manifests: vec![push_manifest(&r.manifest)],
        };
        send(client, &req, progress)?;
        let tag = crate::provenance::referrers_tag(&r.subject.digest);
        out.push(ReferrerPush {
            artifact_type: r.artifact_type.clone(),
            subject: r.subject.digest.to_string(),
            digest: r.manifest.descriptor.digest.to_string(),
            tag: tag.clone(),
        });
        by_subject.entry(tag).or_default().push(r);
    }
    let push_err = |source| SinkError::Push {
        target: target.to_string(),
        source: Box::new(source),
    };
    for (tag, rs) in by_subject {
        let at = Reference {
            tag: Some(tag.clone()),
            digest: None,
            ..target.clone()
        };
        let mut entries: Vec<serde_json::Value> = match client.fetch_manifest(&at) {
            Ok(m) => serde_json::from_slice::<serde_json::Value>(&m.bytes)
                .ok()
                .and_then(|v| v.get("manifests").and_then(|m| m.as_array()).cloned())
                .unwrap_or_default(),
            Err(e) if e.status() == Some(404) => Vec::new(),
            Err(e) => return Err(push_err(e)),
        };
        let before = entries.len();
        for r in rs {
            let digest = r.manifest.descriptor.digest.as_str();
            if !entries.iter().any(|e| e["digest"] == digest) {
                entries.push(r.index_entry());
            }
        }
        if entries.len() == before {
            continue;
        }
        let index = crate::image::Document::new(
            crate::image::INDEX_MEDIA_TYPE,
            crate::provenance::referrers_index(&entries),
        );
        let req = PushRequest {
            target: target.clone(),
            tags: vec![tag],
            blobs: Vec::new(),
            manifests: vec![push_manifest(&index)],
        };
        send(client, &req, progress)?;
    }
    Ok(out)
}

/// Signs `top` (what the tags point at) and, for a multi-platform image, each platform
/// manifest, in cosign's format: the signature layer is added to the manifest at
/// `sha256-<hex>.sig` (its other signatures are kept; one already there is not added again).
/// After the image and its referrers, so a signature never names a manifest that is not there.
fn push_signatures(
    client: &RegistryClient,
    images: &ImageSet,
    target: &Reference,
    top: &str,
    signer: &crate::provenance::sign::Signer,
    progress: &dyn Progress,
) -> Result<Vec<SignaturePush>, SinkError> {
    use crate::provenance::sign;
    let mut digests = vec![top.to_string()];
    if images.index.is_some() {
        digests.extend(
            images
                .images
                .iter()
                .map(|i| i.manifest.descriptor.digest.to_string()),
        );
    }
    let identity = target.repo_name();
    let mut out = Vec::new();
    for digest in digests {
        let layer = sign::SignatureLayer::new(signer, &identity, &digest);
        let tag = sign::signature_tag(&digest);
        let existing = match client.fetch_manifest(&target.with_tag(&tag)) {
            Ok(m) => Some(m),
            Err(e) if e.status() == Some(404) => None,
            Err(e) => {
                return Err(SinkError::Push {
                    target: target.to_string(),
                    source: Box::new(e),
                });
            }
        };
        let mut push = SignaturePush {
            digest: digest.clone(),
            tag: tag.clone(),
            manifest_digest: existing
                .as_ref()
                .map(|m| m.digest.clone())
                .unwrap_or_default(),
            payload_digest: layer.payload.descriptor.digest.to_string(),
            signature: layer.signature.clone(),
            added: false,
        };
        if let Some(layers) = sign::merged_layers(existing.as_ref().map(|m| &m.bytes[..]), &layer) {
            let (manifest, config) = sign::signature_manifest(&layers);
            let req = PushRequest {
                target: target.clone(),
                tags: vec![tag.clone()],
                blobs: vec![push_blob(config.blob()), push_blob(layer.payload.blob())],
                manifests: vec![push_manifest(&manifest)],
            };
            send(client, &req, progress)?;
            progress.message(&format!("signed {}@{digest} ({tag})", target.repo_name()));
            push.manifest_digest = manifest.descriptor.digest.to_string();
            push.added = true;
        }
        out.push(push);
    }
    Ok(out)
}

fn blob_reports(report: &PushReport) -> Vec<BlobReport> {
    report
        .blobs
        .iter()
        .map(|(d, a, n)| BlobReport {
            digest: d.clone(),
            action: action_name(*a),
            bytes_sent: *n,
        })
        .collect()
}

/// Pushes an artifact to its own name after the image: the blobs the image has (its weights
/// layers) are mounted from the image's repository when it is on the same registry, or found
/// there by HEAD when it is the same repository — never uploaded twice.
fn push_artifact(
    client: &RegistryClient,
    images: &ImageSet,
    a: &Artifact,
    image_target: &Reference,
    progress: &dyn Progress,
) -> Result<ArtifactPush, SinkError> {
    let target = Reference::parse(&a.name).map_err(|source| SinkError::Push {
        target: a.name.clone(),
        source: Box::new(source),
    })?;
    let in_image: std::collections::BTreeSet<_> = images
        .blobs()
        .into_iter()
        .map(|b| b.descriptor.digest)
        .collect();
    let blobs = a
        .blobs()
        .into_iter()
        .map(|b| {
            let shared =
                in_image.contains(&b.descriptor.digest) && image_target.registry == target.registry;
            let mut pb = push_blob(b);
            if shared {
                pb.origin = BlobOrigin::Registry(Reference {
                    tag: None,
                    digest: None,
                    ..image_target.clone()
                });
            }
            pb
        })
        .collect();
    let req = PushRequest {
        target: target.clone(),
        tags: a.tags.clone(),
        blobs,
        manifests: a.documents().into_iter().map(push_manifest).collect(),
    };
    let report = send(client, &req, progress)?;
    Ok(ArtifactPush {
        kind: a.kind.as_str(),
        reference: format!("{}@{}", target.repo_name(), report.manifest_digest),
        digest: report.manifest_digest.clone(),
        pushed: report.pushed.clone(),
        bytes_sent: report.blobs.iter().map(|b| b.2).sum(),
        blobs: blob_reports(&report),
    })
}

fn push_manifest(d: &crate::image::Document) -> PushManifest {
    PushManifest {
        digest: d.descriptor.digest.to_string(),
        media_type: d.descriptor.media_type.clone(),
        bytes: d.bytes.to_vec(),
    }
}

fn push_blob(b: Blob) -> PushBlob {
    let origin = match b.source {
        BlobSource::File(p) => BlobOrigin::File(p),
        BlobSource::Remote {
            registry,
            repository,
            ..
        } => BlobOrigin::Registry(Reference {
            registry,
            repository,
            tag: None,
            digest: None,
        }),
        BlobSource::Generate(g) => BlobOrigin::Generated(g),
        BlobSource::Bytes(bytes) => BlobOrigin::Generated(Arc::new(move || {
            Ok(Box::new(std::io::Cursor::new(bytes.clone())) as Box<dyn std::io::Read + Send>)
        })),
    };
    PushBlob {
        digest: b.descriptor.digest.to_string(),
        size: b.descriptor.size,
        media_type: b.descriptor.media_type,
        origin,
    }
}

fn send(
    client: &RegistryClient,
    req: &PushRequest,
    progress: &dyn Progress,
) -> Result<PushReport, SinkError> {
    let target = &req.target;
    let on_event = |e: PushEvent| match e {
        PushEvent::BlobStarted { digest, size } => progress.transfer(&short(&digest), 0, size),
        PushEvent::BlobProgress { digest, sent, size } => {
            progress.transfer(&short(&digest), sent, size)
        }
        // Reported (with cause and wait) by the transport's retry observer.
        PushEvent::BlobRetry { .. } => {}
        PushEvent::BlobDone {
            digest,
            action,
            bytes_sent,
        } => {
            progress.transfer_done(
                &short(&digest),
                &format!(
                    "{} {} ({bytes_sent} bytes sent)",
                    short(&digest),
                    action_name(action)
                ),
            );
        }
        PushEvent::ManifestPushed { .. } => {}
        PushEvent::TagPushed { tag, digest } => {
            progress.message(&format!("pushed {target}:{tag} ({digest})"))
        }
    };
    client
        .push(req, &on_event)
        .map_err(|source| SinkError::Push {
            target: target.to_string(),
            source: Box::new(source),
        })
}

fn short(d: &str) -> String {
    d.chars().take(19).collect()
}
