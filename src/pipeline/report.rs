//! What a build tells its caller: digests, every layer and what happened to it, each output,
//! the push, and every warning. The CLI prints it as text or as `--json`.

use std::collections::BTreeMap;

use crate::image::ImageSet;
use crate::progress::Warning;
use crate::sink::{BlobReport, PushSummary, SinkReport};

#[derive(Debug, Clone, serde::Serialize)]
pub struct LayerReport {
    pub role: String,
    pub digest: String,
    pub diff_id: String,
    pub size: u64,
    pub media_type: String,
    pub cached: bool,
    /// With `--push`: `uploaded`, `mounted` or `skipped`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub push: Option<&'static str>,
    /// With `--push`: bytes sent for this layer (retries included).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_sent: Option<u64>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct PlatformReport {
    pub platform: String,
    pub manifest_digest: String,
    pub config_digest: String,
    pub layers: Vec<LayerReport>,
    /// The SBOM and provenance attached to this image (OCI referrers).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub referrers: Vec<ReferrerReport>,
}

/// One referrer of a platform image.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReferrerReport {
    /// `application/spdx+json` or `application/vnd.in-toto+json`.
    pub artifact_type: String,
    /// The artifact manifest's digest.
    pub manifest_digest: String,
    /// The document's (its one layer's) digest.
    pub document_digest: String,
}

/// One of `[model]`'s artifacts.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ArtifactReport {
    /// `modelpack` or `weights-image`.
    pub kind: &'static str,
    /// The repository (`[model].name`).
    pub name: String,
    pub tags: Vec<String>,
    pub manifest_digest: String,
    pub media_type: String,
    /// The layer digests (the image's weights layers).
    pub layers: Vec<String>,
    /// With `--push`: `host/repo:tag@sha256:…` per tag.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pushed: Option<Vec<String>>,
    /// With `--push`: what happened to each blob (`uploaded`, `mounted`, `skipped`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blobs: Option<Vec<BlobReport>>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct BuildReport {
    /// The top-level digest: the index for multi-platform builds, else the manifest.
    pub manifest_digest: String,
    pub media_type: String,
    /// Layers of the first platform's image, in image order (base layers first).
    pub layers: Vec<LayerReport>,
    pub platforms: Vec<PlatformReport>,
    pub outputs: Vec<SinkReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub push: Option<PushSummary>,
    /// Bytes of Hugging Face Hub files this build downloaded (0: all from caches).
    pub hub_bytes_downloaded: u64,
    /// Bytes this build read from its sources to write layers, outputs and uploads: the
    /// sources' size for a cold build (each byte read once), 0 when every layer was cached
    /// and every output already held it.
    pub source_bytes_read: u64,
    /// `[model]`: the ModelPack artifact and/or the weights-only image.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub artifacts: Vec<ArtifactReport>,
    pub warnings: Vec<Warning>,
}

pub(super) fn report(
    images: &ImageSet,
    mut outputs: Vec<SinkReport>,
    hub_bytes: u64,
    streamed: std::collections::BTreeSet<&str>,
    source_bytes_read: u64,
    warnings: Vec<Warning>,
) -> BuildReport {
    // The push is reported on its own; the outputs list the files.
    let push = outputs.iter().find_map(|o| o.push.clone());
    outputs.retain(|o| o.push.is_none());
    let by_digest: BTreeMap<&str, &BlobReport> = push
        .iter()
        .flat_map(|p| &p.blobs)
        .map(|b| (b.digest.as_str(), b))
        .collect();
    let platforms: Vec<PlatformReport> = images
        .images
        .iter()
        .map(|img| PlatformReport {
            platform: img.platform.to_string(),
            manifest_digest: img.manifest.descriptor.digest.to_string(),
            config_digest: img.config.descriptor.digest.to_string(),
            layers: img
                .layers
                .iter()
                .map(|l| {
                    let digest = l.descriptor.digest.as_str();
                    let pushed = by_digest.get(digest);
                    // streamed while written: the push found it there
                    let (action, sent) = if streamed.contains(digest) {
                        (Some("uploaded"), Some(l.descriptor.size))
                    } else {
                        (pushed.map(|b| b.action), pushed.map(|b| b.bytes_sent))
                    };
                    LayerReport {
                        role: l.role.clone(),
                        digest: l.descriptor.digest.to_string(),
                        diff_id: l.diff_id.to_string(),
                        size: l.descriptor.size,
                        media_type: l.descriptor.media_type.clone(),
                        cached: l.cached,
                        push: action,
                        bytes_sent: sent,
                    }
                })
                .collect(),
            referrers: images
                .referrers
                .iter()
                .filter(|r| r.subject.digest == img.manifest.descriptor.digest)
                .map(|r| ReferrerReport {
                    artifact_type: r.artifact_type.clone(),
                    manifest_digest: r.manifest.descriptor.digest.to_string(),
                    document_digest: r.document.descriptor.digest.to_string(),
                })
                .collect(),
        })
        .collect();
    let artifacts = images
        .artifacts
        .iter()
        .map(|a| {
            let pushed = push
                .iter()
                .flat_map(|p| &p.artifacts)
                .find(|p| p.kind == a.kind.as_str());
            ArtifactReport {
                kind: a.kind.as_str(),
                name: a.name.clone(),
                tags: a.tags.clone(),
                manifest_digest: a.top().descriptor.digest.to_string(),
                media_type: a.top().descriptor.media_type.clone(),
                layers: a
                    .layers
                    .iter()
                    .map(|l| l.descriptor.digest.to_string())
                    .collect(),
                pushed: pushed.map(|p| p.pushed.clone()),
                blobs: pushed.map(|p| p.blobs.clone()),
            }
        })
        .collect();
    let top = &images.top().descriptor;
    BuildReport {
        manifest_digest: top.digest.to_string(),
        media_type: top.media_type.clone(),
        layers: platforms
            .first()
            .map(|p| p.layers.clone())
            .unwrap_or_default(),
        platforms,
        outputs,
        push,
        hub_bytes_downloaded: hub_bytes,
        source_bytes_read,
        artifacts,
        warnings,
    }
}
