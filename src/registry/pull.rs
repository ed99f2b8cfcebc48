//! Pull side: manifests (single or index), configs, blobs to files; digest resolution.

use std::io::{Read, Write};

use crate::transport::{MAX_MANIFEST_BYTES, describe, read_capped};
use std::path::Path;

use reqwest::Method;
use sha2::{Digest as _, Sha256};

use super::client::{Ctx, RegistryClient};
use super::error::{Direction, RegistryError, Result};
use super::reference::{Reference, validate_digest};
use crate::digest::sha256_digest;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

pub(crate) const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.v2+json";

/// Configs are small (their size is in the manifest); refuse anything bigger than this.
/// Manifests are capped at [`MAX_MANIFEST_BYTES`].
const MAX_CONFIG_BYTES: u64 = 64 << 20;

pub use crate::platform::Platform;

#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub struct LayerDesc {
    #[serde(rename = "mediaType")]
    pub media_type: String,
    pub digest: String,
    pub size: u64,
}

#[derive(Debug, Clone)]
pub struct PulledImage {
    /// The reference as asked for.
    pub reference: Reference,
    /// Digest of the index the manifest was chosen from, if the reference named an index.
    pub index_digest: Option<String>,
    pub manifest_digest: String,
    pub manifest_media_type: String,
    /// The manifest exactly as the registry served it (its sha256 is `manifest_digest`).
    pub manifest_bytes: Vec<u8>,
    pub manifest: oci_spec::image::ImageManifest,
    pub config_digest: String,
    pub config_media_type: String,
    pub config_bytes: Vec<u8>,
    /// Layers in order, media types as given (docker or OCI).
    pub layers: Vec<LayerDesc>,
}

/// A manifest or index as fetched: raw bytes, media type, verified digest.
#[derive(Debug, Clone)]
pub struct RawManifest {
    pub bytes: Vec<u8>,
    pub media_type: String,
    pub digest: String,
}

impl RawManifest {
    pub fn is_index(&self) -> bool {
        self.media_type == OCI_INDEX || self.media_type == DOCKER_MANIFEST_LIST
    }
}

#[derive(serde::Deserialize)]
struct IndexDoc {
    manifests: Vec<IndexEntry>,
}

#[derive(serde::Deserialize)]
struct IndexEntry {
    digest: String,
    #[serde(default)]
    platform: Option<EntryPlatform>,
}

#[derive(serde::Deserialize)]
struct EntryPlatform {
    os: String,
    architecture: String,
    #[serde(default)]
    variant: Option<String>,
}

#[derive(serde::Deserialize)]
struct ManifestDoc {
    #[serde(rename = "mediaType", default)]
    media_type: Option<String>,
    config: LayerDesc,
    #[serde(default)]
    layers: Vec<LayerDesc>,
}

#[derive(serde::Deserialize)]
struct ConfigPlatform {
    #[serde(default)]
    os: Option<String>,
    #[serde(default)]
    architecture: Option<String>,
}

impl RegistryClient {
    /// GET a manifest or index by tag or digest; its digest is computed and checked against
    /// the digest asked for (or the registry's `Docker-Content-Digest`).
    pub fn fetch_manifest(&self, r: &Reference) -> Result<RawManifest> {
        self.fetch_manifest_ctx(&Ctx::pull(r), r.manifest_ref())
    }

    pub(crate) fn fetch_manifest_ctx(&self, ctx: &Ctx, reference: &str) -> Result<RawManifest> {
        let r = ctx.reference;
        let what = format!("manifest {reference}");
        if reference.starts_with("sha256:")
            && let Some(bytes) = self.stored(reference)
        {
            // by digest, kept from an earlier build: the same bytes, no request
            return self.raw_manifest(ctx, &what, bytes, None);
        }
        let url = self.url(r, &format!("manifests/{reference}"))?;
        let (bytes, ctype, header_digest) =
            self.retrying(&describe("GET", url.as_str()), || {
                let resp = self.request_once(
                    ctx,
                    &Method::GET,
                    &url,
                    &what,
                    &[("Accept", MANIFEST_ACCEPT)],
                    &[200],
                )?;
                let header = |n: &str| {
                    resp.headers()
                        .get(n)
                        .and_then(|v| v.to_str().ok())
                        .map(|s| s.split(';').next().unwrap_or(s).trim().to_string())
                };
                let ctype = header("content-type");
                let hd = header("docker-content-digest");
                let bytes = read_capped(resp, MAX_MANIFEST_BYTES)
                    .map_err(|e| ctx.transport("GET", &what, e))?;
                Ok((bytes, ctype, hd))
            })?;
        let digest = sha256_digest(&bytes);
        let expected = if reference.starts_with("sha256:") {
            Some(reference.to_string())
        } else {
            header_digest.filter(|d| d.starts_with("sha256:"))
        };
        if let Some(exp) = expected
            && exp != digest
        {
            return Err(RegistryError::DigestMismatch {
                direction: ctx.direction,
                host: r.registry.clone(),
                repository: r.repository.clone(),
                digest: exp,
                actual: digest,
            });
        }
        let m = self.raw_manifest(ctx, &what, bytes, ctype)?;
        self.keep(&m.bytes);
        Ok(m)
    }

