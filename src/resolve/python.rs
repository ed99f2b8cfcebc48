//! Wheel sets: the target interpreter per platform (from the base image) and the wheel per
//! pinned package, from the lock when it matches, else from the find-links folders and the
//! indexes.

use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use super::{ResolveError, ResolveOptions, ResolvedPlatform};
use crate::image::BlobSource;
use crate::lock::Lockfile;
use crate::progress::{Progress, Warning};
use crate::registry::RegistryClient;
use crate::sources::python::{self, DepsSetInput, PythonError, PythonTarget, requirements};
use crate::spec::{DepsSource, DepsSpec, Spec};

pub(super) fn resolve_platform(
    spec: &Spec,
    rp: &mut ResolvedPlatform,
    client: Option<&RegistryClient>,
    lock: Option<&Lockfile>,
    opts: &ResolveOptions,
    lock_path: &Path,
    progress: &dyn Progress,
) -> Result<(), ResolveError> {
    let sets: Vec<&DepsSpec> = spec
        .deps
        .iter()
        .filter(|d| !matches!(d.source, DepsSource::Dir(_)))
        .collect();
    if sets.is_empty() {
        return Ok(());
    }
    let (target, explain, dpkg) =
        python_target(spec, rp, client, &opts.cache_dir, !opts.read_only)?;
    rp.dpkg = std::sync::Arc::new(dpkg);
    let py_err = |set: &str, source: PythonError| ResolveError::Python {
        set: set.to_string(),
        platform: rp.platform.to_string(),
        source: Box::new(source),
    };
    for d in sets {
        // Index credentials (`https://user:token@…`) are kept by origin, out of every URL
        // that is printed or locked; wheels downloaded from a lock need them too.
        let mut index_urls: Vec<String> = d.index_url.iter().cloned().collect();
        // The spec and the requirements file win over the environment, as in pip: a file's
        // own `--index-url` replaces PIP_INDEX_URL (the first of `pip_index_urls`).
        let file_index = match &d.source {
            DepsSource::Requirements(p) => {
                requirements::parse_file(p).is_ok_and(|r| r.sets_index_url)
            }
            _ => false,
        };
        let env = if file_index {
            opts.pip_index_urls.get(1..).unwrap_or(&[])
        } else {
            &opts.pip_index_urls[..]
        };
        index_urls.extend(env.iter().cloned());
        let index_urls = python::remember_index_credentials(&index_urls);
        let inputs = inputs_hash(spec, d).map_err(|e| py_err(&d.name, e))?;
        let locked = lock.and_then(|l| l.deps(&d.name, &rp.platform));
        let wheels = match locked {
            Some(l) if l.inputs == inputs && l.python == target.to_string() => l.wheels.clone(),
            _ if opts.locked => {
                let why = match locked {
                    None => "not in the lock".to_string(),
                    Some(l) if l.inputs != inputs => "its requirements changed".to_string(),
                    Some(l) => format!("locked for {}, the base now has {target}", l.python),
                };
                return Err(ResolveError::Locked {
                    path: lock_path.to_path_buf(),
                    reason: format!("deps {:?} ({}): {why}", d.name, rp.platform),
                });
            }
            stale => {
                if stale.is_some() {
                    progress.warning(&Warning::new(
                        "lock-stale",
                        format!(
                            "{} is stale: deps {:?} ({}) changed; resolving it again (run `mlimg lock`)",
                            lock_path.display(),
                            d.name,
                            rp.platform
                        ),
                    ));
                }
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
                    // the spec's folders first, then PIP_FIND_LINKS'
                    find_links: d
                        .find_links
                        .iter()
                        .chain(&opts.pip_find_links)
                        .cloned()
                        .collect(),
                };
                let r = python::resolve_with(&input, &target, Some(&opts.cache_dir.join("wheels")))
                    .map_err(|e| py_err(&d.name, e))?;
                for w in r.warnings {
                    progress.warning(&Warning::new(
                        "wheel-origin-unknown",
                        format!("deps {:?} ({}): {w}", d.name, rp.platform),
                    ));
                }
                for w in r.yanked {
                    progress.warning(&Warning::new(
                        "wheel-yanked",
                        format!("deps {:?} ({}): {w}", d.name, rp.platform),
                    ));
                }
                r.wheels
            }
        };
        rp.deps.push((d.name.clone(), wheels));
        rp.inputs.push(inputs);
    }
    python::check_disjoint(&rp.deps).map_err(|e| py_err("deps", e))?;
    rp.python = Some(target);
    rp.explain = explain;
    Ok(())
}

