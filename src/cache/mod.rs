//! The local cache: content-addressed blobs plus a selector index (fingerprint of a layer's
//! inputs → the layer's descriptor).
//!
//! Layout under the cache root (`$MLIMG_CACHE_DIR`, else `$XDG_CACHE_HOME/mlimg`):
//! `blobs/sha256/<hex>`, `selectors/<hex>.json`, `pushed/<hex>` (where a blob was pushed:
//! `registry repository` lines, for cross-repository mounts), `tmp/`; beside them
//! `wheels/wheels/<sha256>/` (downloaded wheels), `outputs/` (notes of file outputs),
//! `facts/` (what was read from base images, see [`facts`]) and `debian/` (`index/`, `debs/`,
//! `unpacked/`: see `sources::debian`). `housekeeping` lists and prunes them all. Every write goes to `tmp/` first and is
//! renamed into place, so two builds sharing a cache never see a half-written file: the loser of
//! a race renames identical bytes over identical bytes.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::layer::LayerBlob;

pub mod facts;
mod housekeeping;
mod pushed;
pub use housekeeping::{Entry, Kind, Listing, PruneOptions, PruneReport, Totals, parse_size};

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("cache {}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("no cache folder: set MLIMG_CACHE_DIR or HOME")]
    NoDir,
    #[error("cache blob {digest} is missing")]
    Missing { digest: String },
}

#[derive(Debug, Clone)]
pub struct Cache {
    root: PathBuf,
}

/// What a selector maps to: the layer blob, plus what the build needs to reuse it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct SelectorRecord {
    pub blob: LayerBlob,
    /// Whether the blob's bytes are in the cache. Uncompressed layers are not stored: their
    /// bytes are the tar of their sources, regenerated (and verified) when an output needs them,
    /// so a 20 GB weights folder is never copied into the cache.
    #[serde(default = "stored_default")]
    pub stored: bool,
}

