//! Provenance: an SPDX 2.3 and a CycloneDX 1.6 SBOM and an in-toto / SLSA v1 build attestation
//! for each platform image, the OCI referrers (artifact manifests with a `subject`) that carry
//! them, and cosign-format image signatures ([`sign`]).
//!
//! Pure: the values the pipeline already has in, canonical JSON bytes out. Nothing here reads a
//! file or the clock: the only time is the image's `created` (and, when asked for with
//! `--provenance-times`, the start and finish times the pipeline hands in), so the same inputs
//! give the same bytes. [`remote`] is the registry side.

mod attestation;
mod cyclonedx;
pub mod license;
pub mod remote;
mod sbom;
pub mod sign;

use std::collections::BTreeMap;

use serde_json::json;

pub use attestation::statement;
pub use cyclonedx::cyclonedx;
pub use sbom::spdx;

use crate::image::{
    Descriptor, Document, Image, ImageSet, MANIFEST_MEDIA_TYPE, Referrer, canonical,
};
use crate::plan::{BuildPlan, LayerPlan, PlatformPlan};
use crate::resolve::{Resolved, ResolvedPlatform};
use crate::spec::Spec;

/// The SPDX 2.3 JSON artifact (and layer) media type.
pub const SPDX_ARTIFACT_TYPE: &str = "application/spdx+json";
/// The CycloneDX JSON artifact (and layer) media type.
pub const CYCLONEDX_ARTIFACT_TYPE: &str = "application/vnd.cyclonedx+json";
/// The in-toto statement artifact (and layer) media type.
pub const INTOTO_ARTIFACT_TYPE: &str = "application/vnd.in-toto+json";
/// The empty config of an artifact manifest.
pub const EMPTY_MEDIA_TYPE: &str = "application/vnd.oci.empty.v1+json";
/// The SLSA build type of an mlimg build: a URN of mlimg's own (mlimg has no web home to
/// point at; docs/provenance.md defines what the type means).
pub const BUILD_TYPE: &str = "urn:mlimg:build-type:image:v1";
/// The SLSA builder id: the mlimg command line, run by whoever ran it (mlimg cannot vouch for
/// the machine; the version is in `builder.version`).
pub const BUILDER_ID: &str = "urn:mlimg:builder:cli";
/// The tool name in SPDX `creators` and the builder version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// What the documents need beyond the images.
pub struct Inputs<'a> {
    pub spec: &'a Spec,
    pub resolved: &'a Resolved,
    pub plan: &'a BuildPlan,
    /// The spec file's path relative to the project (its context folder), `/`-separated.
    pub spec_path: String,
    /// Lowercase hex sha256 of the spec file's bytes.
    pub spec_sha256: String,
    /// The tags the image gets.
    pub tags: Vec<String>,
    /// The image's `created` (RFC 3339).
    pub created: String,
    /// The SBOM formats to attach (none: no SBOM).
    pub sbom: SbomFormats,
    pub provenance: bool,
    /// The SPDX license expression of each wheel (by its sha256) that states one
    /// unambiguously ([`license::spdx_expression`]); the others are NOASSERTION.
    pub licenses: BTreeMap<String, String>,
    /// `--provenance-times`: when the build started and when its images were assembled
    /// (RFC 3339); `None` keeps the statement reproducible.
    pub times: Option<(String, String)>,
    /// The source repository URL and revision the manifests name (`[image].source` /
    /// `revision`, or the clean git checkout's): a resolved dependency of the statement.
    pub source: Option<String>,
    pub revision: Option<String>,
}

/// Which SBOM documents to attach (default: both).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SbomFormats {
    pub spdx: bool,
    pub cyclonedx: bool,
}

impl Default for SbomFormats {
    fn default() -> Self {
        SbomFormats {
            spdx: true,
            cyclonedx: true,
        }
    }
}

impl SbomFormats {
    pub const NONE: SbomFormats = SbomFormats {
        spdx: false,
        cyclonedx: false,
    };
}

/// One platform image with what it was made of.
pub struct Target<'a> {
    pub image: &'a Image,
    pub plan: &'a PlatformPlan,
    pub resolved: &'a ResolvedPlatform,
}

impl<'a> Target<'a> {
    /// The image's layers this build added, each with its plan.
    pub fn new_layers(&self) -> impl Iterator<Item = (&'a crate::image::Layer, &'a LayerPlan)> {
        let first_new = self
            .image
            .layers
            .len()
            .saturating_sub(self.plan.layers.len());
        self.image.layers[first_new..]
            .iter()
            .zip(self.plan.layers.iter().map(AsRef::as_ref))
    }
}

