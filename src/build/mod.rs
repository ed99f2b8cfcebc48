//! The orchestrator: spec → plan → layers (via the cache) → image → sinks → report.

mod plan;
mod push;

pub use plan::make_plan;
pub use push::{BlobReport, PushSummary};

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::base::{self, BlobOrigin, ResolvedBase};
use crate::cache::{Cache, SelectorRecord};
use crate::image::{self, Blob, ImageLayer};
use crate::layer::{self, LayerBlob};
use crate::output::{BlobStore, BuiltImage, PlatformImage, Sink, SinkReport};
use crate::plan::{BuildPlan, Compression, LayerPlan, LayerRole};
use crate::spec::{BaseSpec, Platform, Spec};

/// Everything a build needs, settled before it starts (the CLI fills it from flags and env).
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    pub spec_path: PathBuf,
    pub outputs: Vec<String>,
    pub dry_run: bool,
    /// Restrict the spec's platforms to these (`os/arch[/variant]`).
    pub platforms: Vec<String>,
    pub cache_dir: PathBuf,
    /// The value of `SOURCE_DATE_EPOCH`, if set.
    pub source_date_epoch: Option<String>,
    /// Worker threads for writing layers (0 = number of cores).
    pub jobs: usize,
    /// Python package indexes after each set's own `index_url` (`PIP_INDEX_URL`, then
    /// `PIP_EXTRA_INDEX_URL`'s entries).
    pub pip_index_urls: Vec<String>,
    /// Fail when mlimg.lock does not match the spec (like `cargo --locked`).
    pub locked: bool,
    /// Hugging Face Hub endpoint, token and cache (from HF_* variables); `None` = defaults.
    pub hub: Option<crate::sources::hf::HubOptions>,
    /// Push to `[image].name` after building.
    pub push: bool,
    /// Tags to push instead of `[image].tags`.
    pub tags: Vec<String>,
    /// Registry client settings (auth config, insecure hosts, parallelism, chunking).
    pub registry: crate::registry::ClientOptions,
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Spec(#[from] crate::spec::SpecError),
    #[error("{0}")]
    Options(String),
    #[error("{role}: {source}")]
    Source {
        role: String,
        source: crate::sources::local::SourceError,
    },
    #[error("deps {set}: {source}")]
    Python {
        set: String,
        source: Box<crate::sources::python::PythonError>,
    },
    #[error("{role}: {source}")]
    Layer {
        role: String,
        source: layer::LayerError,
    },
    #[error(transparent)]
    Cache(#[from] crate::cache::CacheError),
    #[error(transparent)]
    Base(#[from] base::BaseError),
    #[error(transparent)]
    Image(#[from] image::ImageError),
    #[error("output {target}: {source}")]
    Output {
        target: String,
        source: crate::output::OutputError,
    },
    #[error("push to {target}: {source}")]
    Push {
        target: String,
        source: Box<crate::registry::RegistryError>,
    },
    #[error("{0}")]
    Registry(Box<crate::registry::RegistryError>),
}

/// Progress events, for a progress bar or plain lines.
pub trait Progress: Sync {
    /// A byte transfer (an upload or download) identified by `key` moved to `done` of `total`.
    fn transfer(&self, _key: &str, _done: u64, _total: u64) {}
    /// The transfer `key` finished; `summary` says how.
    fn transfer_done(&self, _key: &str, _summary: &str) {}
    fn layer_start(&self, _role: &LayerRole, _bytes: u64) {}
    fn layer_bytes(&self, _role: &LayerRole, _done: u64) {}
    fn layer_done(&self, _role: &LayerRole, _cached: bool) {}
    fn message(&self, _msg: &str) {}
}

/// No progress output.
pub struct Quiet;
impl Progress for Quiet {}

#[derive(Debug, Clone, serde::Serialize)]
pub struct LayerReport {
    pub role: String,
    pub digest: String,
    pub diff_id: String,
    pub size: u64,
    pub media_type: String,
    pub cached: bool,
    /// With `--push`: `uploaded`, `mounted` or `skipped`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub push: Option<&'static str>,
    /// With `--push`: bytes sent for this layer (retries included).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_sent: Option<u64>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct PlatformReport {
    pub platform: String,
    pub manifest_digest: String,
    pub config_digest: String,
    pub layers: Vec<LayerReport>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct BuildReport {
    /// The top-level digest: the index for multi-platform builds, else the manifest.
    pub manifest_digest: String,
    pub media_type: String,
    /// Layers of the first platform's image, in image order (base layers first).
    pub layers: Vec<LayerReport>,
    pub platforms: Vec<PlatformReport>,
    pub outputs: Vec<SinkReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub push: Option<PushSummary>,
}

/// The result of `build`: a plan (dry run) or a finished build.
pub enum Outcome {
    Plan(BuildPlan),
    Built(BuildReport),
}

pub fn build(opts: &BuildOptions, progress: &dyn Progress) -> Result<Outcome, BuildError> {
    let spec = Spec::load(&opts.spec_path)?;
    let mtime =
        layer::source_date_epoch(opts.source_date_epoch.as_deref()).map_err(BuildError::Options)?;
    let platforms = select_platforms(&spec, &opts.platforms)?;
    let sinks = opts
        .outputs
        .iter()
        .map(|o| {
            crate::output::parse_target(o).map_err(|source| BuildError::Output {
                target: o.clone(),
                source,
            })
        })
        .collect::<Result<Vec<Box<dyn Sink>>, _>>()?;

    let target = push_target(&spec, opts)?;
    let client = if target.is_some() || matches!(spec.image.base, BaseSpec::Registry(_)) {
        let c = crate::registry::RegistryClient::new(opts.registry.clone())
            .map_err(|e| BuildError::Registry(Box::new(e)))?;
        Some(c)
    } else {
        None
    };
    // Bases first: planning a deps set may need the base's Python and libc.
    let bases = platforms
        .iter()
        .map(|p| resolve_base(&spec, p, client.as_ref()))
        .collect::<Result<Vec<_>, _>>()?;
    // Detecting the base's Python reads its layers' tar headers: fetch registry base layers
    // first when a wheel set needs detection.
    let needs_detection = spec
        .deps
        .iter()
        .any(|d| !matches!(d.source, crate::spec::DepsSource::Dir(_)))
        && spec
            .python
            .as_ref()
            .is_none_or(|p| p.libc.is_none() || p.prefix.is_none());
    if needs_detection && let Some(c) = &client {
        fetch_base_blobs(c, &bases, &Cache::open(&opts.cache_dir)?, progress)?;
    }
    let plan = make_plan(&spec, &platforms, &bases, mtime, opts)?;
    if opts.dry_run {
        return Ok(Outcome::Plan(plan));
    }

    let cache = Cache::open(&opts.cache_dir)?;
    let created = image::rfc3339(mtime);

    // Write every distinct layer once (weights and app layers are shared between platforms).
    let mut unique: Vec<Arc<LayerPlan>> = Vec::new();
    for p in &plan.platforms {
        for l in &p.layers {
            if !unique.iter().any(|u| u.selector == l.selector) {
                unique.push(l.clone());
            }
        }
    }
    let written = write_layers(&cache, &unique, mtime, opts.jobs, progress)?;
    let by_selector: BTreeMap<&str, &(LayerBlob, bool)> = unique
        .iter()
        .zip(&written)
        .map(|(l, w)| (l.selector.as_str(), w))
        .collect();

    let mut layouts = Vec::new();
    let mut images = Vec::new();
    let mut reports = Vec::new();
    for (pp, base) in plan.platforms.iter().zip(&bases) {
        if let BlobOrigin::Layout(d) = &base.origin {
            layouts.push(d.clone());
        }
        let mut layer_reports: Vec<LayerReport> = base
            .layers
            .iter()
            .map(|l| LayerReport {
                role: "base".into(),
                digest: l.blob.digest.clone(),
                diff_id: l.diff_id.clone(),
                size: l.blob.size,
                media_type: l.blob.media_type.clone(),
                cached: true,
                push: None,
                bytes_sent: None,
            })
            .collect();
        let mut new_layers = Vec::new();
        for l in &pp.layers {
            let (blob, cached) = by_selector[l.selector.as_str()];
            new_layers.push(ImageLayer {
                blob: Blob {
                    media_type: blob.media_type.clone(),
                    digest: blob.digest.clone(),
                    size: blob.size,
                },
                diff_id: blob.diff_id.clone(),
                created_by: l.created_by.clone(),
            });
            layer_reports.push(LayerReport {
                role: l.role.to_string(),
                digest: blob.digest.clone(),
                diff_id: blob.diff_id.clone(),
                size: blob.size,
                media_type: blob.media_type.clone(),
                cached: *cached,
                push: None,
                bytes_sent: None,
            });
        }
        let config = image::build_config(
            &base.config,
            &pp.platform,
            &spec.config,
            &new_layers,
            &created,
        )?;
        let config_bytes = image::canonical(&config);
        let config_blob = Blob {
            media_type: image::CONFIG_MEDIA_TYPE.into(),
            digest: cache.put_bytes(&config_bytes)?,
            size: config_bytes.len() as u64,
        };
        let mut layer_blobs: Vec<Blob> = base.layers.iter().map(|l| l.blob.clone()).collect();
        layer_blobs.extend(new_layers.iter().map(|l| l.blob.clone()));
        let annotations = manifest_annotations(&spec, base, &created);
        let manifest_bytes = image::build_manifest(&config_blob, &layer_blobs, &annotations)?;
        let manifest = Blob {
            media_type: image::MANIFEST_MEDIA_TYPE.into(),
            digest: cache.put_bytes(&manifest_bytes)?,
            size: manifest_bytes.len() as u64,
        };
        reports.push(PlatformReport {
            platform: pp.platform.to_string(),
            manifest_digest: manifest.digest.clone(),
            config_digest: config_blob.digest.clone(),
            layers: layer_reports,
        });
        images.push(PlatformImage {
            platform: pp.platform.clone(),
            manifest,
            config: config_blob,
            layers: layer_blobs,
        });
    }
    let index = if images.len() > 1 {
        let mut ann = BTreeMap::new();
        ann.insert(
            "org.opencontainers.image.created".to_string(),
            created.clone(),
        );
        let bytes = image::build_index(
            &images
                .iter()
                .map(|i| (i.manifest.clone(), i.platform.clone()))
                .collect::<Vec<_>>(),
            &ann,
        )?;
        Some(Blob {
            media_type: image::INDEX_MEDIA_TYPE.into(),
            digest: cache.put_bytes(&bytes)?,
            size: bytes.len() as u64,
        })
    } else {
        None
    };
    let built = BuiltImage {
        images,
        index,
        name: spec.image.name.clone(),
        tags: spec.image.tags.clone(),
    };
    let recipes = unique
        .iter()
        .zip(&written)
        .filter(|(l, _)| l.compression == Compression::None)
        .map(|(l, (blob, _))| {
            (
                blob.digest.clone(),
                crate::output::Recipe {
                    plan: l.clone(),
                    mtime,
                },
            )
        })
        .collect();
    let store = BlobStore {
        cache: cache.clone(),
        layouts,
        recipes,
    };
    // Base blobs that live in a registry: file outputs need their bytes, a push only a reference.
    let mut remote = BTreeMap::new();
    for b in &bases {
        if let BlobOrigin::Registry(r) = &b.origin {
            for l in &b.layers {
                remote.insert(l.blob.digest.clone(), r.clone());
            }
        }
    }
    if !sinks.is_empty()
        && let Some(c) = &client
    {
        fetch_base_blobs(c, &bases, &cache, progress)?;
    }
    let mut outputs = Vec::new();
    for s in &sinks {
        progress.message(&format!("writing {s}"));
        outputs.push(
            s.write(&built, &store)
                .map_err(|source| BuildError::Output {
                    target: s.to_string(),
                    source,
                })?,
        );
    }
    let mut push_summary = None;
    if let (Some((target, tags)), Some(c)) = (&target, &client) {
        progress.message(&format!("pushing to {target}"));
        let summary = push::push(c, &built, &store, &remote, target, tags, progress)?;
        let by_digest: BTreeMap<&str, &BlobReport> = summary
            .blobs
            .iter()
            .map(|b| (b.digest.as_str(), b))
            .collect();
        for pr in &mut reports {
            for l in &mut pr.layers {
                if let Some(b) = by_digest.get(l.digest.as_str()) {
                    l.push = Some(b.action);
                    l.bytes_sent = Some(b.bytes_sent);
                }
            }
        }
        push_summary = Some(summary);
    }
    let top = built.top().clone();
    Ok(Outcome::Built(BuildReport {
        manifest_digest: top.digest,
        media_type: top.media_type,
        layers: reports
            .first()
            .map(|r| r.layers.clone())
            .unwrap_or_default(),
        platforms: reports,
        outputs,
        push: push_summary,
    }))
}

/// Fetches the layers of registry bases into the cache (verified against their digests).
fn fetch_base_blobs(
    client: &crate::registry::RegistryClient,
    bases: &[ResolvedBase],
    cache: &Cache,
    progress: &dyn Progress,
) -> Result<(), BuildError> {
    for b in bases {
        let BlobOrigin::Registry(r) = &b.origin else {
            continue;
        };
        for l in &b.layers {
            if !cache.has_blob(&l.blob.digest) {
                progress.message(&format!(
                    "fetching base layer {} ({} bytes)",
                    l.blob.digest, l.blob.size
                ));
                client
                    .blob_to_file(
                        r,
                        &l.blob.digest,
                        l.blob.size,
                        &cache.blob_path(&l.blob.digest),
                    )
                    .map_err(|e| BuildError::Registry(Box::new(e)))?;
            }
        }
    }
    Ok(())
}

fn select_platforms(spec: &Spec, wanted: &[String]) -> Result<Vec<Platform>, BuildError> {
    if wanted.is_empty() {
        return Ok(spec.image.platforms.clone());
    }
    let mut out = Vec::new();
    for w in wanted {
        let p = crate::spec::parse_platform(w)
            .map_err(|m| BuildError::Options(format!("--platform: {m}")))?;
        if !spec.image.platforms.contains(&p) {
            return Err(BuildError::Options(format!(
                "--platform {p}: the spec builds {}",
                spec.image
                    .platforms
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        out.push(p);
    }
    Ok(out)
}

fn manifest_annotations(
    spec: &Spec,
    base: &ResolvedBase,
    created: &str,
) -> BTreeMap<String, String> {
    let mut a = BTreeMap::new();
    a.insert(
        "org.opencontainers.image.created".to_string(),
        created.to_string(),
    );
    if spec.image.base != BaseSpec::Scratch {
        a.insert(
            "org.opencontainers.image.base.name".to_string(),
            base.name.clone(),
        );
        if let Some(d) = &base.manifest_digest {
            a.insert(
                "org.opencontainers.image.base.digest".to_string(),
                d.clone(),
            );
        }
    }
    if let (Some(n), Some(t)) = (&spec.image.name, spec.image.tags.first()) {
        a.insert(
            "org.opencontainers.image.ref.name".to_string(),
            format!("{n}:{t}"),
        );
    }
    for (k, v) in &spec.config.annotations {
        a.insert(k.clone(), v.clone());
    }
    a
}

/// The push target and its tags, checked before any work is done.
fn push_target(
    spec: &Spec,
    opts: &BuildOptions,
) -> Result<Option<(crate::registry::Reference, Vec<String>)>, BuildError> {
    if !opts.push {
        return Ok(None);
    }
    let name = spec.image.name.as_ref().ok_or_else(|| {
        BuildError::Options(format!(
            "--push needs [image].name in {} (e.g. name = \"docker.io/acme/app\")",
            spec.path.display()
        ))
    })?;
    let target =
        crate::registry::Reference::parse(name).map_err(|e| BuildError::Registry(Box::new(e)))?;
    let tags = if opts.tags.is_empty() {
        spec.image.tags.clone()
    } else {
        opts.tags.clone()
    };
    let tags = if tags.is_empty() {
        vec!["latest".to_string()]
    } else {
        tags
    };
    Ok(Some((target, tags)))
}

fn resolve_base(
    spec: &Spec,
    platform: &Platform,
    client: Option<&crate::registry::RegistryClient>,
) -> Result<ResolvedBase, BuildError> {
    match &spec.image.base {
        BaseSpec::Scratch => Ok(base::scratch(platform)),
        BaseSpec::OciLayout { path, tag } => Ok(base::from_layout(
            path,
            tag.as_deref(),
            platform,
            &spec.image.base_name,
        )?),
        BaseSpec::Registry(r) => match client {
            Some(c) => Ok(base::from_registry(c, r, platform)?),
            None => Err(BuildError::Options(format!("base {r}: no registry client"))),
        },
    }
}

type Slot = std::sync::Mutex<Option<Result<(LayerBlob, bool), BuildError>>>;

/// Writes the layers not found in the cache, in parallel. Returns each layer's blob and
/// whether it came from the cache.
fn write_layers(
    cache: &Cache,
    layers: &[Arc<LayerPlan>],
    mtime: u64,
    jobs: usize,
    progress: &dyn Progress,
) -> Result<Vec<(LayerBlob, bool)>, BuildError> {
    let jobs = if jobs == 0 {
        std::thread::available_parallelism().map_or(2, |n| n.get())
    } else {
        jobs
    };
    let next = AtomicUsize::new(0);
    let results: Vec<Slot> = layers.iter().map(|_| std::sync::Mutex::new(None)).collect();
    std::thread::scope(|s| {
        for _ in 0..jobs.min(layers.len()) {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(l) = layers.get(i) else { break };
                    let r = write_one(cache, l, mtime, progress);
                    let failed = r.is_err();
                    if let Ok(mut slot) = results[i].lock() {
                        *slot = Some(r);
                    }
                    if failed {
                        // stop handing out work; the others finish what they hold
                        next.store(layers.len(), Ordering::SeqCst);
                    }
                }
            });
        }
    });
    let mut out = Vec::new();
    for (slot, l) in results.into_iter().zip(layers) {
        match slot.into_inner().ok().flatten() {
            Some(r) => out.push(r?),
            None => {
                return Err(BuildError::Options(format!(
                    "layer {} was not written (an earlier layer failed)",
                    l.role
                )));
            }
        }
    }
    Ok(out)
}

fn write_one(
    cache: &Cache,
    l: &LayerPlan,
    mtime: u64,
    progress: &dyn Progress,
) -> Result<(LayerBlob, bool), BuildError> {
    if let Some(rec) = cache.get_selector(&l.selector) {
        progress.layer_done(&l.role, true);
        return Ok((rec.blob, true));
    }
    progress.layer_start(&l.role, l.size());
    let on_bytes = |done| progress.layer_bytes(&l.role, done);
    if l.compression == Compression::None {
        // Uncompressed: the blob is the tar of the sources, so only its digest and size are
        // recorded; outputs regenerate the bytes (no copy of the weights in the cache).
        let blob = layer::write(&l.entries, l.compression, mtime, std::io::sink(), &on_bytes)
            .map_err(|source| BuildError::Layer {
                role: l.role.to_string(),
                source,
            })?;
        cache.put_selector(
            &l.selector,
            &SelectorRecord {
                blob: blob.clone(),
                stored: false,
            },
        )?;
        progress.layer_done(&l.role, false);
        return Ok((blob, false));
    }
    let tmp = cache.temp()?;
    let blob = layer::write(&l.entries, l.compression, mtime, tmp.as_file(), &|done| {
        progress.layer_bytes(&l.role, done)
    })
    .map_err(|source| BuildError::Layer {
        role: l.role.to_string(),
        source,
    })?;
    cache.commit(tmp, &blob.digest)?;
    cache.put_selector(
        &l.selector,
        &SelectorRecord {
            blob: blob.clone(),
            stored: true,
        },
    )?;
    progress.layer_done(&l.role, false);
    Ok((blob, false))
}
