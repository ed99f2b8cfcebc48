//! The build plan: a pure value describing every layer to write and the image settings.
//!
//! [`plan`]`(spec, resolved)` is pure apart from `stat`/`readlink` of local sources: no
//! download, no cache, no network. Files that the fetch stage provides (Hub files, wheels)
//! appear by their sha256; a wheel set's entries are known once its wheels are fetched, so its
//! layer carries the wheels and the target instead, and its selector is computed from them.

mod layers;

use std::fmt;
use std::sync::Arc;

pub use crate::layer::{Compression, Content, DEFAULT_WEIGHTS_COMPRESSION, Entry};
pub use layers::{LAYER_MAX, LAYER_WARN, PYCACHE_PREFIX, PlanError, plan, run_settings};

use crate::sources::python::{PythonTarget, ResolvedWheel};

/// The wheels a deps layer installs, and for which interpreter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WheelInstall {
    pub target: PythonTarget,
    /// Sorted by name.
    pub wheels: Vec<ResolvedWheel>,
    /// The files the base's Debian packages own: installing over one is an error.
    pub dpkg: Arc<crate::sources::python::detect::DpkgFiles>,
    /// Compile `.pyc` files for the installed sources (`None`: none are written).
    pub bytecode: Option<crate::sources::python::bytecode::Bytecode>,
}

/// The Debian packages a system layer installs, and into which base.
#[derive(Debug, Clone)]
pub struct SystemInstall {
    /// dpkg's architecture.
    pub architecture: String,
    /// Sorted by name.
    pub packages: Vec<crate::lock::DebLock>,
    /// The base's dpkg database, sources and merged-/usr links.
    pub base: Arc<crate::resolve::system::DebianBase>,
}

/// What a layer is for; named in the image history and the `--json` report.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(tag = "kind", content = "name", rename_all = "lowercase")]
pub enum LayerRole {
    Base,
    /// `[system]`: Debian packages.
    System,
    Deps(String),
    Weights(String),
    App,
}

impl fmt::Display for LayerRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LayerRole::Base => write!(f, "base"),
            LayerRole::System => write!(f, "system"),
            LayerRole::Deps(n) => write!(f, "deps {n}"),
            LayerRole::Weights(n) => write!(f, "weights {n}"),
            LayerRole::App => write!(f, "app"),
        }
    }
}

/// One layer to write: its role, finalized entries (sorted, parents included), compression,
/// the selector (fingerprint of its inputs) and its history line.
#[derive(Debug, Clone)]
pub struct LayerPlan {
    pub role: LayerRole,
    pub compression: Compression,
    pub entries: Vec<Entry>,
    /// Hex sha256 over everything that decides the layer's bytes, without reading file contents.
    pub selector: String,
    /// The image history's `created_by` for this layer.
    pub created_by: String,
    /// For a wheel set: the wheels to install (the entries are empty until they are fetched).
    pub wheels: Option<Arc<WheelInstall>>,
    /// For `[system]`: the Debian packages to install (entries empty until fetched).
    pub system: Option<Arc<SystemInstall>>,
    /// Keep the blob's bytes in the cache even when uncompressed. Set for downloaded sources
    /// (Hub snapshots), whose files may be gone by the next build; local trees are the user's
    /// own and are re-read instead of copied.
    pub store_bytes: bool,
    /// Owners other than 0:0 (`owner`, `[config] writable`); empty for most layers.
    pub owners: crate::layer::Owners,
}

impl LayerPlan {
    /// Whether the cache holds this layer's bytes (else outputs regenerate them).
    pub fn stores_bytes(&self) -> bool {
        self.store_bytes || self.compression != Compression::None
    }

