//! Fetch: downloads what the plan needs and the caches lack — Hub files, wheels, and base
//! layers for file outputs — each verified against its resolved size and digest. The result
//! maps every downloaded file's sha256 to where it now is, which turns a layer plan's
//! `Fetched` entries (and a wheel set) into entries the layer writer can read.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;

use crate::cache::Cache;
use crate::image::BlobSource;
use crate::layer::{self, Content, Entry, LayerError};
use crate::lock::WeightsLock;
use crate::plan::LayerPlan;
use crate::progress::Progress;
use crate::registry::RegistryClient;
use crate::resolve::ResolvedBase;
use crate::sources::hf::{self, HubError, HubOptions, HubSnapshot};
use crate::sources::python::{self, PythonError, ResolvedWheel};

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("weights {name}: {source}")]
    Hub { name: String, source: Box<HubError> },
    #[error("{role}: {source}")]
    Python {
        role: String,
        source: Box<PythonError>,
    },
    #[error("{role}: {source}")]
    Layer { role: String, source: LayerError },
    #[error(
        "{role}: {wheel} would install /{path}, which the base's Debian package `{package}` owns\n  hint: remove `{package}` from the base, or drop the wheel from the set (the Debian package provides it)"
    )]
    DpkgConflict {
        role: String,
        wheel: String,
        path: String,
        package: String,
    },
    #[error("system: {0}")]
    System(String),
    #[error("system: {source}")]
    Install {
        #[from]
        source: crate::sources::debian::install::InstallError,
    },
    #[error("base layer {digest}: {source}")]
    Base {
        digest: String,
        source: Box<crate::registry::RegistryError>,
    },
}

/// Where each fetched file is, by sha256 (lowercase hex).
#[derive(Debug, Clone, Default)]
pub struct Fetched {
    files: BTreeMap<String, PathBuf>,
    /// Hub bytes downloaded (0: all from caches).
    pub hub_bytes: u64,
    /// Debian packages unpacked in the cache, by sha256.
    debs: BTreeMap<String, std::sync::Arc<crate::sources::debian::install::Unpacked>>,
}

impl Fetched {
    /// The file fetched with this sha256 (a Hub file or a wheel), if this build fetched it.
    pub fn file(&self, sha256: &str) -> Option<&std::path::Path> {
        self.files.get(sha256).map(PathBuf::as_path)
    }

