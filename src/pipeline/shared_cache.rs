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
//!   "annotations": { "dev.mlimg.selector": "<hex>", "dev.mlimg.diff-id": "sha256:…",
//!                    "dev.mlimg.mac": "hmac-sha256:<hex>" } }
//! ```
//!
//! The layer is referenced as a real layer, so the registry checks at publish time that the
//! blob exists in the repository and its garbage collector keeps it while the record is
//! tagged. Trade-offs are in docs/architecture.md ("Registry-shared layer cache").
//!
//! **Authentication.** Anyone who can push a tag to the repository can write a record, and a
//! record decides which blob becomes a layer of every later push. So records carry an
//! HMAC-SHA256 ([`mac`]) over the selector, the layer's descriptor and its diff_id, under a
//! key the build runners share ([`CacheKey`], `MLIMG_CACHE_KEY` in the CLI); a record whose MAC
//! is missing or wrong is ignored ([`Lookup::Untrusted`]). Reading records without a key is an
//! explicit opt-in ([`SharedCache::Unsigned`]).

use std::io::Write as _;

use hmac::{KeyInit as _, Mac as _};

use crate::layer::LayerBlob;
use crate::registry::{
    BlobOrigin, OCI_MANIFEST, PushBlob, PushManifest, PushRequest, Reference, RegistryClient,
    RegistryError, sha256_digest,
};

pub const ARTIFACT_TYPE: &str = "application/vnd.mlimg.selector.v1";
pub const EMPTY_MEDIA_TYPE: &str = "application/vnd.oci.empty.v1+json";
pub const ANN_SELECTOR: &str = "dev.mlimg.selector";
pub const ANN_DIFF_ID: &str = "dev.mlimg.diff-id";
/// `hmac-sha256:<64 hex>`: see [`mac`].
pub const ANN_MAC: &str = "dev.mlimg.mac";
const TAG_PREFIX: &str = "mlimg-sel-";
const MAC_PREFIX: &str = "hmac-sha256:";
/// The shortest key accepted (bytes): 128 bits of a random hex or base64 string.
pub const MIN_KEY_LEN: usize = 16;

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// The secret that authenticates selector records (the CI runners' `MLIMG_CACHE_KEY`). Never
/// printed: `Debug` shows only that a key is there.
#[derive(Clone, PartialEq, Eq)]
pub struct CacheKey(Vec<u8>);

impl CacheKey {
    /// A key from its text. At least [`MIN_KEY_LEN`] bytes (e.g. `openssl rand -hex 32`).
    pub fn new(secret: impl Into<Vec<u8>>) -> Result<CacheKey, String> {
        let k = secret.into();
        if k.len() < MIN_KEY_LEN {
            return Err(format!(
                "the shared-cache key is {} bytes; use at least {MIN_KEY_LEN} random bytes \
                 (e.g. `openssl rand -hex 32`)",
                k.len()
            ));
        }
        Ok(CacheKey(k))
    }
}

impl std::fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CacheKey(<redacted>)")
    }
}

/// How a build uses the registry-shared cache.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum SharedCache {
    /// No record is looked up or published.
    #[default]
    Off,
    /// Records are published with a MAC under this key, and only records whose MAC verifies
    /// are used.
    Signed(CacheKey),
    /// Every record in the push target is believed: whoever can push a tag there chooses the
    /// bytes of the layers it names. Records are published with a MAC when a key is given
    /// (so that signed builds can use them), without one otherwise.
    Unsigned(Option<CacheKey>),
}

impl SharedCache {
    /// Whether records are consulted at all.
    pub fn is_on(&self) -> bool {
        !matches!(self, SharedCache::Off)
    }

    /// The key records must verify under (`None`: any record is believed).
    pub fn verify_key(&self) -> Option<&CacheKey> {
        match self {
            SharedCache::Signed(k) => Some(k),
            _ => None,
        }
    }

    /// The key records are published with, if any.
    pub fn sign_key(&self) -> Option<&CacheKey> {
        match self {
            SharedCache::Signed(k) | SharedCache::Unsigned(Some(k)) => Some(k),
            _ => None,
        }
    }
}

/// What a lookup found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// No record for the selector (or one that is not a selector record for it).
    Miss,
    /// A record, authenticated when a key was given.
    Hit(LayerBlob),
    /// A record whose MAC is missing or does not verify under the key: it is not used.
    Untrusted(&'static str),
}