    /// Builds a plan from entries (finalized here) and fingerprint lines of its inputs.
    pub fn new(
        role: LayerRole,
        compression: Compression,
        entries: Vec<Entry>,
        fingerprint: &[String],
        mtime: u64,
        created_by: String,
    ) -> Result<LayerPlan, crate::layer::LayerError> {
        use sha2::Digest as _;
        let entries = crate::layer::finalize(entries)?;
        let mut h = sha2::Sha256::new();
        h.update(format!(
            "mlimg-layer v{}\n{}\nmtime {mtime}\n",
            crate::layer::FORMAT_VERSION,
            compression.as_str()
        ));
        for e in &entries {
            // where each entry lands and how: dest, mode, kind (contents come from the fingerprint)
            let kind = match &e.content {
                Content::Dir => "d".to_string(),
                Content::File { size, .. } => format!("f{size}"),
                Content::Symlink(t) => format!("l{t}"),
                Content::Inline(b) => format!("i{}", hex::encode(sha2::Sha256::digest(b))),
                Content::ZipMember { name, size, .. } => format!("z{name}:{size}"),
                Content::Fetched { sha256, size } => format!("h{sha256}:{size}"),
            };
            h.update(format!("{} {:o} {kind}\n", e.path, e.mode));
        }
        for line in fingerprint {
            h.update(line.as_bytes());
            h.update(b"\n");
        }
        Ok(LayerPlan {
            role,
            compression,
            entries,
            selector: hex::encode(h.finalize()),
            created_by,
            wheels: None,
            system: None,
            store_bytes: false,
            owners: crate::layer::Owners::default(),
        })
    }

    /// The same layer with `owners`: they go into the selector (a layer without owners keeps
    /// its selector, so its cache entries and bytes stay what they were).
    pub fn with_owners(mut self, owners: crate::layer::Owners) -> LayerPlan {
        use sha2::Digest as _;
        if owners.is_empty() {
            return self;
        }
        let mut h = sha2::Sha256::new();
        h.update(self.selector.as_bytes());
        for line in owners.fingerprint() {
            h.update(b"\n");
            h.update(line.as_bytes());
        }
        self.selector = hex::encode(h.finalize());
        self.owners = owners;
        self
    }

    pub fn size(&self) -> u64 {
        self.entries.iter().map(Entry::size).sum()
    }

    /// A short, stable id for progress output (the selector's first 12 hex digits).
    pub fn id(&self) -> &str {
        &self.selector[..12.min(self.selector.len())]
    }

    /// What the layer is, for people: its role, and for one file of a per-file entry, the file.
    pub fn label(&self) -> String {
        match self.entries.as_slice() {
            [e] if matches!(self.role, LayerRole::Weights(_)) => {
                format!("{} /{}", self.role, e.path)
            }
            _ => self.role.to_string(),
        }
    }
}

/// The layers of one platform's image, in image order (base layers are not part of the plan).
#[derive(Debug, Clone)]
pub struct PlatformPlan {
    pub platform: crate::spec::Platform,
    pub layers: Vec<Arc<LayerPlan>>,
    /// How the target interpreter was decided (empty without wheel deps sets).
    pub explain: Vec<String>,
    /// The base's layers, counted in the layer budget.
    pub base_layers: usize,
    /// The image's run settings (the config's `config` object: entrypoint, env, user, …).
    pub settings: serde_json::Value,
}

/// Everything `mlimg build` will write: per platform, the ordered layers.
#[derive(Debug, Clone)]
pub struct BuildPlan {
    pub base: String,
    pub mtime: u64,
    /// `[image].format`: the media types the image is written with.
    pub format: crate::spec::ImageFormat,
    pub platforms: Vec<PlatformPlan>,
}

