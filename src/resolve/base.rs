//! The base image: `scratch`, a local OCI layout, or (through [`crate::registry`]) a registry.
//! Base layers are never unpacked: they are referenced by descriptor and copied as they are.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::digest::Digest;
use crate::image::{
    BlobSource, Descriptor, INDEX_MEDIA_TYPE, Layer, oci_layer_media_type, scratch_config,
};
use crate::spec::Platform;

#[derive(Debug, thiserror::Error)]
pub enum BaseError {
    #[error("base layout {}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("base layout {}: {what} is not valid JSON: {message}", path.display())]
    Json {
        path: PathBuf,
        what: String,
        message: String,
    },
    #[error("base layout {}: no image tagged {tag:?} (tags: {available})", path.display())]
    NoTag {
        path: PathBuf,
        tag: String,
        available: String,
    },
    #[error("base layout {}: holds {count} images; name one as oci:PATH:TAG", path.display())]
    Ambiguous { path: PathBuf, count: usize },
    #[error("base {name}: no image for platform {platform} (has: {available})")]
    NoPlatform {
        name: String,
        platform: String,
        available: String,
    },
    #[error("base {name}: blob {digest} does not match its digest (got {actual})")]
    DigestMismatch {
        name: String,
        digest: String,
        actual: String,
    },
    #[error("base {name}: {source}")]
    Registry {
        name: String,
        source: Box<crate::registry::RegistryError>,
    },
    #[error("base {name}: config is not valid JSON: {message}")]
    Config { name: String, message: String },
    #[error("base {name}: config has {diff_ids} diff_ids for {layers} layers")]
    LayerCount {
        name: String,
        diff_ids: usize,
        layers: usize,
    },
}

/// The base image for one platform.
#[derive(Debug, Clone)]
pub struct ResolvedBase {
    /// As written in the spec (for the `base.name` annotation).
    pub name: String,
    /// What a registry reference resolved to: the index for multi-platform images, else the
    /// manifest (`None` for scratch and layouts).
    pub top_digest: Option<String>,
    pub manifest_digest: Option<String>,
    pub config: Value,
    /// The base's layers, each with where its bytes are: `File` in an OCI layout, `Remote` in
    /// a registry repository (for pushes to mount or stream from, and file outputs to fetch).
    /// Media types are mapped to OCI.
    pub layers: Vec<Layer>,
}

pub fn scratch(p: &Platform) -> ResolvedBase {
    ResolvedBase {
        name: "scratch".into(),
        top_digest: None,
        manifest_digest: None,
        config: scratch_config(p),
        layers: Vec::new(),
    }
}

