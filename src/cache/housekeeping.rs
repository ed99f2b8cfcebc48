//! `mlimg cache ls` and `mlimg cache prune`: what the local cache holds and removing what is
//! old or over a size budget.
//!
//! An entry's last use is its mtime, which every reader that reuses an entry without writing
//! it bumps (best effort): a selector hit touches its record (see [`Cache::get_selector`]), a
//! cached wheel, `.deb`, `Packages` index, unpacked package, facts record or pushed record
//! touches itself when a build takes it. A blob's last use is the newest of its own mtime and
//! the mtimes of the selector records naming it. An unpacked package is a folder: its last use
//! is the folder's own mtime, its size the sum of its files.
//!
//! Names starting with `.` inside the cache's folders are temp files or folders of a build in
//! progress (or one that died): they go once older than [`STALE_TEMP`].

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::{Cache, CacheError, SelectorRecord};

/// Temp files older than this are leftovers of a build that died.
const STALE_TEMP: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// A layer or config blob (`blobs/sha256/`).
    Blob,
    /// A downloaded wheel (`wheels/wheels/<sha256>/<filename>`).
    Wheel,
    /// A selector record of a layer that is not stored (regenerated from its sources).
    Selector,
    /// An output's notes (`outputs/`).
    Output,
    /// A leftover temp file or folder (`tmp/`, or a `.`-name in another folder).
    Temp,
    /// A record of facts read from a base image (`facts/`): small JSON.
    Fact,
    /// Where a blob was pushed (`pushed/<hex>`), for cross-repository mounts.
    Pushed,
    /// A verified Debian `Packages` index (`debian/index/<sha256>`).
    DebIndex,
    /// A downloaded Debian package (`debian/debs/<sha256>.deb`).
    Deb,
    /// A Debian package's data unpacked into a folder (`debian/unpacked/<sha256>/`).
    DebUnpacked,
}

impl Kind {
    /// The large kinds, which `--keep-bytes` counts (the others go by age only).
    pub fn in_budget(self) -> bool {
        matches!(
            self,
            Kind::Blob | Kind::Wheel | Kind::DebIndex | Kind::Deb | Kind::DebUnpacked
        )
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    pub kind: Kind,
    /// The digest of a blob or pushed record (`sha256:<hex>`); the file (or folder) name
    /// otherwise; a temp file's path under the cache root when it is outside `tmp/`.
    pub name: String,
    pub size: u64,
    /// Seconds since the Unix epoch.
    pub last_used: u64,
    #[serde(skip)]
    pub path: PathBuf,
}

/// Counts and sizes by kind. Fields are only ever added.
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
    pub facts: u64,
    pub fact_bytes: u64,
    pub pushed: u64,
    pub pushed_bytes: u64,
    pub deb_indexes: u64,
    pub deb_index_bytes: u64,
    pub debs: u64,
    pub deb_bytes: u64,
    pub deb_unpacked: u64,
    pub deb_unpacked_bytes: u64,
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
    /// Then remove the least recently used entries of the large kinds ([`Kind::in_budget`])
    /// until they take at most this.
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

/// Entries directly in `dir` (none if it does not exist), symlinks not followed.
fn files(dir: &Path) -> Result<Vec<(PathBuf, fs::Metadata)>, CacheError> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(dir)(e)),
    };
    let mut out = Vec::new();
    for e in rd {
        let e = e.map_err(io(dir))?;
        let m = match fs::symlink_metadata(e.path()) {
            Ok(m) => m,
            // removed meanwhile (a concurrent build renamed or dropped it)
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
            Err(err) => return Err(io(&e.path())(err)),
        };
        out.push((e.path(), m));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

fn mtime(m: &fs::Metadata) -> SystemTime {
    m.modified().unwrap_or(SystemTime::UNIX_EPOCH)
}

/// The sum of the regular files' sizes under `dir` and the newest mtime there (the folder's
/// own included). Symlinks are not followed; what vanishes meanwhile is skipped.
fn tree(dir: &Path) -> (u64, SystemTime) {
    let mut size = 0;
    let mut newest = SystemTime::UNIX_EPOCH;
    for e in walkdir::WalkDir::new(dir)
        .follow_links(false)
        .into_iter()
        .flatten()
    {
        let Ok(m) = e.metadata() else { continue };
        if m.is_file() {
            size += m.len();
        }
        newest = newest.max(mtime(&m));
    }
    (size, newest)
}

fn is_temp_name(p: &Path) -> bool {
    p.file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with('.'))
}