    /// A manifest's bytes (digest already checked) with its media type.
    fn raw_manifest(
        &self,
        ctx: &Ctx,
        what: &str,
        bytes: Vec<u8>,
        ctype: Option<String>,
    ) -> Result<RawManifest> {
        let digest = sha256_digest(&bytes);
        #[derive(serde::Deserialize)]
        struct Probe {
            #[serde(rename = "mediaType", default)]
            media_type: Option<String>,
            #[serde(default)]
            manifests: Option<serde_json::Value>,
        }
        let probe: Probe = serde_json::from_slice(&bytes)
            .map_err(|e| ctx.invalid(what, format!("not JSON: {e}")))?;
        let media_type = probe
            .media_type
            .or(ctype.filter(|c| c.starts_with("application/vnd.")))
            .unwrap_or_else(|| {
                if probe.manifests.is_some() {
                    OCI_INDEX.to_string()
                } else {
                    OCI_MANIFEST.to_string()
                }
            });
        Ok(RawManifest {
            bytes,
            media_type,
            digest,
        })
    }

    /// Resolve a reference to its top-level digest and, for an index, each platform's
    /// manifest digest; for a single manifest, the platform from its config.
    pub fn resolve_digests(&self, r: &Reference) -> Result<(String, Vec<(Platform, String)>)> {
        let top = self.fetch_manifest(r)?;
        if top.is_index() {
            let idx: IndexDoc = serde_json::from_slice(&top.bytes).map_err(|e| {
                Ctx::pull(r).invalid(&format!("index {}", top.digest), e.to_string())
            })?;
            let list = idx
                .manifests
                .into_iter()
                .filter_map(|m| {
                    m.platform.map(|p| {
                        (
                            Platform {
                                os: p.os,
                                architecture: p.architecture,
                                variant: p.variant,
                            },
                            m.digest,
                        )
                    })
                })
                .filter(|(p, _)| p.os != "unknown")
                .collect();
            Ok((top.digest, list))
        } else {
            let (doc, _) = self.parse_manifest(r, &top)?;
            let cfg = self.fetch_config(r, &doc.config)?;
            let p: ConfigPlatform = serde_json::from_slice(&cfg).map_err(|e| {
                Ctx::pull(r).invalid(&format!("config {}", doc.config.digest), e.to_string())
            })?;
            let plat = Platform {
                os: p.os.unwrap_or_default(),
                architecture: p.architecture.unwrap_or_default(),
                variant: None,
            };
            Ok((top.digest.clone(), vec![(plat, top.digest)]))
        }
    }

    fn parse_manifest(
        &self,
        r: &Reference,
        m: &RawManifest,
    ) -> Result<(ManifestDoc, oci_spec::image::ImageManifest)> {
        let what = format!("manifest {}", m.digest);
        let doc: ManifestDoc = serde_json::from_slice(&m.bytes)
            .map_err(|e| Ctx::pull(r).invalid(&what, e.to_string()))?;
        if let Some(mt) = &doc.media_type
            && mt != OCI_MANIFEST
            && mt != DOCKER_MANIFEST
        {
            return Err(Ctx::pull(r).invalid(&what, format!("unsupported media type {mt}")));
        }
        for d in std::iter::once(&doc.config).chain(doc.layers.iter()) {
            validate_digest(&d.digest)?;
        }
        let typed: oci_spec::image::ImageManifest = serde_json::from_slice(&m.bytes)
            .map_err(|e| Ctx::pull(r).invalid(&what, e.to_string()))?;
        Ok((doc, typed))
    }