/// sha256 over what a set pins and where it looks, with paths relative to the spec's folder
/// (the same lock holds on every checkout).
fn inputs_hash(spec: &Spec, d: &DepsSpec) -> Result<String, PythonError> {
    let rel = |p: &Path| -> String {
        p.strip_prefix(&spec.dir)
            .unwrap_or(p)
            .to_string_lossy()
            .into_owned()
    };
    let mut h = Sha256::new();
    let mut line = |s: String| {
        h.update(s.as_bytes());
        h.update(b"\n");
    };
    match &d.source {
        DepsSource::Requirements(p) => {
            let r = requirements::parse_file(p)?;
            for q in &r.requirements {
                let mut hashes = q.hashes.clone();
                hashes.sort();
                line(format!(
                    "req {}[{}]=={} ; {} {}",
                    q.name,
                    q.extras.join(","),
                    q.version,
                    q.marker.as_deref().unwrap_or(""),
                    hashes.join(",")
                ));
            }
            python::remember_index_credentials(&r.index_urls);
            for u in &r.index_urls {
                line(format!("index {u}"));
            }
            for f in &r.find_links {
                line(format!("find-links {}", rel(f)));
            }
        }
        DepsSource::Pylock(p) => {
            let bytes = std::fs::read(p).map_err(|e| PythonError::Io {
                path: p.clone(),
                source: e,
            })?;
            line(format!("pylock {}", hex::encode(Sha256::digest(&bytes))));
        }
        DepsSource::Dir(_) => {}
    }
    if let Some(u) = &d.index_url {
        line(format!("index {u}"));
    }
    for f in &d.find_links {
        line(format!("find-links {}", rel(f)));
    }
    Ok(hex::encode(h.finalize()))
}

/// The interpreter wheels are installed for: `[python]` values win, the rest is detected
/// from the base image (its config and its layers' tar headers, streamed: nothing is
/// stored). Returns the explanation lines too.
fn python_target(
    spec: &Spec,
    rp: &ResolvedPlatform,
    client: Option<&RegistryClient>,
    cache_dir: &Path,
    record: bool,
) -> Result<(PythonTarget, Vec<String>, python::detect::DpkgFiles), ResolveError> {
    let base = &rp.base;
    // what decides the answer: the base's config and layers, the platform, `[python]`
    let key = format!(
        "v1\n{}\n{}\n{:?}\n{}",
        serde_json::to_string(&base.config).unwrap_or_default(),
        rp.platform,
        spec.python,
        base.layers
            .iter()
            .map(|l| l.descriptor.digest.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    );
    type Answer = (PythonTarget, Vec<String>, python::detect::DpkgFiles);
    if let Some(hit) = crate::cache::facts::get::<Answer>(cache_dir, "python-target", &key) {
        return Ok(hit);
    }
    let layers: Vec<(String, String)> = base
        .layers
        .iter()
        .map(|l| {
            (
                l.descriptor.digest.to_string(),
                l.descriptor.media_type.clone(),
            )
        })
        .collect();
    let open = |digest: &str| open_base_layer(base, client, cache_dir, digest);
    let (target, mut explain, dpkg) = python::detect::detect_target_dpkg(
        &base.config,
        &layers,
        &open,
        &rp.platform.architecture,
        spec.python.as_ref(),
    )
    .map_err(|e| ResolveError::Target {
        platform: rp.platform.to_string(),
        base: spec.image.base_name.clone(),
        source: Box::new(e),
    })?;
    for line in &mut explain {
        line.insert_str(0, "  ");
    }
    explain.insert(0, format!("python target (base {}):", spec.image.base_name));
    let answer = (target, explain, dpkg);
    if record {
        crate::cache::facts::put(cache_dir, "python-target", &key, &answer);
    }
    Ok(answer)
}

/// One base layer's bytes by digest: a layout's file, a copy in the cache, or a stream from
/// the registry (nothing is stored). `None` when none of these has it.
pub(crate) fn open_base_layer<'a>(
    base: &'a super::ResolvedBase,
    client: Option<&'a RegistryClient>,
    cache_dir: &Path,
    digest: &str,
) -> Option<std::io::Result<Box<dyn Read + 'a>>> {
    let l = base.layers.iter().find(|l| l.descriptor.digest == digest)?;
    let cached = cache_dir
        .join("blobs/sha256")
        .join(l.descriptor.digest.hex());
    let path: Option<PathBuf> = match &l.source {
        BlobSource::File(p) => Some(p.clone()),
        _ if cached.is_file() => Some(cached),
        _ => None,
    };
    if let Some(p) = path {
        return Some(std::fs::File::open(p).map(|f| Box::new(f) as Box<dyn Read>));
    }
    match (&l.source, client) {
        (
            BlobSource::Remote {
                registry,
                repository,
                ..
            },
            Some(c),
        ) => {
            let r = crate::registry::Reference {
                registry: registry.clone(),
                repository: repository.clone(),
                tag: None,
                digest: None,
            };
            Some(
                c.blob_reader(&r, digest, l.descriptor.size)
                    .map(|b| Box::new(b) as Box<dyn Read + 'a>)
                    .map_err(std::io::Error::other),
            )
        }
        _ => None,
    }
}
