//! The orchestrator: a short list of stages, each taking the previous one's value.
//!
//! spec → resolve (the lock value) → plan → look up layers in the caches → fetch what the
//! rest needs → write those layers → assemble the image set → every sink → report.

mod git;
pub mod gpu;
mod layers;
mod model;
mod report;
pub mod sel_prune;
pub mod shared_cache;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

pub use crate::progress::{Progress, Quiet, Warning};
pub use report::{ArtifactReport, BuildReport, LayerReport, PlatformReport, ReferrerReport};

use crate::cache::Cache;
use crate::plan::{BuildPlan, LayerPlan};
use crate::platform::Platform;
use crate::progress::Recorder;
use crate::registry::{Reference, RegistryClient};
use crate::resolve::{self, ResolveOptions};
use crate::sink::{RegistrySink, Sink, SinkError};
use crate::spec::{BaseSpec, Spec};

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
    /// Folders of wheels after each set's own `find_links` (`PIP_FIND_LINKS`).
    pub pip_find_links: Vec<PathBuf>,
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
    /// Let local sources resolve outside the spec's context folder.
    pub allow_outside_context: bool,
    /// The registry-shared layer cache (selector records in the push target): off unless
    /// the caller gives a key (records are then authenticated) or opts into unsigned records.
    pub shared_cache: shared_cache::SharedCache,
    /// Do not attach SBOMs to each platform image (`--no-sbom`).
    pub no_sbom: bool,
    /// Do not attach an in-toto / SLSA provenance statement (`--no-provenance`).
    pub no_provenance: bool,
    /// Lints are errors (`--strict`): the build stops after planning when one fires.
    pub strict: bool,
    /// Sign each pushed image with this PEM EC P-256 private key (`--sign-key`), in cosign's
    /// format.
    pub sign_key: Option<PathBuf>,
    /// The SBOM formats (`--sbom-format`; default SPDX and CycloneDX).
    pub sbom_formats: crate::provenance::SbomFormats,
    /// Record start and finish times in the provenance (`--provenance-times`).
    pub provenance_times: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Spec(#[from] crate::spec::SpecError),
    #[error("SOURCE_DATE_EPOCH: {0}")]
    SourceDateEpoch(String),
    /// The shared-cache settings (`MLIMG_CACHE_KEY`, `--shared-cache`) are not usable.
    #[error("{0}")]
    SharedCache(String),
    /// `--sign-key` is not usable (no push target, unreadable, not an EC P-256 key).
    #[error("--sign-key {path}: {message}")]
    SignKey { path: String, message: String },
    #[error("--platform {requested}: {message}")]
    Platform { requested: String, message: String },
    #[error(
        "--push needs [image].name in {} (e.g. name = \"docker.io/acme/app\")",
        spec.display()
    )]
    NoImageName { spec: PathBuf },
    #[error(
        "--push needs a tag: [image].tags in {} is empty and no --tag was given (mlimg does not push `latest` on its own)\n  hint: add tags = [\"1.0.0\"] to [image], or pass --tag 1.0.0",
        spec.display()
    )]
    NoTags { spec: PathBuf },
    #[error(transparent)]
    Resolve(Box<resolve::ResolveError>),
    #[error(transparent)]
    Plan(Box<crate::plan::PlanError>),
    #[error(transparent)]
    Fetch(Box<crate::fetch::FetchError>),
    #[error("{role}: {source}")]
    Layer {
        role: String,
        source: crate::layer::LayerError,
    },
    #[error(transparent)]
    Cache(#[from] crate::cache::CacheError),
    #[error(transparent)]
    Image(#[from] crate::image::ImageError),
    #[error("{role}: {digest}: {message}")]
    BadLayer {
        role: String,
        digest: String,
        message: String,
    },
    #[error(transparent)]
    Output(Box<SinkError>),
    #[error(transparent)]
    Registry(Box<crate::registry::RegistryError>),
    /// `--strict` and at least one lint fired.
    #[error("--strict: {} lint(s) failed: {}", lints.len(), lints.iter().map(|w| format!("[{}] {}", w.code, w.message)).collect::<Vec<_>>().join("; "))]
    Lint { lints: Vec<Warning> },
}

impl BuildError {
    /// The exit code: 2 for a usage or spec error (fix the command or the spec), 1 for a
    /// failure of the build, a source, a registry or an output.
    pub fn exit_code(&self) -> u8 {
        match self {
            BuildError::Spec(_)
            | BuildError::SourceDateEpoch(_)
            | BuildError::Platform { .. }
            | BuildError::NoImageName { .. }
            | BuildError::Output(_)
                if self.is_usage() =>
            {
                2
            }
            BuildError::Spec(_)
            | BuildError::SourceDateEpoch(_)
            | BuildError::SharedCache(_)
            | BuildError::SignKey { .. }
            | BuildError::Platform { .. }
            | BuildError::NoImageName { .. }
            | BuildError::NoTags { .. }
            | BuildError::Lint { .. } => 2,
            _ => 1,
        }
    }

    fn is_usage(&self) -> bool {
        matches!(self, BuildError::Output(e) if matches!(**e, SinkError::BadTarget(_)))
    }

    /// A stable code for `--json` error reports.
    pub fn code(&self) -> &'static str {
        if self.is_usage() {
            return "usage";
        }
        match self {
            BuildError::Spec(_) => "spec",
            BuildError::SourceDateEpoch(_)
            | BuildError::SharedCache(_)
            | BuildError::SignKey { .. }
            | BuildError::Platform { .. } => "usage",
            BuildError::NoImageName { .. } | BuildError::NoTags { .. } => "spec",
            BuildError::Lint { .. } => "lint",
            BuildError::Resolve(e) => match **e {
                resolve::ResolveError::Locked { .. } | resolve::ResolveError::Lock(_) => "lock",
                resolve::ResolveError::Hub { .. } => "hub",
                resolve::ResolveError::Python { .. } | resolve::ResolveError::Target { .. } => {
                    "deps"
                }
                resolve::ResolveError::Base(_) | resolve::ResolveError::NoClient { .. } => "base",
                resolve::ResolveError::System { .. }
                | resolve::ResolveError::SystemPackages { .. } => "system",
            },
            BuildError::Plan(_) => "source",
            BuildError::Fetch(_) => "fetch",
            BuildError::Layer { .. } | BuildError::BadLayer { .. } => "layer",
            BuildError::Cache(_) => "cache",
            BuildError::Image(_) => "image",
            BuildError::Output(e) if matches!(**e, SinkError::Push { .. }) => "registry",
            BuildError::Registry(_) => "registry",
            BuildError::Output(_) => "output",
        }
    }
}

