//! The orchestrator: spec → plan → layers (via the cache) → image → sinks → report.

mod hub;
mod plan;
mod push;
pub mod shared_cache;

pub use hub::RemoteSelectors;
use plan::make_plan;
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
use crate::plan::{BuildPlan, LayerPlan, LayerRole};
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
    #[error("weights {name}: {source}")]
    Hub {
        name: String,
        source: Box<crate::sources::hf::HubError>,
    },
    #[error("{0}")]
    Lock(String),
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

/// An observer for [`crate::transport::TransportOptions::on_retry`] that reports each retry of
/// any request (registry, Hub, Python index) as one [`Progress::message`] line.
pub fn retry_messages<P: Progress + Send + 'static>(
    progress: std::sync::Arc<P>,
) -> crate::transport::RetryObserver {
    std::sync::Arc::new(move |e| progress.message(&e.to_string()))
}

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
    /// Bytes of Hugging Face Hub files this build downloaded (0: all from caches).
    pub hub_bytes_downloaded: u64,
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

    let lock = load_lock(&spec, opts, progress)?;

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
        .map(|p| resolve_base(&spec, p, client.as_ref(), lock.as_ref()))
        .collect::<Result<Vec<_>, _>>()?;
    check_base_lock(lock.as_ref(), &platforms, &bases, opts.locked, progress)?;
    // A dry run writes nothing, not even the cache folder.
    let cache_slot = if opts.dry_run {
        None
    } else {
        Some(Cache::open(&opts.cache_dir)?)
    };
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
    // With --push and no file output, the push target's shared selector records can stand in
    // for the weights: a layer found there is neither downloaded nor uploaded.
    let target_selectors = match (&target, &client) {
        (Some((t, _)), Some(c)) if sinks.is_empty() => Some(shared_cache::TargetSelectors {
            client: c,
            target: t,
            progress,
        }),
        _ => None,
    };
    let hub = hub::HubPlanner {
        hub: opts
            .hub
            .clone()
            .unwrap_or_else(|| crate::sources::hf::HubOptions::from_env(|k| std::env::var(k).ok())),
        lock: lock.as_ref(),
        locked: opts.locked,
        cache: cache_slot.as_ref(),
        progress,
        remote: target_selectors.as_ref().map(|t| t as &dyn RemoteSelectors),
        planned: std::sync::Mutex::new(Vec::new()),
        downloaded: std::sync::atomic::AtomicU64::new(0),
        pending: std::sync::Mutex::new(Vec::new()),
    };
    let plan = make_plan(&spec, &platforms, &bases, mtime, opts, &hub)?;
    check_layer_budget(&plan, &bases, progress)?;
    let Some(cache) = cache_slot.as_ref() else {
        return Ok(Outcome::Plan(plan));
    };
    let mut plan = plan;
    hub.fetch_pending(&mut plan)?;

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
    let written = write_layers(cache, &unique, mtime, opts.jobs, progress)?;
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
        .filter(|(l, _)| !l.stores_bytes())
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
    // Hub layers found only in the push target (see `shared_cache`): the push skips them;
    // nothing may read their bytes locally.
    for (l, (blob, _)) in unique.iter().zip(&written) {
        if l.remote.is_some() && !cache.has_blob(&blob.digest) {
            match &target {
                Some((t, _)) if sinks.is_empty() => {
                    remote.insert(blob.digest.clone(), t.clone());
                }
                _ => {
                    return Err(BuildError::Options(format!(
                        "{}: layer {} exists only in the push target; a file output needs its bytes",
                        l.role, blob.digest
                    )));
                }
            }
        }
    }
    if !sinks.is_empty()
        && let Some(c) = &client
    {
        fetch_base_blobs(c, &bases, cache, progress)?;
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
        // Share the Hub layers through the target: a runner with an empty cache finds them.
        let planned = hub.planned.lock().map(|p| p.clone()).unwrap_or_default();
        let records: Vec<(String, LayerBlob)> = planned
            .iter()
            .filter(|(_, was_remote)| !was_remote)
            .filter_map(|(sel, _)| {
                by_selector
                    .get(sel.as_str())
                    .map(|(b, _)| (sel.clone(), b.clone()))
            })
            .collect();
        if !records.is_empty() {
            match shared_cache::publish(c, target, &records) {
                Ok(n) => progress.message(&format!(
                    "shared layer cache: {n} record(s) published in {target}"
                )),
                Err(e) => progress.message(&format!(
                    "warning: shared layer cache: could not publish records in {target}: {e}"
                )),
            }
        }
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
        hub_bytes_downloaded: hub.downloaded.load(std::sync::atomic::Ordering::Relaxed),
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

/// Image layer counts above this draw a warning.
pub const LAYER_WARN: usize = 100;
/// Above this the build refuses: some registries reject images with more layers (and every
/// layer costs a mount and a request at pull time).
pub const LAYER_MAX: usize = 500;

fn check_layer_budget(
    plan: &BuildPlan,
    bases: &[ResolvedBase],
    progress: &dyn Progress,
) -> Result<(), BuildError> {
    for (p, b) in plan.platforms.iter().zip(bases) {
        let n = b.layers.len() + p.layers.len();
        let detail = || {
            let mut per: BTreeMap<String, usize> = BTreeMap::new();
            for l in &p.layers {
                *per.entry(l.role.to_string()).or_default() += 1;
            }
            let mut v: Vec<(String, usize)> = per.into_iter().filter(|(_, c)| *c > 1).collect();
            v.sort_by_key(|b| std::cmp::Reverse(b.1));
            let top: Vec<String> = v.iter().take(3).map(|(r, c)| format!("{r}: {c}")).collect();
            format!(
                "{} base + {} new layers{}",
                b.layers.len(),
                p.layers.len(),
                if top.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", top.join(", "))
                }
            )
        };
        if n > LAYER_MAX {
            return Err(BuildError::Options(format!(
                "{}: the image would have {n} layers ({}), more than {LAYER_MAX}; registries may reject it\n  \
                 hint: use layers = \"one\" for weights entries with many files, or split the model so \
                 that only large files get their own layer (one per-file entry with include for the \
                 big files, one single-layer entry for the rest)",
                p.platform,
                detail()
            )));
        }
        if n > LAYER_WARN {
            progress.message(&format!(
                "warning: {}: the image has {n} layers ({}); more than {LAYER_WARN} slows pulls and \
                 some registries refuse more than {LAYER_MAX}. Consider layers = \"one\" for small files.",
                p.platform,
                detail()
            ));
        }
    }
    Ok(())
}