    /// The tar entries of `l` with every download in place: `Fetched` entries point at their
    /// files, a wheel set is installed (its entries listed from the wheels).
    /// A layer with nothing downloaded (an app tree of 100k files) lends its plan's entries.
    pub fn entries<'a>(&self, l: &'a LayerPlan) -> Result<Cow<'a, [Entry]>, FetchError> {
        let role = l.role.to_string();
        if let Some(sys) = &l.system {
            let unpacked = sys
                .packages
                .iter()
                .map(|p| {
                    self.debs
                        .get(&p.sha256)
                        .cloned()
                        .ok_or_else(|| FetchError::Layer {
                            role: role.clone(),
                            source: LayerError::NotFetched {
                                path: p.url.clone(),
                                sha256: p.sha256.clone(),
                            },
                        })
                })
                .collect::<Result<Vec<_>, _>>()?;
            let installed = crate::sources::debian::install::layer_entries(
                &sys.packages,
                &sys.base,
                &unpacked,
            )?;
            return layer::finalize(installed.entries)
                .map(Cow::Owned)
                .map_err(|source| FetchError::Layer { role, source });
        }
        if let Some(w) = &l.wheels {
            let files = w
                .wheels
                .iter()
                .map(|wh| self.path(&wh.sha256, &wh.filename))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|source| FetchError::Layer {
                    role: role.clone(),
                    source,
                })?;
            let py_err = |e| FetchError::Python {
                role: role.clone(),
                source: Box::new(e),
            };
            let mut entries = python::install_entries(&files, &w.target).map_err(py_err)?;
            if let Some(bc) = &w.bytecode {
                entries = python::bytecode::compile(entries, &w.target, bc)
                    .map_err(py_err)?
                    .0;
            }
            // never over a file a Debian package of the base owns
            for e in &entries {
                if matches!(e.content, Content::Dir) {
                    continue;
                }
                if let Some(package) = w.dpkg.get(&e.path) {
                    // the wheel that installs it (a launcher script is generated for its wheel)
                    let name_of = |p: &std::path::Path| {
                        p.file_name()
                            .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
                    };
                    let wheel = match &e.content {
                        Content::ZipMember { archive, name, .. } => {
                            format!("{} ({name})", name_of(archive))
                        }
                        _ => files
                            .iter()
                            .find(|f| {
                                python::install::wheel_entries(f, &w.target)
                                    .is_ok_and(|es| es.iter().any(|x| x.path == e.path))
                            })
                            .map_or_else(
                                || "a file the wheel install generates".to_string(),
                                |f| format!("{} (a generated launcher)", name_of(f)),
                            ),
                    };
                    return Err(FetchError::DpkgConflict {
                        role,
                        wheel,
                        path: e.path.clone(),
                        package: package.clone(),
                    });
                }
            }
            return layer::finalize(entries)
                .map(Cow::Owned)
                .map_err(|source| FetchError::Layer { role, source });
        }
        if !l
            .entries
            .iter()
            .any(|e| matches!(e.content, Content::Fetched { .. }))
        {
            return Ok(Cow::Borrowed(&l.entries));
        }
        l.entries
            .iter()
            .map(|e| match &e.content {
                Content::Fetched { sha256, size } => Ok(Entry {
                    path: e.path.clone(),
                    mode: e.mode,
                    content: Content::File {
                        path: self.path(sha256, &e.path)?,
                        size: *size,
                    },
                }),
                _ => Ok(e.clone()),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Cow::Owned)
            .map_err(|source| FetchError::Layer { role, source })
    }

    fn path(&self, sha256: &str, what: &str) -> Result<PathBuf, LayerError> {
        self.files
            .get(sha256)
            .cloned()
            .ok_or_else(|| LayerError::NotFetched {
                path: what.to_string(),
                sha256: sha256.to_string(),
            })
    }
}

/// Downloads the Hub files and wheels of `layers` (the layers that will be written).
pub fn fetch(
    layers: &[&LayerPlan],
    weights: &[WeightsLock],
    hub: &HubOptions,
    cache: &Cache,
    progress: &dyn Progress,
) -> Result<Fetched, FetchError> {
    let mut out = Fetched::default();
    // Hub files, per weights entry (one snapshot each).
    let wanted: BTreeSet<&str> = layers
        .iter()
        .flat_map(|l| &l.entries)
        .filter_map(|e| match &e.content {
            Content::Fetched { sha256, .. } => Some(sha256.as_str()),
            _ => None,
        })
        .collect();
    let downloaded = AtomicU64::new(0);
    for w in weights {
        let files: Vec<_> = w
            .files
            .iter()
            .filter(|f| wanted.contains(f.sha256.as_str()))
            .cloned()
            .collect();
        if files.is_empty() {
            continue;
        }
        let snap = HubSnapshot {
            repo: w.repo.clone(),
            commit: w.commit.clone(),
            files,
        };
        let events = crate::resolve::hub_events(progress, Some(&downloaded));
        let got = hf::fetch(hub, &snap, &events).map_err(|source| FetchError::Hub {
            name: w.name.clone(),
            source: Box::new(source),
        })?;
        for (f, path) in got {
            out.files.insert(f.sha256, path);
        }
    }
    out.hub_bytes = downloaded.into_inner();
    fetch_debs(layers, cache, &mut out, progress)?;
    // Wheels, once each, into the wheel cache; an error names the set of the wheel.
    for l in layers {
        let Some(w) = &l.wheels else { continue };
        let wheels: Vec<ResolvedWheel> = w
            .wheels
            .iter()
            .filter(|wh| !out.files.contains_key(&wh.sha256))
            .cloned()
            .collect();
        if wheels.is_empty() {
            continue;
        }
        let warn = |m: String| {
            progress.warning(&crate::progress::Warning::new("cache-corrupt", m));
        };
        let paths = python::fetch_reporting(&wheels, &wheel_cache(cache), &warn).map_err(|e| {
            FetchError::Python {
                role: l.role.to_string(),
                source: Box::new(e),
            }
        })?;
        for (w, p) in wheels.iter().zip(paths) {
            out.files.insert(w.sha256.clone(), p);
        }
    }
    Ok(out)
}

