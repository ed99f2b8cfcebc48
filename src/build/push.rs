//! `--push`: sends the built image to `[image].name` (every tag, or the `--tag` overrides).
//! Blobs the base left in a registry are mounted or streamed from there; ours from the cache.

use std::collections::{BTreeMap, BTreeSet};

use super::{BuildError, Progress};
use crate::output::{BlobStore, BuiltImage};
use crate::registry::{
    BlobAction, BlobOrigin, PushBlob, PushEvent, PushManifest, PushReport, PushRequest, Reference,
    RegistryClient,
};

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

pub(super) fn push(
    client: &RegistryClient,
    built: &BuiltImage,
    store: &BlobStore,
    remote: &BTreeMap<String, Reference>,
    target: &Reference,
    tags: &[String],
    progress: &dyn Progress,
) -> Result<PushSummary, BuildError> {
    let mut blobs = Vec::new();
    let mut seen = BTreeSet::new();
    for img in &built.images {
        for b in img.layers.iter().chain(std::iter::once(&img.config)) {
            if !seen.insert(b.digest.clone()) {
                continue;
            }
            // Base blobs stay where they are: mounted (same registry) or streamed from there.
            let origin = match (remote.get(&b.digest), store.path(&b.digest)) {
                (Some(r), _) => BlobOrigin::Registry(r.clone()),
                (None, Some(p)) => BlobOrigin::File(p),
                // an unstored (uncompressed) layer: regenerated from its sources for each attempt
                (None, None) if store.has(&b.digest) => {
                    let (store, digest) = (store.clone(), b.digest.clone());
                    BlobOrigin::Generated(std::sync::Arc::new(move || {
                        store.reader(&digest).map_err(std::io::Error::other)
                    }))
                }
                (None, None) => {
                    return Err(BuildError::Options(format!(
                        "blob {} is not available locally",
                        b.digest
                    )));
                }
            };
            blobs.push(PushBlob {
                digest: b.digest.clone(),
                size: b.size,
                media_type: b.media_type.clone(),
                origin,
            });
        }
    }
    let read = |d: &str| {
        store.read(d).map_err(|source| BuildError::Output {
            target: target.to_string(),
            source,
        })
    };
    let mut manifests = Vec::new();
    for img in &built.images {
        manifests.push(PushManifest {
            digest: img.manifest.digest.clone(),
            media_type: img.manifest.media_type.clone(),
            bytes: read(&img.manifest.digest)?,
        });
    }
    if let Some(i) = &built.index {
        manifests.push(PushManifest {
            digest: i.digest.clone(),
            media_type: i.media_type.clone(),
            bytes: read(&i.digest)?,
        });
    }
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
        .map_err(|source| BuildError::Push {
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