fn stored_default() -> bool {
    true
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> CacheError + '_ {
    move |source| CacheError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl Cache {
    /// The default cache root from the environment values given.
    pub fn default_root(mlimg_cache_dir: Option<String>) -> Result<PathBuf, CacheError> {
        if let Some(d) = mlimg_cache_dir.filter(|d| !d.is_empty()) {
            return Ok(PathBuf::from(d));
        }
        dirs::cache_dir()
            .map(|d| d.join("mlimg"))
            .ok_or(CacheError::NoDir)
    }

    pub fn open(root: &Path) -> Result<Cache, CacheError> {
        for sub in ["blobs/sha256", "selectors", "tmp"] {
            let p = root.join(sub);
            fs::create_dir_all(&p).map_err(io_err(&p))?;
        }
        Ok(Cache {
            root: root.to_path_buf(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Path of a blob by digest (`sha256:<hex>`), whether or not it exists.
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        self.root.join("blobs/sha256").join(hex)
    }

    pub fn has_blob(&self, digest: &str) -> bool {
        self.blob_path(digest).is_file()
    }

    /// Drops a blob found to be bad (it is rebuilt or fetched again).
    pub fn evict_blob(&self, digest: &str) {
        let _ = fs::remove_file(self.blob_path(digest));
    }

    /// A fresh temp file inside the cache (same filesystem as the blobs, so renames are atomic).
    pub fn temp(&self) -> Result<tempfile::NamedTempFile, CacheError> {
        let dir = self.root.join("tmp");
        tempfile::NamedTempFile::new_in(&dir).map_err(io_err(&dir))
    }

    /// Moves a finished temp file into place as the blob `digest`.
    pub fn commit(
        &self,
        tmp: tempfile::NamedTempFile,
        digest: &str,
    ) -> Result<PathBuf, CacheError> {
        let dest = self.blob_path(digest);
        if dest.is_file() {
            return Ok(dest); // identical content already there
        }
        tmp.as_file().sync_all().map_err(io_err(&dest))?;
        tmp.persist(&dest).map_err(|e| CacheError::Io {
            path: dest.clone(),
            source: e.error,
        })?;
        Ok(dest)
    }

    /// Stores small bytes (configs, manifests) as a blob; returns the digest.
    pub fn put_bytes(&self, bytes: &[u8]) -> Result<String, CacheError> {
        use sha2::Digest as _;
        let digest = format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)));
        if !self.has_blob(&digest) {
            let mut t = self.temp()?;
            t.write_all(bytes).map_err(io_err(t.path()))?;
            self.commit(t, &digest)?;
        }
        Ok(digest)
    }

    pub fn read_bytes(&self, digest: &str) -> Result<Vec<u8>, CacheError> {
        let p = self.blob_path(digest);
        fs::read(&p).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => CacheError::Missing {
                digest: digest.to_string(),
            },
            _ => CacheError::Io {
                path: p.clone(),
                source: e,
            },
        })
    }

    fn selector_path(&self, key: &str) -> PathBuf {
        self.root.join("selectors").join(format!("{key}.json"))
    }

    /// The layer a selector points to, if it is recorded and its blob is still present.
    pub fn get_selector(&self, key: &str) -> Option<SelectorRecord> {
        let text = fs::read(self.selector_path(key)).ok()?;
        let rec: SelectorRecord = serde_json::from_slice(&text).ok()?;
        let hit = !rec.stored || self.has_blob(&rec.blob.digest);
        if hit {
            self.touch_selector(key); // its last use, for `mlimg cache prune`
        }
        hit.then_some(rec)
    }

    /// Forgets `key` if its record still names the layer `digest` (found stale: the layer no
    /// longer regenerates to that digest). Best effort: the next build then writes the layer.
    pub fn drop_selector(&self, key: &str, digest: &str) {
        let p = self.selector_path(key);
        let names_it = fs::read(&p)
            .ok()
            .and_then(|b| serde_json::from_slice::<SelectorRecord>(&b).ok())
            .is_some_and(|r| r.blob.digest == digest);
        if names_it {
            let _ = fs::remove_file(p);
        }
    }

    pub fn put_selector(&self, key: &str, rec: &SelectorRecord) -> Result<(), CacheError> {
        let dest = self.selector_path(key);
        let mut t = self.temp()?;
        let bytes = serde_json::to_vec_pretty(rec).map_err(|e| CacheError::Io {
            path: dest.clone(),
            source: e.into(),
        })?;
        t.write_all(&bytes).map_err(io_err(&dest))?;
        t.persist(&dest).map_err(|e| CacheError::Io {
            path: dest.clone(),
            source: e.error,
        })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blobs_and_selectors_roundtrip() {
        let d = tempfile::tempdir().unwrap();
        let c = Cache::open(d.path()).unwrap();
        let dg = c.put_bytes(b"hello").unwrap();
        assert_eq!(
            dg,
            "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        assert_eq!(c.read_bytes(&dg).unwrap(), b"hello");
        assert!(c.get_selector("k").is_none());
        let rec = SelectorRecord {
            blob: LayerBlob {
                media_type: "m".into(),
                digest: dg.clone(),
                diff_id: dg.clone(),
                size: 5,
            },
            stored: true,
        };
        c.put_selector("k", &rec).unwrap();
        assert_eq!(c.get_selector("k"), Some(rec.clone()));
        std::fs::remove_file(c.blob_path(&dg)).unwrap();
        assert!(
            c.get_selector("k").is_none(),
            "a selector whose blob is gone is a miss"
        );
        let virt = SelectorRecord {
            stored: false,
            ..rec
        };
        c.put_selector("v", &virt).unwrap();
        assert_eq!(
            c.get_selector("v"),
            Some(virt.clone()),
            "unstored layers need no blob"
        );
        c.drop_selector("v", "sha256:other");
        assert!(c.get_selector("v").is_some(), "names another layer: kept");
        c.drop_selector("v", &virt.blob.digest);
        assert!(c.get_selector("v").is_none());
    }
}
