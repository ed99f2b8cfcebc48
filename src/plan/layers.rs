//! Planning: the spec's sources and the resolved inputs → ordered layer plans per platform.
//! One function per source kind; nothing here downloads, writes or asks the network.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{BuildPlan, Content, Entry, LayerPlan, LayerRole, PlatformPlan, WheelInstall};
use crate::lock::WeightsLock;
use crate::progress::Warning;
use crate::resolve::{Resolved, ResolvedPlatform};
use crate::sources::local::{Filter, IgnoreRules, SourceError, Walked, walk};
use crate::sources::python::ResolvedWheel;
use crate::spec::{
    ConfigSpec, DepsLayering, DepsSource, DepsSpec, Layering, Spec, WeightsSource, WeightsSpec,
};

/// Image layer counts above this draw a warning.
pub const LAYER_WARN: usize = 100;
/// Above this the build refuses: some registries reject images with more layers (and every
/// layer costs a mount and a request at pull time).
pub const LAYER_MAX: usize = 500;

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("{role}: {source}")]
    Source { role: String, source: SourceError },
    #[error("{role}: {source}")]
    Layer {
        role: String,
        source: crate::layer::LayerError,
    },
    #[error("{role}: {message}")]
    Filter { role: String, message: String },
    #[error(transparent)]
    Image(#[from] crate::image::ImageError),
    #[error("weights {name}: not resolved (a Hub entry needs resolving before planning)")]
    Unresolved { name: String },
    #[error(
        "{platform}: the image would have {count} layers ({detail}), more than {LAYER_MAX}; registries may reject it\n  \
         hint: use layers = \"one\" for weights entries with many files, or split the model so \
         that only large files get their own layer (one per-file entry with include for the \
         big files, one single-layer entry for the rest)"
    )]
    TooManyLayers {
        platform: String,
        count: usize,
        detail: String,
    },
}

fn src_err(role: &LayerRole) -> impl FnOnce(SourceError) -> PlanError {
    let role = role.to_string();
    move |source| PlanError::Source { role, source }
}

fn layer_err(role: &LayerRole) -> impl FnOnce(crate::layer::LayerError) -> PlanError {
    let role = role.to_string();
    move |source| PlanError::Layer { role, source }
}

fn filter(role: &LayerRole, include: &[String], exclude: &[String]) -> Result<Filter, PlanError> {
    Filter::globs(include, exclude).map_err(|e| PlanError::Filter {
        role: role.to_string(),
        message: e.to_string(),
    })
}

/// Plans the layers of every resolved platform: deps sets in spec order, weights, app.
/// Returns the plan and its warnings (a layer count above [`LAYER_WARN`]).
pub fn plan(
    spec: &Spec,
    resolved: &Resolved,
    mtime: u64,
) -> Result<(BuildPlan, Vec<Warning>), PlanError> {
    let mut shared: Vec<Arc<LayerPlan>> = Vec::new();
    for w in &spec.weights {
        let lps = match &w.source {
            WeightsSource::Local(src) => plan_local_weights(w, src, mtime)?,
            WeightsSource::Hub { .. } => {
                let snap = resolved
                    .weights
                    .iter()
                    .find(|l| l.name == w.name)
                    .ok_or_else(|| PlanError::Unresolved {
                        name: w.name.clone(),
                    })?;
                plan_hub_weights(w, snap, mtime)?
            }
        };
        let owners = owners(w.owner.map(|o| (w.dest.as_str(), o)).into_iter());
        shared.extend(
            lps.into_iter()
                .map(|l| Arc::new(l.with_owners(owners.clone()))),
        );
    }
    if let Some(app) = plan_app(spec, mtime)? {
        shared.push(Arc::new(app));
    }
    let created = crate::image::rfc3339(mtime);
    let mut out = Vec::new();
    let mut warnings = Vec::new();
    for rp in &resolved.platforms {
        let mut layers: Vec<Arc<LayerPlan>> = Vec::new();
        if let (Some(sys), Some(rs)) = (&spec.system, &rp.system) {
            layers.push(Arc::new(plan_system(sys, rs, mtime)?));
        }
        for d in &spec.deps {
            layers.extend(plan_deps(d, rp, mtime)?.into_iter().map(Arc::new));
        }
        layers.extend(shared.iter().cloned());
        if let Some(Err(why)) = &rp.bytecode {
            warnings.push(Warning::new(
                "bytecode-no-interpreter",
                format!(
                    "{}: no .pyc files are written for the wheels ({why}); the image sets \
                     PYTHONPYCACHEPREFIX={PYCACHE_PREFIX} so imports after the first are warm. \
                     Install python{}.{} on the build machine for images that start fast.",
                    rp.platform,
                    rp.python.as_ref().map_or(3, |t| t.version.0),
                    rp.python.as_ref().map_or(0, |t| t.version.1),
                ),
            ));
        }
        let settings = run_settings(spec, rp);
        let config =
            crate::image::build_config(&rp.base.config, &rp.platform, &settings, &[], &created)?;
        let pp = PlatformPlan {
            platform: rp.platform.clone(),
            layers,
            explain: rp.explain.clone(),
            base_layers: rp.base.layers.len(),
            settings: config.get("config").cloned().unwrap_or_default(),
        };
        if spec.image.format == crate::spec::ImageFormat::Docker
            && let Some(l) = pp
                .layers
                .iter()
                .find(|l| l.compression == crate::layer::Compression::Zstd)
        {
            return Err(PlanError::Filter {
                role: l.role.to_string(),
                message: "compression = \"zstd\" cannot be used with [image] format = \"docker\" \
                          (Docker image manifest v2 schema 2 has gzip and uncompressed layers only)"
                    .into(),
            });
        }
        if let Some(w) = check_layer_budget(&pp)? {
            warnings.push(w);
        }
        out.push(pp);
    }
    Ok((
        BuildPlan {
            base: spec.image.base_name.clone(),
            mtime,
            format: spec.image.format,
            platforms: out,
        },
        warnings,
    ))
}