macro_rules! boxed_from {
    ($($variant:ident($t:ty)),*) => {$(
        impl From<$t> for BuildError {
            fn from(e: $t) -> Self {
                BuildError::$variant(Box::new(e))
            }
        }
    )*};
}
boxed_from!(
    Resolve(resolve::ResolveError),
    Plan(crate::plan::PlanError),
    Fetch(crate::fetch::FetchError),
    Output(SinkError)
);

/// The result of `build`: a plan (dry run) or a finished build.
pub enum Outcome {
    Plan(BuildPlan, Vec<Warning>),
    Built(Box<BuildReport>),
}

pub fn build(opts: &BuildOptions, progress: &dyn Progress) -> Result<Outcome, BuildError> {
    let progress = &Recorder::new(progress);
    let read_before = crate::layer::source_bytes_read();
    let spec = Spec::load_with(
        &opts.spec_path,
        &crate::spec::LoadOptions {
            allow_outside_context: opts.allow_outside_context,
        },
    )?;
    let mtime = crate::layer::source_date_epoch(opts.source_date_epoch.as_deref())
        .map_err(BuildError::SourceDateEpoch)?;
    // The git checkout holding the spec (`created`, source annotations), read once, beside the
    // resolve and the layers: three short git commands that would otherwise wait in line.
    let needs_git = opts.source_date_epoch.is_none()
        || spec.image.source.is_none()
        || spec.image.revision.is_none();
    let git_read = needs_git.then(|| {
        let dir = spec.dir.clone();
        std::thread::spawn(move || crate::sources::git::read(&dir))
    });
    // `--provenance-times` records the clock, which SOURCE_DATE_EPOCH asks to keep out.
    if opts.provenance_times && opts.source_date_epoch.is_some() {
        return Err(BuildError::SourceDateEpoch(
            "--provenance-times records clock times, SOURCE_DATE_EPOCH asks for reproducible \
             output: use one or the other"
                .into(),
        ));
    }
    let started = opts.provenance_times.then(now_rfc3339);
    let platforms = select_platforms(&spec, &opts.platforms)?;
    let targets = registry_targets(&spec, opts)?;
    let signer = signer(opts, !targets.is_empty())?;
    let client = registry_client(&spec, !targets.is_empty(), opts)?;

    if let Some(c) = &client
        && !opts.dry_run
    {
        // manifests and configs by digest from earlier builds (a dry run writes nothing, so it
        // reads none either: it shows what the registry says)
        c.set_content_store(std::sync::Arc::new(Cache::open(&opts.cache_dir)?));
    }
    let lock = resolve::load_lock(&spec, opts.locked, progress)?;
    let resolve_opts = ResolveOptions {
        platforms,
        locked: opts.locked,
        read_only: opts.dry_run,
        hub: hub_options(opts),
        pip_index_urls: opts.pip_index_urls.clone(),
        pip_find_links: opts.pip_find_links.clone(),
        cache_dir: opts.cache_dir.clone(),
    };
    let resolved = resolve::resolve(
        &spec,
        lock.as_ref(),
        client.as_ref(),
        &resolve_opts,
        progress,
    )?;
    let (plan, warnings) = crate::plan::plan(&spec, &resolved, mtime)?;
    for w in &warnings {
        progress.warning(w);
    }
    // what `[system]` installs counts as there for the shared-library lint
    let system_libs = crate::lint::SystemLibs {
        packages: resolved
            .platforms
            .iter()
            .filter_map(|p| p.system.as_ref())
            .flat_map(|s| s.packages.iter().map(|d| d.name.clone()))
            .collect(),
        ..Default::default()
    };
    let lint_inputs = crate::lint::Inputs {
        spec: &spec,
        resolved: &resolved,
        plan: &plan,
        lock: lock.as_ref(),
        system: Some(&system_libs),
    };
    let lints = crate::lint::run(
        &lint_inputs,
        client.as_ref(),
        &opts.cache_dir,
        !opts.dry_run,
    );
    for w in &lints {
        progress.warning(w);
    }
    if opts.strict && !lints.is_empty() {
        return Err(BuildError::Lint { lints });
    }
    if let Some(c) = &client {
        check_registry_limits(c, &targets, &plan)?;
    }
    if opts.dry_run {
        return Ok(Outcome::Plan(plan, progress.take()));
    }

    let cache = Cache::open(&opts.cache_dir)?;
    if let Some(c) = &client {
        // pushes remember where each blob went and mount from there next time
        c.set_blob_memory(std::sync::Arc::new(cache.clone()));
    }
    let mut sinks: Vec<Box<dyn Sink + '_>> = Vec::new();
    let state = cache.root().join("outputs");
    for o in opts
        .outputs
        .iter()
        .filter(|o| !o.starts_with(REGISTRY_PREFIX))
    {
        sinks.push(crate::sink::parse_target(o, Some(&state))?);
    }
    for s in &sinks {
        s.check()?;
    }
    let file_outputs = !sinks.is_empty();
    if let Some(c) = &client {
        for (i, (t, tags)) in targets.iter().enumerate() {
            sinks.push(Box::new(RegistrySink {
                client: c,
                target: t.clone(),
                tags: tags.clone(),
                // `[model]`'s artifacts go to their own name once, with the first push
                artifacts: i == 0,
                signer: signer.as_ref(),
            }));
        }
    }
    // Pushing with no file output, new layers stream to the (first) target.
    let target = targets.first();
    let remote = match (target, &client) {
        (Some((t, _)), Some(c)) if !file_outputs => Some((c, t)),
        _ => None,
    };
    // When that target is the only output, its shared selector records can stand in for Hub
    // layers: a layer found there is neither downloaded nor written, and this build never
    // reads its bytes (a build that needs them — a file output, a second registry — reads the
    // sources instead), so what vouches for it is the record's MAC.
    let shared = match (&targets[..], remote) {
        ([_], Some((client, target))) if opts.shared_cache.is_on() => Some(layers::Shared {
            client,
            target,
            key: opts.shared_cache.verify_key(),
        }),
        _ => None,
    };
    let unique = unique_layers(&plan);
    let known = layers::lookup(&unique, &cache, shared, progress);
    let todo: Vec<&LayerPlan> = unique
        .iter()
        .map(Arc::as_ref)
        .filter(|l| !known.contains_key(&l.selector))
        .collect();
    let fetched = Arc::new(crate::fetch::fetch(
        &todo,
        &resolved.weights,
        &resolve_opts.hub,
        &cache,
        progress,
    )?);
    // the wheels downloaded just now: the shared libraries their native code needs
    let late = crate::lint::run_fetched(
        &lint_inputs,
        &|w| fetched.file(&w.sha256).map(Into::into),
        client.as_ref(),
        &opts.cache_dir,
        true,
        &lints,
    );
    for w in &late {
        progress.warning(w);
    }
    if opts.strict && !late.is_empty() {
        return Err(BuildError::Lint { lints: late });
    }
    // The first output with a blob folder of its own takes the new layers' bytes directly;
    // it is written last, after the sinks that read them from there.
    let spool = sinks
        .iter()
        .enumerate()
        .find_map(|(i, s)| Some((i, s.spool()?)));
    if let Some((i, _)) = spool {
        let owner = sinks.remove(i);
        sinks.push(owner);
    }
    let spool = spool.map(|(_, dir)| dir);
    let dest = layers::Destination {
        spool: spool.as_deref(),
        // registries that bound their requests get hashed layers, uploaded in chunks
        stream: remote.filter(|(c, t)| c.allows_streaming(t)),
    };
    crate::layer::set_compression_threads(opts.jobs);
    let written = layers::write(&todo, &fetched, &cache, mtime, opts.jobs, dest, progress)?;
    if file_outputs && let Some(c) = &client {
        let bases: Vec<_> = resolved.platforms.iter().map(|p| &p.base).collect();
        layers::check_base_blobs(&bases, &cache, progress);
        crate::fetch::base_blobs(c, &bases, &cache, progress)?;
    }
    let checkout = git_read.and_then(|t| t.join().ok().flatten());
    // The image's `created`: SOURCE_DATE_EPOCH, else the last commit of the clean git
    // checkout holding the spec, else 0. Layer entries keep `mtime`, so a new commit does not
    // change every layer.
    let created = match &opts.source_date_epoch {
        Some(_) => mtime,
        None => checkout
            .as_ref()
            .filter(|g| g.clean)
            .map_or(0, |g| g.commit_time),
    };
    let source = git::source_info(
        checkout.as_ref(),
        spec.image.source.as_deref(),
        spec.image.revision.as_deref(),
    );
    let mut images = layers::assemble(
        &spec, &resolved, &plan, &known, &written, &fetched, &cache, mtime, created, &source,
    )?;
    if spec.image.format == crate::spec::ImageFormat::Docker {
        images = crate::image::docker::convert(images)?;
    }
    let artifacts = model::artifacts(
        &spec,
        &resolved,
        &plan,
        &images,
        &effective_tags(&spec, opts),
        &resolve_opts.hub.endpoint,
        created,
    )?;
    let images = images.with_artifacts(artifacts);
    let sbom_on = !opts.no_sbom && opts.sbom_formats != crate::provenance::SbomFormats::NONE;
    let licenses = if sbom_on {
        wheel_licenses(&resolved, &fetched, &cache, progress)
    } else {
        BTreeMap::new()
    };
    let images = with_provenance(
        &spec, &resolved, &plan, images, opts, created, licenses, started, &source,
    )?;

    let mut outputs = Vec::new();
    for s in &sinks {
        progress.message(&format!("writing {s}"));
        match s.write(&images, progress) {
            Ok(r) => outputs.push(r),
            Err(e) => {
                if let Some(d) = e.mismatched_digest() {
                    layers::drop_if_corrupt(&cache, d, progress);
                }
                // A file error inside a sink names a temp path: say which output it was.
                let e = match e {
                    SinkError::Io { .. } => SinkError::Target {
                        target: s.to_string(),
                        source: Box::new(e),
                    },
                    e => e,
                };
                return Err(e.into());
            }
        }
    }
    if let (Some((t, _)), Some(c)) = (target, &client)
        && opts.shared_cache.is_on()
    {
        let key = opts.shared_cache.sign_key();
        publish_selectors(c, t, key, &unique, &known, &written, progress);
    }
    Ok(Outcome::Built(Box::new(report::report(
        &images,
        outputs,
        fetched.hub_bytes,
        written
            .values()
            .filter(|w| w.streamed)
            .map(|w| w.blob.digest.as_str())
            .collect(),
        crate::layer::source_bytes_read().saturating_sub(read_before),
        progress.take(),
    ))))
}

