//! Hub weights (`source = "hf://org/repo"`): revision → commit + files with size and sha256.
//!
//! The snapshot comes from `mlimg.lock` when the lock has a matching entry — no Hub request
//! then, except the freshness check of a plain build: for a branch or tag it asks once where
//! the revision points now and, if it moved, warns that the lock is stale (it still builds the
//! locked commit; `mlimg lock` moves it). An entry whose spec changed (repo, revision,
//! subfolder, include, exclude) is resolved afresh, with a warning; `--locked` refuses that.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;

use super::{ResolveError, ResolveOptions};
use crate::lock::{Lockfile, WeightsLock};
use crate::progress::{Progress, Warning};
use crate::sources::hf::{self, HubError, HubEvent, HubFile, HubOptions, HubSource};
use crate::spec::{Spec, WeightsSource, WeightsSpec};

pub(super) fn resolve_weights(
    spec: &Spec,
    lock: Option<&Lockfile>,
    opts: &ResolveOptions,
    lock_path: &Path,
    progress: &dyn Progress,
) -> Result<Vec<WeightsLock>, ResolveError> {
    // Read only (a dry run): the Hub client notes refs and hashes small files in a folder of
    // our own, gone when this returns, instead of the user's hub cache.
    let scratch = match opts.read_only && spec.weights.iter().any(|w| hub_source(w).is_some()) {
        true => Some(tempfile::tempdir().map_err(|e| ResolveError::Hub {
            name: String::new(),
            source: Box::new(HubError::io(std::path::Path::new("(temp dir)"), e)),
        })?),
        false => None,
    };
    let scratch_hub;
    let hub = match &scratch {
        Some(d) => {
            scratch_hub = HubOptions {
                cache_dir: d.path().to_path_buf(),
                ..opts.hub.clone()
            };
            &scratch_hub
        }
        None => &opts.hub,
    };
    let mut out = Vec::new();
    for w in &spec.weights {
        let Some(src) = hub_source(w) else { continue };
        if let Some(l) = lock.and_then(|l| l.matching(w)) {
            if !opts.locked && !is_commit(&l.revision) {
                check_moved(hub, w, &src, l, lock_path, progress);
            }
            out.push(l.clone());
            continue;
        }
        if opts.locked {
            let why = match lock.and_then(|l| l.weights(&w.name)) {
                Some(l) => l.mismatch(w).unwrap_or_default(),
                None => "not in the lock".into(),
            };
            return Err(ResolveError::Locked {
                path: lock_path.to_path_buf(),
                reason: format!("weights {:?}: {why}", w.name),
            });
        }
        out.push(resolve_entry(hub, w, src, progress)?);
    }
    Ok(out)
}

/// The Hub source a weights entry names, or `None` for local weights.
pub fn hub_source(w: &WeightsSpec) -> Option<HubSource> {
    match &w.source {
        WeightsSource::Hub {
            repo,
            revision,
            subfolder,
        } => Some(HubSource {
            repo: repo.clone(),
            revision: revision.clone(),
            subfolder: subfolder
                .as_deref()
                .map(|s| s.trim_matches('/'))
                .filter(|s| !s.is_empty())
                .map(str::to_string),
            include: w.include.clone(),
            exclude: w.exclude.clone(),
        }),
        WeightsSource::Local(_) => None,
    }
}

fn is_commit(rev: &str) -> bool {
    rev.len() == 40 && rev.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Resolves one entry to a commit and its files, every sha256 known: LFS files carry theirs
/// in the listing; regular (small, non-LFS) files are downloaded into the hub cache and hashed.
fn resolve_entry(
    hub: &HubOptions,
    w: &WeightsSpec,
    src: HubSource,
    progress: &dyn Progress,
) -> Result<WeightsLock, ResolveError> {
    let err = |source| ResolveError::Hub {
        name: w.name.clone(),
        source: Box::new(source),
    };
    let mut snap = hf::resolve(hub, &src).map_err(err)?;
    let unknown: Vec<HubFile> = snap
        .files
        .iter()
        .filter(|f| f.sha256.is_empty())
        .cloned()
        .collect();
    if !unknown.is_empty() {
        let part = hf::HubSnapshot {
            repo: snap.repo.clone(),
            commit: snap.commit.clone(),
            files: unknown,
        };
        let events = hub_events(progress, None);
        for (f, _) in hf::fetch(hub, &part, &events).map_err(err)? {
            if let Some(s) = snap.files.iter_mut().find(|s| s.path == f.path) {
                s.sha256 = f.sha256;
            }
        }
    }
    Ok(WeightsLock {
        name: w.name.clone(),
        repo: snap.repo,
        revision: src.revision,
        subfolder: src.subfolder,
        include: w.include.clone(),
        exclude: w.exclude.clone(),
        commit: snap.commit,
        files: snap.files,
    })
}

/// Best effort: warn when the locked branch/tag now points elsewhere on the Hub.
fn check_moved(
    hub: &HubOptions,
    w: &WeightsSpec,
    src: &HubSource,
    l: &WeightsLock,
    lock_path: &Path,
    progress: &dyn Progress,
) {
    match hf::resolve(hub, src) {
        Ok(now) if now.commit != l.commit => progress.warning(&Warning::new(
            "lock-stale",
            format!(
                "{} is stale: weights {:?}: {} is now at {} on the Hub, the lock has {}; \
                 building the locked commit (run `mlimg lock` to update)",
                lock_path.display(),
                w.name,
                l.revision,
                now.commit,
                l.commit
            ),
        )),
        Ok(_) => {}
        Err(e) => progress.warning(&Warning::new(
            "hub-unreachable",
            format!(
                "weights {:?}: could not check whether {} moved on the Hub ({e}); building the locked commit {}",
                w.name, l.revision, l.commit
            ),
        )),
    }
}

/// Hub download events as progress; counts downloaded bytes into `downloaded`.
pub(crate) fn hub_events<'a>(
    progress: &'a dyn Progress,
    downloaded: Option<&'a std::sync::atomic::AtomicU64>,
) -> impl Fn(HubEvent) + Sync + 'a {
    let starts = Mutex::new(BTreeMap::new());
    move |e| match e {
        HubEvent::Start { path, size, offset } => {
            if offset > 0 {
                progress.message(&format!("resuming {path} at {offset} of {size} bytes"));
            } else {
                progress.message(&format!("downloading {path} ({size} bytes)"));
            }
            if let Ok(mut s) = starts.lock() {
                s.insert(path.clone(), offset);
            }
            progress.transfer(&path, offset, size);
        }
        HubEvent::Progress { path, done, size } => progress.transfer(&path, done, size),
        HubEvent::Done { path, size } => {
            let from = starts
                .lock()
                .ok()
                .and_then(|mut s| s.remove(&path))
                .unwrap_or(0);
            if let Some(d) = downloaded {
                d.fetch_add(
                    size.saturating_sub(from),
                    std::sync::atomic::Ordering::Relaxed,
                );
            }
            progress.transfer_done(&path, "downloaded, verified");
        }
        HubEvent::Retry {
            path,
            attempt,
            offset,
            reason,
        } => progress.message(&format!(
            "{path}: connection broke at {offset} bytes ({reason}); retry {attempt}"
        )),
        HubEvent::Cached { .. } => {}
    }
}