/// Refuses more than [`LAYER_MAX`] layers; a warning above [`LAYER_WARN`].
fn check_layer_budget(p: &PlatformPlan) -> Result<Option<Warning>, PlanError> {
    let n = p.base_layers + p.layers.len();
    if n <= LAYER_WARN {
        return Ok(None);
    }
    let mut per: BTreeMap<String, usize> = BTreeMap::new();
    for l in &p.layers {
        *per.entry(l.role.to_string()).or_default() += 1;
    }
    let mut v: Vec<(String, usize)> = per.into_iter().filter(|(_, c)| *c > 1).collect();
    v.sort_by_key(|b| std::cmp::Reverse(b.1));
    let top: Vec<String> = v.iter().take(3).map(|(r, c)| format!("{r}: {c}")).collect();
    let detail = format!(
        "{} base + {} new layers{}",
        p.base_layers,
        p.layers.len(),
        if top.is_empty() {
            String::new()
        } else {
            format!(" ({})", top.join(", "))
        }
    );
    if n > LAYER_MAX {
        return Err(PlanError::TooManyLayers {
            platform: p.platform.to_string(),
            count: n,
            detail,
        });
    }
    Ok(Some(Warning::new(
        "layer-count",
        format!(
            "{}: the image has {n} layers ({detail}); more than {LAYER_WARN} slows pulls and \
             some registries refuse more than {LAYER_MAX}. Consider layers = \"one\" for small files.",
            p.platform
        ),
    )))
}

/// Where bytecode goes when the build could not compile it: a folder every user can write.
pub const PYCACHE_PREFIX: &str = "/tmp/pycache";

/// The image's run settings for one platform: the spec's `[config]`, plus
/// `PYTHONPYCACHEPREFIX` when wheels were installed without bytecode because no interpreter
/// could compile it (unless the spec sets that variable itself).
pub fn run_settings<'a>(spec: &'a Spec, rp: &ResolvedPlatform) -> std::borrow::Cow<'a, ConfigSpec> {
    if matches!(rp.bytecode, Some(Err(_))) && !spec.config.env.contains_key("PYTHONPYCACHEPREFIX") {
        let mut c = spec.config.clone();
        c.env
            .insert("PYTHONPYCACHEPREFIX".into(), PYCACHE_PREFIX.into());
        return std::borrow::Cow::Owned(c);
    }
    std::borrow::Cow::Borrowed(&spec.config)
}

