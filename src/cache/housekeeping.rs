//! `mlimg cache ls` and `mlimg cache prune`: what the local cache holds and removing what is
//! old or over a size budget. A blob's last use is the newest of its own mtime and the mtimes of
//! the selector records naming it (a selector hit touches its record, see
//! [`Cache::get_selector`]); a wheel's is its file's mtime.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::{Cache, CacheError, SelectorRecord};

/// Temp files older than this are leftovers of a build that died.
const STALE_TEMP: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A layer or config blob (`blobs/sha256/`).
    Blob,
    /// A downloaded wheel (`wheels/<sha256>/`).
    Wheel,
    /// A selector record of a layer that is not stored (regenerated from its sources).
    Selector,
    /// An output's notes (`outputs/`).
    Output,
    /// A leftover temp file (`tmp/`).
    Temp,
}

#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    pub kind: Kind,
    /// The digest of a blob, the file name of a wheel, the file name otherwise.
    pub name: String,
    pub size: u64,
    /// Seconds since the Unix epoch.
    pub last_used: u64,
    #[serde(skip)]
    pub path: PathBuf,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Totals {
    pub blobs: u64,
    pub blob_bytes: u64,
    pub wheels: u64,
    pub wheel_bytes: u64,
    pub selectors: u64,
    pub outputs: u64,
    pub temp_bytes: u64,
    pub total_bytes: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Listing {
    pub root: PathBuf,
    pub totals: Totals,
    pub entries: Vec<Entry>,
}

#[derive(Debug, Clone, Default)]
pub struct PruneOptions {
    /// Remove what was last used longer ago than this.
    pub older_than: Option<Duration>,
    /// Then remove the least recently used blobs and wheels until they take at most this.
    pub keep_bytes: Option<u64>,
    /// Say what would go, remove nothing.
    pub dry_run: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct PruneReport {
    pub dry_run: bool,
    pub removed: Vec<Entry>,
    pub freed_bytes: u64,
    /// Selector records dropped because their blob went (or was already gone).
    pub orphan_selectors: u64,
    pub kept_bytes: u64,
}

fn secs(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CacheError + '_ {
    move |source| CacheError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Files directly in `dir` (none if it does not exist).
fn files(dir: &Path) -> Result<Vec<(PathBuf, fs::Metadata)>, CacheError> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(dir)(e)),
    };
    let mut out = Vec::new();
    for e in rd {
        let e = e.map_err(io(dir))?;
        let m = e.metadata().map_err(io(&e.path()))?;
        out.push((e.path(), m));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

fn mtime(m: &fs::Metadata) -> SystemTime {
    m.modified().unwrap_or(SystemTime::UNIX_EPOCH)
}

impl Cache {
    /// Marks a selector record as used now (its mtime), so `prune` keeps what builds reuse.
    /// Best effort.
    pub(crate) fn touch_selector(&self, key: &str) {
        if let Ok(f) = fs::File::open(self.selector_path(key)) {
            let _ = f.set_modified(SystemTime::now());
        }
    }

    /// Everything in the cache, with sizes and last use.
    pub fn list(&self) -> Result<Listing, CacheError> {
        let root = self.root();
        // selector records: blob digest -> newest record mtime; unstored records are entries
        let mut used: HashMap<String, SystemTime> = HashMap::new();
        let mut stored_records = 0;
        let mut entries = Vec::new();
        for (p, m) in files(&root.join("selectors"))? {
            let rec: Option<SelectorRecord> = fs::read(&p)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok());
            let t = mtime(&m);
            match rec {
                Some(r) if r.stored => {
                    stored_records += 1;
                    let e = used.entry(r.blob.digest).or_insert(t);
                    *e = (*e).max(t);
                }
                _ => entries.push(Entry {
                    kind: Kind::Selector,
                    name: file_name(&p),
                    size: m.len(),
                    last_used: secs(t),
                    path: p,
                }),
            }
        }
        for (p, m) in files(&root.join("blobs/sha256"))? {
            let digest = format!("sha256:{}", file_name(&p));
            let t = used.get(&digest).map_or(mtime(&m), |u| (*u).max(mtime(&m)));
            entries.push(Entry {
                kind: Kind::Blob,
                name: digest,
                size: m.len(),
                last_used: secs(t),
                path: p,
            });
        }
        for (dir, m) in files(&root.join("wheels"))? {
            if !m.is_dir() {
                continue;
            }
            for (p, m) in files(&dir)? {
                if m.is_file() {
                    entries.push(Entry {
                        kind: Kind::Wheel,
                        name: file_name(&p),
                        size: m.len(),
                        last_used: secs(mtime(&m)),
                        path: p,
                    });
                }
            }
        }
        for (sub, kind) in [("outputs", Kind::Output), ("tmp", Kind::Temp)] {
            for (p, m) in files(&root.join(sub))? {
                if m.is_file() {
                    entries.push(Entry {
                        kind,
                        name: file_name(&p),
                        size: m.len(),
                        last_used: secs(mtime(&m)),
                        path: p,
                    });
                }
            }
        }
        let mut t = Totals::default();
        for e in &entries {
            match e.kind {
                Kind::Blob => {
                    t.blobs += 1;
                    t.blob_bytes += e.size;
                }
                Kind::Wheel => {
                    t.wheels += 1;
                    t.wheel_bytes += e.size;
                }
                Kind::Selector => t.selectors += 1,
                Kind::Output => t.outputs += 1,
                Kind::Temp => t.temp_bytes += e.size,
            }
            t.total_bytes += e.size;
        }
        t.selectors += stored_records;
        Ok(Listing {
            root: root.to_path_buf(),
            totals: t,
            entries,
        })
    }

    /// Removes what `opts` says (always: temp files of dead builds and selector records whose
    /// blob is gone). `now` is the reference time for ages.
    pub fn prune(&self, opts: &PruneOptions, now: SystemTime) -> Result<PruneReport, CacheError> {
        let listing = self.list()?;
        let now_s = secs(now);
        let cutoff = opts.older_than.map(|d| now_s.saturating_sub(d.as_secs()));
        let mut remove: Vec<Entry> = Vec::new();
        let mut keep: Vec<Entry> = Vec::new();
        for e in listing.entries {
            let old = cutoff.is_some_and(|c| e.last_used < c);
            let dead_temp = e.kind == Kind::Temp && e.last_used + STALE_TEMP.as_secs() < now_s;
            if old || dead_temp {
                remove.push(e);
            } else {
                keep.push(e);
            }
        }
        if let Some(budget) = opts.keep_bytes {
            let sized = |e: &Entry| matches!(e.kind, Kind::Blob | Kind::Wheel);
            let mut total: u64 = keep.iter().filter(|e| sized(e)).map(|e| e.size).sum();
            // least recently used first; ties: larger first
            keep.sort_by_key(|e| (e.last_used, std::cmp::Reverse(e.size)));
            let mut rest = Vec::new();
            for e in keep {
                if total > budget && sized(&e) {
                    total -= e.size;
                    remove.push(e);
                } else {
                    rest.push(e);
                }
            }
            keep = rest;
        }
        let freed: u64 = remove.iter().map(|e| e.size).sum();
        if !opts.dry_run {
            for e in &remove {
                match fs::remove_file(&e.path) {
                    Ok(()) => {}
                    Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                    Err(err) => return Err(io(&e.path)(err)),
                }
                if e.kind == Kind::Wheel
                    && let Some(dir) = e.path.parent()
                {
                    let _ = fs::remove_dir(dir); // only when empty
                }
            }
        }
        // selector records whose stored blob is (or would be) gone
        let gone: std::collections::HashSet<&str> = remove
            .iter()
            .filter(|e| e.kind == Kind::Blob)
            .map(|e| e.name.as_str())
            .collect();
        let mut orphans = 0;
        for (p, _) in files(&self.root().join("selectors"))? {
            let Some(rec) = fs::read(&p)
                .ok()
                .and_then(|b| serde_json::from_slice::<SelectorRecord>(&b).ok())
            else {
                continue;
            };
            if rec.stored
                && (gone.contains(rec.blob.digest.as_str()) || !self.has_blob(&rec.blob.digest))
            {
                orphans += 1;
                if !opts.dry_run {
                    let _ = fs::remove_file(&p);
                }
            }
        }
        Ok(PruneReport {
            dry_run: opts.dry_run,
            kept_bytes: keep.iter().map(|e| e.size).sum(),
            removed: remove,
            freed_bytes: freed,
            orphan_selectors: orphans,
        })
    }
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|f| f.to_string_lossy().to_string())
        .unwrap_or_default()
}

