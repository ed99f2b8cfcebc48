//! `--output oci:DIR`: an OCI image layout folder.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use serde_json::json;

use super::{BlobStore, BuiltImage, OutputError, SinkReport, io_err, temp_beside};
use crate::image::{INDEX_MEDIA_TYPE, canonical};

pub struct OciLayout {
    pub dir: PathBuf,
}

impl fmt::Display for OciLayout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "oci:{}", self.dir.display())
    }
}

/// `index.json` of a layout holding this image, the first tag as `ref.name`.
pub(crate) fn layout_index(image: &BuiltImage) -> Vec<u8> {
    let top = image.top();
    let mut desc = json!({"mediaType": top.media_type, "digest": top.digest, "size": top.size});
    if let Some(t) = image.tags.first() {
        desc["annotations"] = json!({"org.opencontainers.image.ref.name": t});
    }
    canonical(&json!({"schemaVersion": 2, "mediaType": INDEX_MEDIA_TYPE, "manifests": [desc]}))
}

pub(crate) const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

impl super::Sink for OciLayout {
    fn write(&self, image: &BuiltImage, blobs: &BlobStore) -> Result<SinkReport, OutputError> {
        let tmp = temp_beside(&self.dir, "dir");
        let _ = fs::remove_dir_all(&tmp);
        let result = write_into(&tmp, image, blobs).and_then(|()| replace_dir(&tmp, &self.dir));
        if result.is_err() {
            let _ = fs::remove_dir_all(&tmp);
        }
        result?;
        Ok(SinkReport {
            target: self.to_string(),
            reference: None,
        })
    }
}

fn write_into(dir: &Path, image: &BuiltImage, blobs: &BlobStore) -> Result<(), OutputError> {
    let bdir = dir.join("blobs/sha256");
    fs::create_dir_all(&bdir).map_err(io_err(&bdir))?;
    for b in image.all_blobs() {
        let dest = bdir.join(b.digest.trim_start_matches("sha256:"));
        match blobs.path(&b.digest) {
            // A hard link shares the cache's bytes; copy across filesystems.
            Some(src) => {
                if fs::hard_link(&src, &dest).is_err() {
                    fs::copy(&src, &dest).map_err(io_err(&dest))?;
                }
            }
            // An unstored layer: regenerated from its sources straight into the layout.
            None => {
                let mut r = blobs.reader(&b.digest)?;
                let f = fs::File::create(&dest).map_err(io_err(&dest))?;
                let mut w = std::io::BufWriter::with_capacity(1 << 20, f);
                std::io::copy(&mut r, &mut w).map_err(io_err(&dest))?;
                std::io::Write::flush(&mut w).map_err(io_err(&dest))?;
            }
        }
    }
    let p = dir.join("oci-layout");
    fs::write(&p, OCI_LAYOUT).map_err(io_err(&p))?;
    let p = dir.join("index.json");
    fs::write(&p, layout_index(image)).map_err(io_err(&p))?;
    Ok(())
}

/// Puts `tmp` where `dest` is, replacing an earlier output.
fn replace_dir(tmp: &Path, dest: &Path) -> Result<(), OutputError> {
    if dest.exists() {
        let old = temp_beside(dest, "old");
        let _ = fs::remove_dir_all(&old);
        fs::rename(dest, &old).map_err(io_err(dest))?;
        fs::rename(tmp, dest).map_err(io_err(dest))?;
        let _ = fs::remove_dir_all(&old);
    } else {
        if let Some(parent) = dest.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::create_dir_all(parent).map_err(io_err(parent))?;
        }
        fs::rename(tmp, dest).map_err(io_err(dest))?;
    }
    Ok(())
}