/// One deps set for one platform: a copied tree, or the resolved wheels for the target (one
/// layer, or several as `layers` asks).
/// The `[system]` layer: its selector is the locked package list (names, versions, sha256),
/// the platform's architecture and the base's dpkg database it extends, so an unchanged list
/// is never re-read.
fn plan_system(
    sys: &crate::spec::system::SystemSpec,
    rs: &crate::resolve::system::ResolvedSystem,
    mtime: u64,
) -> Result<LayerPlan, PlanError> {
    use sha2::Digest as _;
    let role = LayerRole::System;
    let mut fp = vec![
        format!("system v1 {}", rs.architecture),
        format!(
            "base status sha256:{}",
            hex::encode(sha2::Sha256::digest(rs.base.status.as_bytes()))
        ),
        format!("base links {:?}", rs.base.links),
    ];
    fp.extend(rs.packages.iter().map(|p| {
        format!(
            "deb {} {} {} sha256:{}",
            p.name, p.version, p.architecture, p.sha256
        )
    }));
    let names: Vec<String> = sys.packages.iter().map(ToString::to_string).collect();
    let mut lp = LayerPlan::new(
        role.clone(),
        sys.compression,
        Vec::new(),
        &fp,
        mtime,
        format!("mlimg system {}", names.join(" ")),
    )
    .map_err(layer_err(&role))?;
    lp.system = Some(Arc::new(crate::plan::SystemInstall {
        architecture: rs.architecture.clone(),
        packages: rs.packages.clone(),
        base: rs.base.clone(),
    }));
    Ok(lp)
}

fn plan_deps(d: &DepsSpec, rp: &ResolvedPlatform, mtime: u64) -> Result<Vec<LayerPlan>, PlanError> {
    let role = LayerRole::Deps(d.name.clone());
    let created_by = format!("mlimg deps {}", d.name);
    if let DepsSource::Dir(dir) = &d.source {
        let dest = d.dest.as_deref().unwrap_or("/");
        let w = walk(dir, dest, &filter(&role, &[], &[])?).map_err(src_err(&role))?;
        let tree = w.tree_line();
        return Ok(vec![
            LayerPlan::new(
                role.clone(),
                d.compression,
                w.entries,
                &[tree],
                mtime,
                created_by,
            )
            .map_err(layer_err(&role))?,
        ]);
    }
    let (Some(target), Some((_, wheels))) = (
        rp.python.as_ref(),
        rp.deps.iter().find(|(name, _)| name == &d.name),
    ) else {
        return Err(PlanError::Filter {
            role: role.to_string(),
            message: format!("no wheels were resolved for {}", rp.platform),
        });
    };
    let bytecode = match &rp.bytecode {
        Some(Ok(c)) => Some(crate::sources::python::bytecode::Bytecode {
            compiler: c.clone(),
            mtime,
        }),
        _ => None,
    };
    let mut wheels = wheels.clone();
    wheels.sort_by(|a, b| a.name.cmp(&b.name));
    let wheel_layer = |role: LayerRole, wheels: Vec<ResolvedWheel>| {
        // Wheels are content-addressed: their hashes and where they install decide the layer.
        let mut fp = vec![
            format!("python target {target}"),
            format!(
                "install {} {} {}",
                target.site_packages(),
                target.scripts_dir(),
                target.interpreter()
            ),
        ];
        fp.extend(
            wheels
                .iter()
                .map(|w| format!("wheel {} sha256:{}", w.filename, w.sha256)),
        );
        fp.push(match &bytecode {
            Some(b) => b.compiler.fingerprint(),
            None => "bytecode none".to_string(),
        });
        let mut lp = LayerPlan::new(
            role.clone(),
            d.compression,
            Vec::new(),
            &fp,
            mtime,
            format!("mlimg {role}"),
        )
        .map_err(layer_err(&role))?;
        lp.wheels = Some(Arc::new(WheelInstall {
            target: target.clone(),
            wheels,
            bytecode: bytecode.clone(),
            dpkg: rp.dpkg.clone(),
        }));
        Ok(lp)
    };
    let part = |p: &str| LayerRole::Deps(format!("{}/{p}", d.name));
    match d.layering {
        DepsLayering::One => Ok(vec![wheel_layer(role, wheels)?]),
        DepsLayering::PerPackage => wheels
            .into_iter()
            .map(|w| wheel_layer(part(&w.name), vec![w]))
            .collect(),
        DepsLayering::Auto => {
            let (big, small): (Vec<_>, Vec<_>) = wheels
                .into_iter()
                .partition(|w| w.size.is_some_and(|s| s >= AUTO_ALONE_BYTES));
            let mut layers = big
                .into_iter()
                .map(|w| wheel_layer(part(&w.name), vec![w]))
                .collect::<Result<Vec<_>, _>>()?;
            let mut groups: Vec<Vec<ResolvedWheel>> = vec![Vec::new(); AUTO_GROUPS];
            for w in small {
                groups[auto_group(&w.name)].push(w);
            }
            for (i, g) in groups.into_iter().enumerate() {
                if !g.is_empty() {
                    layers.push(wheel_layer(part(&format!("group-{i}")), g)?);
                }
            }
            Ok(layers)
        }
    }
}

