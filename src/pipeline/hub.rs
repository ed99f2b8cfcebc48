//! Hub weights (`source = "hf://org/repo"`) in the build.
//!
//! 1. The snapshot (commit + files with size and sha256) comes from `mlimg.lock` when the lock
//!    has a matching entry — no request to the Hub then, except the freshness check of a plain
//!    build (below). Otherwise the revision is resolved (a `--locked` build never gets here).
//! 2. Each layer's selector is computed from that content alone, before any download.
//! 3. Only layers whose selector misses in the local cache (and, with `--push`, in the push
//!    target's shared selector records) have their files fetched: verified, resumable, into the
//!    user's hub cache. The layer entries then point at the fetched blob files.
//!
//! A plain build with a lock that matches the spec builds the locked commit. For a branch or
//! tag it asks the Hub once where the revision points now and, if it moved, says the lock is
//! stale (it still builds the locked commit; `mlimg lock` moves it). An entry whose spec
//! changed (repo, revision, subfolder, include, exclude) is resolved afresh and built, with a
//! message that the lock is stale; `--locked` refuses that instead.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::{BuildError, Progress};
use crate::cache::Cache;
use crate::lock::{self, Lockfile, WeightsLock};
use crate::plan::{BuildPlan, Content, Entry, LayerPlan, LayerRole};
use crate::sources::hf::{self, HubEvent, HubOptions, HubSnapshot};
use crate::spec::{Layering, WeightsSpec};

/// Everything planning Hub weights needs besides the entry.
pub struct HubPlanner<'a> {
    pub hub: HubOptions,
    pub lock: Option<&'a Lockfile>,
    pub locked: bool,
    /// `None` (dry run): plan from the snapshot without fetching anything.
    pub cache: Option<&'a Cache>,
    pub progress: &'a dyn Progress,
    /// Registry-shared selector records (only with `--push`).
    pub remote: Option<&'a dyn RemoteSelectors>,
    /// Filled while planning: every Hub layer's selector, and whether it was found only in
    /// the push target (`true`: nothing local, the target already has the record).
    pub planned: Mutex<Vec<(String, bool)>>,
    /// Bytes of Hub files downloaded.
    pub downloaded: AtomicU64,
    /// Layers whose files still need fetching ([`HubPlanner::fetch_pending`]).
    pub pending: Mutex<Vec<Pending>>,
}

/// A second-level selector cache (the push target's shared records).
pub trait RemoteSelectors: Sync {
    /// The layer a selector maps to, if published there and the blob is present there.
    fn lookup(&self, selector: &str) -> Option<crate::layer::LayerBlob>;
}