/// The `--sign-key`, read and checked before any work is done.
fn signer(
    opts: &BuildOptions,
    push: bool,
) -> Result<Option<crate::provenance::sign::Signer>, BuildError> {
    let Some(path) = &opts.sign_key else {
        return Ok(None);
    };
    let err = |message: String| BuildError::SignKey {
        path: path.display().to_string(),
        message,
    };
    if !push {
        return Err(err(
            "signatures are stored in a registry: add --push or -o registry:REF".into(),
        ));
    }
    let pem = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    crate::provenance::sign::Signer::from_pem(&pem, &path.display().to_string())
        .map(Some)
        .map_err(|e| err(e.to_string()))
}

/// The SBOM and provenance referrers of every platform image (unless turned off).
#[allow(clippy::too_many_arguments)]
fn with_provenance(
    spec: &Spec,
    resolved: &resolve::Resolved,
    plan: &BuildPlan,
    images: crate::image::ImageSet,
    opts: &BuildOptions,
    mtime: u64,
    licenses: BTreeMap<String, String>,
    started: Option<String>,
    source: &git::SourceInfo,
) -> Result<crate::image::ImageSet, BuildError> {
    let sbom = if opts.no_sbom {
        crate::provenance::SbomFormats::NONE
    } else {
        opts.sbom_formats
    };
    if sbom == crate::provenance::SbomFormats::NONE && opts.no_provenance {
        return Ok(images);
    }
    let err = |message: String| {
        BuildError::Image(crate::image::ImageError::Build {
            what: "provenance",
            message,
        })
    };
    let bytes = std::fs::read(&spec.path)
        .map_err(|e| err(format!("reading {}: {e}", spec.path.display())))?;
    let inputs = crate::provenance::Inputs {
        spec,
        resolved,
        plan,
        spec_path: spec_path_in_project(spec),
        spec_sha256: crate::digest::Digest::of(&bytes).hex().to_string(),
        tags: effective_tags(spec, opts),
        created: crate::image::rfc3339(mtime),
        sbom,
        provenance: !opts.no_provenance,
        licenses,
        times: started.map(|s| (s, now_rfc3339())),
        source: source.url.clone(),
        revision: source.revision.clone(),
    };
    let referrers =
        crate::provenance::referrers(&inputs, &images).map_err(|e| err(e.to_string()))?;
    Ok(images.with_referrers(referrers))
}

fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    crate::image::rfc3339(secs)
}

/// The SPDX license of every wheel the images install that states one (by sha256), read from
/// the wheel's METADATA: the file this build fetched, else the wheel cache's copy (downloaded
/// again when the cache lost it, so a build whose layers all came from the cache records the
/// same licenses). A wheel that cannot be had is NOASSERTION, with a warning.
fn wheel_licenses(
    resolved: &resolve::Resolved,
    fetched: &crate::fetch::Fetched,
    cache: &Cache,
    progress: &dyn Progress,
) -> BTreeMap<String, String> {
    use crate::sources::python;
    let mut wheels: BTreeMap<&str, &python::ResolvedWheel> = BTreeMap::new();
    for p in &resolved.platforms {
        for (_, ws) in &p.deps {
            for w in ws {
                wheels.insert(&w.sha256, w);
            }
        }
    }
    let mut paths: Vec<(String, PathBuf)> = Vec::new();
    let mut missing = Vec::new();
    for (sha, w) in &wheels {
        match fetched.file(sha) {
            Some(p) => paths.push((sha.to_string(), p.to_path_buf())),
            None => missing.push((*w).clone()),
        }
    }
    if !missing.is_empty() {
        let warn = |m: String| progress.warning(&Warning::new("cache-corrupt", m));
        match python::fetch_reporting(&missing, &crate::fetch::wheel_cache(cache), &warn) {
            Ok(got) => paths.extend(missing.iter().map(|w| w.sha256.clone()).zip(got)),
            Err(e) => progress.warning(&Warning::new(
                "sbom-license",
                format!("SBOM: wheel licenses left as NOASSERTION: {e}"),
            )),
        }
    }
    let mut out = BTreeMap::new();
    for (sha, path) in paths {
        match python::install::wheel_license(&path) {
            Ok(m) => {
                if let Some(l) = crate::provenance::license::spdx_expression(&m) {
                    out.insert(sha, l);
                }
            }
            Err(e) => progress.warning(&Warning::new(
                "sbom-license",
                format!(
                    "SBOM: license of {} left as NOASSERTION: {e}",
                    path.display()
                ),
            )),
        }
    }
    out
}

