//! Planning: turning the spec's sources into ordered layer plans per platform.
//! Each source kind has its own function; the result is a [`BuildPlan`] value.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::hub::HubPlanner;
use super::{BuildError, BuildOptions};
use crate::plan::{BuildPlan, LayerPlan, LayerRole, PlatformPlan};
use crate::resolve::base::{BlobOrigin, ResolvedBase};
use crate::sources::local::{Filter, IgnoreRules, walk};
use crate::sources::python::{self, DepsSetInput, PythonTarget};
use crate::spec::{DepsSource, DepsSpec, Layering, Platform, Spec, WeightsSource};

fn src_err(role: &LayerRole) -> impl FnOnce(crate::sources::local::SourceError) -> BuildError {
    let role = role.to_string();
    move |source| BuildError::Source { role, source }
}

fn layer_err(role: &LayerRole) -> impl FnOnce(crate::layer::LayerError) -> BuildError {
    let role = role.to_string();
    move |source| BuildError::Layer { role, source }
}

fn no_filter() -> Result<Filter, BuildError> {
    Filter::globs(&[], &[]).map_err(|e| BuildError::Options(e.to_string()))
}

/// Plans the layers of every platform: deps sets in spec order, weights, app.
pub fn make_plan(
    spec: &Spec,
    platforms: &[Platform],
    bases: &[ResolvedBase],
    mtime: u64,
    opts: &BuildOptions,
    hub: &HubPlanner<'_>,
) -> Result<BuildPlan, BuildError> {
    let mut shared: Vec<Arc<LayerPlan>> = Vec::new();
    for w in &spec.weights {
        shared.extend(plan_weights(w, mtime, hub)?.into_iter().map(Arc::new));
    }
    if let Some(app) = plan_app(spec, mtime)? {
        shared.push(Arc::new(app));
    }
    let mut out = Vec::new();
    for (p, base) in platforms.iter().zip(bases) {
        let mut layers: Vec<Arc<LayerPlan>> = Vec::new();
        let mut sets = Vec::new();
        let mut explain = Vec::new();
        // The target interpreter, detected once per platform when a set installs wheels.
        let target = if spec
            .deps
            .iter()
            .any(|d| !matches!(d.source, DepsSource::Dir(_)))
        {
            let (t, why) = python_target(spec, p, base, opts)?;
            explain = why;
            Some(t)
        } else {
            None
        };
        for d in &spec.deps {
            let (lp, wheels) = plan_deps(d, target.as_ref(), mtime, opts)?;
            if let Some(w) = wheels {
                sets.push((d.name.clone(), w));
            }
            layers.push(Arc::new(lp));
        }
        python::check_disjoint(&sets).map_err(|source| BuildError::Python {
            set: "deps".into(),
            source: Box::new(source),
        })?;
        layers.extend(shared.iter().cloned());
        out.push(PlatformPlan {
            platform: p.clone(),
            layers,
            explain,
        });
    }
    Ok(BuildPlan {
        base: spec.image.base_name.clone(),
        mtime,
        platforms: out,
    })
}

/// One deps set for one platform: a copied tree, or pinned wheels installed for the target.
fn plan_deps(
    d: &DepsSpec,
    target: Option<&PythonTarget>,
    mtime: u64,
    opts: &BuildOptions,
) -> Result<(LayerPlan, Option<Vec<python::ResolvedWheel>>), BuildError> {
    let role = LayerRole::Deps(d.name.clone());
    let created_by = format!("mlimg deps {}", d.name);
    match &d.source {
        DepsSource::Dir(dir) => {
            let dest = d.dest.as_deref().unwrap_or("/");
            let w = walk(dir, dest, &no_filter()?).map_err(src_err(&role))?;
            let lp = LayerPlan::new(
                role.clone(),
                d.compression,
                w.entries,
                &w.fingerprint,
                mtime,
                created_by,
            )
            .map_err(layer_err(&role))?;
            Ok((lp, None))
        }
        DepsSource::Requirements(_) | DepsSource::Pylock(_) => {
            let py_err = |source: python::PythonError| BuildError::Python {
                set: d.name.clone(),
                source: Box::new(source),
            };
            let Some(target) = target else {
                return Err(BuildError::Options(format!(
                    "deps {}: no target interpreter was planned",
                    d.name
                )));
            };
            let mut index_urls: Vec<String> = d.index_url.iter().cloned().collect();
            index_urls.extend(opts.pip_index_urls.iter().cloned());
            let input = DepsSetInput {
                name: d.name.clone(),
                requirements: match &d.source {
                    DepsSource::Requirements(p) => Some(p.clone()),
                    _ => None,
                },
                pylock: match &d.source {
                    DepsSource::Pylock(p) => Some(p.clone()),
                    _ => None,
                },
                index_urls,
                find_links: d.find_links.clone(),
            };
            let wheels = python::resolve(&input, target).map_err(py_err)?;
            let files = python::fetch(&wheels, &opts.cache_dir.join("wheels")).map_err(py_err)?;
            let entries = python::install_entries(&files, target).map_err(py_err)?;
            // Wheels are content-addressed: their hashes and the target decide the layer.
            let mut fp = vec![format!("python target {target}")];
            fp.extend(
                wheels
                    .iter()
                    .map(|w| format!("wheel {} sha256:{}", w.filename, w.sha256)),
            );
            let lp = LayerPlan::new(role.clone(), d.compression, entries, &fp, mtime, created_by)
                .map_err(layer_err(&role))?;
            Ok((lp, Some(wheels)))
        }
    }
}

