//! Where an image is read back from: a registry, an OCI layout folder, an OCI archive, a docker
//! archive. Each gives the top-level document (index or manifest) and small blobs (manifests,
//! configs, referrer documents) by digest, checked against that digest. Layers are never read.

use std::collections::HashMap;
use std::fmt;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::digest::Digest;
use crate::registry::{Reference, RegistryClient, RegistryError};

/// Small blobs (manifests, configs, SBOMs) larger than this are not read.
pub const MAX_SMALL_BLOB: u64 = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{image}: {what}: {message}")]
    Invalid {
        image: String,
        what: String,
        message: String,
    },
    #[error(
        "{0:?}: expected a registry reference (host/repo:tag), oci:DIR[:TAG], oci-archive:FILE or docker-archive:FILE"
    )]
    BadRef(String),
}

/// An image to read: as the user wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageRef {
    Registry(Reference),
    Layout { dir: PathBuf, tag: Option<String> },
    OciArchive(PathBuf),
    DockerArchive(PathBuf),
}

impl ImageRef {
    /// `oci:DIR[:TAG]`, `oci-archive:FILE`, `docker-archive:FILE`, `registry:REF` or a
    /// registry reference.
    pub fn parse(s: &str) -> Result<ImageRef, InspectError> {
        if let Some(rest) = s.strip_prefix("oci:") {
            if rest.is_empty() {
                return Err(InspectError::BadRef(s.into()));
            }
            // a folder whose name contains ':' wins over a tag
            if Path::new(rest).join("index.json").is_file() {
                return Ok(ImageRef::Layout {
                    dir: rest.into(),
                    tag: None,
                });
            }
            return Ok(match rest.rsplit_once(':') {
                Some((p, t)) if !t.contains('/') && !t.is_empty() && !p.is_empty() => {
                    ImageRef::Layout {
                        dir: p.into(),
                        tag: Some(t.into()),
                    }
                }
                _ => ImageRef::Layout {
                    dir: rest.into(),
                    tag: None,
                },
            });
        }
        if let Some(f) = s.strip_prefix("oci-archive:") {
            return Ok(ImageRef::OciArchive(f.into()));
        }
        if let Some(f) = s.strip_prefix("docker-archive:") {
            return Ok(ImageRef::DockerArchive(f.into()));
        }
        let r = s.strip_prefix("registry:").unwrap_or(s);
        Reference::parse(r)
            .map(ImageRef::Registry)
            .map_err(|_| InspectError::BadRef(s.into()))
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImageRef::Registry(r) => write!(f, "{r}"),
            ImageRef::Layout { dir, tag: None } => write!(f, "oci:{}", dir.display()),
            ImageRef::Layout { dir, tag: Some(t) } => write!(f, "oci:{}:{t}", dir.display()),
            ImageRef::OciArchive(p) => write!(f, "oci-archive:{}", p.display()),
            ImageRef::DockerArchive(p) => write!(f, "docker-archive:{}", p.display()),
        }
    }
}

/// A document with its digest and size.
#[derive(Debug, Clone)]
pub struct Doc {
    pub digest: String,
    pub bytes: Vec<u8>,
}

impl Doc {
    pub fn json(&self, image: &str, what: &str) -> Result<Value, InspectError> {
        serde_json::from_slice(&self.bytes).map_err(|e| InspectError::Invalid {
            image: image.into(),
            what: format!("{what} {}", self.digest),
            message: format!("not JSON: {e}"),
        })
    }
}

/// Blobs of an OCI layout: on disk, or the small ones of an archive read into memory.
pub(crate) enum Blobs {
    Dir(PathBuf),
    Tar {
        file: PathBuf,
        small: HashMap<String, Vec<u8>>,
    },
}