/// The spec file's path relative to the project (the context folder, else the spec's own
/// folder), `/`-separated: the same wherever the checkout is.
fn spec_path_in_project(spec: &Spec) -> String {
    let abs = std::fs::canonicalize(&spec.path).unwrap_or_else(|_| spec.path.clone());
    let root = spec
        .context
        .clone()
        .or_else(|| std::fs::canonicalize(&spec.dir).ok());
    root.and_then(|r| abs.strip_prefix(r).ok().map(|p| p.to_path_buf()))
        .or_else(|| abs.file_name().map(PathBuf::from))
        .unwrap_or(abs)
        .to_string_lossy()
        .replace('\\', "/")
}

fn hub_options(opts: &BuildOptions) -> crate::sources::hf::HubOptions {
    opts.hub
        .clone()
        .unwrap_or_else(|| crate::sources::hf::HubOptions::from_env(|k| std::env::var(k).ok()))
}

/// Every distinct layer once (weights and app layers are shared between platforms).
fn unique_layers(plan: &BuildPlan) -> Vec<Arc<LayerPlan>> {
    let mut unique: Vec<Arc<LayerPlan>> = Vec::new();
    for p in &plan.platforms {
        for l in &p.layers {
            if !unique.iter().any(|u| u.selector == l.selector) {
                unique.push(l.clone());
            }
        }
    }
    unique
}