/// `layers = "auto"`: wheels this big get a layer of their own.
pub const AUTO_ALONE_BYTES: u64 = 10 << 20;
/// `layers = "auto"`: the smaller wheels are spread over this many layers.
const AUTO_GROUPS: usize = 4;

/// The group of a small wheel: from its name only, so adding or removing a package moves no
/// other package to another layer.
fn auto_group(name: &str) -> usize {
    use sha2::Digest as _;
    (sha2::Sha256::digest(name.as_bytes())[0] as usize) % AUTO_GROUPS
}

/// A local weights entry: one layer, or one per file.
fn plan_local_weights(
    w: &WeightsSpec,
    src: &Path,
    mtime: u64,
) -> Result<Vec<LayerPlan>, PlanError> {
    let role = LayerRole::Weights(w.name.clone());
    let walked =
        walk(src, &w.dest, &filter(&role, &w.include, &w.exclude)?).map_err(src_err(&role))?;
    let opts = format!("include {:?} exclude {:?}", w.include, w.exclude);
    match w.layering {
        Layering::One => {
            let fp = [walked.tree_line(), opts];
            let created_by = format!("mlimg weights {}", w.name);
            Ok(vec![
                LayerPlan::new(
                    role.clone(),
                    w.compression,
                    walked.entries,
                    &fp,
                    mtime,
                    created_by,
                )
                .map_err(layer_err(&role))?,
            ])
        }
        Layering::PerFile => walked
            .entries
            .into_iter()
            .zip(walked.fingerprint)
            .map(|(e, fp)| {
                let fp = Walked::entry_line(&fp);
                let created_by = format!("mlimg weights {} /{}", w.name, e.path);
                LayerPlan::new(
                    role.clone(),
                    w.compression,
                    vec![e],
                    &[fp],
                    mtime,
                    created_by,
                )
                .map_err(layer_err(&role))
            })
            .collect(),
    }
}

/// The image path (relative to `/`) of a Hub file under `dest`.
fn hub_image_path(dest: &str, subfolder: Option<&str>, path: &str) -> String {
    let rel = subfolder
        .and_then(|s| path.strip_prefix(s).and_then(|r| r.strip_prefix('/')))
        .unwrap_or(path);
    let dest = dest.trim_matches('/');
    if dest.is_empty() {
        rel.to_string()
    } else {
        format!("{dest}/{rel}")
    }
}

/// A Hub weights entry. The selector is content only: the files' hashes decide the bytes, so
/// a new commit that leaves these files alone (or another include pattern that selects the
/// same files) keeps the layer. Entries name the files by sha256; the fetch stage provides
/// them.
fn plan_hub_weights(
    w: &WeightsSpec,
    snap: &WeightsLock,
    mtime: u64,
) -> Result<Vec<LayerPlan>, PlanError> {
    let role = LayerRole::Weights(w.name.clone());
    let sub = snap.subfolder.as_deref();
    let groups: Vec<Vec<usize>> = match w.layering {
        Layering::One => vec![(0..snap.files.len()).collect()],
        Layering::PerFile => (0..snap.files.len()).map(|i| vec![i]).collect(),
    };
    let layering = match w.layering {
        Layering::One => "one",
        Layering::PerFile => "per-file",
    };
    groups
        .iter()
        .map(|g| {
            let mut fp = vec![format!("hf {} layers {layering}", snap.repo)];
            let mut entries = Vec::new();
            for &i in g {
                let f = &snap.files[i];
                fp.push(format!("file {} {} sha256:{}", f.path, f.size, f.sha256));
                entries.push(Entry {
                    path: hub_image_path(&w.dest, sub, &f.path),
                    mode: 0o644,
                    content: Content::Fetched {
                        sha256: f.sha256.clone(),
                        size: f.size,
                    },
                });
            }
            let created_by = match w.layering {
                Layering::One => format!(
                    "mlimg weights {} hf://{}@{}",
                    w.name, snap.repo, snap.commit
                ),
                Layering::PerFile => format!(
                    "mlimg weights {} hf://{}@{} /{}",
                    w.name,
                    snap.repo,
                    snap.commit,
                    g.first().map_or("", |&i| snap.files[i].path.as_str())
                ),
            };
            let mut lp =
                LayerPlan::new(role.clone(), w.compression, entries, &fp, mtime, created_by)
                    .map_err(layer_err(&role))?;
            // downloads may be gone by the next build: keep the layer's bytes
            lp.store_bytes = true;
            Ok(lp)
        })
        .collect()
}