/// `10GiB`, `500M`, `1.5G`, `123` (bytes) → bytes. K/M/G/T are powers of 1024, as are
/// KiB/MiB/GiB/TiB; KB/MB/GB/TB are powers of 1000.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?}: expected a size like 10GiB, 500M or 1000000"))?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kib" => 1024.0,
        "m" | "mib" => 1024f64.powi(2),
        "g" | "gib" => 1024f64.powi(3),
        "t" | "tib" => 1024f64.powi(4),
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        "tb" => 1e12,
        u => {
            return Err(format!(
                "{s:?}: unknown unit {u:?} (B, K/KiB, M/MiB, G/GiB, T/TiB, KB, MB, GB, TB)"
            ));
        }
    };
    Ok((n * mult) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::LayerBlob;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("10GiB"), Ok(10 << 30));
        assert_eq!(parse_size("500M"), Ok(500 << 20));
        assert_eq!(parse_size("1.5k"), Ok(1536));
        assert_eq!(parse_size("2GB"), Ok(2_000_000_000));
        assert_eq!(parse_size("7"), Ok(7));
        assert!(parse_size("ten").is_err());
        assert!(parse_size("5 parsecs").is_err());
    }

    #[test]
    fn prune_by_age_and_budget_keeps_what_is_used() {
        let d = tempfile::tempdir().unwrap();
        let c = Cache::open(d.path()).unwrap();
        let old = c.put_bytes(&[1u8; 100]).unwrap();
        let new = c.put_bytes(&[2u8; 50]).unwrap();
        let rec = |dg: &str| SelectorRecord {
            blob: LayerBlob {
                media_type: "m".into(),
                digest: dg.into(),
                diff_id: dg.into(),
                size: 1,
            },
            stored: true,
        };
        c.put_selector("old", &rec(&old)).unwrap();
        c.put_selector("new", &rec(&new)).unwrap();
        let now = SystemTime::now() + Duration::from_secs(10 * 86400);
        // both were written "10 days ago"; a selector hit makes `new` recent
        let f = fs::File::open(c.blob_path(&new)).unwrap();
        f.set_modified(now).unwrap();
        let r = c
            .prune(
                &PruneOptions {
                    older_than: Some(Duration::from_secs(86400)),
                    dry_run: true,
                    ..Default::default()
                },
                now,
            )
            .unwrap();
        assert_eq!(r.removed.len(), 1, "{r:?}");
        assert_eq!(r.removed[0].name, old);
        assert!(c.has_blob(&old), "dry run removes nothing");
        let r = c
            .prune(
                &PruneOptions {
                    older_than: Some(Duration::from_secs(86400)),
                    ..Default::default()
                },
                now,
            )
            .unwrap();
        assert_eq!((r.freed_bytes, r.orphan_selectors), (100, 1));
        assert!(!c.has_blob(&old) && c.has_blob(&new));
        assert!(c.get_selector("old").is_none() && c.get_selector("new").is_some());
        // a budget of 0 bytes takes the rest
        let r = c
            .prune(
                &PruneOptions {
                    keep_bytes: Some(0),
                    ..Default::default()
                },
                now,
            )
            .unwrap();
        assert_eq!(r.freed_bytes, 50);
        assert_eq!(c.list().unwrap().totals.blobs, 0);
    }
}