/// Shares the Hub layers through the target: a runner with an empty cache finds them.
fn publish_selectors(
    client: &RegistryClient,
    target: &Reference,
    key: Option<&shared_cache::CacheKey>,
    unique: &[Arc<LayerPlan>],
    known: &layers::Known,
    written: &layers::Written,
    progress: &dyn Progress,
) {
    let records: Vec<(String, crate::layer::LayerBlob)> = unique
        .iter()
        .filter(|l| l.store_bytes)
        .filter(|l| known.get(&l.selector).is_none_or(|k| k.remote.is_none()))
        .filter_map(|l| {
            let blob = written
                .get(&l.selector)
                .map(|w| w.blob.clone())
                .or_else(|| known.get(&l.selector).map(|k| k.blob.clone()))?;
            Some((l.selector.clone(), blob))
        })
        .collect();
    if records.is_empty() {
        return;
    }
    match shared_cache::publish(client, target, &records, key) {
        Ok(n) => progress.message(&format!(
            "shared layer cache: {n} record(s) published in {target}"
        )),
        Err(e) => progress.warning(&Warning::new(
            "shared-cache-publish",
            format!("shared layer cache: could not publish records in {target}: {e}"),
        )),
    }
}

/// A file, or an uncompressed layer, over a push target's per-layer limit is refused before
/// anything is built (a compressed layer's size is known once written: the push checks it
/// before its first upload).
fn check_registry_limits(
    client: &RegistryClient,
    targets: &[(Reference, Vec<String>)],
    plan: &crate::plan::BuildPlan,
) -> Result<(), BuildError> {
    for (t, _) in targets {
        let limits = client.limits(&t.registry);
        let Some(max) = limits.max_blob else { continue };
        let over = |what: String, size: u64| {
            BuildError::Registry(Box::new(crate::registry::RegistryError::OverLimit {
                host: t.registry.clone(),
                repository: t.repository.clone(),
                registry: limits.name.to_string(),
                what,
                size,
                limit: max,
            }))
        };
        for l in plan.platforms.iter().flat_map(|p| &p.layers) {
            if let Some(e) = l.entries.iter().find(|e| e.size() > max) {
                return Err(over(format!("/{} ({})", e.path, l.role), e.size()));
            }
            let total: u64 = l.entries.iter().map(|e| e.size()).sum();
            if l.compression == crate::layer::Compression::None && total > max {
                return Err(over(format!("the {} layer", l.role), total));
            }
        }
    }
    Ok(())
}

