//! What goes into a layer: tar entries (image path, mode, where the bytes come from) and the
//! compression of the blob.

use std::path::PathBuf;
use std::sync::Arc;

/// Layer compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    Gzip,
    Zstd,
    None,
}

impl Compression {
    pub fn media_type(self) -> &'static str {
        match self {
            Compression::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
            Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
            Compression::None => "application/vnd.oci.image.layer.v1.tar",
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
            Compression::None => "none",
        }
    }
}

/// Where the bytes of one tar entry come from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Content {
    /// A directory (no bytes).
    Dir,
    /// A regular file on local disk, streamed when the layer is written.
    File { path: PathBuf, size: u64 },
    /// A symbolic link; the target is kept verbatim.
    Symlink(String),
    /// Small generated content (launcher scripts, RECORD, INSTALLER, ...).
    Inline(Arc<[u8]>),
    /// A downloaded file (a Hub file), named by its sha256 until the fetch stage provides it.
    Fetched { sha256: String, size: u64 },
    /// One member of a zip archive (a wheel), streamed out of the archive.
    ZipMember {
        archive: PathBuf,
        name: String,
        size: u64,
    },
}

/// One tar entry: an absolute image path (stored without the leading `/`), its mode and content.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Entry {
    /// Path inside the image, relative to `/`, `/`-separated, no `.` or `..` components,
    /// no trailing slash. Example: `app/main.py`.
    pub path: String,
    /// Permission bits only (e.g. 0o644, 0o755).
    pub mode: u32,
    pub content: Content,
}

impl Entry {
    pub fn size(&self) -> u64 {
        match &self.content {
            Content::File { size, .. }
            | Content::ZipMember { size, .. }
            | Content::Fetched { size, .. } => *size,
            Content::Inline(b) => b.len() as u64,
            Content::Dir | Content::Symlink(_) => 0,
        }
    }
}

/// Default compression for weights layers: dense float data barely compresses, so paying
/// gzip's CPU cost buys little (numbers in docs/benchmarks.md).
pub const DEFAULT_WEIGHTS_COMPRESSION: Compression = Compression::None;

impl Content {
    /// Where the bytes come from, for `--dry-run`.
    pub fn source(&self) -> String {
        match self {
            Content::Dir => "(dir)".to_string(),
            Content::File { path, .. } => path.display().to_string(),
            Content::Symlink(t) => format!("(symlink -> {t})"),
            Content::Inline(_) => "(generated)".to_string(),
            Content::Fetched { sha256, .. } => format!("(download sha256:{sha256})"),
            Content::ZipMember { archive, name, .. } => {
                format!(
                    "{}!{name}",
                    archive.file_name().unwrap_or_default().to_string_lossy()
                )
            }
        }
    }
}
