//! Image fixtures written by hand (tar.gz layers, config, manifest) — no mlimg code involved,
//! so push/pull tests do not depend on the image builder.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use mlimg::registry::{BlobOrigin, PushBlob, PushManifest, PushRequest, Reference};
use sha2::{Digest, Sha256};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

pub fn sha256_file(p: &Path) -> String {
    let mut f = std::fs::File::open(p).unwrap();
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    format!("sha256:{}", hex::encode(h.finalize()))
}

/// Deterministic pseudo-random bytes.
pub struct Noise(u64);
impl Read for Noise {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        for chunk in buf.chunks_mut(8) {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            let b = self.0.to_le_bytes();
            chunk.copy_from_slice(&b[..chunk.len()]);
        }
        Ok(buf.len())
    }
}

/// A file of `size` pseudo-random bytes, streamed (no big buffers). Returns (digest, size).
pub fn noise_file(path: &Path, seed: u64, size: u64) -> (String, u64) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut src = Noise(seed | 1).take(size);
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = src.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        f.write_all(&buf[..n]).unwrap();
    }
    f.flush().unwrap();
    (format!("sha256:{}", hex::encode(h.finalize())), size)
}

#[derive(Debug, Clone)]
pub struct Layer {
    pub path: PathBuf,
    pub digest: String,
    pub diff_id: String,
    pub size: u64,
    pub media_type: String,
}

/// A gzipped tar with one file `data/<name>` of `size` noise bytes.
pub fn tar_gz_layer(dir: &Path, name: &str, seed: u64, size: u64, media_type: &str) -> Layer {
    let tar_path = dir.join(format!("{name}.tar"));
    {
        let f = std::fs::File::create(&tar_path).unwrap();
        let mut b = tar::Builder::new(f);
        let mut h = tar::Header::new_gnu();
        h.set_size(size);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_cksum();
        b.append_data(&mut h, format!("data/{name}"), Noise(seed | 1).take(size))
            .unwrap();
        b.finish().unwrap();
    }
    let diff_id = sha256_file(&tar_path);
    let gz_path = dir.join(format!("{name}.tar.gz"));
    {
        let mut enc = flate2::write::GzEncoder::new(
            std::fs::File::create(&gz_path).unwrap(),
            flate2::Compression::fast(),
        );
        std::io::copy(&mut std::fs::File::open(&tar_path).unwrap(), &mut enc).unwrap();
        enc.finish().unwrap();
    }
    std::fs::remove_file(&tar_path).unwrap();
    Layer {
        digest: sha256_file(&gz_path),
        size: std::fs::metadata(&gz_path).unwrap().len(),
        path: gz_path,
        diff_id,
        media_type: media_type.to_string(),
    }
}

#[derive(Debug, Clone)]
pub struct TestImage {
    pub layers: Vec<Layer>,
    pub config: Vec<u8>,
    pub config_digest: String,
    pub config_path: PathBuf,
    pub manifest: Vec<u8>,
    pub manifest_digest: String,
    pub manifest_media_type: String,
    pub arch: String,
}

/// An image with `layer_sizes` layers (uncompressed file sizes) for linux/`arch`.
/// `docker` = Docker schema2 media types instead of OCI.
pub fn make_image(
    dir: &Path,
    tag: &str,
    arch: &str,
    layer_sizes: &[u64],
    docker: bool,
) -> TestImage {
    let (mt_manifest, mt_config, mt_layer) = if docker {
        (DOCKER_MANIFEST, DOCKER_CONFIG, DOCKER_LAYER_GZIP)
    } else {
        (OCI_MANIFEST, OCI_CONFIG, OCI_LAYER_GZIP)
    };
    let seed_base = tag
        .bytes()
        .fold(7u64, |a, b| a.wrapping_mul(31).wrapping_add(b as u64));
    let layers: Vec<Layer> = layer_sizes
        .iter()
        .enumerate()
        .map(|(i, s)| {
            tar_gz_layer(
                dir,
                &format!("{tag}-{arch}-{i}"),
                seed_base.wrapping_add(i as u64 * 1000),
                *s,
                mt_layer,
            )
        })
        .collect();
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": arch,
        "os": "linux",
        "config": {"Env": ["PATH=/usr/bin"], "Labels": {"test": tag}},
        "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| l.diff_id.clone()).collect::<Vec<_>>()},
    }))
    .unwrap();
    let config_digest = sha256(&config);
    let config_path = dir.join(format!("{tag}-{arch}-config.json"));
    std::fs::write(&config_path, &config).unwrap();
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": mt_manifest,
        "config": {"mediaType": mt_config, "digest": config_digest, "size": config.len()},
        "layers": layers.iter().map(|l| serde_json::json!({
            "mediaType": l.media_type, "digest": l.digest, "size": l.size
        })).collect::<Vec<_>>(),
    }))
    .unwrap();
    TestImage {
        manifest_digest: sha256(&manifest),
        manifest,
        manifest_media_type: mt_manifest.to_string(),
        config_digest,
        config_path,
        config,
        layers,
        arch: arch.to_string(),
    }
}

impl TestImage {
    /// Blobs with `File` origins.
    pub fn blobs(&self) -> Vec<PushBlob> {
        let mut v: Vec<PushBlob> = self
            .layers
            .iter()
            .map(|l| PushBlob {
                digest: l.digest.clone(),
                size: l.size,
                media_type: l.media_type.clone(),
                origin: BlobOrigin::File(l.path.clone()),
            })
            .collect();
        v.push(PushBlob {
            digest: self.config_digest.clone(),
            size: self.config.len() as u64,
            media_type: OCI_CONFIG.to_string(),
            origin: BlobOrigin::File(self.config_path.clone()),
        });
        v
    }

    /// Same blobs, said to live in `repo` (for mounts / registry-to-registry copies).
    pub fn blobs_from(&self, repo: &Reference) -> Vec<PushBlob> {
        self.blobs()
            .into_iter()
            .map(|b| PushBlob {
                origin: BlobOrigin::Registry(repo.clone()),
                ..b
            })
            .collect()
    }

    pub fn push_manifest(&self) -> PushManifest {
        PushManifest {
            digest: self.manifest_digest.clone(),
            media_type: self.manifest_media_type.clone(),
            bytes: self.manifest.clone(),
        }
    }

    pub fn request(&self, target: &Reference, tags: &[&str]) -> PushRequest {
        PushRequest {
            target: target.clone(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            blobs: self.blobs(),
            manifests: vec![self.push_manifest()],
        }
    }
}

/// An OCI index over images (linux/<arch> each).
pub fn make_index(images: &[&TestImage]) -> PushManifest {
    let bytes = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": images.iter().map(|i| serde_json::json!({
            "mediaType": i.manifest_media_type,
            "digest": i.manifest_digest,
            "size": i.manifest.len(),
            "platform": {"os": "linux", "architecture": i.arch},
        })).collect::<Vec<_>>(),
    }))
    .unwrap();
    PushManifest {
        digest: sha256(&bytes),
        media_type: OCI_INDEX.to_string(),
        bytes,
    }
}