/// The referrers the options ask for, per platform image: the SBOMs (SPDX, CycloneDX) first,
/// then the statement.
pub fn referrers(inp: &Inputs, images: &ImageSet) -> Result<Vec<Referrer>, serde_json::Error> {
    let mut out = Vec::new();
    for ((image, plan), resolved) in images
        .images
        .iter()
        .zip(&inp.plan.platforms)
        .zip(&inp.resolved.platforms)
    {
        let t = Target {
            image,
            plan,
            resolved,
        };
        if inp.sbom.spdx {
            let doc = spdx(inp, &t);
            out.push(referrer(
                SPDX_ARTIFACT_TYPE,
                &image.manifest.descriptor,
                serde_json::to_vec_pretty(&doc)?,
                &inp.created,
            ));
        }
        if inp.sbom.cyclonedx {
            let doc = cyclonedx(inp, &t);
            out.push(referrer(
                CYCLONEDX_ARTIFACT_TYPE,
                &image.manifest.descriptor,
                serde_json::to_vec_pretty(&doc)?,
                &inp.created,
            ));
        }
        if inp.provenance {
            let doc = statement(inp, &t);
            out.push(referrer(
                INTOTO_ARTIFACT_TYPE,
                &image.manifest.descriptor,
                canonical(&doc),
                &inp.created,
            ));
        }
    }
    Ok(out)
}

/// An artifact manifest about `subject`: the empty config, `document` as the single layer.
pub fn referrer(
    artifact_type: &str,
    subject: &Descriptor,
    document: Vec<u8>,
    created: &str,
) -> Referrer {
    let config = Document::new(EMPTY_MEDIA_TYPE, b"{}".to_vec());
    let document = Document::new(artifact_type, document);
    let desc =
        |d: &Descriptor| json!({"mediaType": d.media_type, "digest": d.digest, "size": d.size});
    let mut cfg = desc(&config.descriptor);
    cfg["data"] = json!("e30=");
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "artifactType": artifact_type,
        "config": cfg,
        "layers": [desc(&document.descriptor)],
        "subject": desc(subject),
        "annotations": {"org.opencontainers.image.created": created},
    });
    Referrer {
        artifact_type: artifact_type.to_string(),
        subject: subject.clone(),
        manifest: Document::new(MANIFEST_MEDIA_TYPE, canonical(&manifest)),
        config,
        document,
    }
}

/// The referrers tag of a subject (OCI distribution spec 1.1, "referrers tag schema"):
/// `sha256-<hex>`.
pub fn referrers_tag(subject: &crate::digest::Digest) -> String {
    subject.as_str().replacen(':', "-", 1)
}

/// A referrers index listing `entries` (descriptors with `artifactType`).
pub fn referrers_index(entries: &[serde_json::Value]) -> Vec<u8> {
    canonical(&json!({
        "schemaVersion": 2,
        "mediaType": crate::image::INDEX_MEDIA_TYPE,
        "manifests": entries,
    }))
}

/// `pkg:oci/NAME@sha256%3AHEX?repository_url=REPO` for an image reference and digest.
pub(crate) fn oci_purl(reference: &str, digest: &str) -> Option<String> {
    let repo = reference.split('@').next().unwrap_or(reference).to_string();
    // drop a tag (a ':' after the last '/')
    let repo = match repo.rsplit_once('/') {
        Some((head, last)) => format!("{head}/{}", last.split(':').next().unwrap_or(last)),
        None => repo.split(':').next().unwrap_or(&repo).to_string(),
    };
    let name = repo
        .rsplit('/')
        .next()
        .unwrap_or(&repo)
        .to_ascii_lowercase();
    let (algo, hex) = digest.split_once(':')?;
    Some(format!(
        "pkg:oci/{name}@{algo}%3A{hex}?repository_url={}",
        repo.replace('%', "%25")
            .replace('?', "%3F")
            .replace('#', "%23")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purls_and_tags() {
        assert_eq!(
            oci_purl("docker.io/library/python:3.12", "sha256:ab").as_deref(),
            Some("pkg:oci/python@sha256%3Aab?repository_url=docker.io/library/python")
        );
        assert_eq!(
            oci_purl("localhost:5000/acme/base@sha256:cd", "sha256:cd").as_deref(),
            Some("pkg:oci/base@sha256%3Acd?repository_url=localhost:5000/acme/base")
        );
        let d = crate::digest::Digest::of(b"x");
        assert_eq!(referrers_tag(&d), format!("sha256-{}", d.hex()));
    }

    #[test]
    fn referrer_manifest_shape() {
        let subject = Descriptor {
            media_type: MANIFEST_MEDIA_TYPE.into(),
            digest: crate::digest::Digest::of(b"m"),
            size: 1,
        };
        let r = referrer(
            SPDX_ARTIFACT_TYPE,
            &subject,
            b"{}".to_vec(),
            "2024-01-01T00:00:00Z",
        );
        let m: serde_json::Value = serde_json::from_slice(&r.manifest.bytes).expect("json");
        assert_eq!(m["artifactType"], SPDX_ARTIFACT_TYPE);
        assert_eq!(m["config"]["mediaType"], EMPTY_MEDIA_TYPE);
        assert_eq!(
            m["config"]["digest"],
            "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
        );
        assert_eq!(m["layers"][0]["mediaType"], SPDX_ARTIFACT_TYPE);
        assert_eq!(m["subject"]["digest"], subject.digest.as_str());
        assert_eq!(r.index_entry()["artifactType"], SPDX_ARTIFACT_TYPE);
    }
}