    fn fetch_config(&self, r: &Reference, desc: &LayerDesc) -> Result<Vec<u8>> {
        if desc.size > MAX_CONFIG_BYTES {
            return Err(Ctx::pull(r).invalid(
                &format!("config {}", desc.digest),
                format!("config of {} bytes is too large", desc.size),
            ));
        }
        if let Some(bytes) = self.stored(&desc.digest) {
            return Ok(bytes);
        }
        let ctx = Ctx::pull(r);
        let what = format!("blob {}", desc.digest);
        let url = self.url(r, &format!("blobs/{}", desc.digest))?;
        let bytes = self.retrying(&describe("GET", url.as_str()), || {
            let resp = self.request_once(&ctx, &Method::GET, &url, &what, &[], &[200])?;
            let mut b = Vec::new();
            resp.take(desc.size + 1)
                .read_to_end(&mut b)
                .map_err(|e| ctx.stream(&what, e))?;
            Ok(b)
        })?;
        let actual = sha256_digest(&bytes);
        if actual != desc.digest {
            return Err(RegistryError::DigestMismatch {
                direction: Direction::Pull,
                host: r.registry.clone(),
                repository: r.repository.clone(),
                digest: desc.digest.clone(),
                actual,
            });
        }
        self.keep(&bytes);
        Ok(bytes)
    }

    /// Pull a reference's manifest for `platform` (through its index if it names one) and
    /// its config. Layers are described, not downloaded (see [`RegistryClient::blob_to_file`]).
    pub fn pull_image(&self, r: &Reference, platform: &Platform) -> Result<PulledImage> {
        let top = self.fetch_manifest(r)?;
        let (index_digest, manifest) = if top.is_index() {
            let idx: IndexDoc = serde_json::from_slice(&top.bytes).map_err(|e| {
                Ctx::pull(r).invalid(&format!("index {}", top.digest), e.to_string())
            })?;
            let mut available = Vec::new();
            let mut chosen = None;
            for m in &idx.manifests {
                let Some(p) = &m.platform else { continue };
                let p = Platform {
                    os: p.os.clone(),
                    architecture: p.architecture.clone(),
                    variant: p.variant.clone(),
                };
                if chosen.is_none() && platform.matches(&p) {
                    chosen = Some(m.digest.clone());
                }
                available.push(p.to_string());
            }
            let Some(d) = chosen else {
                return Err(RegistryError::PlatformNotFound {
                    host: r.registry.clone(),
                    repository: r.repository.clone(),
                    platform: platform.to_string(),
                    available: available.join(", "),
                });
            };
            validate_digest(&d)?;
            let m = self.fetch_manifest_ctx(&Ctx::pull(r), &d)?;
            if m.is_index() {
                return Err(Ctx::pull(r).invalid(
                    &format!("manifest {d}"),
                    "nested index where an image manifest was expected",
                ));
            }
            (Some(top.digest), m)
        } else {
            (None, top)
        };
        let (doc, typed) = self.parse_manifest(r, &manifest)?;
        let config_bytes = self.fetch_config(r, &doc.config)?;
        // A single-platform manifest must still be for the platform asked for.
        if index_digest.is_none()
            && let Ok(p) = serde_json::from_slice::<ConfigPlatform>(&config_bytes)
            && let (Some(os), Some(arch)) = (p.os, p.architecture)
            && (os != platform.os || arch != platform.architecture)
        {
            return Err(RegistryError::PlatformNotFound {
                host: r.registry.clone(),
                repository: r.repository.clone(),
                platform: platform.to_string(),
                available: format!("{os}/{arch}"),
            });
        }
        Ok(PulledImage {
            reference: r.clone(),
            index_digest,
            manifest_digest: manifest.digest,
            manifest_media_type: manifest.media_type,
            manifest_bytes: manifest.bytes,
            manifest: typed,
            config_digest: doc.config.digest,
            config_media_type: doc.config.media_type,
            config_bytes,
            layers: doc.layers,
        })
    }

