//! `mlimg.lock`: what a spec's floating inputs resolved to, so that a later build (on any
//! machine) builds the same image without asking anyone to resolve them again.
//!
//! The lock sits next to the spec (`mlimg.toml` → `mlimg.lock`, `x.toml` → `x.lock`) and holds:
//!
//! - the base image: the reference as written, the index digest (registry bases) and the
//!   manifest digest per platform;
//! - per Hub weights entry: what the spec asked for (repo, revision, subfolder, include,
//!   exclude), the commit the revision resolved to, and every selected file with its size and
//!   sha256.
//!
//! It is TOML with a fixed order (weights by name, files by path, platforms by name), so a
//! re-lock that changes one thing changes only the lines about that thing. Writes go to a temp
//! file in the same folder and are renamed into place.
//!
//! [`Lockfile::check`] compares a lock with a spec: an entry is stale when the spec no longer
//! asks for what was locked. A branch that moved on the Hub does not make the lock stale (the
//! lock exists to pin it); `mlimg build` reports that separately, `mlimg build --locked` never
//! asks.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use crate::platform::Platform;
use crate::sources::hf::HubFile;
use crate::spec::{BaseSpec, Spec, WeightsSource, WeightsSpec};

pub const LOCK_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: not a valid lock file: {message}\n  hint: delete it and run `mlimg lock`", path.display())]
    Parse { path: PathBuf, message: String },
    #[error("{}: lock version {found} is not supported (this mlimg writes version {LOCK_VERSION})", path.display())]
    Version { path: PathBuf, found: u32 },
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lockfile {
    pub version: u32,
    /// `None` for `base = "scratch"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<BaseLock>,
    /// Hub weights entries, sorted by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub weights: Vec<WeightsLock>,
    /// The wheels of each dependency set per platform, sorted by set name and platform.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deps: Vec<DepsLock>,
    /// The Debian packages of `[system]` per platform, sorted by platform.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub system: Vec<SystemLock>,
}

/// The Debian packages `[system]` installs on one platform.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SystemLock {
    /// `os/arch[/variant]`.
    pub platform: String,
    /// sha256 over what `[system]` asks for and where it looks (packages, suite, mirror,
    /// components) and the base it installs into: when it changes, the entry is stale.
    pub inputs: String,
    /// dpkg's architecture (`amd64`, `arm64`).
    pub architecture: String,
    /// Every package installed (requested and dependencies), sorted by name.
    pub packages: Vec<DebLock>,
}

pub use crate::sources::debian::DebLock;

