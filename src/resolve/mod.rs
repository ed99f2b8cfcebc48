//! Resolve: everything that floats goes over the network here, and nothing else does.
//!
//! - the base reference → manifest (and config) per platform, pinned by `mlimg.lock`;
//! - the target Python per platform, detected from the base (its config and a streamed read
//!   of its layers' tar headers: nothing is stored);
//! - each wheel set → the wheel per package and platform, with URL and sha256;
//! - each Hub weights entry → a commit and its files with size and sha256.
//!
//! The result is the lock value: [`Resolved::to_lock`] is what `mlimg lock` writes, and a
//! build with a lock that matches the spec takes every answer from it — with `--locked`, no
//! index, Hub or registry tag is asked anything (only content-addressed blobs are read).

pub mod base;
pub mod basefs;
mod hub;
mod python;
pub mod system;

use std::path::{Path, PathBuf};

pub use base::{BaseError, ResolvedBase};
pub(crate) use hub::hub_events;
pub use hub::hub_source;
pub(crate) use python::open_base_layer;

use crate::lock::{self, DepsLock, Lockfile, WeightsLock};
use crate::platform::Platform;
use crate::progress::{Progress, Warning};
use crate::registry::RegistryClient;
use crate::sources::hf::{HubError, HubOptions};
use crate::sources::python::{PythonError, PythonTarget, ResolvedWheel};
use crate::spec::{BaseSpec, Spec};

/// What resolving needs besides the spec and the lock.
#[derive(Debug, Clone)]
pub struct ResolveOptions {
    /// The platforms to build (a subset of the spec's).
    pub platforms: Vec<Platform>,
    /// Refuse a lock that does not match the spec, and ask nothing that floats.
    pub locked: bool,
    /// Leave every cache as it is (a dry run): small Hub files hashed to resolve them are
    /// fetched into a temporary folder that is removed afterwards.
    pub read_only: bool,
    pub hub: HubOptions,
    /// Indexes after each set's own `index_url` (`PIP_INDEX_URL`, `PIP_EXTRA_INDEX_URL`).
    pub pip_index_urls: Vec<String>,
    /// Folders of wheels after each set's own `find_links` (`PIP_FIND_LINKS`).
    pub pip_find_links: Vec<PathBuf>,
    /// The build cache, read only: registry base layers found there are not downloaded again.
    pub cache_dir: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error(transparent)]
    Base(#[from] BaseError),
    #[error("weights {name}: {source}")]
    Hub { name: String, source: Box<HubError> },
    #[error("deps {set} ({platform}): {source}")]
    Python {
        set: String,
        platform: String,
        source: Box<PythonError>,
    },
    #[error("python target for {platform} (base {base}): {source}")]
    Target {
        platform: String,
        base: String,
        source: Box<PythonError>,
    },
    #[error("--locked: {}: {reason}\n  hint: run `mlimg lock` and commit the lock file", path.display())]
    Locked { path: PathBuf, reason: String },
    #[error(transparent)]
    Lock(#[from] lock::LockError),
    #[error("base {reference}: a registry base needs a registry client")]
    NoClient { reference: String },
    #[error("[system] for {platform}: {message}")]
    System { platform: String, message: String },
    #[error("{}: [system] for {platform}: {source}", spec.display())]
    SystemPackages {
        spec: PathBuf,
        platform: String,
        source: Box<crate::sources::debian::resolve::ResolveError>,
    },
}

/// The resolved inputs of one platform's image.
#[derive(Debug, Clone)]
pub struct ResolvedPlatform {
    pub platform: Platform,
    pub base: ResolvedBase,
    /// The interpreter wheels are installed for (`None` without wheel sets).
    pub python: Option<PythonTarget>,
    /// How the target was decided, for `--dry-run`.
    pub explain: Vec<String>,
    /// Wheel sets in spec order: set name → chosen wheels.
    pub deps: Vec<(String, Vec<ResolvedWheel>)>,
    /// Per wheel set, the hash of its inputs (for the lock).
    inputs: Vec<String>,
    /// The files the base's Debian packages own (read with the target; empty otherwise).
    pub dpkg: std::sync::Arc<crate::sources::python::detect::DpkgFiles>,
    /// Who compiles the wheels' bytecode: `None` without wheel sets or with
    /// `compile_bytecode = false`, `Some(Err(why))` when no interpreter of the target's
    /// version was found on this machine. Not part of the lock (it is the build machine's).
    pub bytecode: Option<Result<crate::sources::python::bytecode::Compiler, String>>,
    /// `[system]`'s Debian packages (`None` without `[system]`).
    pub system: Option<std::sync::Arc<system::ResolvedSystem>>,
}

/// Everything the plan needs that does not come from local files.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub platforms: Vec<ResolvedPlatform>,
    /// Hub weights entries, in spec order.
    pub weights: Vec<WeightsLock>,
}

