//! `mlimg pull-model REF DIR`: the files of a ModelPack artifact (or of a weights-only image)
//! from a registry into a folder, without Docker — what a serving init-container or a developer
//! needs.
//!
//! Every layer is downloaded into a staging folder inside `DIR`, checked against its digest and
//! size, and unpacked there with safe paths only: no absolute path, no `..`, nothing written
//! through a symlink, symlinks only to relative targets that stay inside, no hard links or
//! devices. Only when every layer is in place are the staged top-level entries renamed into
//! `DIR`; a failure leaves `DIR` as it was.

use std::fs;
use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};

use serde::Deserialize;

use crate::platform::Platform;
use crate::registry::{Reference, RegistryClient, RegistryError};

#[derive(Debug, thiserror::Error)]
pub enum PullModelError {
    #[error(transparent)]
    Registry(#[from] Box<RegistryError>),
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("{reference}: {message}")]
    Unsupported { reference: String, message: String },
    #[error("layer {digest}: refusing {path:?}: {reason}")]
    Unsafe {
        digest: String,
        path: String,
        reason: String,
    },
    #[error(
        "{}: already holds {name:?}; pull into an empty or new folder",
        dir.display()
    )]
    Exists { dir: PathBuf, name: String },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> PullModelError + '_ {
    move |source| PullModelError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl From<RegistryError> for PullModelError {
    fn from(e: RegistryError) -> Self {
        PullModelError::Registry(Box::new(e))
    }
}

/// What was pulled.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PullModelReport {
    /// `modelpack` or `image`.
    pub kind: &'static str,
    /// The manifest the files came from.
    pub manifest_digest: String,
    pub layers: Vec<String>,
    /// Regular files written, relative to the folder, with their sizes.
    pub files: Vec<(String, u64)>,
}

#[derive(Deserialize)]
struct Desc {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    digest: String,
    size: u64,
    #[serde(default)]
    annotations: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    platform: Option<DescPlatform>,
}

#[derive(Deserialize)]
struct DescPlatform {
    os: String,
    architecture: String,
    #[serde(default)]
    variant: Option<String>,
}

impl DescPlatform {
    fn platform(&self) -> Platform {
        Platform {
            os: self.os.clone(),
            architecture: self.architecture.clone(),
            variant: self.variant.clone(),
        }
    }
}

#[derive(Deserialize)]
struct Doc {
    #[serde(rename = "artifactType", default)]
    artifact_type: Option<String>,
    #[serde(default)]
    config: Option<Desc>,
    #[serde(default)]
    layers: Vec<Desc>,
    #[serde(default)]
    manifests: Vec<Desc>,
}

enum Packing {
    Tar(Compression),
    /// One file, as is, at its `org.cncf.model.filepath`.
    Raw,
}

#[derive(Clone, Copy)]
enum Compression {
    None,
    Gzip,
    Zstd,
}

fn packing(media_type: &str) -> Option<Packing> {
    let known = media_type.starts_with("application/vnd.cncf.model.")
        || media_type.starts_with("application/vnd.oci.image.layer.v1.")
        || media_type.starts_with("application/vnd.docker.image.rootfs.diff.");
    if !known {
        return None;
    }
    if media_type.ends_with(".raw") {
        Some(Packing::Raw)
    } else if media_type.ends_with("+gzip") || media_type.ends_with(".tar.gzip") {
        Some(Packing::Tar(Compression::Gzip))
    } else if media_type.ends_with("+zstd") || media_type.ends_with(".tar.zstd") {
        Some(Packing::Tar(Compression::Zstd))
    } else if media_type.ends_with(".tar") {
        Some(Packing::Tar(Compression::None))
    } else {
        None
    }
}

/// The platform of this machine, as OCI names it.
pub fn host_platform() -> Platform {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "arm",
        "powerpc64" => "ppc64le",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        other => other,
    };
    Platform {
        os: "linux".into(),
        architecture: arch.into(),
        variant: None,
    }
}