/// Downloads (verified by sha256, cached by it) and unpacks the Debian packages of the
/// system layers; warns about maintainer scripts whose work is not done.
fn fetch_debs(
    layers: &[&LayerPlan],
    cache: &Cache,
    out: &mut Fetched,
    progress: &dyn Progress,
) -> Result<(), FetchError> {
    use crate::sources::debian::{archive, install};
    let mut transport = None;
    for l in layers {
        let Some(sys) = &l.system else { continue };
        let mut unhandled = Vec::new();
        for p in &sys.packages {
            if out.debs.contains_key(&p.sha256) {
                continue;
            }
            let t = match &transport {
                Some(t) => t,
                None => transport.insert(
                    crate::transport::Transport::from_defaults()
                        .map_err(|e| FetchError::System(e.to_string()))?,
                ),
            };
            progress.message(&format!("system: {} {}", p.name, p.version));
            let deb = archive::fetch_verified(
                t,
                &p.url,
                p.size,
                &p.sha256,
                &cache.root().join("debian/debs"),
                ".deb",
            )
            .map_err(|e| FetchError::System(format!("{} {}: {e}", p.name, p.version)))?;
            let u = install::unpack_cached(&deb, &p.sha256, &cache.root().join("debian/unpacked"))?;
            let actions =
                crate::sources::debian::dpkg::script_actions(&p.name, &u.control, &u.entries);
            if !actions.unhandled.is_empty() {
                unhandled.push(format!("{} ({})", p.name, actions.unhandled.join("; ")));
            }
            out.debs.insert(p.sha256.clone(), u);
        }
        if !unhandled.is_empty() {
            progress.warning(&crate::progress::Warning::new(
                "system-scripts",
                format!(
                    "maintainer scripts are not run; what these packages' scripts do was not done: {}",
                    unhandled.join(", ")
                ),
            ));
        }
    }
    Ok(())
}

pub(crate) fn wheel_cache(cache: &Cache) -> PathBuf {
    cache.root().join("wheels")
}

/// Fetches the layers of registry bases into the cache (verified against their digests), for
/// outputs that need their bytes.
pub fn base_blobs(
    client: &RegistryClient,
    bases: &[&ResolvedBase],
    cache: &Cache,
    progress: &dyn Progress,
) -> Result<(), FetchError> {
    let mut done = BTreeSet::new();
    for l in bases.iter().flat_map(|b| &b.layers) {
        let BlobSource::Remote {
            registry,
            repository,
            ..
        } = &l.source
        else {
            continue;
        };
        let d = &l.descriptor;
        if !done.insert(d.digest.clone()) {
            continue;
        }
        if cache.has_blob(&d.digest) {
            cache.touch_blob(&d.digest); // its last use, for `mlimg cache prune`
            continue;
        }
        progress.message(&format!(
            "fetching base layer {} ({} bytes)",
            d.digest, d.size
        ));
        let r = crate::registry::Reference {
            registry: registry.clone(),
            repository: repository.clone(),
            tag: None,
            digest: None,
        };
        client
            .blob_to_file(&r, &d.digest, d.size, &cache.blob_path(&d.digest))
            .map_err(|e| FetchError::Base {
                digest: d.digest.to_string(),
                source: Box::new(e),
            })?;
    }
    Ok(())
}