/// Reads the image for `platform` from an OCI layout, verifying manifest and config digests.
pub fn from_layout(
    dir: &Path,
    tag: Option<&str>,
    platform: &Platform,
    name: &str,
) -> Result<ResolvedBase, BaseError> {
    let index: Value = read_json(dir, &dir.join("index.json"), "index.json")?;
    let manifests = index["manifests"].as_array().cloned().unwrap_or_default();
    // Entries with an `artifactType` (SBOM and provenance referrers, `[model]`'s artifacts)
    // are not images: only images count when no tag names one.
    let images: Vec<&Value> = manifests
        .iter()
        .filter(|m| m.get("artifactType").is_none())
        .collect();
    let chosen = match tag {
        Some(t) => manifests
            .iter()
            .find(|m| m["annotations"]["org.opencontainers.image.ref.name"].as_str() == Some(t))
            .cloned()
            .ok_or_else(|| BaseError::NoTag {
                path: dir.to_path_buf(),
                tag: t.to_string(),
                available: manifests
                    .iter()
                    .filter_map(|m| m["annotations"]["org.opencontainers.image.ref.name"].as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })?,
        None if images.len() == 1 => images[0].clone(),
        None => {
            return Err(BaseError::Ambiguous {
                path: dir.to_path_buf(),
                count: images.len(),
            });
        }
    };
    let mut desc = chosen;
    if desc["mediaType"].as_str() == Some(INDEX_MEDIA_TYPE)
        || desc["mediaType"].as_str()
            == Some("application/vnd.docker.distribution.manifest.list.v2+json")
    {
        let idx = verified_json(dir, &desc, name)?;
        desc = pick_platform(&idx, platform, name)?;
    }
    let manifest_digest = desc["digest"].as_str().unwrap_or_default().to_string();
    let manifest = verified_json(dir, &desc, name)?;
    let config = verified_json(dir, &manifest["config"], name)?;
    let blobs = dir.join("blobs/sha256");
    let layers = base_layers(&manifest, &config, name, |d| {
        BlobSource::File(blobs.join(d.hex()))
    })?;
    Ok(ResolvedBase {
        name: name.to_string(),
        top_digest: None,
        manifest_digest: Some(manifest_digest),
        config,
        layers,
    })
}

/// Pairs a manifest's layers with the config's diff_ids; `source` says where each blob is.
pub fn base_layers(
    manifest: &Value,
    config: &Value,
    name: &str,
    source: impl Fn(&Digest) -> BlobSource,
) -> Result<Vec<Layer>, BaseError> {
    let layers = manifest["layers"].as_array().cloned().unwrap_or_default();
    let diff_ids = config["rootfs"]["diff_ids"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if layers.len() != diff_ids.len() {
        return Err(BaseError::LayerCount {
            name: name.into(),
            diff_ids: diff_ids.len(),
            layers: layers.len(),
        });
    }
    let bad = |what: &str, e: crate::digest::DigestError| BaseError::Config {
        name: name.into(),
        message: format!("{what}: {e}"),
    };
    layers
        .iter()
        .zip(diff_ids)
        .map(|(l, d)| {
            let digest = Digest::parse(l["digest"].as_str().unwrap_or_default())
                .map_err(|e| bad("layer digest", e))?;
            Ok(Layer {
                source: source(&digest),
                descriptor: Descriptor {
                    media_type: oci_layer_media_type(l["mediaType"].as_str().unwrap_or_default()),
                    digest,
                    size: l["size"].as_u64().unwrap_or(0),
                },
                diff_id: Digest::parse(d.as_str().unwrap_or_default())
                    .map_err(|e| bad("diff_id", e))?,
                role: "base".into(),
                created_by: String::new(),
                cached: true,
            })
        })
        .collect()
}

/// Picks the manifest descriptor for a platform from an index.
pub fn pick_platform(index: &Value, p: &Platform, name: &str) -> Result<Value, BaseError> {
    let ms = index["manifests"].as_array().cloned().unwrap_or_default();
    let entries: Vec<(Platform, &Value)> = ms
        .iter()
        .filter_map(|m| Some((Platform::from_json(&m["platform"])?, m)))
        .collect();
    p.best_match(entries.iter().map(|(ep, m)| (ep, *m)))
        .cloned()
        .ok_or_else(|| BaseError::NoPlatform {
            name: name.into(),
            platform: p.to_string(),
            available: ms
                .iter()
                .map(|m| {
                    let pl = &m["platform"];
                    let mut s = format!(
                        "{}/{}",
                        pl["os"].as_str().unwrap_or("?"),
                        pl["architecture"].as_str().unwrap_or("?")
                    );
                    if let Some(v) = pl["variant"].as_str() {
                        s.push('/');
                        s.push_str(v);
                    }
                    s
                })
                .collect::<Vec<_>>()
                .join(", "),
        })
}

fn read_json(dir: &Path, path: &Path, what: &str) -> Result<Value, BaseError> {
    let bytes = fs::read(path).map_err(|source| BaseError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    serde_json::from_slice(&bytes).map_err(|e| BaseError::Json {
        path: dir.to_path_buf(),
        what: what.into(),
        message: e.to_string(),
    })
}

/// Reads a small blob named by a descriptor, checks its sha256, parses it as JSON.
fn verified_json(dir: &Path, desc: &Value, name: &str) -> Result<Value, BaseError> {
    use sha2::Digest as _;
    let digest = desc["digest"].as_str().unwrap_or_default();
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    let path = dir.join("blobs/sha256").join(hex);
    let bytes = fs::read(&path).map_err(|source| BaseError::Io {
        path: path.clone(),
        source,
    })?;
    let actual = format!("sha256:{}", hex::encode(sha2::Sha256::digest(&bytes)));
    if actual != digest {
        return Err(BaseError::DigestMismatch {
            name: name.into(),
            digest: digest.into(),
            actual,
        });
    }
    serde_json::from_slice(&bytes).map_err(|e| BaseError::Json {
        path: path.clone(),
        what: digest.into(),
        message: e.to_string(),
    })
}

/// Pulls the base's manifest and config for `platform` from a registry (never its layers:
/// they are referenced, and fetched only when a file output needs them).
pub fn from_registry(
    client: &crate::registry::RegistryClient,
    name: &str,
    platform: &Platform,
) -> Result<ResolvedBase, BaseError> {
    let reg_err = |e| BaseError::Registry {
        name: name.into(),
        source: Box::new(e),
    };
    let reference = crate::registry::Reference::parse(name).map_err(reg_err)?;
    let pulled = client.pull_image(&reference, platform).map_err(reg_err)?;
    let config: Value =
        serde_json::from_slice(&pulled.config_bytes).map_err(|e| BaseError::Config {
            name: name.into(),
            message: e.to_string(),
        })?;
    let manifest: Value =
        serde_json::from_slice(&pulled.manifest_bytes).map_err(|e| BaseError::Config {
            name: name.into(),
            message: e.to_string(),
        })?;
    let layers = base_layers(&manifest, &config, name, |_| BlobSource::Remote {
        registry: reference.registry.clone(),
        repository: reference.repository.clone(),
        local: None,
    })?;
    Ok(ResolvedBase {
        name: name.to_string(),
        top_digest: Some(
            pulled
                .index_digest
                .clone()
                .unwrap_or_else(|| pulled.manifest_digest.clone()),
        ),
        manifest_digest: Some(pulled.manifest_digest),
        config,
        layers,
    })
}