    /// Open a blob for streaming. `offset > 0` asks for a range; the response is 206 then
    /// (or 200 when the registry ignores ranges: the caller checks `status()`). No retries.
    pub(crate) fn open_blob(
        &self,
        ctx: &Ctx,
        digest: &str,
        offset: u64,
    ) -> Result<reqwest::blocking::Response> {
        let what = format!("blob {digest}");
        let url = self.url(ctx.reference, &format!("blobs/{digest}"))?;
        let range = format!("bytes={offset}-");
        let headers: Vec<(&str, &str)> = if offset > 0 {
            vec![("Range", range.as_str())]
        } else {
            vec![]
        };
        // One attempt: callers retry (and resume) around the whole transfer.
        let resp = self.send(ctx, "GET", &what, &mut || {
            let mut rb = self.http.get(url.clone());
            for (k, v) in &headers {
                rb = rb.header(*k, *v);
            }
            Ok(rb)
        })?;
        self.expect(ctx, "GET", &what, resp, &[200, 206])
    }

    /// A blob's bytes as a stream, capped at `size` (for reads that need only part of a blob,
    /// like detecting the base's Python; nothing is stored).
    pub fn blob_reader(
        &self,
        r: &Reference,
        digest: &str,
        size: u64,
    ) -> Result<impl std::io::Read + Send + use<>> {
        validate_digest(digest)?;
        let ctx = Ctx::pull(r);
        let resp = self.retrying(&format!("GET blob {digest}"), || {
            self.open_blob(&ctx, digest, 0)
        })?;
        Ok(resp.take(size))
    }

    /// Download a blob to `dest`: streamed into a temp file beside it, size- and
    /// sha256-verified, then renamed into place. Retries restart the download.
    pub fn blob_to_file(&self, r: &Reference, digest: &str, size: u64, dest: &Path) -> Result<()> {
        validate_digest(digest)?;
        let ctx = Ctx::pull(r);
        let dir = dest
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let io = |path: &Path, e: std::io::Error| RegistryError::Io {
            path: path.to_path_buf(),
            source: e,
        };
        let what = format!("blob {digest}");
        let label = describe("GET", self.url(r, &format!("blobs/{digest}"))?.as_str());
        self.retrying(&label, || {
            let mut tmp = tempfile::Builder::new()
                .prefix(".mlimg-dl-")
                .tempfile_in(dir)
                .map_err(|e| io(dir, e))?;
            let resp = self.open_blob(&ctx, digest, 0)?;
            let mut hasher = Sha256::new();
            let mut n: u64 = 0;
            let mut buf = vec![0u8; 256 * 1024];
            let mut reader = resp.take(size + 1);
            loop {
                let k = match reader.read(&mut buf) {
                    Ok(0) => break,
                    Ok(k) => k,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    // A broken body is a transport problem: retry.
                    Err(e) => {
                        return Err(ctx.stream(&what, e));
                    }
                };
                hasher.update(&buf[..k]);
                tmp.write_all(&buf[..k]).map_err(|e| io(tmp.path(), e))?;
                n += k as u64;
            }
            if n != size {
                return Err(RegistryError::SizeMismatch {
                    direction: Direction::Pull,
                    host: r.registry.clone(),
                    repository: r.repository.clone(),
                    digest: digest.to_string(),
                    expected: size,
                    actual: n,
                });
            }
            let actual = format!("sha256:{}", hex::encode(hasher.finalize()));
            if actual != digest {
                return Err(RegistryError::DigestMismatch {
                    direction: Direction::Pull,
                    host: r.registry.clone(),
                    repository: r.repository.clone(),
                    digest: digest.to_string(),
                    actual,
                });
            }
            tmp.as_file().sync_all().map_err(|e| io(tmp.path(), e))?;
            tmp.persist(dest).map_err(|e| io(dest, e.error))?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platform_parse_and_match() {
        let p = Platform::parse("linux/arm64/v8").unwrap();
        assert_eq!(p.variant.as_deref(), Some("v8"));
        assert_eq!(p.to_string(), "linux/arm64/v8");
        assert!(Platform::parse("linux").is_err());
        assert!(Platform::parse("linux//v8").is_err());
        assert!(Platform::parse("a/b/c/d").is_err());
        let arm = Platform::parse("linux/arm64").unwrap();
        assert!(p.matches(&arm), "arm64 without variant means v8");
        assert!(arm.matches(&p));
        let v7 = Platform::parse("linux/arm/v7").unwrap();
        assert!(!v7.matches(&Platform::parse("linux/arm/v6").unwrap()));
        assert!(Platform::parse("linux/arm").unwrap().matches(&v7));
        assert!(!Platform::parse("linux/amd64").unwrap().matches(&arm));
    }
}