/// The bytes the MAC covers: a domain string, then the selector, the layer's media type,
/// digest, size and diff_id, each as its length (8 bytes, big-endian) and its bytes, so no two
/// records share an input.
fn mac_input(selector: &str, blob: &LayerBlob) -> Vec<u8> {
    let mut m = b"mlimg selector record v1".to_vec();
    let size = blob.size.to_string();
    for f in [
        selector,
        &blob.media_type,
        &blob.digest,
        &size,
        &blob.diff_id,
    ] {
        m.extend_from_slice(&(f.len() as u64).to_be_bytes());
        m.extend_from_slice(f.as_bytes());
    }
    m
}

fn hmac_of(key: &CacheKey, selector: &str, blob: &LayerBlob) -> HmacSha256 {
    // HMAC takes keys of any length.
    let mut h = HmacSha256::new_from_slice(&key.0)
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    h.update(&mac_input(selector, blob));
    h
}

/// The record's MAC annotation value: `hmac-sha256:<hex>` of [`mac_input`] under `key`.
pub fn mac(key: &CacheKey, selector: &str, blob: &LayerBlob) -> String {
    format!(
        "{MAC_PREFIX}{}",
        hex::encode(hmac_of(key, selector, blob).finalize().into_bytes())
    )
}

/// Whether `annotation` is the MAC of this record under `key` (compared in constant time).
fn verify(key: &CacheKey, selector: &str, blob: &LayerBlob, annotation: &str) -> bool {
    let Some(tag) = annotation
        .strip_prefix(MAC_PREFIX)
        .and_then(|h| hex::decode(h).ok())
    else {
        return false;
    };
    hmac_of(key, selector, blob).verify_slice(&tag).is_ok()
}

/// The tag a selector's record lives under.
pub fn tag(selector: &str) -> String {
    format!("{TAG_PREFIX}{selector}")
}