/// Pulls `reference` (a ModelPack artifact, or an image: for an index, the `platform` entry)
/// and writes its files under `dir`. `dir` may exist; none of the pulled top-level names may.
pub fn pull_model(
    client: &RegistryClient,
    reference: &Reference,
    dir: &Path,
    platform: &Platform,
) -> Result<PullModelReport, PullModelError> {
    let unsupported = |message: String| PullModelError::Unsupported {
        reference: reference.to_string(),
        message,
    };
    let mut raw = client.fetch_manifest(reference)?;
    let parse = |bytes: &[u8]| -> Result<Doc, PullModelError> {
        serde_json::from_slice(bytes).map_err(|e| unsupported(format!("not a manifest: {e}")))
    };
    let mut doc = parse(&raw.bytes)?;
    if raw.is_index() || !doc.manifests.is_empty() {
        let entry = doc
            .manifests
            .iter()
            .find(|m| {
                m.platform
                    .as_ref()
                    .map(DescPlatform::platform)
                    .is_some_and(|p| p.matches(platform) || platform.matches(&p))
            })
            .or_else(|| doc.manifests.first())
            .ok_or_else(|| unsupported("an empty index".into()))?;
        let child = Reference {
            digest: Some(entry.digest.clone()),
            tag: None,
            ..reference.clone()
        };
        raw = client.fetch_manifest(&child)?;
        doc = parse(&raw.bytes)?;
    }
    let kind = if doc.artifact_type.as_deref() == Some(crate::image::model::MODEL_ARTIFACT_TYPE)
        || doc
            .config
            .as_ref()
            .is_some_and(|c| c.media_type == crate::image::model::MODEL_CONFIG_MEDIA_TYPE)
    {
        "modelpack"
    } else {
        "image"
    };
    let mut plan = Vec::new();
    for l in &doc.layers {
        let p = packing(&l.media_type).ok_or_else(|| {
            unsupported(format!(
                "layer {} has media type {:?}, which is no file layer",
                l.digest, l.media_type
            ))
        })?;
        plan.push(p);
    }

    fs::create_dir_all(dir).map_err(io_err(dir))?;
    let staging = tempfile::Builder::new()
        .prefix(".mlimg-pull-")
        .tempdir_in(dir)
        .map_err(io_err(dir))?;
    let blobs = staging.path().join("blobs");
    let root = staging.path().join("root");
    fs::create_dir(&blobs).map_err(io_err(&blobs))?;
    fs::create_dir(&root).map_err(io_err(&root))?;

    for (l, p) in doc.layers.iter().zip(&plan) {
        let hex = l.digest.rsplit(':').next().unwrap_or(&l.digest);
        let blob = blobs.join(hex);
        // verified: size and sha256, or the download fails
        client.blob_to_file(reference, &l.digest, l.size, &blob)?;
        match p {
            Packing::Raw => {
                let path = l
                    .annotations
                    .get(crate::image::model::ANNOTATION_FILEPATH)
                    .ok_or_else(|| PullModelError::Unsafe {
                        digest: l.digest.clone(),
                        path: String::new(),
                        reason: "a raw layer without org.cncf.model.filepath".into(),
                    })?;
                let rel = safe_relative(path).map_err(|reason| PullModelError::Unsafe {
                    digest: l.digest.clone(),
                    path: path.clone(),
                    reason,
                })?;
                let dest = root.join(&rel);
                prepare_parent(&root, &rel, &l.digest, path)?;
                let _ = fs::remove_file(&dest);
                fs::rename(&blob, &dest).map_err(io_err(&dest))?;
            }
            Packing::Tar(c) => {
                let f = fs::File::open(&blob).map_err(io_err(&blob))?;
                let f = io::BufReader::with_capacity(1 << 20, f);
                let r: Box<dyn Read> = match c {
                    Compression::None => Box::new(f),
                    Compression::Gzip => Box::new(flate2::read::GzDecoder::new(f)),
                    Compression::Zstd => {
                        Box::new(zstd::stream::read::Decoder::new(f).map_err(io_err(&blob))?)
                    }
                };
                unpack(r, &root, &l.digest)?;
                let _ = fs::remove_file(&blob);
            }
        }
    }

    // everything is verified and unpacked: move it in
    let mut names = Vec::new();
    for e in fs::read_dir(&root).map_err(io_err(&root))? {
        let e = e.map_err(io_err(&root))?;
        let name = e.file_name();
        if fs::symlink_metadata(dir.join(&name)).is_ok() {
            return Err(PullModelError::Exists {
                dir: dir.to_path_buf(),
                name: name.to_string_lossy().into_owned(),
            });
        }
        names.push(name);
    }
    let mut files = Vec::new();
    list_files(&root, &root, &mut files)?;
    for name in names {
        let to = dir.join(&name);
        fs::rename(root.join(&name), &to).map_err(io_err(&to))?;
    }
    files.sort();
    Ok(PullModelReport {
        kind,
        manifest_digest: raw.digest,
        layers: doc.layers.iter().map(|l| l.digest.clone()).collect(),
        files,
    })
}

