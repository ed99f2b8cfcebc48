//! Outputs: one [`Sink`] trait, several sinks — an OCI image layout folder, an OCI archive, a
//! docker-archive tarball for `docker load` (and, in [`crate::registry`], a registry push).
//!
//! Every sink writes to a temp path beside its target and renames it into place at the end, so
//! a failed build leaves no half-written output.

mod archive;
mod layout;

use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use crate::cache::Cache;
use crate::image::Blob;
use crate::spec::Platform;

pub use archive::{DockerArchive, OciArchive};
pub use layout::OciLayout;

#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("blob {digest} is not available locally")]
    MissingBlob { digest: String },
    #[error("--output {0:?}: expected oci:DIR, oci-archive:FILE or docker-archive:FILE")]
    BadTarget(String),
    #[error("docker-archive holds one platform, the build has {0}; choose one with --platform")]
    ManyPlatforms(usize),
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(io::Error) -> OutputError + '_ {
    move |source| OutputError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// One platform's finished image.
#[derive(Debug, Clone)]
pub struct PlatformImage {
    pub platform: Platform,
    pub manifest: Blob,
    pub config: Blob,
    pub layers: Vec<Blob>,
}

/// A finished build, ready for the sinks.
#[derive(Debug, Clone)]
pub struct BuiltImage {
    pub images: Vec<PlatformImage>,
    /// The index, when the build has several platforms.
    pub index: Option<Blob>,
    /// `[image].name`, if any.
    pub name: Option<String>,
    pub tags: Vec<String>,
}

impl BuiltImage {
    /// The top-level descriptor: the index for multi-platform builds, else the manifest.
    pub fn top(&self) -> &Blob {
        match &self.index {
            Some(i) => i,
            None => &self.images[0].manifest,
        }
    }

    /// Every blob digest the image references (manifests, configs, layers), without repeats.
    pub fn all_blobs(&self) -> Vec<Blob> {
        let mut seen = std::collections::BTreeSet::new();
        let mut out = Vec::new();
        let mut add = |b: &Blob| {
            if seen.insert(b.digest.clone()) {
                out.push(b.clone());
            }
        };
        for img in &self.images {
            for l in &img.layers {
                add(l);
            }
            add(&img.config);
            add(&img.manifest);
        }
        if let Some(i) = &self.index {
            add(i);
        }
        out
    }
}

/// Where blobs can be read: the cache, base layout folders, or — for layers that are not
/// stored (uncompressed ones) — regenerated from their plan.
#[derive(Debug, Clone)]
pub struct BlobStore {
    pub cache: Cache,
    pub layouts: Vec<PathBuf>,
    pub recipes: std::collections::BTreeMap<String, Recipe>,
}

/// How to regenerate an unstored layer: its plan and mtime (the digest is checked at the end).
#[derive(Debug, Clone)]
pub struct Recipe {
    pub plan: std::sync::Arc<crate::plan::LayerPlan>,
    pub mtime: u64,
}

impl BlobStore {
    /// A local file holding the blob.
    pub fn path(&self, digest: &str) -> Option<PathBuf> {
        let p = self.cache.blob_path(digest);
        if p.is_file() {
            return Some(p);
        }
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        self.layouts
            .iter()
            .map(|l| l.join("blobs/sha256").join(hex))
            .find(|p| p.is_file())
    }

    /// A reader of the blob's bytes: a file, or a layer regenerated on a thread and verified
    /// against its digest when the reader reaches the end (a mismatch is a read error).
    pub fn reader(&self, digest: &str) -> Result<Box<dyn Read + Send>, OutputError> {
        if let Some(p) = self.path(digest) {
            let f = File::open(&p).map_err(io_err(&p))?;
            return Ok(Box::new(io::BufReader::with_capacity(1 << 20, f)));
        }
        let r = self
            .recipes
            .get(digest)
            .ok_or_else(|| OutputError::MissingBlob {
                digest: digest.into(),
            })?;
        Ok(Box::new(regenerate(r.clone(), digest.to_string())?))
    }

    /// Whether the bytes can be had locally (stored or regenerated).
    pub fn has(&self, digest: &str) -> bool {
        self.recipes.contains_key(digest) || self.path(digest).is_some()
    }

    pub fn open(&self, digest: &str) -> Result<(File, PathBuf), OutputError> {
        let p = self.path(digest).ok_or_else(|| OutputError::MissingBlob {
            digest: digest.into(),
        })?;
        let f = File::open(&p).map_err(io_err(&p))?;
        Ok((f, p))
    }

    pub fn read(&self, digest: &str) -> Result<Vec<u8>, OutputError> {
        let (mut f, p) = self.open(digest)?;
        let mut v = Vec::new();
        f.read_to_end(&mut v).map_err(io_err(&p))?;
        Ok(v)
    }
}

/// What a sink did, for the report.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SinkReport {
    pub target: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
}

/// An output of a build.
pub trait Sink: fmt::Display {
    fn write(&self, image: &BuiltImage, blobs: &BlobStore) -> Result<SinkReport, OutputError>;
}

/// Parses an `--output` value into a sink.
pub fn parse_target(s: &str) -> Result<Box<dyn Sink>, OutputError> {
    let (kind, path) = s
        .split_once(':')
        .ok_or_else(|| OutputError::BadTarget(s.into()))?;
    if path.is_empty() {
        return Err(OutputError::BadTarget(s.into()));
    }
    let path = PathBuf::from(path);
    Ok(match kind {
        "oci" => Box::new(OciLayout { dir: path }),
        "oci-archive" => Box::new(OciArchive { file: path }),
        "docker-archive" => Box::new(DockerArchive { file: path }),
        _ => return Err(OutputError::BadTarget(s.into())),
    })
}

/// A temp sibling of `target` for an atomic write.
pub(crate) fn temp_beside(target: &Path, suffix: &str) -> PathBuf {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".into());
    let parent = target
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    parent.join(format!(".{name}.mlimg-{}-{suffix}", std::process::id()))
}

/// Streams a regenerated layer through a pipe; the writer thread's result (and the digest
/// check) surfaces as the reader's final read.
fn regenerate(r: Recipe, digest: String) -> Result<impl Read + Send, OutputError> {
    struct Gen {
        pipe: io::PipeReader,
        worker: Option<std::thread::JoinHandle<Result<String, String>>>,
        digest: String,
    }
    impl Read for Gen {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.pipe.read(buf)?;
            if n == 0
                && !buf.is_empty()
                && let Some(w) = self.worker.take()
            {
                {
                    let got = w
                        .join()
                        .map_err(|_| io::Error::other("layer writer panicked"))?
                        .map_err(io::Error::other)?;
                    if got != self.digest {
                        return Err(io::Error::other(format!(
                            "layer {} regenerated as {got}: a source changed since the build; build again",
                            self.digest
                        )));
                    }
                }
            }
            Ok(n)
        }
    }
    let (reader, writer) = io::pipe().map_err(io_err(Path::new("(pipe)")))?;
    let worker = std::thread::spawn(move || {
        crate::layer::write(
            &r.plan.entries,
            r.plan.compression,
            r.mtime,
            writer,
            &|_| {},
        )
        .map(|b| b.digest)
        .map_err(|e| e.to_string())
    });
    Ok(Gen {
        pipe: reader,
        worker: Some(worker),
        digest,
    })
}
