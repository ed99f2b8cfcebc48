//! The registry-shared layer cache: selector → layer descriptor records stored in the push
//! target itself, so that a runner with an empty disk finds a layer another runner built.
//!
//! One record is one small OCI artifact manifest in the target repository, tagged
//! `mlimg-sel-<64 hex of the selector>`:
//!
//! ```json
//! { "schemaVersion": 2,
//!   "mediaType": "application/vnd.oci.image.manifest.v1+json",
//!   "artifactType": "application/vnd.mlimg.selector.v1",
//!   "config": { the empty descriptor: application/vnd.oci.empty.v1+json, "{}" },
//!   "layers": [ the layer's descriptor ],
//!   "annotations": { "dev.mlimg.selector": "<hex>", "dev.mlimg.diff-id": "sha256:…" } }
//! ```
//!
//! The layer is referenced as a real layer, so the registry checks at publish time that the
//! blob exists in the repository and its garbage collector keeps it while the record is
//! tagged. Trade-offs are in docs/architecture.md ("Registry-shared layer cache").

use std::io::Write as _;

use crate::layer::LayerBlob;
use crate::registry::{
    BlobOrigin, OCI_MANIFEST, PushBlob, PushManifest, PushRequest, Reference, RegistryClient,
    RegistryError, sha256_digest,
};

pub const ARTIFACT_TYPE: &str = "application/vnd.mlimg.selector.v1";
pub const EMPTY_MEDIA_TYPE: &str = "application/vnd.oci.empty.v1+json";
pub const ANN_SELECTOR: &str = "dev.mlimg.selector";
pub const ANN_DIFF_ID: &str = "dev.mlimg.diff-id";
const TAG_PREFIX: &str = "mlimg-sel-";

/// The tag a selector's record lives under.
pub fn tag(selector: &str) -> String {
    format!("{TAG_PREFIX}{selector}")
}

fn is_hex64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn record_manifest(selector: &str, blob: &LayerBlob) -> Vec<u8> {
    let empty = sha256_digest(b"{}");
    let doc = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": ARTIFACT_TYPE,
        "config": {"mediaType": EMPTY_MEDIA_TYPE, "digest": empty, "size": 2},
        "layers": [{"mediaType": blob.media_type, "digest": blob.digest, "size": blob.size}],
        "annotations": {ANN_SELECTOR: selector, ANN_DIFF_ID: blob.diff_id},
    });
    // serde_json's map is sorted: the bytes are canonical for the same record.
    serde_json::to_vec(&doc).unwrap_or_default()
}

fn repo_only(target: &Reference) -> Reference {
    Reference {
        tag: None,
        digest: None,
        ..target.clone()
    }
}

/// The layer recorded for `selector` in `target`'s repository. `Ok(None)` when there is no
/// record (or one that does not describe a layer for exactly this selector); `Err` for
/// registry trouble other than "not found", which callers treat as a miss.
pub fn lookup(
    client: &RegistryClient,
    target: &Reference,
    selector: &str,
) -> Result<Option<LayerBlob>, RegistryError> {
    if !is_hex64(selector) {
        return Ok(None);
    }
    let r = Reference {
        tag: Some(tag(selector)),
        ..repo_only(target)
    };
    let m = match client.fetch_manifest(&r) {
        Ok(m) => m,
        Err(e) if e.status() == Some(404) => return Ok(None),
        Err(e) => return Err(e),
    };
    #[derive(serde::Deserialize)]
    struct Desc {
        #[serde(rename = "mediaType")]
        media_type: String,
        digest: String,
        size: u64,
    }
    #[derive(serde::Deserialize)]
    struct Doc {
        #[serde(rename = "artifactType", default)]
        artifact_type: Option<String>,
        #[serde(default)]
        layers: Vec<Desc>,
        #[serde(default)]
        annotations: std::collections::BTreeMap<String, String>,
    }
    let Ok(doc) = serde_json::from_slice::<Doc>(&m.bytes) else {
        return Ok(None);
    };
    let valid_digest = |d: &str| d.strip_prefix("sha256:").is_some_and(is_hex64);
    let (Some(ARTIFACT_TYPE), Some(sel), Some(diff_id), [layer]) = (
        doc.artifact_type.as_deref(),
        doc.annotations.get(ANN_SELECTOR),
        doc.annotations.get(ANN_DIFF_ID),
        doc.layers.as_slice(),
    ) else {
        return Ok(None);
    };
    if sel != selector || !valid_digest(diff_id) || !valid_digest(&layer.digest) {
        return Ok(None);
    }
    Ok(Some(LayerBlob {
        media_type: layer.media_type.clone(),
        digest: layer.digest.clone(),
        diff_id: diff_id.clone(),
        size: layer.size,
    }))
}

/// Publishes one record per (selector, layer) into `target`'s repository. The layers must
/// already be in that repository (push the image first): the registry refuses the record
/// otherwise. Returns how many records were written.
pub fn publish(
    client: &RegistryClient,
    target: &Reference,
    records: &[(String, LayerBlob)],
) -> Result<usize, RegistryError> {
    let repo = repo_only(target);
    let invalid = |reason: String| RegistryError::InvalidPushRequest {
        target: repo.to_string(),
        reason,
    };
    let mut empty = tempfile::NamedTempFile::new()
        .map_err(|e| invalid(format!("temp file for the empty config: {e}")))?;
    empty
        .write_all(b"{}")
        .map_err(|e| invalid(format!("temp file for the empty config: {e}")))?;
    let mut n = 0;
    for (selector, blob) in records {
        if !is_hex64(selector) {
            return Err(invalid(format!(
                "selector {selector:?} is not 64 hex digits"
            )));
        }
        let bytes = record_manifest(selector, blob);
        let req = PushRequest {
            target: repo.clone(),
            tags: vec![tag(selector)],
            blobs: vec![PushBlob {
                digest: sha256_digest(b"{}"),
                size: 2,
                media_type: EMPTY_MEDIA_TYPE.into(),
                origin: BlobOrigin::File(empty.path().to_path_buf()),
            }],
            manifests: vec![PushManifest {
                digest: sha256_digest(&bytes),
                media_type: OCI_MANIFEST.into(),
                bytes,
            }],
        };
        client.push(&req, &|_| {})?;
        n += 1;
    }
    Ok(n)
}

/// The layer recorded for `selector` in the target, treating registry trouble as a miss
/// (with a message).
pub(super) fn lookup_or_miss(
    client: &RegistryClient,
    target: &Reference,
    selector: &str,
    progress: &dyn crate::progress::Progress,
) -> Option<LayerBlob> {
    match lookup(client, target, selector) {
        Ok(found) => found,
        Err(e) => {
            progress.message(&format!(
                "shared layer cache in {}: lookup failed ({e}); building locally",
                repo_only(target)
            ));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_is_canonical_and_names_the_selector() {
        let b = LayerBlob {
            media_type: "application/vnd.oci.image.layer.v1.tar".into(),
            digest: format!("sha256:{}", "a".repeat(64)),
            diff_id: format!("sha256:{}", "a".repeat(64)),
            size: 3,
        };
        let sel = "b".repeat(64);
        let m = record_manifest(&sel, &b);
        assert_eq!(m, record_manifest(&sel, &b));
        let v: serde_json::Value = serde_json::from_slice(&m).unwrap();
        assert_eq!(v["artifactType"], ARTIFACT_TYPE);
        assert_eq!(v["annotations"][ANN_SELECTOR], sel.as_str());
        assert_eq!(v["layers"][0]["digest"], b.digest.as_str());
        assert_eq!(tag(&sel).len(), 74, "within the 128-character tag limit");
    }
}