/// A tar or annotation path as a relative path with normal components only.
fn safe_relative(p: &str) -> Result<PathBuf, String> {
    let path = Path::new(p);
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => {
                return Err("an absolute path".into());
            }
            Component::ParentDir => return Err("a \"..\" component".into()),
        }
    }
    if out.as_os_str().is_empty() {
        return Err("an empty path".into());
    }
    Ok(out)
}

/// Creates the parents of `rel` under `root`, refusing to go through a symlink.
fn prepare_parent(
    root: &Path,
    rel: &Path,
    digest: &str,
    shown: &str,
) -> Result<(), PullModelError> {
    let mut cur = root.to_path_buf();
    let parents: Vec<_> = rel.components().collect();
    for c in &parents[..parents.len().saturating_sub(1)] {
        cur.push(c);
        match fs::symlink_metadata(&cur) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(PullModelError::Unsafe {
                    digest: digest.into(),
                    path: shown.into(),
                    reason: "a parent folder is a symlink".into(),
                });
            }
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(PullModelError::Unsafe {
                    digest: digest.into(),
                    path: shown.into(),
                    reason: "a parent is a file".into(),
                });
            }
            Err(_) => fs::create_dir(&cur).map_err(io_err(&cur))?,
        }
    }
    // the entry itself must not be a symlink that a write would follow
    let full = root.join(rel);
    if fs::symlink_metadata(&full).is_ok_and(|m| m.file_type().is_symlink()) {
        fs::remove_file(&full).map_err(io_err(&full))?;
    }
    Ok(())
}

/// Whether a symlink at `rel` pointing to `target` stays inside the root (lexically: the
/// target is relative and never climbs above the root).
fn link_stays_inside(rel: &Path, target: &Path) -> bool {
    if target.is_absolute() {
        return false;
    }
    let mut depth: i64 = rel.components().count() as i64 - 1;
    for c in target.components() {
        match c {
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::ParentDir => {
                depth -= 1;
                if depth < 0 {
                    return false;
                }
            }
            Component::RootDir | Component::Prefix(_) => return false,
        }
    }
    true
}

fn unpack(r: impl Read, root: &Path, digest: &str) -> Result<(), PullModelError> {
    use std::os::unix::fs::PermissionsExt as _;
    let unsafe_entry = |path: &str, reason: &str| PullModelError::Unsafe {
        digest: digest.into(),
        path: path.into(),
        reason: reason.into(),
    };
    let mut ar = tar::Archive::new(r);
    let entries = ar.entries().map_err(io_err(root))?;
    for e in entries {
        let mut e = e.map_err(io_err(root))?;
        let shown = String::from_utf8_lossy(&e.path_bytes()).into_owned();
        let rel = match safe_relative(&shown) {
            Ok(r) => r,
            // `./` itself
            Err(_) if shown.trim_matches(['.', '/']).is_empty() && !shown.contains("..") => {
                continue;
            }
            Err(reason) => return Err(unsafe_entry(&shown, &reason)),
        };
        if rel
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with(".wh."))
        {
            return Err(unsafe_entry(
                &shown,
                "a whiteout (layers that delete files)",
            ));
        }
        prepare_parent(root, &rel, digest, &shown)?;
        let dest = root.join(&rel);
        let mode = e.header().mode().unwrap_or(0o644) & 0o777;
        match e.header().entry_type() {
            tar::EntryType::Directory => {
                match fs::symlink_metadata(&dest) {
                    Ok(m) if m.is_dir() => {}
                    Ok(_) => return Err(unsafe_entry(&shown, "a folder over a file")),
                    Err(_) => fs::create_dir(&dest).map_err(io_err(&dest))?,
                }
                fs::set_permissions(&dest, fs::Permissions::from_mode(mode | 0o700))
                    .map_err(io_err(&dest))?;
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                if fs::symlink_metadata(&dest).is_ok_and(|m| m.is_dir()) {
                    return Err(unsafe_entry(&shown, "a file over a folder"));
                }
                let _ = fs::remove_file(&dest);
                let mut f = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&dest)
                    .map_err(io_err(&dest))?;
                io::copy(&mut e, &mut f).map_err(io_err(&dest))?;
                f.set_permissions(fs::Permissions::from_mode(mode))
                    .map_err(io_err(&dest))?;
            }
            tar::EntryType::Symlink => {
                let target = e
                    .link_name()
                    .map_err(io_err(&dest))?
                    .ok_or_else(|| unsafe_entry(&shown, "a symlink without target"))?
                    .into_owned();
                if !link_stays_inside(&rel, &target) {
                    return Err(unsafe_entry(
                        &shown,
                        "a symlink pointing outside the folder",
                    ));
                }
                let _ = fs::remove_file(&dest);
                std::os::unix::fs::symlink(&target, &dest).map_err(io_err(&dest))?;
            }
            other => {
                return Err(unsafe_entry(
                    &shown,
                    &format!("unsupported tar entry type {other:?}"),
                ));
            }
        }
    }
    Ok(())
}