impl Resolved {
    /// The lock value: what `mlimg lock` writes.
    pub fn to_lock(&self, spec: &Spec) -> Lockfile {
        let base = match &spec.image.base {
            BaseSpec::Scratch => None,
            _ => Some(lock::BaseLock {
                reference: spec.image.base_name.clone(),
                digest: self
                    .platforms
                    .first()
                    .and_then(|p| p.base.top_digest.clone()),
                platforms: self
                    .platforms
                    .iter()
                    .filter_map(|p| {
                        Some(lock::PlatformLock {
                            platform: p.platform.to_string(),
                            digest: p.base.manifest_digest.clone()?,
                        })
                    })
                    .collect(),
            }),
        };
        let mut deps = Vec::new();
        for p in &self.platforms {
            let Some(t) = &p.python else { continue };
            for ((name, wheels), inputs) in p.deps.iter().zip(&p.inputs) {
                deps.push(DepsLock {
                    name: name.clone(),
                    platform: p.platform.to_string(),
                    inputs: inputs.clone(),
                    python: t.to_string(),
                    wheels: wheels.clone(),
                });
            }
        }
        let system = self
            .platforms
            .iter()
            .filter_map(|p| {
                let s = p.system.as_ref()?;
                Some(lock::SystemLock {
                    platform: p.platform.to_string(),
                    inputs: s.inputs.clone(),
                    architecture: s.architecture.clone(),
                    packages: s.packages.clone(),
                })
            })
            .collect();
        let mut l = Lockfile {
            version: lock::LOCK_VERSION,
            base,
            weights: self.weights.clone(),
            deps,
            system,
        };
        l.normalize();
        l
    }
}

/// Reads the spec's lock file: with `--locked` it must exist and match the spec; a stale
/// lock in a plain build is a warning (the parts that still match are used).
pub fn load_lock(
    spec: &Spec,
    locked: bool,
    progress: &dyn Progress,
) -> Result<Option<Lockfile>, ResolveError> {
    let path = lock::lock_path(&spec.path);
    let lock = Lockfile::load(&path)?;
    let Some(l) = &lock else {
        if locked {
            return Err(ResolveError::Locked {
                path,
                reason: "does not exist".into(),
            });
        }
        return Ok(None);
    };
    let stale = l.check(spec);
    if !stale.is_empty() {
        if locked {
            return Err(ResolveError::Locked {
                path,
                reason: format!("does not match the spec:\n  {}", stale.join("\n  ")),
            });
        }
        progress.warning(&Warning::new(
            "lock-stale",
            format!(
                "{} is stale (building from the spec; run `mlimg lock` to update it): {}",
                path.display(),
                stale.join("; ")
            ),
        ));
    }
    Ok(lock)
}

