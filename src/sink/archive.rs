//! Tarball outputs: `oci-archive:FILE` (an OCI layout in a tar) and `docker-archive:FILE`
//! (what `docker load` takes). Both are reproducible tars written to a temp file and renamed.

use std::fmt;
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde_json::json;

use super::layout::{OCI_LAYOUT, layout_index};
use super::{Sink, SinkError, SinkReport, copy_blob, io_err, temp_beside};
use crate::image::{Blob, ImageSet, canonical};
use crate::progress::Progress;

pub struct OciArchive {
    pub file: PathBuf,
}

pub struct DockerArchive {
    pub file: PathBuf,
}

impl OciArchive {
    pub fn new(file: PathBuf) -> Self {
        OciArchive { file }
    }
}

impl DockerArchive {
    pub fn new(file: PathBuf) -> Self {
        DockerArchive { file }
    }
}

impl fmt::Display for OciArchive {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "oci-archive:{}", self.file.display())
    }
}

impl fmt::Display for DockerArchive {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "docker-archive:{}", self.file.display())
    }
}

type Tar = tar::Builder<BufWriter<File>>;

fn header(size: u64, dir: bool) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(if dir {
        tar::EntryType::Directory
    } else {
        tar::EntryType::Regular
    });
    h.set_mode(if dir { 0o755 } else { 0o644 });
    h.set_size(size);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h
}

fn add_bytes(tar: &mut Tar, name: &str, bytes: &[u8], out: &Path) -> Result<(), SinkError> {
    tar.append_data(&mut header(bytes.len() as u64, false), name, bytes)
        .map_err(io_err(out))
}

fn add_dir(tar: &mut Tar, name: &str, out: &Path) -> Result<(), SinkError> {
    tar.append_data(&mut header(0, true), name, std::io::empty())
        .map_err(io_err(out))
}

/// Appends a blob: the header with its size, then its bytes, checked against its digest.
fn add_blob(tar: &mut Tar, target: &str, blob: &Blob, out: &Path) -> Result<(), SinkError> {
    let name = blob_name(&blob.descriptor.digest);
    let mut h = header(blob.descriptor.size, false);
    h.set_path(&name).map_err(io_err(out))?;
    h.set_cksum();
    tar.get_mut().write_all(h.as_bytes()).map_err(io_err(out))?;
    copy_blob(target, blob, tar.get_mut())?;
    let pad = (512 - blob.descriptor.size % 512) % 512;
    tar.get_mut()
        .write_all(&vec![0u8; pad as usize])
        .map_err(io_err(out))
}

/// Writes a tar atomically: `fill` adds entries, then the temp file is renamed to `file`.
fn write_tar(
    file: &Path,
    fill: impl FnOnce(&mut Tar) -> Result<(), SinkError>,
) -> Result<(), SinkError> {
    if let Some(parent) = file.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).map_err(io_err(parent))?;
    }
    let tmp = temp_beside(file, "tar");
    let result = (|| {
        let f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(io_err(&tmp))?;
        let mut tar = tar::Builder::new(BufWriter::with_capacity(1 << 20, f));
        fill(&mut tar)?;
        let mut w = tar.into_inner().map_err(io_err(&tmp))?;
        w.flush().map_err(io_err(&tmp))?;
        let f = w.into_inner().map_err(|e| SinkError::Io {
            path: tmp.clone(),
            source: e.into_error(),
        })?;
        f.sync_all().map_err(io_err(&tmp))?;
        fs::rename(&tmp, file).map_err(io_err(file))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

fn blob_name(digest: &str) -> String {
    format!("blobs/sha256/{}", digest.trim_start_matches("sha256:"))
}

impl Sink for OciArchive {
    fn check(&self) -> Result<(), SinkError> {
        super::check_parents(&self.file)
    }

    fn write(&self, image: &ImageSet, _progress: &dyn Progress) -> Result<SinkReport, SinkError> {
        let out = self.file.clone();
        let target = self.to_string();
        write_tar(&self.file, |tar| {
            add_dir(tar, "blobs/", &out)?;
            add_dir(tar, "blobs/sha256/", &out)?;
            let mut all = image.blobs();
            all.extend(image.documents().into_iter().map(|d| d.blob()));
            all.extend(image.artifact_files());
            all.extend(image.referrer_files());
            all.sort_by(|a, b| a.descriptor.digest.cmp(&b.descriptor.digest));
            all.dedup_by(|a, b| a.descriptor.digest == b.descriptor.digest);
            for b in &all {
                add_blob(tar, &target, b, &out)?;
            }
            add_bytes(tar, "index.json", &layout_index(image), &out)?;
            add_bytes(tar, "oci-layout", OCI_LAYOUT, &out)
        })?;
        Ok(SinkReport {
            target: self.to_string(),
            reference: None,
            push: None,
        })
    }
}

impl Sink for DockerArchive {
    fn check(&self) -> Result<(), SinkError> {
        super::check_parents(&self.file)
    }

    fn write(&self, image: &ImageSet, _progress: &dyn Progress) -> Result<SinkReport, SinkError> {
        if image.images.len() != 1 {
            return Err(SinkError::ManyPlatforms(image.images.len()));
        }
        let img = &image.images[0];
        let repo_tags: Vec<String> = match &image.name {
            Some(n) => image.tags.iter().map(|t| format!("{n}:{t}")).collect(),
            None => Vec::new(),
        };
        let mut entries = vec![json!({
            "Config": blob_name(&img.config.descriptor.digest),
            "RepoTags": repo_tags,
            "Layers": img
                .layers
                .iter()
                .map(|l| blob_name(&l.descriptor.digest))
                .collect::<Vec<_>>(),
        })];
        // `[model]`'s weights-only image loads beside it (a ModelPack artifact is no image
        // docker can load: it goes to OCI outputs and registries only).
        let weights_images: Vec<_> = image
            .artifacts
            .iter()
            .filter(|a| a.kind == crate::image::ArtifactKind::WeightsImage)
            .filter_map(|a| Some((a, a.configs.first()?)))
            .collect();
        for (a, cfg) in &weights_images {
            entries.push(json!({
                "Config": blob_name(&cfg.descriptor.digest),
                "RepoTags": a.tags.iter().map(|t| format!("{}:{t}", a.name)).collect::<Vec<_>>(),
                "Layers": a
                    .layers
                    .iter()
                    .map(|l| blob_name(&l.descriptor.digest))
                    .collect::<Vec<_>>(),
            }));
        }
        let manifest = canonical(&json!(entries));
        let out = self.file.clone();
        let target = self.to_string();
        write_tar(&self.file, |tar| {
            add_dir(tar, "blobs/", &out)?;
            add_dir(tar, "blobs/sha256/", &out)?;
            let mut all: Vec<Blob> = img
                .layers
                .iter()
                .map(|l| Blob {
                    descriptor: l.descriptor.clone(),
                    source: l.source.clone(),
                })
                .collect();
            all.push(img.config.blob());
            // its layers are the image's weights layers, already here
            for (_, cfg) in &weights_images {
                all.push(cfg.blob());
            }
            all.sort_by(|a, b| a.descriptor.digest.cmp(&b.descriptor.digest));
            all.dedup_by(|a, b| a.descriptor.digest == b.descriptor.digest);
            for b in &all {
                add_blob(tar, &target, b, &out)?;
            }
            add_bytes(tar, "manifest.json", &manifest, &out)
        })?;
        Ok(SinkReport {
            target: self.to_string(),
            reference: None,
            push: None,
        })
    }
}
