//! Sinks: every destination of a build takes the same [`ImageSet`] value — an OCI image
//! layout folder, an OCI archive, a docker-archive tarball for `docker load`, a registry.
//!
//! File sinks write to a temp path beside their target and rename it into place at the end,
//! so a failed build leaves no half-written output; the registry sink pushes blobs, then
//! manifests by digest, then tags.

mod archive;
mod layout;
mod registry;

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use crate::image::{Blob, ImageSet};
use crate::progress::Progress;

pub use archive::{DockerArchive, OciArchive};
pub use layout::OciLayout;
pub use registry::{
    ArtifactPush, BlobReport, PushSummary, ReferrerPush, RegistrySink, SignaturePush,
};

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("{target}: reading blob {digest}: {source}")]
    Blob {
        target: String,
        digest: String,
        source: io::Error,
    },
    /// A blob's source gave other bytes than its descriptor names (a corrupt cache file, a
    /// regenerated layer whose sources changed).
    #[error(
        "{target}: blob {digest}: the bytes do not match the descriptor ({size} bytes, {got}; expected {expected} bytes)"
    )]
    Corrupt {
        target: String,
        digest: String,
        got: String,
        size: u64,
        expected: u64,
    },
    #[error(
        "--output {0:?}: expected oci:DIR, oci-archive:FILE, docker-archive:FILE or registry:REF"
    )]
    BadTarget(String),
    #[error(
        "{}: {} is a file, not a folder\n  hint: choose another output path",
        path.display(),
        blocker.display()
    )]
    UnderAFile { path: PathBuf, blocker: PathBuf },
    #[error("docker-archive holds one platform, the build has {0}; choose one with --platform")]
    ManyPlatforms(usize),
    #[error(
        "{}: exists, is not empty and is not an OCI layout (no oci-layout file); refusing to replace it\n  hint: choose a new folder or remove it yourself",
        path.display()
    )]
    NotALayout { path: PathBuf },
    #[error("{target}: {source}")]
    Target {
        target: String,
        source: Box<SinkError>,
    },
    /// The registry error already names the target (`push to host/repo: …`).
    #[error("{source}")]
    Push {
        target: String,
        source: Box<crate::registry::RegistryError>,
    },
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(io::Error) -> SinkError + '_ {
    move |source| SinkError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What a sink did, for the report.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SinkReport {
    pub target: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub push: Option<PushSummary>,
}

/// A destination of a build.
pub trait Sink: fmt::Display + Send + Sync {
    fn write(&self, images: &ImageSet, progress: &dyn Progress) -> Result<SinkReport, SinkError>;

    /// A folder `blobs/sha256/` of this output's own, where layers written during the build
    /// can go straight away (one pass over the sources: tar → sha256 → this file). The sink
    /// then finds them there.
    fn spool(&self) -> Option<PathBuf> {
        None
    }

    /// Checks, before any layer is built, what can be known to fail: a folder that must not be
    /// replaced, an output path under a regular file.
    fn check(&self) -> Result<(), SinkError> {
        Ok(())
    }

    /// Whether the sink reads blob bytes (file outputs do; a registry can mount and stream).
    fn needs_bytes(&self) -> bool {
        true
    }
}

/// Parses an `--output` value into a file sink (`registry:REF` is made by the pipeline,
/// which owns the registry client). `state` is a folder where sinks may keep notes between
/// builds (the build cache's `outputs/`).
pub fn parse_target(s: &str, state: Option<&Path>) -> Result<Box<dyn Sink>, SinkError> {
    let (kind, path) = s
        .split_once(':')
        .ok_or_else(|| SinkError::BadTarget(s.into()))?;
    if path.is_empty() {
        return Err(SinkError::BadTarget(s.into()));
    }
    let path = PathBuf::from(path);
    Ok(match kind {
        "oci" => Box::new(OciLayout::new(path, state)),
        "oci-archive" => Box::new(OciArchive::new(path)),
        "docker-archive" => Box::new(DockerArchive::new(path)),
        _ => return Err(SinkError::BadTarget(s.into())),
    })
}

/// Fails when an ancestor of `path` that exists is not a folder (the output could never be
/// written there).
pub(crate) fn check_parents(path: &Path) -> Result<(), SinkError> {
    let mut p = path.parent();
    while let Some(dir) = p.filter(|d| !d.as_os_str().is_empty()) {
        if let Ok(m) = std::fs::metadata(dir) {
            if m.is_dir() {
                return Ok(());
            }
            return Err(SinkError::UnderAFile {
                path: path.to_path_buf(),
                blocker: dir.to_path_buf(),
            });
        }
        p = dir.parent();
    }
    Ok(())
}

/// A fresh, unpredictable temp name beside `target` (created by the caller with
/// `create_new`/`create_dir`, so an attacker's symlink there is never followed).
pub(crate) fn temp_beside(target: &Path, suffix: &str) -> PathBuf {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".into());
    let parent = target
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let rand: u64 = {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        h.finish()
    };
    parent.join(format!(".{name}.mlimg-{rand:016x}-{suffix}"))
}

/// Copies a blob's bytes into `w`, checking size and digest on the way.
pub(crate) fn copy_blob(target: &str, b: &Blob, w: &mut dyn io::Write) -> Result<(), SinkError> {
    use sha2::Digest as _;
    let err = |source| SinkError::Blob {
        target: target.to_string(),
        digest: b.descriptor.digest.to_string(),
        source,
    };
    let mut r = b.source.open(&b.descriptor).map_err(err)?;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n: u64 = 0;
    loop {
        let k = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(k) => k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(err(e)),
        };
        h.update(&buf[..k]);
        w.write_all(&buf[..k]).map_err(err)?;
        n += k as u64;
    }
    let got = format!("sha256:{}", hex::encode(h.finalize()));
    if n != b.descriptor.size || got != b.descriptor.digest.as_str() {
        return Err(SinkError::Corrupt {
            target: target.to_string(),
            digest: b.descriptor.digest.to_string(),
            got,
            size: n,
            expected: b.descriptor.size,
        });
    }
    Ok(())
}

impl SinkError {
    /// The digest of a blob whose bytes turned out not to match it, if that is the error
    /// (a file output's copy, or a push the registry or the uploader caught).
    pub fn mismatched_digest(&self) -> Option<&str> {
        match self {
            SinkError::Corrupt { digest, .. } => Some(digest),
            SinkError::Push { source, .. } => match &**source {
                crate::registry::RegistryError::DigestMismatch { digest, .. }
                | crate::registry::RegistryError::SizeMismatch { digest, .. } => Some(digest),
                _ => None,
            },
            _ => None,
        }
    }
}

use std::io::Read as _;