/// Resolves the spec for `opts.platforms`, taking what the lock pins.
pub fn resolve(
    spec: &Spec,
    lock: Option<&Lockfile>,
    client: Option<&RegistryClient>,
    opts: &ResolveOptions,
    progress: &dyn Progress,
) -> Result<Resolved, ResolveError> {
    let lock_path = lock::lock_path(&spec.path);
    let mut platforms = Vec::new();
    for p in &opts.platforms {
        let base = resolve_base(spec, p, client, lock)?;
        check_base_lock(lock, p, &base, opts.locked, &lock_path, progress)?;
        platforms.push(ResolvedPlatform {
            platform: p.clone(),
            base,
            python: None,
            explain: Vec::new(),
            deps: Vec::new(),
            inputs: Vec::new(),
            dpkg: Default::default(),
            bytecode: None,
            system: None,
        });
    }
    let mut compilers = std::collections::BTreeMap::new();
    for rp in &mut platforms {
        system::resolve_platform(spec, rp, client, lock, opts, &lock_path, progress)?;
        python::resolve_platform(spec, rp, client, lock, opts, &lock_path, progress)?;
        if let Some(t) = &rp.python
            && spec.compile_bytecode
            && !rp.deps.is_empty()
        {
            let c = compilers.entry(t.version).or_insert_with(|| {
                let dir = &opts.cache_dir;
                crate::sources::python::bytecode::find_compiler_with(
                    t.version,
                    &|key| crate::cache::facts::get(dir, "python-compiler", key),
                    &|key, c| {
                        if !opts.read_only {
                            crate::cache::facts::put(dir, "python-compiler", key, c)
                        }
                    },
                )
            });
            rp.bytecode = Some(c.clone());
        }
    }
    let weights = hub::resolve_weights(spec, lock, opts, &lock_path, progress)?;
    Ok(Resolved { platforms, weights })
}

fn resolve_base(
    spec: &Spec,
    platform: &Platform,
    client: Option<&RegistryClient>,
    lock: Option<&Lockfile>,
) -> Result<ResolvedBase, ResolveError> {
    match &spec.image.base {
        BaseSpec::Scratch => Ok(base::scratch(platform)),
        BaseSpec::OciLayout { path, tag } => Ok(base::from_layout(
            path,
            tag.as_deref(),
            platform,
            &spec.image.base_name,
        )?),
        BaseSpec::Registry(r) => {
            let c = client.ok_or_else(|| ResolveError::NoClient {
                reference: r.clone(),
            })?;
            // Locked: pull the platform's manifest by its locked digest, never by tag.
            match lock.and_then(|l| l.base_digest(r, platform)) {
                Some(d) => {
                    let pinned = match r.split_once('@') {
                        Some((name, _)) => format!("{name}@{d}"),
                        None => format!("{r}@{d}"),
                    };
                    let mut b = base::from_registry(c, &pinned, platform)?;
                    b.name = r.clone();
                    b.top_digest = lock
                        .and_then(|l| l.base.as_ref())
                        .and_then(|b| b.digest.clone());
                    Ok(b)
                }
                None => Ok(base::from_registry(c, r, platform)?),
            }
        }
    }
}

/// A base whose digest differs from the locked one: `--locked` fails, a plain build warns.
fn check_base_lock(
    lock: Option<&Lockfile>,
    p: &Platform,
    b: &ResolvedBase,
    locked: bool,
    lock_path: &Path,
    progress: &dyn Progress,
) -> Result<(), ResolveError> {
    let Some(l) = lock else { return Ok(()) };
    let Some(want) = l.base_digest(&b.name, p) else {
        return Ok(());
    };
    if let Some(got) = b.manifest_digest.as_deref()
        && want != got
    {
        let msg = format!(
            "base {} {p}: the lock has {want}, the base now is {got}",
            b.name
        );
        if locked {
            return Err(ResolveError::Locked {
                path: lock_path.to_path_buf(),
                reason: msg,
            });
        }
        progress.warning(&Warning::new(
            "lock-stale",
            format!("{} is stale: {msg}; run `mlimg lock`", lock_path.display()),
        ));
    }
    Ok(())
}