fn registry_client(
    spec: &Spec,
    push: bool,
    opts: &BuildOptions,
) -> Result<Option<RegistryClient>, BuildError> {
    if !push && !matches!(spec.image.base, BaseSpec::Registry(_)) {
        return Ok(None);
    }
    RegistryClient::new(opts.registry.clone())
        .map(Some)
        .map_err(|e| BuildError::Registry(Box::new(e)))
}

fn select_platforms(spec: &Spec, wanted: &[String]) -> Result<Vec<Platform>, BuildError> {
    if wanted.is_empty() {
        return Ok(spec.image.platforms.clone());
    }
    let mut out = Vec::new();
    for w in wanted {
        let p = Platform::parse(w).map_err(|e| BuildError::Platform {
            requested: w.clone(),
            message: e.to_string(),
        })?;
        // `linux/arm64` and `linux/arm64/v8` name the same platform: build the spec's entry.
        let Some(sp) = spec
            .image
            .platforms
            .iter()
            .find(|sp| sp.matches(&p) || p.matches(sp))
        else {
            return Err(BuildError::Platform {
                requested: w.clone(),
                message: format!(
                    "the spec builds {}",
                    spec.image
                        .platforms
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
        };
        out.push(sp.clone());
    }
    Ok(out)
}

const REGISTRY_PREFIX: &str = "registry:";

/// The image's tags: `--tag`s, else `[image].tags`, else `latest`.
fn effective_tags(spec: &Spec, opts: &BuildOptions) -> Vec<String> {
    let tags = if opts.tags.is_empty() {
        spec.image.tags.clone()
    } else {
        opts.tags.clone()
    };
    if tags.is_empty() {
        vec!["latest".to_string()]
    } else {
        tags
    }
}

/// The registries to push to, with their tags, checked before any work is done: `--push`
/// sends `[image].name` with `--tag`s or `[image].tags`; `-o registry:REF` sends REF with its
/// own tag, or the same tags when it names none.
fn registry_targets(
    spec: &Spec,
    opts: &BuildOptions,
) -> Result<Vec<(Reference, Vec<String>)>, BuildError> {
    let tags = effective_tags(spec, opts);
    let parse = |r: &str| Reference::parse(r).map_err(|e| BuildError::Registry(Box::new(e)));
    let mut out = Vec::new();
    if opts.push {
        if opts.tags.is_empty() && spec.image.tags.is_empty() {
            return Err(BuildError::NoTags {
                spec: spec.path.clone(),
            });
        }
        let name = spec
            .image
            .name
            .as_ref()
            .ok_or_else(|| BuildError::NoImageName {
                spec: spec.path.clone(),
            })?;
        out.push((parse(name)?, tags.clone()));
    }
    for o in &opts.outputs {
        if let Some(r) = o.strip_prefix(REGISTRY_PREFIX) {
            let target = parse(r)?;
            let t = match &target.tag {
                Some(t) => vec![t.clone()],
                None => tags.clone(),
            };
            out.push((target, t));
        }
    }
    Ok(out)
}