/// Marks `path` (a file or folder) as used now, for `prune`. Best effort.
pub(crate) fn touch(path: &Path) {
    if let Ok(f) = fs::File::open(path) {
        let _ = f.set_modified(SystemTime::now());
    }
}

impl Cache {
    /// Marks a selector record as used now (its mtime), so `prune` keeps what builds reuse.
    /// Best effort.
    pub(crate) fn touch_selector(&self, key: &str) {
        touch(&self.selector_path(key));
    }

    /// Marks a blob as used now (a base layer or manifest found in the cache). Best effort.
    pub(crate) fn touch_blob(&self, digest: &str) {
        touch(&self.blob_path(digest));
    }

    /// An entry for a temp file or folder at `p` (named by its path under the root).
    fn temp_entry(&self, p: PathBuf, m: &fs::Metadata) -> Entry {
        let (size, t) = if m.is_dir() {
            tree(&p)
        } else {
            (m.len(), mtime(m))
        };
        Entry {
            kind: Kind::Temp,
            name: p
                .strip_prefix(self.root())
                .map(|r| r.display().to_string())
                .unwrap_or_else(|_| file_name(&p)),
            size,
            last_used: secs(t),
            path: p,
        }
    }

    /// The files in `sub` as entries of `kind` (named by `name`), `.`-names as temps.
    fn add_files(
        &self,
        entries: &mut Vec<Entry>,
        sub: &str,
        kind: Kind,
        name: impl Fn(&Path) -> Option<String>,
    ) -> Result<(), CacheError> {
        for (p, m) in files(&self.root().join(sub))? {
            if is_temp_name(&p) {
                entries.push(self.temp_entry(p, &m));
            } else if m.is_file()
                && let Some(n) = name(&p)
            {
                entries.push(Entry {
                    kind,
                    name: n,
                    size: m.len(),
                    last_used: secs(mtime(&m)),
                    path: p,
                });
            }
        }
        Ok(())
    }