fn is_commit(rev: &str) -> bool {
    rev.len() == 40 && rev.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The image path (relative to `/`) of a Hub file under `dest`.
fn image_path(dest: &str, subfolder: Option<&str>, path: &str) -> String {
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

impl HubPlanner<'_> {
    fn events(&self) -> impl Fn(HubEvent) + '_ {
        let starts = Mutex::new(BTreeMap::new());
        move |e| match e {
            HubEvent::Start { path, size, offset } => {
                if offset > 0 {
                    self.progress
                        .message(&format!("resuming {path} at {offset} of {size} bytes"));
                } else {
                    self.progress
                        .message(&format!("downloading {path} ({size} bytes)"));
                }
                if let Ok(mut s) = starts.lock() {
                    s.insert(path.clone(), offset);
                }
                self.progress.transfer(&path, offset, size);
            }
            HubEvent::Progress { path, done, size } => self.progress.transfer(&path, done, size),
            HubEvent::Done { path, size } => {
                let from = starts
                    .lock()
                    .ok()
                    .and_then(|mut s| s.remove(&path))
                    .unwrap_or(0);
                self.downloaded
                    .fetch_add(size.saturating_sub(from), Ordering::Relaxed);
                self.progress.transfer_done(&path, "downloaded, verified");
            }
            HubEvent::Retry {
                path,
                attempt,
                offset,
                reason,
            } => self.progress.message(&format!(
                "{path}: connection broke at {offset} bytes ({reason}); retry {attempt}"
            )),
            _ => {}
        }
    }

    /// The commit and files to build for `w`.
    fn snapshot(&self, w: &WeightsSpec) -> Result<WeightsLock, BuildError> {
        if let Some(l) = self.lock.and_then(|l| l.matching(w)) {
            if !self.locked && !is_commit(&l.revision) {
                self.check_moved(w, l);
            }
            return Ok(l.clone());
        }
        if self.locked {
            let why = match self.lock.and_then(|l| l.weights(&w.name)) {
                Some(l) => l.mismatch(w).unwrap_or_default(),
                None => "not in the lock".into(),
            };
            return Err(BuildError::Lock(format!(
                "--locked: weights {:?}: {why}\n  hint: run `mlimg lock` and commit the lock file",
                w.name
            )));
        }
        let events = self.events();
        let resolved = lock::resolve_weights(&self.hub, w, &events).map_err(|e| match e {
            lock::ResolveError::Hub { source, .. } => BuildError::Hub {
                name: w.name.clone(),
                source,
            },
            other => BuildError::Lock(other.to_string()),
        })?;
        resolved.ok_or_else(|| BuildError::Options(format!("weights {:?}: not hf://", w.name)))
    }

    /// Best effort: say so when the locked branch/tag now points elsewhere on the Hub.
    fn check_moved(&self, w: &WeightsSpec, l: &WeightsLock) {
        let Some(src) = lock::hub_source(w) else {
            return;
        };
        match hf::resolve(&self.hub, &src) {
            Ok(now) if now.commit != l.commit => self.progress.message(&format!(
                "mlimg.lock is stale: weights {:?}: {} is now at {} on the Hub, the lock has {}; \
                 building the locked commit (run `mlimg lock` to update)",
                w.name, l.revision, now.commit, l.commit
            )),
            Ok(_) => {}
            Err(e) => self.progress.message(&format!(
                "weights {:?}: could not check whether {} moved on the Hub ({e}); building the locked commit {}",
                w.name, l.revision, l.commit
            )),
        }
    }

    fn record(&self, selector: &str, remote: bool) {
        if let Ok(mut p) = self.planned.lock() {
            match p.iter_mut().find(|(s, _)| s == selector) {
                Some(e) => e.1 = remote,
                None => p.push((selector.to_string(), remote)),
            }
        }
    }

    /// Plans the layers of one Hub weights entry.
    pub fn plan(&self, w: &WeightsSpec, mtime: u64) -> Result<Vec<LayerPlan>, BuildError> {
        let role = LayerRole::Weights(w.name.clone());
        let snap = self.snapshot(w)?;
        let sub = snap.subfolder.as_deref();
        let groups: Vec<Vec<usize>> = match w.layering {
            Layering::One => vec![(0..snap.files.len()).collect()],
            Layering::PerFile => (0..snap.files.len()).map(|i| vec![i]).collect(),
        };
        let layering = match w.layering {
            Layering::One => "one",
            Layering::PerFile => "per-file",
        };
        // Placeholders until fetched: where the file will appear in the hub cache.
        let sources: BTreeMap<usize, PathBuf> = snap
            .files
            .iter()
            .enumerate()
            .map(|(i, f)| {
                (
                    i,
                    hf::snapshot_path(&self.hub, &snap.repo, &snap.commit, &f.path),
                )
            })
            .collect();
        let make = |g: &[usize], sources: &BTreeMap<usize, PathBuf>| {
            // The selector is content only: the files' hashes decide the bytes, so a new commit
            // that leaves these files alone (or another include pattern that selects the same
            // files) keeps the layer.
            let mut fp = vec![format!("hf {} layers {layering}", snap.repo)];
            let mut entries = Vec::new();
            for &i in g {
                let f = &snap.files[i];
                fp.push(format!("file {} {} sha256:{}", f.path, f.size, f.sha256));
                entries.push(Entry {
                    path: image_path(&w.dest, sub, &f.path),
                    mode: 0o644,
                    content: Content::File {
                        path: sources.get(&i).cloned().unwrap_or_default(),
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
            LayerPlan::new(role.clone(), w.compression, entries, &fp, mtime, created_by)
                .map(|mut lp| {
                    // downloads may be gone by the next build: keep the layer's bytes
                    lp.store_bytes = true;
                    lp
                })
                .map_err(|source| BuildError::Layer {
                    role: role.to_string(),
                    source,
                })
        };
        let mut plans = groups
            .iter()
            .map(|g| make(g, &sources))
            .collect::<Result<Vec<_>, _>>()?;
        let Some(cache) = self.cache else {
            return Ok(plans);
        };
        for lp in &plans {
            self.record(&lp.selector, false);
        }

        let mut missing = Vec::new();
        for (gi, lp) in plans.iter_mut().enumerate() {
            if cache.get_selector(&lp.selector).is_some() {
                continue;
            }
            if let Some(remote) = self.remote
                && let Some(blob) = remote.lookup(&lp.selector)
            {
                self.record(&lp.selector, true);
                self.progress.message(&format!(
                    "{role}: layer {} found in the push target; not downloading",
                    &blob.digest
                ));
                lp.remote = Some(blob);
                continue;
            }
            missing.push(gi);
        }
        if !missing.is_empty() {
            let wanted: Vec<usize> = missing.iter().flat_map(|&g| groups[g].clone()).collect();
            if let Ok(mut p) = self.pending.lock() {
                p.push(Pending {
                    name: w.name.clone(),
                    snapshot: HubSnapshot {
                        repo: snap.repo.clone(),
                        commit: snap.commit.clone(),
                        files: wanted.iter().map(|&i| snap.files[i].clone()).collect(),
                    },
                    placeholders: wanted
                        .iter()
                        .map(|i| sources.get(i).cloned().unwrap_or_default())
                        .collect(),
                });
            }
        }
        Ok(plans)
    }

    /// Downloads (verified, resumable) the files of every layer planned but not found in a
    /// cache, and points those layers' entries at the fetched files. Called after the layer
    /// budget check, so a refused build downloads nothing.
    pub fn fetch_pending(&self, plan: &mut BuildPlan) -> Result<(), BuildError> {
        let pending = self
            .pending
            .lock()
            .map(|mut p| std::mem::take(&mut *p))
            .unwrap_or_default();
        let mut moved: BTreeMap<PathBuf, PathBuf> = BTreeMap::new();
        let events = self.events();
        for p in pending {
            let fetched =
                hf::fetch(&self.hub, &p.snapshot, &events).map_err(|source| BuildError::Hub {
                    name: p.name.clone(),
                    source: Box::new(source),
                })?;
            for (placeholder, (_, blob)) in p.placeholders.into_iter().zip(fetched) {
                moved.insert(placeholder, blob);
            }
        }
        if moved.is_empty() {
            return Ok(());
        }
        let mut rewritten: BTreeMap<String, Arc<LayerPlan>> = BTreeMap::new();
        for pp in &mut plan.platforms {
            for l in &mut pp.layers {
                let touches = l.entries.iter().any(
                    |e| matches!(&e.content, Content::File { path, .. } if moved.contains_key(path)),
                );
                if !touches {
                    continue;
                }
                let new = rewritten
                    .entry(l.selector.clone())
                    .or_insert_with(|| {
                        let mut lp = LayerPlan::clone(l);
                        for e in &mut lp.entries {
                            if let Content::File { path, .. } = &mut e.content
                                && let Some(b) = moved.get(path)
                            {
                                *path = b.clone();
                            }
                        }
                        Arc::new(lp)
                    })
                    .clone();
                *l = new;
            }
        }
        Ok(())
    }
}

/// Files to download for the layers of one weights entry that no cache had.
pub struct Pending {
    name: String,
    snapshot: HubSnapshot,
    /// Per file of `snapshot`, the placeholder path its entries carry until fetched.
    placeholders: Vec<PathBuf>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_paths_under_dest_without_subfolder() {
        assert_eq!(image_path("/models/m", None, "a/b.bin"), "models/m/a/b.bin");
        assert_eq!(
            image_path("/models/m", Some("onnx"), "onnx/model.onnx"),
            "models/m/model.onnx"
        );
        assert_eq!(image_path("/", None, "x"), "x");
    }
}
