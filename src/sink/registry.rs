//! The registry sink (`--push`, `-o registry:REF`): sends the image set to a repository with
//! its tags. Blobs that are in a repository already (a registry base, a layer found in the
//! target) are skipped, mounted (same registry) or streamed from there; the rest come from
//! their source (cache file, regenerated layer, bytes). Blobs first, in parallel, then
//! manifests by digest, tags last.

use std::fmt;
use std::sync::Arc;

use super::{Sink, SinkError, SinkReport};
use crate::image::{BlobSource, ImageSet};
use crate::progress::Progress;
use crate::registry::{
    BlobAction, BlobOrigin, PushBlob, PushEvent, PushManifest, PushReport, PushRequest, Reference,
    RegistryClient,
};

pub struct RegistrySink<'a> {
    pub client: &'a RegistryClient,
    pub target: Reference,
    pub tags: Vec<String>,
}

impl fmt::Display for RegistrySink<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "registry:{}", self.target)
    }
}

impl Sink for RegistrySink<'_> {
    fn write(&self, images: &ImageSet, progress: &dyn Progress) -> Result<SinkReport, SinkError> {
        let summary = push(self.client, images, &self.target, &self.tags, progress)?;
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
    let blobs = images
        .blobs()
        .into_iter()
        .map(|b| {
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
                    Ok(Box::new(std::io::Cursor::new(bytes.clone()))
                        as Box<dyn std::io::Read + Send>)
                })),
            };
            PushBlob {
                digest: b.descriptor.digest.to_string(),
                size: b.descriptor.size,
                media_type: b.descriptor.media_type,
                origin,
            }
        })
        .collect();
    let manifests = images
        .documents()
        .into_iter()
        .map(|d| PushManifest {
            digest: d.descriptor.digest.to_string(),
            media_type: d.descriptor.media_type.clone(),
            bytes: d.bytes.to_vec(),
        })
        .collect();
    let req = PushRequest {
        target: target.clone(),
        tags: tags.to_vec(),
        blobs,
        manifests,
    };
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
    let report: PushReport = client
        .push(&req, &on_event)
        .map_err(|source| SinkError::Push {
            target: target.to_string(),
            source: Box::new(source),
        })?;
    Ok(PushSummary {
        reference: format!("{}@{}", target.repo_name(), report.manifest_digest),
        digest: report.manifest_digest.clone(),
        pushed: report.pushed.clone(),
        bytes_sent: report.blobs.iter().map(|b| b.2).sum(),
        blobs: report
            .blobs
            .iter()
            .map(|(d, a, n)| BlobReport {
                digest: d.clone(),
                action: action_name(*a),
                bytes_sent: *n,
            })
            .collect(),
    })
}

fn short(d: &str) -> String {
    d.chars().take(19).collect()
}
