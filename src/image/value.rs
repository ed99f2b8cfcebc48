//! The image as a value: layers that know how to reopen their bytes, images that share them,
//! and the set a build produced. Every sink takes this value; nothing here does I/O except
//! [`BlobSource::open`], which a sink calls when it needs a blob's bytes.

use std::fmt;
use std::io::{self, Read};
use std::path::PathBuf;
use std::sync::Arc;

use crate::digest::Digest;
use crate::platform::Platform;

/// A content descriptor: media type, digest, size.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
}

/// Produces a blob's bytes from the start, each time it is called (an upload retry calls it
/// again); the stream fails at its end when the bytes do not match the digest.
pub type Generator = Arc<dyn Fn() -> io::Result<Box<dyn Read + Send>> + Send + Sync>;

/// How to reopen a blob's bytes.
#[derive(Clone)]
pub enum BlobSource {
    /// A local file holding exactly the blob (the cache, a base layout, an output's blob).
    File(PathBuf),
    /// A repository that has it (a registry base, or a layer found in the push target): a
    /// registry sink mounts or streams it from there; file sinks read `local`, a copy fetched
    /// into the cache, and cannot use it without one.
    Remote {
        registry: String,
        repository: String,
        local: Option<PathBuf>,
    },
    /// Regenerated from the layer's sources (uncompressed layers are not stored).
    Generate(Generator),
    /// Small bytes held in memory (configs, manifests).
    Bytes(Arc<[u8]>),
}

impl fmt::Debug for BlobSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BlobSource::File(p) => f.debug_tuple("File").field(p).finish(),
            BlobSource::Remote {
                registry,
                repository,
                ..
            } => write!(f, "Remote({registry}/{repository})"),
            BlobSource::Generate(_) => f.write_str("Generate"),
            BlobSource::Bytes(b) => write!(f, "Bytes({} bytes)", b.len()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("blob {digest} is only in {registry}/{repository}; a file output needs its bytes")]
pub struct RemoteOnly {
    pub digest: Digest,
    pub registry: String,
    pub repository: String,
}

impl BlobSource {
    /// The bytes, from the start. A remote blob cannot be opened here (see [`RemoteOnly`]).
    pub fn open(&self, d: &Descriptor) -> io::Result<Box<dyn Read + Send>> {
        match self {
            BlobSource::File(p) | BlobSource::Remote { local: Some(p), .. } => {
                let f = std::fs::File::open(p)
                    .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", p.display())))?;
                Ok(Box::new(io::BufReader::with_capacity(1 << 20, f)))
            }
            BlobSource::Generate(g) => g(),
            BlobSource::Bytes(b) => Ok(Box::new(io::Cursor::new(b.clone()))),
            BlobSource::Remote {
                registry,
                repository,
                local: None,
            } => Err(io::Error::other(RemoteOnly {
                digest: d.digest.clone(),
                registry: registry.clone(),
                repository: repository.clone(),
            })),
        }
    }

    pub fn is_remote(&self) -> bool {
        matches!(self, BlobSource::Remote { .. })
    }
}

/// A blob with its source.
#[derive(Debug, Clone)]
pub struct Blob {
    pub descriptor: Descriptor,
    pub source: BlobSource,
}

/// One layer of an image: its blob, the digest of its uncompressed tar, and how it came to
/// be (for the report).
#[derive(Debug, Clone)]
pub struct Layer {
    pub descriptor: Descriptor,
    pub diff_id: Digest,
    pub source: BlobSource,
    /// `base`, `deps NAME`, `weights NAME`, `app`.
    pub role: String,
    /// The history line (`created_by`).
    pub created_by: String,
    /// Found in a cache (not written by this build).
    pub cached: bool,
}

/// A manifest or index: its descriptor and canonical bytes.
#[derive(Debug, Clone)]
pub struct Document {
    pub descriptor: Descriptor,
    pub bytes: Arc<[u8]>,
}

impl Document {
    pub fn new(media_type: &str, bytes: Vec<u8>) -> Document {
        Document {
            descriptor: Descriptor {
                media_type: media_type.to_string(),
                digest: Digest::of(&bytes),
                size: bytes.len() as u64,
            },
            bytes: bytes.into(),
        }
    }

    pub fn blob(&self) -> Blob {
        Blob {
            descriptor: self.descriptor.clone(),
            source: BlobSource::Bytes(self.bytes.clone()),
        }
    }
}

/// One platform's image.
#[derive(Debug, Clone)]
pub struct Image {
    pub platform: Platform,
    pub manifest: Document,
    pub config: Document,
    /// In image order, base layers first.
    pub layers: Vec<Layer>,
}