/// Reads the spec's lock file; with `--locked` it must exist and match the spec.
fn load_lock(
    spec: &Spec,
    opts: &BuildOptions,
    progress: &dyn Progress,
) -> Result<Option<crate::lock::Lockfile>, BuildError> {
    let path = crate::lock::lock_path(&opts.spec_path);
    let lock = crate::lock::Lockfile::load(&path).map_err(|e| BuildError::Lock(e.to_string()))?;
    match &lock {
        None if opts.locked => Err(BuildError::Lock(format!(
            "--locked: {} does not exist\n  hint: run `mlimg lock` and commit the lock file",
            path.display()
        ))),
        None => Ok(None),
        Some(l) => {
            let stale = l.check(spec);
            if stale.is_empty() {
                return Ok(lock);
            }
            if opts.locked {
                return Err(BuildError::Lock(format!(
                    "--locked: {} does not match the spec:\n  {}\n  hint: run `mlimg lock` and commit the lock file",
                    path.display(),
                    stale.join("\n  ")
                )));
            }
            progress.message(&format!(
                "{} is stale (building from the spec; run `mlimg lock` to update it):\n  {}",
                path.display(),
                stale.join("\n  ")
            ));
            Ok(lock)
        }
    }
}

/// A base whose digest differs from the locked one: `--locked` fails, a plain build says so.
fn check_base_lock(
    lock: Option<&crate::lock::Lockfile>,
    platforms: &[Platform],
    bases: &[ResolvedBase],
    locked: bool,
    progress: &dyn Progress,
) -> Result<(), BuildError> {
    let Some(bl) = lock.and_then(|l| l.base.as_ref()) else {
        return Ok(());
    };
    for (p, b) in platforms.iter().zip(bases) {
        let want = bl
            .platforms
            .iter()
            .find(|l| l.platform == p.to_string())
            .map(|l| l.digest.as_str());
        if bl.reference != b.name {
            continue;
        }
        if let (Some(want), Some(got)) = (want, b.manifest_digest.as_deref())
            && want != got
        {
            let msg = format!(
                "base {} {p}: the lock has {want}, the base now is {got}",
                b.name
            );
            if locked {
                return Err(BuildError::Lock(format!(
                    "--locked: {msg}\n  hint: run `mlimg lock` to accept the new base"
                )));
            }
            progress.message(&format!("mlimg.lock is stale: {msg}; run `mlimg lock`"));
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
    lock: Option<&crate::lock::Lockfile>,
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
            // Locked: pull the platform's manifest by its locked digest, never by tag.
            Some(c) => match lock.and_then(|l| l.base_digest(r, &platform.to_string())) {
                Some(d) => {
                    let pinned = match r.split_once('@') {
                        Some((name, _)) => format!("{name}@{d}"),
                        None => format!("{r}@{d}"),
                    };
                    let mut b = base::from_registry(c, &pinned, platform)?;
                    b.name = r.clone();
                    Ok(b)
                }
                None => Ok(base::from_registry(c, r, platform)?),
            },
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
    if let Some(blob) = &l.remote {
        // Only in the push target: nothing to write here.
        progress.layer_done(&l.role, true);
        return Ok((blob.clone(), true));
    }
    progress.layer_start(&l.role, l.size());
    let on_bytes = |done| progress.layer_bytes(&l.role, done);
    if !l.stores_bytes() {
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