/// The interpreter wheels are installed for: `[python]` values win, the rest is detected
/// from the base image (its config and layer tar headers). Returns the explanation lines too.
fn python_target(
    spec: &Spec,
    platform: &Platform,
    base: &ResolvedBase,
    opts: &BuildOptions,
) -> Result<(PythonTarget, Vec<String>), BuildError> {
    let layers: Vec<(String, String)> = base
        .layers
        .iter()
        .map(|l| (l.blob.digest.clone(), l.blob.media_type.clone()))
        .collect();
    let origin = base.origin.clone();
    let cache_dir = opts.cache_dir.clone();
    let locate = move |digest: &str| -> Option<PathBuf> {
        let hex = digest.strip_prefix("sha256:")?;
        if hex.is_empty() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let p = match &origin {
            BlobOrigin::Layout(dir) => dir.join("blobs/sha256").join(hex),
            BlobOrigin::Registry(_) | BlobOrigin::None => crate::cache::Cache::open(&cache_dir)
                .ok()?
                .blob_path(digest),
        };
        p.is_file().then_some(p)
    };
    let (target, mut explain) = python::detect::detect_target(
        &base.config,
        &layers,
        &locate,
        &platform.architecture,
        spec.python.as_ref(),
    )
    .map_err(|e| {
        BuildError::Options(format!(
            "{}: python target for {platform} (base {}): {e}",
            spec.path.display(),
            spec.image.base_name
        ))
    })?;
    for line in &mut explain {
        line.insert_str(0, "  ");
    }
    explain.insert(0, format!("python target (base {}):", spec.image.base_name));
    Ok((target, explain))
}

/// A weights entry: one layer, or one per file.
fn plan_weights(
    w: &crate::spec::WeightsSpec,
    mtime: u64,
    hub: &HubPlanner<'_>,
) -> Result<Vec<LayerPlan>, BuildError> {
    let role = LayerRole::Weights(w.name.clone());
    let WeightsSource::Local(src) = &w.source else {
        return hub.plan(w, mtime);
    };
    let filter =
        Filter::globs(&w.include, &w.exclude).map_err(|e| BuildError::Options(e.to_string()))?;
    let walked = walk(src, &w.dest, &filter).map_err(src_err(&role))?;
    let opts = format!("include {:?} exclude {:?}", w.include, w.exclude);
    let mut out = Vec::new();
    match w.layering {
        Layering::One => {
            let mut fp = walked.fingerprint;
            fp.push(opts);
            let created_by = format!("mlimg weights {}", w.name);
            out.push(
                LayerPlan::new(
                    role.clone(),
                    w.compression,
                    walked.entries,
                    &fp,
                    mtime,
                    created_by,
                )
                .map_err(layer_err(&role))?,
            );
        }
        Layering::PerFile => {
            for (e, fp) in walked.entries.into_iter().zip(walked.fingerprint) {
                let created_by = format!("mlimg weights {} /{}", w.name, e.path);
                out.push(
                    LayerPlan::new(
                        role.clone(),
                        w.compression,
                        vec![e],
                        &[fp],
                        mtime,
                        created_by,
                    )
                    .map_err(layer_err(&role))?,
                );
            }
        }
    }
    Ok(out)
}

/// The app layer, leaving out sources of other layers that live inside the app folder.
fn plan_app(spec: &Spec, mtime: u64) -> Result<Option<LayerPlan>, BuildError> {
    let Some(app) = &spec.app else {
        return Ok(None);
    };
    let role = LayerRole::App;
    let ignore = IgnoreRules::load(&app.src, &app.exclude).map_err(src_err(&role))?;
    let mut skip: Vec<PathBuf> = spec
        .weights
        .iter()
        .filter_map(|w| match &w.source {
            WeightsSource::Local(p) => Some(p.clone()),
            WeightsSource::Hub { .. } => None,
        })
        .collect();
    skip.extend(spec.deps.iter().filter_map(|d| match &d.source {
        DepsSource::Dir(p) => Some(p.clone()),
        _ => None,
    }));
    let skip = skip
        .into_iter()
        .filter_map(|p| p.canonicalize().ok())
        .collect();
    let src = canonical(&app.src, &role)?;
    let filter = no_filter()?.with_ignore(ignore).skipping(skip);
    let walked = walk(&src, &app.dest, &filter).map_err(src_err(&role))?;
    let mut fp = walked.fingerprint;
    fp.push(format!("exclude {:?}", app.exclude));
    let lp = LayerPlan::new(
        role.clone(),
        app.compression,
        walked.entries,
        &fp,
        mtime,
        "mlimg app".into(),
    )
    .map_err(layer_err(&role))?;
    Ok(Some(lp))
}

fn canonical(p: &Path, role: &LayerRole) -> Result<PathBuf, BuildError> {
    p.canonicalize().map_err(|source| BuildError::Source {
        role: role.to_string(),
        source: crate::sources::local::SourceError::Io {
            path: p.to_path_buf(),
            source,
        },
    })
}