impl BuildPlan {
    /// The plan as JSON (`mlimg build --dry-run --json`).
    pub fn to_json(&self) -> serde_json::Value {
        let platforms: Vec<serde_json::Value> = self
            .platforms
            .iter()
            .map(|p| {
                let layers: Vec<serde_json::Value> = p
                    .layers
                    .iter()
                    .map(|l| {
                        serde_json::json!({
                            "role": l.role.to_string(),
                            "compression": l.compression.as_str(),
                            "bytecode": l.wheels.as_ref().and_then(|w| w.bytecode.as_ref()).map(|b| serde_json::json!({
                                "compiler": b.compiler.path,
                                "version": b.compiler.version,
                                "magic": b.compiler.magic,
                                "cache_tag": b.compiler.cache_tag,
                                "invalidation": "timestamp",
                            })),
                            "selector": l.selector,
                            "size": l.size(),
                            "wheels": l.wheels.as_ref().map(|w| w.wheels.iter().map(|w| serde_json::json!({
                                "name": w.name,
                                "version": w.version,
                                "filename": w.filename,
                                "sha256": w.sha256,
                            })).collect::<Vec<_>>()),
                            "entries": l.entries.iter().map(|e| {
                                let mut v = serde_json::json!({
                                    "path": format!("/{}", e.path),
                                    "mode": format!("{:04o}", e.mode),
                                    "size": e.size(),
                                    "source": e.content.source(),
                                });
                                let (uid, gid) = l.owners.of(&e.path);
                                if (uid, gid) != (0, 0) {
                                    v["owner"] = format!("{uid}:{gid}").into();
                                }
                                v
                            }).collect::<Vec<_>>(),
                        })
                    })
                    .collect();
                serde_json::json!({
                    "platform": p.platform.to_string(),
                    "layers": layers,
                    "config": p.settings,
                })
            })
            .collect();
        serde_json::json!({"base": self.base, "mtime": self.mtime, "format": self.format.as_str(), "platforms": platforms})
    }
}

impl fmt::Display for BuildPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "base: {}", self.base)?;
        writeln!(f, "mtime: {}", self.mtime)?;
        writeln!(
            f,
            "format: {}",
            match self.format {
                crate::spec::ImageFormat::Oci => "oci (application/vnd.oci.image.manifest.v1+json)",
                crate::spec::ImageFormat::Docker =>
                    "docker (application/vnd.docker.distribution.manifest.v2+json)",
            }
        )?;
        let mut shown = std::collections::HashSet::new();
        for p in &self.platforms {
            writeln!(f, "platform {}:", p.platform)?;
            for line in &p.explain {
                writeln!(f, "  {line}")?;
            }
            for (i, l) in p.layers.iter().enumerate() {
                writeln!(
                    f,
                    "  layer {i}: {} ({} entries, {} bytes, {}, selector {})",
                    l.role,
                    l.entries.len(),
                    l.size(),
                    l.compression.as_str(),
                    &l.selector[..12]
                )?;
                if !shown.insert(l.selector.clone()) {
                    writeln!(f, "    (same as above)")?;
                    continue;
                }
                if let Some(w) = &l.wheels {
                    writeln!(f, "    into {} for {}", w.target.site_packages(), w.target)?;
                    match &w.bytecode {
                        Some(b) => writeln!(
                            f,
                            "    bytecode: .pyc ({}) compiled by {} (CPython {}, timestamp {})",
                            b.compiler.cache_tag,
                            b.compiler.path.display(),
                            b.compiler.version,
                            b.mtime
                        )?,
                        None => writeln!(f, "    bytecode: none")?,
                    }
                    for w in &w.wheels {
                        writeln!(f, "    wheel {} sha256:{}", w.filename, w.sha256)?;
                    }
                }
                for e in &l.entries {
                    let src = e.content.source();
                    let owner = match l.owners.of(&e.path) {
                        (0, 0) => String::new(),
                        (u, g) => format!(" {u}:{g}"),
                    };
                    writeln!(f, "    {:04o}{owner} /{} <- {src}", e.mode, e.path)?;
                }
            }
            writeln!(f, "  config:")?;
            for (k, v) in p.settings.as_object().into_iter().flatten() {
                writeln!(f, "    {k}: {v}")?;
            }
        }
        Ok(())
    }
}
