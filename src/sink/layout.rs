//! `--output oci:DIR`: an OCI image layout folder.
//!
//! The layout is assembled in a staging folder beside `DIR` and renamed over it at the end.
//! Blobs come, in this order of preference, from:
//! 1. the staging folder itself — layers the build wrote there directly ([`Sink::spool`]);
//! 2. the layout already at `DIR` (an earlier build) — taken over by a hard link into the
//!    staging folder, after checking its size and its sha256 (or, when the blob's `stat`
//!    matches what this sink recorded when it wrote it, its size and identity alone), so an
//!    unchanged rebuild reads no weight bytes. Only a file with no other link is taken over,
//!    and the old folder is removed once the new one is in place, so no file is ever shared
//!    with anything but its own successor;
//! 3. the blob's source (cache file, base layout, regenerated layer), copied and verified —
//!    never linked: an output and the build cache share no inode, so editing one cannot
//!    change the other.
//!
//! Every blob, `index.json` and `oci-layout` is left with mode 0644, whatever the umask.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use serde_json::json;

use super::{Sink, SinkError, SinkReport, copy_blob, io_err, temp_beside};
use crate::image::{Blob, ImageSet, canonical};
use crate::progress::Progress;

pub struct OciLayout {
    pub dir: PathBuf,
    staging: PathBuf,
    /// Where the `stat` of the blobs written last time is kept (in the build cache).
    record: Option<PathBuf>,
}

impl OciLayout {
    /// `state` is a folder for this sink's notes (the build cache's `outputs/`).
    pub fn new(dir: PathBuf, state: Option<&Path>) -> OciLayout {
        use sha2::Digest as _;
        let staging = temp_beside(&dir, "dir");
        let abs = std::path::absolute(&dir).unwrap_or_else(|_| dir.clone());
        let key = hex::encode(sha2::Sha256::digest(abs.as_os_str().as_encoded_bytes()));
        let record = state.map(|s| s.join(format!("{key}.json")));
        OciLayout {
            dir,
            staging,
            record,
        }
    }

    fn blobs_dir(&self) -> PathBuf {
        self.staging.join("blobs/sha256")
    }
}

impl Drop for OciLayout {
    /// A build that failed after spooling leaves nothing behind.
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.staging);
    }
}

impl fmt::Display for OciLayout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "oci:{}", self.dir.display())
    }
}

/// `index.json` of a layout holding this image, the first tag as `ref.name`; then `[model]`'s
/// artifacts, then the referrers (SBOM, provenance) of the platform images.
pub(crate) fn layout_index(image: &ImageSet) -> Vec<u8> {
    let top = &image.top().descriptor;
    let mut desc = json!({"mediaType": top.media_type, "digest": top.digest, "size": top.size});
    if let Some(t) = image.tags.first() {
        desc["annotations"] = json!({"org.opencontainers.image.ref.name": t});
    }
    let mut manifests = vec![desc];
    // `[model]`'s artifacts, named `NAME:TAG` (their first tag)
    for a in &image.artifacts {
        let top = &a.top().descriptor;
        let mut d = json!({"mediaType": top.media_type, "digest": top.digest, "size": top.size});
        if let Some(t) = &a.artifact_type {
            d["artifactType"] = json!(t);
        }
        let tag = a.tags.first().map_or("latest", String::as_str);
        d["annotations"] =
            json!({"org.opencontainers.image.ref.name": format!("{}:{tag}", a.name)});
        manifests.push(d);
    }
    // SBOM and provenance: artifact manifests whose `subject` is a platform image, listed with
    // their `artifactType` and no ref name (tools that pick an image by name never see them)
    for r in &image.referrers {
        manifests.push(r.index_entry());
    }
    canonical(&json!({
        "schemaVersion": 2,
        "mediaType": crate::image::INDEX_MEDIA_TYPE,
        "manifests": manifests,
    }))
}

pub(crate) const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

/// `hex → "size dev ino mtime_ns ctime_ns"` of blobs as this sink left them.
type Record = BTreeMap<String, String>;

fn stat_line(m: &fs::Metadata) -> String {
    format!(
        "{} {} {} {}.{} {}.{}",
        m.len(),
        m.dev(),
        m.ino(),
        m.mtime(),
        m.mtime_nsec(),
        m.ctime(),
        m.ctime_nsec()
    )
}

impl Sink for OciLayout {
    fn check(&self) -> Result<(), SinkError> {
        super::check_parents(&self.dir)?;
        check_replaceable(&self.dir)
    }

    fn spool(&self) -> Option<PathBuf> {
        // A folder `write` will refuse gets no layer written beside it first (the refusal
        // comes from `write`, after the layers are hashed).
        check_replaceable(&self.dir).ok()?;
        let d = self.blobs_dir();
        fs::create_dir_all(&d).ok()?;
        Some(d)
    }