/// Owner rules for image paths (absolute): the entries at or under each belong to its ids.
fn owners<'a>(rules: impl Iterator<Item = OwnerOf<'a>>) -> crate::layer::Owners {
    crate::layer::Owners(
        rules
            .map(|(path, (uid, gid))| crate::layer::OwnerRule {
                path: path.trim_matches('/').to_string(),
                uid,
                gid,
            })
            .collect(),
    )
}

/// An image path and the `uid:gid` owning what is at or under it.
type OwnerOf<'a> = (&'a str, (u64, u64));

/// `[config] writable`: each folder, owned by the (numeric) user, in the app layer.
fn writable(spec: &Spec) -> (Vec<Entry>, Vec<OwnerOf<'_>>) {
    let Some(ids) = spec.config.user_ids else {
        return (Vec::new(), Vec::new());
    };
    let entries = spec
        .config
        .writable
        .iter()
        .map(|p| Entry {
            path: p.trim_matches('/').to_string(),
            mode: 0o755,
            content: Content::Dir,
        })
        .collect();
    let rules = spec
        .config
        .writable
        .iter()
        .map(|p| (p.as_str(), ids))
        .collect();
    (entries, rules)
}

/// The app layer, leaving out sources of other layers that live inside the app folder, with
/// the `[config] writable` folders (a layer of those alone without `[app]`).
fn plan_app(spec: &Spec, mtime: u64) -> Result<Option<LayerPlan>, PlanError> {
    let (dirs, mut rules) = writable(spec);
    let Some(app) = &spec.app else {
        if dirs.is_empty() {
            return Ok(None);
        }
        let role = LayerRole::App;
        let fp = vec![format!("writable {:?}", spec.config.writable)];
        let lp = LayerPlan::new(
            role.clone(),
            crate::layer::Compression::Gzip,
            dirs,
            &fp,
            mtime,
            "mlimg writable".into(),
        )
        .map_err(layer_err(&role))?;
        return Ok(Some(lp.with_owners(owners(rules.into_iter()))));
    };
    let role = LayerRole::App;
    let mut ignore = IgnoreRules::load(&app.src, &app.exclude).map_err(src_err(&role))?;
    // The spec's folder is the build context: its .dockerignore applies to the app layer as
    // docker applies it, with paths relative to that folder.
    if let (Ok(ctx), Ok(src)) = (spec.dir.canonicalize(), app.src.canonicalize())
        && src != ctx
        && let Ok(prefix) = src.strip_prefix(&ctx)
    {
        let prefix = prefix.to_string_lossy().replace('\\', "/");
        ignore = IgnoreRules::under_context(&ctx, &prefix, ignore).map_err(src_err(&role))?;
    }
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
    let src = app.src.canonicalize().map_err(|source| PlanError::Source {
        role: role.to_string(),
        source: SourceError::Io {
            path: app.src.clone(),
            source,
        },
    })?;
    let filter = filter(&role, &[], &[])?.with_ignore(ignore).skipping(skip);
    let walked = walk(&src, &app.dest, &filter).map_err(src_err(&role))?;
    let mut fp = vec![walked.tree_line(), format!("exclude {:?}", app.exclude)];
    let mut entries = walked.entries;
    if !dirs.is_empty() {
        fp.push(format!("writable {:?}", spec.config.writable));
        // a folder the app already has is only made writable
        for d in dirs {
            if !entries.iter().any(|e| e.path == d.path) {
                entries.push(d);
            }
        }
    }
    let lp = LayerPlan::new(
        role.clone(),
        app.compression,
        entries,
        &fp,
        mtime,
        "mlimg app".into(),
    )
    .map_err(layer_err(&role))?;
    if let Some(o) = app.owner {
        // the app's own rule first: a writable folder inside it (a longer path) still wins
        rules.insert(0, (app.dest.as_str(), o));
    }
    Ok(Some(lp.with_owners(owners(rules.into_iter()))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_image_paths_under_dest_without_subfolder() {
        assert_eq!(
            hub_image_path("/models/m", None, "a/b.bin"),
            "models/m/a/b.bin"
        );
        assert_eq!(
            hub_image_path("/models/m", Some("onnx"), "onnx/model.onnx"),
            "models/m/model.onnx"
        );
        assert_eq!(hub_image_path("/", None, "x"), "x");
    }
}