    /// Everything in the cache, with sizes and last use.
    pub fn list(&self) -> Result<Listing, CacheError> {
        let root = self.root();
        // selector records: blob digest -> newest record mtime; unstored records are entries
        let mut used: HashMap<String, SystemTime> = HashMap::new();
        let mut stored_records = 0;
        let mut entries = Vec::new();
        for (p, m) in files(&root.join("selectors"))? {
            if is_temp_name(&p) {
                entries.push(self.temp_entry(p, &m));
                continue;
            }
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
            if is_temp_name(&p) {
                entries.push(self.temp_entry(p, &m));
                continue;
            }
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
        // the wheel cache (`fetch::wheel_cache`) keeps `wheels/wheels/<sha256>/<filename>`,
        // each wheel with a `<filename>.url` origin record beside it (removed with it)
        for (dir, m) in files(&root.join("wheels/wheels"))? {
            if m.is_dir() {
                let sub = format!(
                    "wheels/wheels/{}",
                    dir.file_name().unwrap_or_default().to_string_lossy()
                );
                self.add_files(&mut entries, &sub, Kind::Wheel, |p| {
                    let n = file_name(p);
                    n.ends_with(".whl").then_some(n)
                })?;
            }
        }
        self.add_files(&mut entries, "outputs", Kind::Output, |p| {
            Some(file_name(p))
        })?;
        self.add_files(&mut entries, "facts", Kind::Fact, |p| Some(file_name(p)))?;
        self.add_files(&mut entries, "pushed", Kind::Pushed, |p| {
            Some(format!("sha256:{}", file_name(p)))
        })?;
        self.add_files(&mut entries, "debian/index", Kind::DebIndex, |p| {
            Some(file_name(p))
        })?;
        self.add_files(&mut entries, "debian/debs", Kind::Deb, |p| {
            Some(file_name(p))
        })?;
        // unpacked packages: one entry per folder, its own mtime the last use (its files carry
        // the package's mtimes)
        for (p, m) in files(&root.join("debian/unpacked"))? {
            if is_temp_name(&p) {
                entries.push(self.temp_entry(p, &m));
            } else if m.is_dir() {
                entries.push(Entry {
                    kind: Kind::DebUnpacked,
                    name: file_name(&p),
                    size: tree(&p).0,
                    last_used: secs(mtime(&m)),
                    path: p,
                });
            }
        }
        // temp files of builds, and folders `prune` moved here to remove
        for (p, m) in files(&root.join("tmp"))? {
            if m.is_file() || m.is_dir() {
                let mut e = self.temp_entry(p, &m);
                e.name = file_name(&e.path);
                entries.push(e);
            }
        }
        let mut t = Totals::default();
        for e in &entries {
            let (n, bytes) = match e.kind {
                Kind::Blob => (&mut t.blobs, Some(&mut t.blob_bytes)),
                Kind::Wheel => (&mut t.wheels, Some(&mut t.wheel_bytes)),
                Kind::Selector => (&mut t.selectors, None),
                Kind::Output => (&mut t.outputs, None),
                Kind::Temp => {
                    t.temp_bytes += e.size;
                    t.total_bytes += e.size;
                    continue;
                }
                Kind::Fact => (&mut t.facts, Some(&mut t.fact_bytes)),
                Kind::Pushed => (&mut t.pushed, Some(&mut t.pushed_bytes)),
                Kind::DebIndex => (&mut t.deb_indexes, Some(&mut t.deb_index_bytes)),
                Kind::Deb => (&mut t.debs, Some(&mut t.deb_bytes)),
                Kind::DebUnpacked => (&mut t.deb_unpacked, Some(&mut t.deb_unpacked_bytes)),
            };
            *n += 1;
            if let Some(b) = bytes {
                *b += e.size;
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

    /// Removes one entry; what is already gone is no error.
    fn remove(&self, e: &Entry) -> Result<(), CacheError> {
        let gone_ok = |r: std::io::Result<()>, p: &Path| match r {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => Err(io(p)(err)),
            _ => Ok(()),
        };
        match e.kind {
            Kind::DebUnpacked => self.remove_tree(&e.path),
            Kind::Temp if fs::symlink_metadata(&e.path).is_ok_and(|m| m.is_dir()) => {
                gone_ok(fs::remove_dir_all(&e.path), &e.path)
            }
            _ => {
                gone_ok(fs::remove_file(&e.path), &e.path)?;
                if e.kind == Kind::Wheel {
                    let mut origin = e.path.clone().into_os_string();
                    origin.push(".url");
                    let _ = fs::remove_file(origin);
                    if let Some(dir) = e.path.parent() {
                        let _ = fs::remove_dir(dir); // only when empty
                    }
                }
                Ok(())
            }
        }
    }

    /// Removes a folder that builds trust as a whole once it is in place (an unpacked package:
    /// complete when its `entries.json` reads, see `sources::debian::install::unpack_cached`).
    /// It is first renamed into `tmp/` (one atomic step), so no build ever finds it half
    /// removed; a removal that stops halfway leaves a temp folder that the next prune takes.
    fn remove_tree(&self, path: &Path) -> Result<(), CacheError> {
        let tmp = self.root().join("tmp");
        let aside = tempfile::Builder::new()
            .prefix(".pruned-")
            .tempdir_in(&tmp)
            .map_err(io(&tmp))?;
        // renaming a folder onto an empty one replaces it
        match fs::rename(path, aside.path()) {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(err) => return Err(io(path)(err)),
        }
        let p = aside.path().to_path_buf();
        aside.close().map_err(io(&p))
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
            let mut total: u64 = keep
                .iter()
                .filter(|e| e.kind.in_budget())
                .map(|e| e.size)
                .sum();
            // least recently used first; ties: larger first
            keep.sort_by_key(|e| (e.last_used, std::cmp::Reverse(e.size)));
            let mut rest = Vec::new();
            for e in keep {
                if total > budget && e.kind.in_budget() {
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
                self.remove(e)?;
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

    fn write(p: &Path, bytes: &[u8], t: SystemTime) {
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, bytes).unwrap();
        fs::File::open(p).unwrap().set_modified(t).unwrap();
    }

    /// An unpacked package as `unpack_cached` leaves it: `root/` and `entries.json`.
    fn unpacked(dir: &Path, files: &[(&str, usize)], t: SystemTime) {
        for (f, n) in files {
            write(&dir.join("root").join(f), &vec![b'x'; *n], t);
        }
        write(&dir.join("entries.json"), b"{}", t);
        for e in walkdir::WalkDir::new(dir) {
            let e = e.unwrap();
            fs::File::open(e.path()).unwrap().set_modified(t).unwrap();
        }
    }

    fn names(l: &Listing, kind: Kind) -> Vec<String> {
        let mut v: Vec<String> = l
            .entries
            .iter()
            .filter(|e| e.kind == kind)
            .map(|e| e.name.clone())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn every_kind_is_listed_and_pruned_by_age_and_the_large_ones_by_budget() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        let c = Cache::open(root).unwrap();
        let now = SystemTime::now();
        let day = Duration::from_secs(86400);
        let old = now - 5 * day;
        let (a, b) = ("a".repeat(64), "b".repeat(64));
        let (e, f, g) = ("e".repeat(64), "f".repeat(64), "0".repeat(64));
        // facts and pushed records: one old, one recent each
        super::super::facts::put(root, "k", "old", &1u32);
        super::super::facts::put(root, "k", "new", &2u32);
        let fact = |key: &str| {
            fs::read_dir(root.join("facts"))
                .unwrap()
                .map(|e| e.unwrap().path())
                .find(|p| {
                    use sha2::Digest as _;
                    let h = hex::encode(sha2::Sha256::digest(key.as_bytes()));
                    file_name(p) == format!("k-{h}.json")
                })
                .unwrap()
        };
        fs::File::open(fact("old"))
            .unwrap()
            .set_modified(old)
            .unwrap();
        write(&root.join("pushed").join(&a), b"reg team/a\n", old);
        write(&root.join("pushed").join(&b), b"reg team/b\n", now);
        // Debian: indexes, .debs, unpacked folders; one old, one recent each
        write(&root.join("debian/index").join(&a), &[1; 300], old);
        write(
            &root.join("debian/index").join(&b),
            &[1; 30],
            now - Duration::from_secs(40),
        );
        write(&root.join(format!("debian/debs/{a}.deb")), &[2; 200], old);
        write(
            &root.join(format!("debian/debs/{b}.deb")),
            &[2; 20],
            now - Duration::from_secs(30),
        );
        unpacked(
            &root.join("debian/unpacked").join(&a),
            &[("usr/bin/x", 100), ("etc/y", 5)],
            old,
        );
        unpacked(
            &root.join("debian/unpacked").join(&b),
            &[("usr/lib/z", 40)],
            now - Duration::from_secs(20),
        );
        // a wheel with its origin record, used recently
        let wheel = root.join(format!("wheels/wheels/{e}/w-1-py3-none-any.whl"));
        write(&wheel, &[3; 60], now - Duration::from_secs(50));
        write(
            &root.join(format!("wheels/wheels/{e}/w-1-py3-none-any.whl.url")),
            b"https://x/w",
            now,
        );
        // temp leftovers of dead builds (and of a live one, which stays)
        write(
            &root.join(format!("debian/debs/.partial-{f}")),
            &[9; 7],
            now - 2 * STALE_TEMP,
        );
        let dead_unpack = root.join("debian/unpacked/.unpack-dead");
        unpacked(&dead_unpack, &[("f", 3)], now - 2 * STALE_TEMP);
        write(&root.join("debian/index/.partial-live"), &[9; 4], now);
        write(
            &root.join(format!("wheels/wheels/{g}/.partial-x")),
            &[9; 2],
            now - 2 * STALE_TEMP,
        );

        let l = c.list().unwrap();
        let t = &l.totals;
        assert_eq!((t.facts, t.pushed), (2, 2), "{t:?}");
        assert_eq!((t.deb_indexes, t.deb_index_bytes), (2, 330));
        assert_eq!((t.debs, t.deb_bytes), (2, 220));
        // a folder's size is the sum of its files (entries.json included)
        assert_eq!(
            (t.deb_unpacked, t.deb_unpacked_bytes),
            (2, 105 + 2 + 40 + 2)
        );
        assert_eq!((t.wheels, t.wheel_bytes), (1, 60));
        assert_eq!(t.temp_bytes, 7 + 5 + 4 + 2);
        assert_eq!(
            names(&l, Kind::Pushed),
            [format!("sha256:{a}"), format!("sha256:{b}")]
        );
        assert_eq!(names(&l, Kind::DebUnpacked), [a.clone(), b.clone()]);
        assert_eq!(
            names(&l, Kind::Deb),
            [format!("{a}.deb"), format!("{b}.deb")]
        );
        assert_eq!(names(&l, Kind::Wheel), ["w-1-py3-none-any.whl"]);
        let json = serde_json::to_value(&l).unwrap();
        assert_eq!(json["totals"]["deb_unpacked_bytes"], 149);
        assert!(
            json["entries"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["kind"] == "deb-unpacked" && e["name"] == a.as_str()),
            "{json}"
        );

        // by age: the old entry of every kind goes, and the dead temps
        let r = c
            .prune(
                &PruneOptions {
                    older_than: Some(day),
                    ..Default::default()
                },
                now,
            )
            .unwrap();
        let mut gone: Vec<Kind> = r.removed.iter().map(|e| e.kind).collect();
        gone.sort();
        assert_eq!(
            gone,
            [
                Kind::Temp,
                Kind::Temp,
                Kind::Temp,
                Kind::Fact,
                Kind::Pushed,
                Kind::DebIndex,
                Kind::Deb,
                Kind::DebUnpacked
            ],
            "{r:?}"
        );
        // temps 7 + 5 + 2, fact 1, pushed 11, index 300, .deb 200, unpacked 105 + 2
        assert_eq!(r.freed_bytes, 14 + 1 + 11 + 300 + 200 + 107, "{r:?}");
        assert!(super::super::facts::get::<u32>(root, "k", "old").is_none());
        assert_eq!(super::super::facts::get::<u32>(root, "k", "new"), Some(2));
        assert!(!root.join("pushed").join(&a).exists() && root.join("pushed").join(&b).exists());
        assert!(!root.join("debian/index").join(&a).exists());
        assert!(!root.join(format!("debian/debs/{a}.deb")).exists());
        assert!(!root.join("debian/unpacked").join(&a).exists());
        assert!(!dead_unpack.exists());
        assert!(
            root.join("debian/unpacked")
                .join(&b)
                .join("entries.json")
                .is_file()
        );
        assert!(
            root.join("debian/index/.partial-live").exists(),
            "a live temp stays"
        );
        assert!(wheel.is_file());
        // the unpacked folder went through tmp/ and nothing of it is left there
        assert_eq!(fs::read_dir(root.join("tmp")).unwrap().count(), 0);

        // by budget: the least recently used of the large kinds go first (the wheel, then
        // the index), facts and pushed records stay whatever the budget
        let r = c
            .prune(
                &PruneOptions {
                    keep_bytes: Some(62),
                    ..Default::default()
                },
                now,
            )
            .unwrap();
        let gone: Vec<Kind> = r.removed.iter().map(|e| e.kind).collect();
        assert_eq!(gone, [Kind::Wheel, Kind::DebIndex], "{r:?}");
        assert!(
            !wheel.exists() && !wheel.parent().unwrap().exists(),
            "with its origin record"
        );
        let r = c
            .prune(
                &PruneOptions {
                    keep_bytes: Some(0),
                    ..Default::default()
                },
                now,
            )
            .unwrap();
        let gone: Vec<Kind> = r.removed.iter().map(|e| e.kind).collect();
        assert_eq!(gone, [Kind::Deb, Kind::DebUnpacked], "{r:?}");
        let t = c.list().unwrap().totals;
        assert_eq!(
            (t.facts, t.pushed, t.debs, t.deb_unpacked, t.deb_indexes),
            (1, 1, 0, 0, 0)
        );
    }

    #[test]
    fn readers_that_reuse_an_entry_mark_it_used() {
        use crate::registry::{BlobMemory, ContentStore};
        let d = tempfile::tempdir().unwrap();
        let c = Cache::open(d.path()).unwrap();
        let old = SystemTime::now() - Duration::from_secs(30 * 86400);
        let age = |p: &Path| {
            SystemTime::now()
                .duration_since(fs::metadata(p).unwrap().modified().unwrap())
                .unwrap_or_default()
        };
        super::super::facts::put(d.path(), "k", "a", &1u32);
        let fact = fs::read_dir(d.path().join("facts"))
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        fs::File::open(&fact).unwrap().set_modified(old).unwrap();
        assert_eq!(super::super::facts::get::<u32>(d.path(), "k", "a"), Some(1));
        assert!(age(&fact) < Duration::from_secs(3600));

        let dg = format!("sha256:{}", "c".repeat(64));
        c.remember("reg", "team/a", &dg);
        let pushed = d.path().join("pushed").join("c".repeat(64));
        fs::File::open(&pushed).unwrap().set_modified(old).unwrap();
        assert_eq!(c.repositories("reg", &dg), ["team/a"]);
        assert!(age(&pushed) < Duration::from_secs(3600));
        fs::File::open(&pushed).unwrap().set_modified(old).unwrap();
        c.remember("reg", "team/a", &dg); // no write: already the most recent
        assert!(age(&pushed) < Duration::from_secs(3600));

        let blob = c.put_bytes(b"{}").unwrap();
        fs::File::open(c.blob_path(&blob))
            .unwrap()
            .set_modified(old)
            .unwrap();
        assert!(ContentStore::get(&c, &blob).is_some());
        assert!(age(&c.blob_path(&blob)) < Duration::from_secs(3600));
    }
}