fn list_files(root: &Path, dir: &Path, out: &mut Vec<(String, u64)>) -> Result<(), PullModelError> {
    for e in fs::read_dir(dir).map_err(io_err(dir))? {
        let e = e.map_err(io_err(dir))?;
        let m = fs::symlink_metadata(e.path()).map_err(io_err(&e.path()))?;
        if m.is_dir() {
            list_files(root, &e.path(), out)?;
        } else if m.is_file() {
            let rel = e
                .path()
                .strip_prefix(root)
                .unwrap_or(&e.path())
                .to_path_buf();
            out.push((rel.to_string_lossy().into_owned(), m.len()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    type TarEntry<'a> = (&'a str, tar::EntryType, &'a [u8], Option<&'a str>);

    fn tar_of(entries: &[TarEntry]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, kind, data, link) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_mode(0o644);
            h.set_size(data.len() as u64);
            // write the name raw: the tar crate refuses `..` in set_path
            let name = &mut h.as_old_mut().name;
            name[..path.len()].copy_from_slice(path.as_bytes());
            if let Some(l) = link {
                h.set_link_name(l).unwrap();
            }
            h.set_cksum();
            b.append(&h, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn unpack_refuses_escapes() {
        use tar::EntryType::*;
        let cases: &[(&[TarEntry], bool)] = &[
            (
                &[
                    ("models/", Directory, b"", None),
                    ("models/a", Regular, b"x", None),
                ],
                true,
            ),
            (&[("../evil", Regular, b"x", None)], false),
            (&[("/etc/evil", Regular, b"x", None)], false),
            (&[("a/../../evil", Regular, b"x", None)], false),
            (&[("l", Symlink, b"", Some("/etc"))], false),
            (&[("l", Symlink, b"", Some("../.."))], false),
            (&[("d/l", Symlink, b"", Some("../x"))], true),
            (
                &[
                    ("d/", Directory, b"", None),
                    ("d/l", Symlink, b"", Some("..")),
                    ("d/l/x", Regular, b"x", None),
                ],
                false,
            ),
            (&[("h", Link, b"", Some("x"))], false),
            (&[("d/.wh.x", Regular, b"", None)], false),
        ];
        for (i, (entries, ok)) in cases.iter().enumerate() {
            let dir = tempfile::tempdir().unwrap();
            let r = unpack(&tar_of(entries)[..], dir.path(), "sha256:00");
            assert_eq!(r.is_ok(), *ok, "case {i}: {r:?}");
        }
    }

    #[test]
    fn relative_paths() {
        assert_eq!(safe_relative("./a/b").unwrap(), PathBuf::from("a/b"));
        assert!(safe_relative("a/../b").is_err());
        assert!(safe_relative("/a").is_err());
        assert!(safe_relative("").is_err());
        assert!(link_stays_inside(Path::new("a/b/l"), Path::new("../c")));
        assert!(!link_stays_inside(Path::new("l"), Path::new("../c")));
    }
}