/// An OCI image store: a registry repository, or an OCI layout (folder or archive).
pub(crate) enum Store<'c> {
    Registry {
        client: &'c RegistryClient,
        reference: Reference,
    },
    Layout {
        name: String,
        index: Vec<u8>,
        tag: Option<String>,
        blobs: Blobs,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> InspectError + '_ {
    move |source| InspectError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// An OCI archive's `index.json` and blobs of at most [`MAX_SMALL_BLOB`] bytes, in one pass.
/// Blobs read into memory, by digest.
type SmallBlobs = HashMap<String, Vec<u8>>;

fn read_oci_archive(file: &Path) -> Result<(Vec<u8>, SmallBlobs), InspectError> {
    let f = std::fs::File::open(file).map_err(io(file))?;
    let mut tar = tar::Archive::new(std::io::BufReader::new(f));
    let mut index = None;
    let mut small = HashMap::new();
    for entry in tar.entries().map_err(io(file))? {
        let mut entry = entry.map_err(io(file))?;
        let path = entry
            .path()
            .map_err(io(file))?
            .to_string_lossy()
            .to_string();
        let path = path.trim_start_matches("./").to_string();
        let size = entry.header().size().map_err(io(file))?;
        if path == "index.json" {
            let mut b = Vec::new();
            entry
                .by_ref()
                .take(MAX_SMALL_BLOB)
                .read_to_end(&mut b)
                .map_err(io(file))?;
            index = Some(b);
        } else if let Some(hex) = path.strip_prefix("blobs/sha256/")
            && size <= MAX_SMALL_BLOB
            && !hex.is_empty()
        {
            let mut b = Vec::new();
            entry.read_to_end(&mut b).map_err(io(file))?;
            small.insert(format!("sha256:{hex}"), b);
        }
    }
    let index = index.ok_or_else(|| InspectError::Invalid {
        image: format!("oci-archive:{}", file.display()),
        what: "index.json".into(),
        message: "missing: not an OCI archive (for `docker save` output use docker-archive:)"
            .into(),
    })?;
    Ok((index, small))
}

impl<'c> Store<'c> {
    pub(crate) fn open(
        r: &ImageRef,
        client: Option<&'c RegistryClient>,
    ) -> Result<Store<'c>, InspectError> {
        let name = r.to_string();
        match r {
            ImageRef::Registry(reference) => Ok(Store::Registry {
                client: client.ok_or_else(|| InspectError::BadRef(name.clone()))?,
                reference: reference.clone(),
            }),
            ImageRef::Layout { dir, tag } => {
                let p = dir.join("index.json");
                let index = std::fs::read(&p).map_err(io(&p))?;
                Ok(Store::Layout {
                    name,
                    index,
                    tag: tag.clone(),
                    blobs: Blobs::Dir(dir.clone()),
                })
            }
            ImageRef::OciArchive(file) => {
                let (index, small) = read_oci_archive(file)?;
                Ok(Store::Layout {
                    name,
                    index,
                    tag: None,
                    blobs: Blobs::Tar {
                        file: file.clone(),
                        small,
                    },
                })
            }
            ImageRef::DockerArchive(_) => Err(InspectError::BadRef(name)),
        }
    }

    pub(crate) fn name(&self) -> String {
        match self {
            Store::Registry { reference, .. } => reference.to_string(),
            Store::Layout { name, .. } => name.clone(),
        }
    }

    fn invalid(&self, what: &str, message: impl Into<String>) -> InspectError {
        InspectError::Invalid {
            image: self.name(),
            what: what.into(),
            message: message.into(),
        }
    }

    /// The image's top document: the registry's manifest or index for the reference; in a
    /// layout, the `index.json` entry named by the tag, else its first image (not an artifact).
    pub(crate) fn top(&self) -> Result<Doc, InspectError> {
        match self {
            Store::Registry { client, reference } => {
                let m = client.fetch_manifest(reference)?;
                Ok(Doc {
                    digest: m.digest,
                    bytes: m.bytes,
                })
            }
            Store::Layout { index, tag, .. } => {
                let v: Value = serde_json::from_slice(index)
                    .map_err(|e| self.invalid("index.json", format!("not JSON: {e}")))?;
                let entries = v["manifests"].as_array().cloned().unwrap_or_default();
                let ref_name = |e: &Value| {
                    e["annotations"]["org.opencontainers.image.ref.name"]
                        .as_str()
                        .map(str::to_string)
                };
                let chosen = match tag {
                    Some(t) => entries.iter().find(|e| ref_name(e).as_deref() == Some(t)),
                    None => entries.iter().find(|e| e.get("artifactType").is_none()),
                };
                let Some(e) = chosen else {
                    let names: Vec<String> = entries.iter().filter_map(ref_name).collect();
                    return Err(self.invalid(
                        "index.json",
                        match tag {
                            Some(t) => format!(
                                "no image tagged {t:?} (tags: {})",
                                if names.is_empty() {
                                    "none".to_string()
                                } else {
                                    names.join(", ")
                                }
                            ),
                            None => "lists no image".to_string(),
                        },
                    ));
                };
                let digest = e["digest"]
                    .as_str()
                    .ok_or_else(|| self.invalid("index.json", "an entry has no digest"))?;
                self.blob(digest, e["size"].as_u64())
            }
        }
    }

    /// A manifest or index by digest.
    pub(crate) fn manifest(&self, digest: &str) -> Result<Doc, InspectError> {
        match self {
            Store::Registry { client, reference } => {
                let m = client.fetch_manifest(&reference.with_digest(digest))?;
                Ok(Doc {
                    digest: m.digest,
                    bytes: m.bytes,
                })
            }
            Store::Layout { .. } => self.blob(digest, None),
        }
    }

    /// A small blob (config, document) by digest, verified.
    pub(crate) fn blob(&self, digest: &str, size: Option<u64>) -> Result<Doc, InspectError> {
        let d = Digest::parse(digest).map_err(|e| self.invalid("descriptor", e.to_string()))?;
        if let Some(s) = size
            && s > MAX_SMALL_BLOB
        {
            return Err(self.invalid(
                &format!("blob {digest}"),
                format!("{s} bytes is over the {MAX_SMALL_BLOB}-byte limit for metadata"),
            ));
        }
        let bytes = match self {
            Store::Registry { client, reference } => {
                let mut b = Vec::new();
                client
                    .blob_reader(reference, digest, size.unwrap_or(MAX_SMALL_BLOB))?
                    .read_to_end(&mut b)
                    .map_err(|e| self.invalid(&format!("blob {digest}"), e.to_string()))?;
                b
            }
            Store::Layout {
                blobs: Blobs::Dir(dir),
                ..
            } => {
                let p = dir.join("blobs/sha256").join(d.hex());
                std::fs::read(&p).map_err(io(&p))?
            }
            Store::Layout {
                blobs: Blobs::Tar { file, small },
                ..
            } => small
                .get(digest)
                .cloned()
                .ok_or_else(|| InspectError::Invalid {
                    image: format!("oci-archive:{}", file.display()),
                    what: format!("blob {digest}"),
                    message: "not in the archive".into(),
                })?,
        };
        let got = Digest::of(&bytes);
        if got != d {
            return Err(self.invalid(
                &format!("blob {digest}"),
                format!("its {} bytes hash to {got}", bytes.len()),
            ));
        }
        Ok(Doc {
            digest: digest.to_string(),
            bytes,
        })
    }

    /// The referrers of a manifest: `(artifactType, manifest digest)`. A registry lists them
    /// under the referrers tag schema (`sha256-<hex>`); a layout in its `index.json` (whose
    /// entries' manifests name the subject).
    pub(crate) fn referrers(&self, subject: &str) -> Result<Vec<(String, String)>, InspectError> {
        let entries: Vec<Value> = match self {
            Store::Registry { client, reference } => {
                let tag = subject.replacen(':', "-", 1);
                match client.fetch_manifest(&reference.with_tag(&tag)) {
                    Ok(m) => serde_json::from_slice::<Value>(&m.bytes)
                        .map_err(|e| self.invalid(&format!("tag {tag}"), e.to_string()))?["manifests"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default(),
                    Err(e) if e.status() == Some(404) => Vec::new(),
                    Err(e) => return Err(e.into()),
                }
            }
            Store::Layout { index, .. } => {
                let v: Value = serde_json::from_slice(index)
                    .map_err(|e| self.invalid("index.json", format!("not JSON: {e}")))?;
                let mut out = Vec::new();
                for e in v["manifests"].as_array().cloned().unwrap_or_default() {
                    if e.get("artifactType").is_none() {
                        continue;
                    }
                    let Some(d) = e["digest"].as_str() else {
                        continue;
                    };
                    let m = self
                        .blob(d, e["size"].as_u64())?
                        .json(&self.name(), "manifest")?;
                    if m["subject"]["digest"] == subject {
                        out.push(e);
                    }
                }
                out
            }
        };
        Ok(entries
            .iter()
            .filter_map(|e| {
                Some((
                    e["artifactType"].as_str()?.to_string(),
                    e["digest"].as_str()?.to_string(),
                ))
            })
            .collect())
    }
}

/// One image of a docker archive (`docker save`, `mlimg build -o docker-archive:`): its config
/// and layers as `(path in the archive, size, digest)`; the digest is the blob's name when the
/// archive is content-addressed (`blobs/sha256/<hex>`), else hashed while reading.
pub(crate) struct DockerImage {
    pub config: Doc,
    pub layers: Vec<(String, u64, String, bool)>,
    pub repo_tags: Vec<String>,
}

pub(crate) fn read_docker_archive(file: &Path) -> Result<DockerImage, InspectError> {
    use sha2::Digest as _;
    let name = format!("docker-archive:{}", file.display());
    let invalid = |what: &str, message: String| InspectError::Invalid {
        image: name.clone(),
        what: what.into(),
        message,
    };
    let f = std::fs::File::open(file).map_err(io(file))?;
    let mut tar = tar::Archive::new(std::io::BufReader::new(f));
    let mut small: HashMap<String, Vec<u8>> = HashMap::new();
    // path -> (size, sha256, gzip magic)
    let mut big: HashMap<String, (u64, String, bool)> = HashMap::new();
    for entry in tar.entries().map_err(io(file))? {
        let mut entry = entry.map_err(io(file))?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = entry
            .path()
            .map_err(io(file))?
            .to_string_lossy()
            .to_string();
        let path = path.trim_start_matches("./").to_string();
        let size = entry.header().size().map_err(io(file))?;
        let named = path
            .strip_prefix("blobs/sha256/")
            .filter(|h| h.len() == 64)
            .map(|h| format!("sha256:{h}"));
        if size <= 1 << 20 && !path.ends_with(".tar") && !path.ends_with("/layer.tar") {
            let mut b = Vec::new();
            entry.read_to_end(&mut b).map_err(io(file))?;
            small.insert(path.clone(), b);
            continue;
        }
        // a layer: its digest (hashed unless named by it) and whether it is gzip
        let mut head = [0u8; 2];
        let mut hasher = sha2::Sha256::new();
        let mut buf = vec![0u8; 256 * 1024];
        let mut n = 0usize;
        loop {
            let k = entry.read(&mut buf).map_err(io(file))?;
            if k == 0 {
                break;
            }
            if n < 2 {
                for (i, b) in buf[..k].iter().enumerate().take(2 - n) {
                    head[n + i] = *b;
                }
            }
            n += k;
            if named.is_some() && n >= 2 {
                // the name is the digest; skip hashing the rest
                std::io::copy(&mut entry, &mut std::io::sink()).map_err(io(file))?;
                break;
            }
            hasher.update(&buf[..k]);
        }
        let digest = named.unwrap_or_else(|| format!("sha256:{}", hex::encode(hasher.finalize())));
        big.insert(path, (size, digest, head == [0x1f, 0x8b]));
    }
    let manifest = small
        .get("manifest.json")
        .ok_or_else(|| invalid("manifest.json", "missing: not a docker archive".into()))?;
    let m: Value = serde_json::from_slice(manifest)
        .map_err(|e| invalid("manifest.json", format!("not JSON: {e}")))?;
    let first = &m[0];
    let cfg_path = first["Config"]
        .as_str()
        .ok_or_else(|| invalid("manifest.json", "no Config".into()))?;
    let cfg = small
        .get(cfg_path)
        .ok_or_else(|| invalid(cfg_path, "missing from the archive".into()))?;
    let mut layers = Vec::new();
    for l in first["Layers"].as_array().into_iter().flatten() {
        let Some(p) = l.as_str() else { continue };
        let (size, digest, gz) = match big.get(p) {
            Some(v) => v.clone(),
            None => match small.get(p) {
                Some(b) => (
                    b.len() as u64,
                    Digest::of(b).to_string(),
                    b.starts_with(&[0x1f, 0x8b]),
                ),
                None => return Err(invalid(p, "layer missing from the archive".into())),
            },
        };
        layers.push((p.to_string(), size, digest, gz));
    }
    let repo_tags = first["RepoTags"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t.as_str().map(str::to_string))
        .collect();
    Ok(DockerImage {
        config: Doc {
            digest: Digest::of(cfg).to_string(),
            bytes: cfg.clone(),
        },
        layers,
        repo_tags,
    })
}