fn is_hex64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn record_manifest(selector: &str, blob: &LayerBlob, key: Option<&CacheKey>) -> Vec<u8> {
    let empty = sha256_digest(b"{}");
    let mut annotations = serde_json::json!({ANN_SELECTOR: selector, ANN_DIFF_ID: blob.diff_id});
    if let Some(k) = key {
        annotations[ANN_MAC] = mac(k, selector, blob).into();
    }
    let doc = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": ARTIFACT_TYPE,
        "config": {"mediaType": EMPTY_MEDIA_TYPE, "digest": empty, "size": 2},
        "layers": [{"mediaType": blob.media_type, "digest": blob.digest, "size": blob.size}],
        "annotations": annotations,
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

/// The layer recorded for `selector` in `target`'s repository. [`Lookup::Miss`] when there is
/// no record (or one that does not describe a layer for exactly this selector); with a `key`,
/// [`Lookup::Untrusted`] for a record whose MAC is missing or wrong (without one, every record
/// is believed). `Err` for registry trouble other than "not found", which callers treat as a
/// miss.
pub fn lookup(
    client: &RegistryClient,
    target: &Reference,
    selector: &str,
    key: Option<&CacheKey>,
) -> Result<Lookup, RegistryError> {
    if !is_hex64(selector) {
        return Ok(Lookup::Miss);
    }
    let r = Reference {
        tag: Some(tag(selector)),
        ..repo_only(target)
    };
    let m = match client.fetch_manifest(&r) {
        Ok(m) => m,
        Err(e) if e.status() == Some(404) => return Ok(Lookup::Miss),
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
        return Ok(Lookup::Miss);
    };
    let valid_digest = |d: &str| d.strip_prefix("sha256:").is_some_and(is_hex64);
    let (Some(ARTIFACT_TYPE), Some(sel), Some(diff_id), [layer]) = (
        doc.artifact_type.as_deref(),
        doc.annotations.get(ANN_SELECTOR),
        doc.annotations.get(ANN_DIFF_ID),
        doc.layers.as_slice(),
    ) else {
        return Ok(Lookup::Miss);
    };
    if sel != selector || !valid_digest(diff_id) || !valid_digest(&layer.digest) {
        return Ok(Lookup::Miss);
    }
    let blob = LayerBlob {
        media_type: layer.media_type.clone(),
        digest: layer.digest.clone(),
        diff_id: diff_id.clone(),
        size: layer.size,
    };
    if let Some(k) = key {
        match doc.annotations.get(ANN_MAC) {
            None => return Ok(Lookup::Untrusted("it carries no MAC")),
            Some(m) if !verify(k, selector, &blob, m) => {
                return Ok(Lookup::Untrusted(
                    "its MAC does not verify under MLIMG_CACHE_KEY",
                ));
            }
            Some(_) => {}
        }
    }
    Ok(Lookup::Hit(blob))
}

/// Publishes one record per (selector, layer) into `target`'s repository, with a MAC under
/// `key` when one is given. The layers must already be in that repository (push the image
/// first): the registry refuses the record otherwise. Returns how many records were written.
pub fn publish(
    client: &RegistryClient,
    target: &Reference,
    records: &[(String, LayerBlob)],
    key: Option<&CacheKey>,
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
        let bytes = record_manifest(selector, blob, key);
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
/// (with a message) and an untrusted record as a miss (with a `shared-cache-untrusted`
/// warning).
pub(super) fn lookup_or_miss(
    client: &RegistryClient,
    target: &Reference,
    selector: &str,
    key: Option<&CacheKey>,
    role: &str,
    progress: &dyn crate::progress::Progress,
) -> Option<LayerBlob> {
    match lookup(client, target, selector, key) {
        Ok(Lookup::Hit(blob)) => Some(blob),
        Ok(Lookup::Miss) => None,
        Ok(Lookup::Untrusted(why)) => {
            progress.warning(&crate::progress::Warning::new(
                "shared-cache-untrusted",
                format!(
                    "{role}: ignoring the shared layer cache record {}:{} ({why}); building \
                     the layer from its sources",
                    repo_only(target),
                    tag(selector)
                ),
            ));
            None
        }
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

    fn blob() -> LayerBlob {
        LayerBlob {
            media_type: "application/vnd.oci.image.layer.v1.tar".into(),
            digest: format!("sha256:{}", "a".repeat(64)),
            diff_id: format!("sha256:{}", "a".repeat(64)),
            size: 3,
        }
    }

    #[test]
    fn record_is_canonical_and_names_the_selector() {
        let b = blob();
        let sel = "b".repeat(64);
        let key = CacheKey::new("0123456789abcdef").unwrap();
        let m = record_manifest(&sel, &b, Some(&key));
        assert_eq!(m, record_manifest(&sel, &b, Some(&key)));
        let v: serde_json::Value = serde_json::from_slice(&m).unwrap();
        assert_eq!(v["artifactType"], ARTIFACT_TYPE);
        assert_eq!(v["annotations"][ANN_SELECTOR], sel.as_str());
        assert_eq!(v["layers"][0]["digest"], b.digest.as_str());
        assert_eq!(v["annotations"][ANN_MAC], mac(&key, &sel, &b).as_str());
        let unsigned: serde_json::Value =
            serde_json::from_slice(&record_manifest(&sel, &b, None)).unwrap();
        assert!(unsigned["annotations"].get(ANN_MAC).is_none());
        assert_eq!(tag(&sel).len(), 74, "within the 128-character tag limit");
    }

    #[test]
    fn the_mac_covers_selector_descriptor_and_diff_id_and_the_key() {
        let b = blob();
        let sel = "b".repeat(64);
        let key = CacheKey::new("0123456789abcdef").unwrap();
        let m = mac(&key, &sel, &b);
        assert!(verify(&key, &sel, &b, &m));
        let other_key = CacheKey::new("0123456789abcdeF").unwrap();
        assert!(!verify(&other_key, &sel, &b, &m));
        assert!(!verify(&key, &"c".repeat(64), &b, &m));
        for changed in [
            LayerBlob {
                media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
                ..b.clone()
            },
            LayerBlob {
                digest: format!("sha256:{}", "c".repeat(64)),
                ..b.clone()
            },
            LayerBlob {
                diff_id: format!("sha256:{}", "c".repeat(64)),
                ..b.clone()
            },
            LayerBlob {
                size: 4,
                ..b.clone()
            },
        ] {
            assert!(!verify(&key, &sel, &changed, &m), "{changed:?}");
        }
        assert!(!verify(&key, &sel, &b, "hmac-sha256:zz"));
        assert!(!verify(&key, &sel, &b, &m.replace("hmac-sha256:", "")));
        assert!(CacheKey::new("short").is_err());
        assert_eq!(format!("{key:?}"), "CacheKey(<redacted>)");
    }
}