/// The wheels chosen for one dependency set on one platform.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DepsLock {
    /// The `[[deps]]` set's name.
    pub name: String,
    /// `os/arch[/variant]`.
    pub platform: String,
    /// sha256 over what the set pins (requirements after `-r` includes, or the pylock file)
    /// and where it looks (index URLs, find-links): when it changes, the entry is stale.
    pub inputs: String,
    /// The interpreter the wheels were chosen for (`CPython 3.11 on linux x86_64 (glibc 2.36)`).
    pub python: String,
    /// Sorted by name.
    pub wheels: Vec<crate::sources::python::ResolvedWheel>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BaseLock {
    /// The base as written in the spec.
    pub reference: String,
    /// The digest the reference resolved to (an index for multi-platform images).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// Per platform (`os/arch[/variant]`), the image manifest digest; sorted by platform.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub platforms: Vec<PlatformLock>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlatformLock {
    pub platform: String,
    pub digest: String,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeightsLock {
    /// The weights entry's name in the spec.
    pub name: String,
    /// `org/repo`.
    pub repo: String,
    /// The revision as written in the spec (branch, tag or commit).
    pub revision: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subfolder: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
    /// The 40-hex commit the revision resolved to.
    pub commit: String,
    /// Sorted by path; every sha256 is known.
    pub files: Vec<HubFile>,
}

/// The lock file that belongs to a spec file.
pub fn lock_path(spec_path: &Path) -> PathBuf {
    spec_path.with_extension("lock")
}

fn norm_subfolder(s: Option<&str>) -> Option<&str> {
    s.map(|s| s.trim_matches('/')).filter(|s| !s.is_empty())
}

impl WeightsLock {
    /// Why this locked entry no longer matches the spec's entry (`None`: it matches).
    pub fn mismatch(&self, w: &WeightsSpec) -> Option<String> {
        let WeightsSource::Hub {
            repo,
            revision,
            subfolder,
        } = &w.source
        else {
            return Some("it is no longer a hf:// source".into());
        };
        let mut why = Vec::new();
        if &self.repo != repo {
            why.push(format!("repo changed ({} → {repo})", self.repo));
        }
        if &self.revision != revision {
            why.push(format!("revision changed ({} → {revision})", self.revision));
        }
        if norm_subfolder(self.subfolder.as_deref()) != norm_subfolder(subfolder.as_deref()) {
            why.push(format!(
                "subfolder changed ({:?} → {:?})",
                self.subfolder.as_deref().unwrap_or(""),
                subfolder.as_deref().unwrap_or("")
            ));
        }
        if self.include != w.include {
            why.push(format!(
                "include changed ({:?} → {:?})",
                self.include, w.include
            ));
        }
        if self.exclude != w.exclude {
            why.push(format!(
                "exclude changed ({:?} → {:?})",
                self.exclude, w.exclude
            ));
        }
        (!why.is_empty()).then(|| why.join(", "))
    }
}

impl Lockfile {
    /// Reads a lock file; `Ok(None)` when there is none.
    pub fn load(path: &Path) -> Result<Option<Lockfile>, LockError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(LockError::Io {
                    path: path.to_path_buf(),
                    source,
                });
            }
        };
        let lock: Lockfile = toml::from_str(&text).map_err(|e| LockError::Parse {
            path: path.to_path_buf(),
            message: e.to_string().trim().to_string(),
        })?;
        if lock.version != LOCK_VERSION {
            return Err(LockError::Version {
                path: path.to_path_buf(),
                found: lock.version,
            });
        }
        for w in &lock.weights {
            let bad = |m: String| LockError::Parse {
                path: path.to_path_buf(),
                message: format!("weights {:?}: {m}", w.name),
            };
            if w.commit.len() != 40 || !w.commit.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad(format!("commit {:?} is not a 40-hex sha", w.commit)));
            }
            for f in &w.files {
                if f.sha256.len() != 64 || !f.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(bad(format!(
                        "file {}: sha256 {:?} is not 64 hex digits",
                        f.path, f.sha256
                    )));
                }
            }
        }
        Ok(Some(lock))
    }

    /// Sorts everything into the canonical order.
    pub fn normalize(&mut self) {
        self.weights.sort_by(|a, b| a.name.cmp(&b.name));
        for w in &mut self.weights {
            w.files.sort_by(|a, b| a.path.cmp(&b.path));
            w.subfolder = norm_subfolder(w.subfolder.as_deref()).map(str::to_string);
        }
        if let Some(b) = &mut self.base {
            b.platforms.sort_by(|a, b| a.platform.cmp(&b.platform));
        }
        self.deps
            .sort_by(|a, b| (&a.name, &a.platform).cmp(&(&b.name, &b.platform)));
        for d in &mut self.deps {
            d.wheels.sort_by(|a, b| a.name.cmp(&b.name));
        }
        self.system.sort_by(|a, b| a.platform.cmp(&b.platform));
        for s in &mut self.system {
            s.packages
                .sort_by(|a, b| (&a.name, &a.architecture).cmp(&(&b.name, &b.architecture)));
        }
    }

    /// The locked Debian packages of `platform`.
    pub fn system(&self, platform: &Platform) -> Option<&SystemLock> {
        self.system.iter().find(|s| {
            Platform::parse(&s.platform).is_ok_and(|p| platform.matches(&p) || p.matches(platform))
        })
    }

    /// The locked wheels of set `name` on `platform`.
    pub fn deps(&self, name: &str, platform: &Platform) -> Option<&DepsLock> {
        self.deps.iter().find(|d| {
            d.name == name
                && Platform::parse(&d.platform)
                    .is_ok_and(|p| platform.matches(&p) || p.matches(platform))
        })
    }

    /// The lock as TOML text (canonical order, with a header comment).
    pub fn to_toml(&self) -> String {
        let mut l = self.clone();
        l.normalize();
        let body = toml::to_string_pretty(&l).unwrap_or_default();
        format!("# Written by `mlimg lock`; do not edit. Commit it next to the spec.\n{body}")
    }

    /// Writes atomically (temp file in the same folder, then rename).
    pub fn save(&self, path: &Path) -> Result<(), LockError> {
        let io = |source| LockError::Io {
            path: path.to_path_buf(),
            source,
        };
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let mut tmp = tempfile::Builder::new()
            .prefix(".mlimg-lock-")
            .tempfile_in(dir)
            .map_err(io)?;
        tmp.write_all(self.to_toml().as_bytes()).map_err(io)?;
        tmp.as_file().sync_all().map_err(io)?;
        tmp.persist(path).map_err(|e| io(e.error))?;
        Ok(())
    }

    /// The locked manifest digest of the base `reference` (as written) for `platform`.
    /// The locked manifest digest of the base for `platform` (`linux/arm64` and
    /// `linux/arm64/v8` find the same entry).
    pub fn base_digest(&self, reference: &str, platform: &Platform) -> Option<&str> {
        let b = self.base.as_ref().filter(|b| b.reference == reference)?;
        let entries: Vec<(Platform, &str)> = b
            .platforms
            .iter()
            .filter_map(|p| Some((Platform::parse(&p.platform).ok()?, p.digest.as_str())))
            .collect();
        platform.best_match(entries.iter().map(|(p, d)| (p, *d)))
    }

    pub fn weights(&self, name: &str) -> Option<&WeightsLock> {
        self.weights.iter().find(|w| w.name == name)
    }

    /// The locked entry for `w`, if the lock has one that still matches the spec.
    pub fn matching(&self, w: &WeightsSpec) -> Option<&WeightsLock> {
        self.weights(&w.name).filter(|l| l.mismatch(w).is_none())
    }

    /// Everything in which the spec no longer matches this lock, one message per entry,
    /// each naming the entry. Empty = the lock is up to date with the spec.
    pub fn check(&self, spec: &Spec) -> Vec<String> {
        let mut out = Vec::new();
        match (&spec.image.base, &self.base) {
            (BaseSpec::Scratch, None) => {}
            (BaseSpec::Scratch, Some(b)) => out.push(format!(
                "base: the lock has {:?}, the spec uses scratch",
                b.reference
            )),
            (_, None) => out.push(format!(
                "base: {:?} is not in the lock",
                spec.image.base_name
            )),
            (_, Some(b)) => {
                if b.reference != spec.image.base_name {
                    out.push(format!(
                        "base: reference changed ({:?} → {:?})",
                        b.reference, spec.image.base_name
                    ));
                } else {
                    for p in &spec.image.platforms {
                        let p = p.to_string();
                        if !b.platforms.iter().any(|l| l.platform == p) {
                            out.push(format!("base: platform {p} is not in the lock"));
                        }
                    }
                }
            }
        }
        for w in &spec.weights {
            if !matches!(w.source, WeightsSource::Hub { .. }) {
                continue;
            }
            match self.weights(&w.name) {
                None => out.push(format!("weights {:?}: not in the lock", w.name)),
                Some(l) => {
                    if let Some(why) = l.mismatch(w) {
                        out.push(format!("weights {:?}: {why}", w.name));
                    }
                }
            }
        }
        for l in &self.weights {
            let still = spec
                .weights
                .iter()
                .any(|w| w.name == l.name && matches!(w.source, WeightsSource::Hub { .. }));
            if !still {
                out.push(format!(
                    "weights {:?}: locked, but the spec has no such hf:// entry",
                    l.name
                ));
            }
        }
        match (&spec.system, self.system.is_empty()) {
            (Some(_), true) => out.push("system: [system] is not in the lock".into()),
            (None, false) => out.push("system: locked, but the spec has no [system]".into()),
            // the packages, sources and base are compared by the `inputs` hash when resolving
            _ => {}
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(dir: &Path, revision: &str, include: &str) -> Spec {
        let text = format!(
            "[image]\nbase = \"scratch\"\n\n[[weights]]\nname = \"m\"\nsource = \"hf://acme/m\"\n\
             revision = \"{revision}\"\ndest = \"/models/m\"\ninclude = [{include}]\n"
        );
        let p = dir.join("mlimg.toml");
        std::fs::write(&p, &text).unwrap();
        Spec::parse(&p, &text).unwrap()
    }

    fn lock() -> Lockfile {
        Lockfile {
            version: LOCK_VERSION,
            base: None,
            deps: vec![],
            system: vec![],
            weights: vec![WeightsLock {
                name: "m".into(),
                repo: "acme/m".into(),
                revision: "main".into(),
                subfolder: None,
                include: vec!["*.json".into()],
                exclude: vec![],
                commit: "a".repeat(40),
                files: vec![
                    HubFile {
                        path: "z.json".into(),
                        size: 2,
                        sha256: "b".repeat(64),
                    },
                    HubFile {
                        path: "a.json".into(),
                        size: 1,
                        sha256: "c".repeat(64),
                    },
                ],
            }],
        }
    }

    #[test]
    fn roundtrip_sorted_and_atomic() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("mlimg.lock");
        lock().save(&p).unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(
            text.find("a.json").unwrap() < text.find("z.json").unwrap(),
            "{text}"
        );
        let back = Lockfile::load(&p).unwrap().unwrap();
        let mut want = lock();
        want.normalize();
        assert_eq!(back, want);
        assert_eq!(back.to_toml(), text, "saving is stable");
        let leftovers: Vec<_> = std::fs::read_dir(d.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temp files left");
        assert!(
            Lockfile::load(&d.path().join("none.lock"))
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn bad_lock_is_an_error_naming_the_file() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("mlimg.lock");
        std::fs::write(&p, "version = 1\n[[weights]]\nname = 3\n").unwrap();
        let e = Lockfile::load(&p).unwrap_err().to_string();
        assert!(e.contains("mlimg.lock") && e.contains("mlimg lock"), "{e}");
        let mut l = lock();
        l.weights[0].commit = "main".into();
        std::fs::write(&p, l.to_toml()).unwrap();
        let e = Lockfile::load(&p).unwrap_err().to_string();
        assert!(e.contains("\"m\"") && e.contains("commit"), "{e}");
    }

    #[test]
    fn check_names_the_changed_entry() {
        let d = tempfile::tempdir().unwrap();
        assert!(
            lock()
                .check(&spec(d.path(), "main", "\"*.json\""))
                .is_empty()
        );
        let s = spec(d.path(), "v2", "\"*.json\"");
        let why = lock().check(&s);
        assert_eq!(why.len(), 1, "{why:?}");
        assert!(why[0].contains("weights \"m\"") && why[0].contains("revision changed"));
        assert!(lock().matching(&s.weights[0]).is_none());
        let why = lock().check(&spec(d.path(), "main", "\"*.bin\""));
        assert!(why[0].contains("include changed"), "{why:?}");
    }

    #[test]
    fn lock_path_follows_the_spec_name() {
        assert_eq!(
            lock_path(Path::new("/p/mlimg.toml")),
            PathBuf::from("/p/mlimg.lock")
        );
        assert_eq!(lock_path(Path::new("x.toml")), PathBuf::from("x.lock"));
    }
}