/// What a build made: one image per platform and, for several, an index over them.
#[derive(Debug, Clone)]
pub struct ImageSet {
    pub images: Vec<Image>,
    pub index: Option<Document>,
    /// The index for multi-platform builds, else the only manifest.
    top: Document,
    /// `[image].name`, if any.
    pub name: Option<String>,
    pub tags: Vec<String>,
    /// `[model]`: the weights as a ModelPack artifact and/or a weights-only image, each with
    /// its own name and tags, made of the same weights blobs.
    pub artifacts: Vec<super::Artifact>,
    /// Documents about the platform images (SBOM, provenance), each an artifact manifest whose
    /// `subject` is one of [`ImageSet::images`]' manifests. Never part of the image's index.
    pub referrers: Vec<Referrer>,
}

/// An OCI 1.1 referrer: an artifact manifest (empty config, the document as its one layer)
/// pointing at a platform image's manifest through `subject`.
#[derive(Debug, Clone)]
pub struct Referrer {
    pub artifact_type: String,
    /// The image manifest it is about.
    pub subject: Descriptor,
    pub manifest: Document,
    /// `{}` (`application/vnd.oci.empty.v1+json`).
    pub config: Document,
    /// The document (media type = the artifact type).
    pub document: Document,
}

impl Referrer {
    /// The descriptor an index lists it with (`artifactType` included), as JSON.
    pub fn index_entry(&self) -> serde_json::Value {
        let d = &self.manifest.descriptor;
        serde_json::json!({
            "mediaType": d.media_type,
            "digest": d.digest,
            "size": d.size,
            "artifactType": self.artifact_type,
        })
    }
}

impl ImageSet {
    /// One image, or several under `index`. `None` when there is no image.
    pub fn new(
        images: Vec<Image>,
        index: Option<Document>,
        name: Option<String>,
        tags: Vec<String>,
    ) -> Option<ImageSet> {
        let top = match &index {
            Some(i) => i.clone(),
            None => images.first()?.manifest.clone(),
        };
        Some(ImageSet {
            images,
            index,
            top,
            name,
            tags,
            artifacts: Vec::new(),
            referrers: Vec::new(),
        })
    }

    /// The same set with these artifacts beside the image.
    pub fn with_artifacts(mut self, artifacts: Vec<super::Artifact>) -> ImageSet {
        self.artifacts = artifacts;
        self
    }

    /// The same set with these referrers (SBOM, provenance) of its images.
    pub fn with_referrers(mut self, referrers: Vec<Referrer>) -> ImageSet {
        self.referrers = referrers;
        self
    }

    /// Every blob a file output holds for the referrers: configs and documents, then their
    /// manifests, each once.
    pub fn referrer_files(&self) -> Vec<Blob> {
        let mut seen = std::collections::BTreeSet::new();
        let mut out = Vec::new();
        let docs = self
            .referrers
            .iter()
            .flat_map(|r| [&r.config, &r.document])
            .chain(self.referrers.iter().map(|r| &r.manifest));
        for d in docs {
            if seen.insert(d.descriptor.digest.clone()) {
                out.push(d.blob());
            }
        }
        out
    }

    /// The artifacts' blobs not already among [`ImageSet::blobs`], each once.
    pub fn artifact_blobs(&self) -> Vec<Blob> {
        let mut seen: std::collections::BTreeSet<_> = self
            .blobs()
            .into_iter()
            .map(|b| b.descriptor.digest)
            .collect();
        let mut out = Vec::new();
        for a in &self.artifacts {
            for b in a.blobs() {
                if seen.insert(b.descriptor.digest.clone()) {
                    out.push(b);
                }
            }
        }
        out
    }

    /// The top-level document: the index for multi-platform builds, else the manifest.
    pub fn top(&self) -> &Document {
        &self.top
    }

    /// Every layer and config blob, each once, layers first (the order a push sends them).
    pub fn blobs(&self) -> Vec<Blob> {
        let mut seen = std::collections::BTreeSet::new();
        let mut out = Vec::new();
        for img in &self.images {
            for l in &img.layers {
                if seen.insert(l.descriptor.digest.clone()) {
                    out.push(Blob {
                        descriptor: l.descriptor.clone(),
                        source: l.source.clone(),
                    });
                }
            }
        }
        for img in &self.images {
            if seen.insert(img.config.descriptor.digest.clone()) {
                out.push(img.config.blob());
            }
        }
        out
    }

    /// Every blob a file output holds for the artifacts beyond the image's own: their layers
    /// and configs not in the image, then their manifests and indexes.
    pub fn artifact_files(&self) -> Vec<Blob> {
        let mut out = self.artifact_blobs();
        for a in &self.artifacts {
            out.extend(a.documents().into_iter().map(Document::blob));
        }
        out
    }

    /// Manifests, then the index: children before parents.
    pub fn documents(&self) -> Vec<&Document> {
        let mut v: Vec<&Document> = self.images.iter().map(|i| &i.manifest).collect();
        v.extend(self.index.as_ref());
        v
    }
}