    fn write(&self, image: &ImageSet, _progress: &dyn Progress) -> Result<SinkReport, SinkError> {
        check_replaceable(&self.dir)?;
        let bdir = self.blobs_dir();
        fs::create_dir_all(&bdir).map_err(io_err(&bdir))?;
        let record: Record = self
            .record
            .as_ref()
            .and_then(|p| fs::read(p).ok())
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let mut blobs = image.blobs();
        blobs.extend(image.documents().into_iter().map(|d| d.blob()));
        blobs.extend(image.artifact_files());
        blobs.extend(image.referrer_files());
        for b in &blobs {
            self.put_blob(b, &record)?;
        }
        let p = self.staging.join("oci-layout");
        fs::write(&p, OCI_LAYOUT).map_err(io_err(&p))?;
        set_mode(&p)?;
        let p = self.staging.join("index.json");
        fs::write(&p, layout_index(image)).map_err(io_err(&p))?;
        set_mode(&p)?;
        replace_dir(&self.staging, &self.dir)?;
        // Remember how each blob looks now, so the next build can take it over unread.
        let mut now = Record::new();
        for b in &blobs {
            let hex = b.descriptor.digest.hex().to_string();
            if let Ok(m) = fs::symlink_metadata(self.dir.join("blobs/sha256").join(&hex)) {
                now.insert(hex, stat_line(&m));
            }
        }
        if let Some(p) = &self.record
            && let Some(parent) = p.parent()
            && fs::create_dir_all(parent).is_ok()
        {
            let _ = fs::write(p, canonical(&json!(now)));
        }
        Ok(SinkReport {
            target: self.to_string(),
            reference: None,
            push: None,
        })
    }
}

impl OciLayout {
    fn put_blob(&self, b: &Blob, record: &Record) -> Result<(), SinkError> {
        let hex = b.descriptor.digest.hex();
        let dest = self.blobs_dir().join(hex);
        // 1. spooled by this build
        if fs::symlink_metadata(&dest).is_ok_and(|m| m.is_file() && m.len() == b.descriptor.size) {
            return set_mode(&dest);
        }
        // 2. the earlier layout at the same path (a file of its own only: one with another
        //    link may be someone's cache file, and is copied instead)
        let old = self.dir.join("blobs/sha256").join(hex);
        if let Ok(m) = fs::symlink_metadata(&old)
            && m.is_file()
            && m.nlink() == 1
            && m.len() == b.descriptor.size
            && (record.get(hex) == Some(&stat_line(&m)) || hashes_to(&old, &b.descriptor.digest))
            && fs::hard_link(&old, &dest).is_ok()
        {
            return set_mode(&dest);
        }
        // 3. the blob's source
        let f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&dest)
            .map_err(io_err(&dest))?;
        let mut w = std::io::BufWriter::with_capacity(1 << 20, f);
        copy_blob(&self.to_string(), b, &mut w)?;
        w.flush().map_err(io_err(&dest))?;
        set_mode(&dest)
    }
}

/// Mode 0644 (spooled blobs are created 0600, copies with the umask's mode).
fn set_mode(path: &Path) -> Result<(), SinkError> {
    use std::os::unix::fs::PermissionsExt as _;
    let m = fs::symlink_metadata(path).map_err(io_err(path))?;
    if m.permissions().mode() & 0o7777 != 0o644 {
        fs::set_permissions(path, fs::Permissions::from_mode(0o644)).map_err(io_err(path))?;
    }
    Ok(())
}

/// Whether the file's sha256 is `digest` (reads it once).
fn hashes_to(path: &Path, digest: &crate::digest::Digest) -> bool {
    crate::layer::sha256_file(path).is_ok_and(|(d, _)| d == digest.as_str())
}

/// An existing, non-empty folder that is not an OCI layout is someone's data: never replace it.
fn check_replaceable(dir: &Path) -> Result<(), SinkError> {
    let Ok(mut entries) = fs::read_dir(dir) else {
        return Ok(());
    };
    if entries.next().is_some() && !dir.join("oci-layout").is_file() {
        return Err(SinkError::NotALayout {
            path: dir.to_path_buf(),
        });
    }
    Ok(())
}

/// Puts `tmp` where `dest` is, replacing an earlier output.
fn replace_dir(tmp: &Path, dest: &Path) -> Result<(), SinkError> {
    if dest.exists() {
        let old = temp_beside(dest, "old");
        fs::rename(dest, &old).map_err(io_err(dest))?;
        if let Err(e) = fs::rename(tmp, dest) {
            let _ = fs::rename(&old, dest);
            return Err(io_err(dest)(e));
        }
        let _ = fs::remove_dir_all(&old);
    } else {
        if let Some(parent) = dest.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::create_dir_all(parent).map_err(io_err(parent))?;
        }
        fs::rename(tmp, dest).map_err(io_err(dest))?;
    }
    Ok(())
}
