//! Python dependency sets without Python.
//!
//! Input is a fully pinned lock (`requirements.txt` with `==` pins and `--hash`, or a PEP 751
//! `pylock.toml`). For one target interpreter we evaluate markers, pick the best wheel per
//! package by the interpreter's compatibility tags ([`resolve`]), download and verify it into a
//! content-addressed cache ([`fetch`]) and turn each wheel into tar entries laid out the way pip
//! installs it ([`install_entries`]). Nothing here runs Python, pip or a container.
//!
//! Modules: [`requirements`] (requirements.txt parser), [`pylock`] (PEP 751), [`markers`]
//! (PEP 508 marker evaluation), [`tags`] (compatibility tags in pip's priority order),
//! [`index`] (simple API client, find-links dirs, wheel cache), [`install`] (wheel → entries).

pub mod bytecode;
pub mod detect;
pub mod index;
pub mod install;
pub mod markers;
pub mod pylock;
pub mod requirements;
pub mod tags;

#[cfg(test)]
mod proptests;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::layer::Entry;

/// The interpreter a dependency set is installed for.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct PythonTarget {
    /// CPython `(major, minor)`, e.g. `(3, 11)`.
    pub version: (u32, u32),
    /// Installation prefix, e.g. `/usr/local` (official `python` images) or `/usr` (Debian).
    pub prefix: String,
    pub libc: Libc,
    /// `x86_64` or `aarch64` (see [`PythonTarget::arch_from_oci`]).
    pub arch: String,
    /// Where packages go when not `{prefix}/lib/python3.X/site-packages` (Debian's
    /// `/usr/lib/python3/dist-packages`); absolute.
    pub site_packages_dir: Option<String>,
}

/// The C library of the target, with its version (decides manylinux / musllinux tags).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Libc {
    Glibc(u32, u32),
    Musl(u32, u32),
}

/// Highest minor version accepted for CPython 3.x, glibc 2.x and musl 1.x. Tag lists grow
/// with the minor (one platform tag per glibc minor, one abi3 and one `py3X` tag per Python
/// minor), so an absurd value from a hostile base (`libc6 2.3000000`) would make them allocate
/// gigabytes; real values are far below (CPython 3.14, glibc 2.41, musl 1.2 in 2025).
pub const MAX_MINOR: u32 = 99;

/// `Err(message)` unless `(major, minor)` is CPython 3.0 to 3.[`MAX_MINOR`].
pub fn check_python_version(v: (u32, u32)) -> Result<(), String> {
    if v.0 == 3 && v.1 <= MAX_MINOR {
        Ok(())
    } else {
        Err(format!(
            "Python {}.{} is outside the supported range 3.0 to 3.{MAX_MINOR}",
            v.0, v.1
        ))
    }
}

/// `Err(message)` unless the C library is glibc 2.0 to 2.[`MAX_MINOR`] or musl 1.0 to
/// 1.[`MAX_MINOR`].
pub fn check_libc(libc: Libc) -> Result<(), String> {
    let (name, major, minor, want) = match libc {
        Libc::Glibc(a, b) => ("glibc", a, b, 2),
        Libc::Musl(a, b) => ("musl", a, b, 1),
    };
    if major == want && minor <= MAX_MINOR {
        Ok(())
    } else {
        Err(format!(
            "{name} {major}.{minor} is outside the supported range {want}.0 to {want}.{MAX_MINOR}"
        ))
    }
}

impl PythonTarget {
    /// Checks the version numbers against [`check_python_version`] and [`check_libc`].
    pub fn check(&self) -> Result<(), PythonError> {
        check_python_version(self.version)
            .and_then(|()| check_libc(self.libc))
            .map_err(|message| PythonError::Detect {
                message: format!("target {self}: {message}"),
            })
    }

    /// `{prefix}/lib/python3.X/site-packages` (absolute, with leading `/`), or the override.
    pub fn site_packages(&self) -> String {
        if let Some(d) = &self.site_packages_dir {
            return d.trim_end_matches('/').to_string();
        }
        format!(
            "{}/lib/python{}.{}/site-packages",
            self.prefix.trim_end_matches('/'),
            self.version.0,
            self.version.1
        )
    }

    /// `{prefix}/bin`.
    pub fn scripts_dir(&self) -> String {
        format!("{}/bin", self.prefix.trim_end_matches('/'))
    }

    /// `{prefix}/bin/python3.X`, used in script shebangs.
    pub fn interpreter(&self) -> String {
        format!(
            "{}/python{}.{}",
            self.scripts_dir(),
            self.version.0,
            self.version.1
        )
    }

    /// `{prefix}/include/python3.X`; `.data/headers` go to `<this>/<dist name>`.
    pub fn include_dir(&self) -> String {
        format!(
            "{}/include/python{}.{}",
            self.prefix.trim_end_matches('/'),
            self.version.0,
            self.version.1
        )
    }

    /// Maps an OCI architecture (`amd64`, `arm64`, ...) to the one Python platform tags use.
    pub fn arch_from_oci(oci_arch: &str) -> String {
        match oci_arch {
            "amd64" => "x86_64".to_string(),
            "arm64" => "aarch64".to_string(),
            "386" => "i686".to_string(),
            "arm" => "armv7l".to_string(),
            other => other.to_string(),
        }
    }
}

impl fmt::Display for PythonTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (libc, maj, min) = match self.libc {
            Libc::Glibc(a, b) => ("glibc", a, b),
            Libc::Musl(a, b) => ("musl", a, b),
        };
        write!(
            f,
            "CPython {}.{} on linux {} ({libc} {maj}.{min})",
            self.version.0, self.version.1, self.arch
        )
    }
}

/// One dependency set (one layer): a pinned lock and where to find its wheels.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DepsSetInput {
    pub name: String,
    pub requirements: Option<PathBuf>,
    pub pylock: Option<PathBuf>,
    /// Simple-API index URLs: the spec's `index_url` first, then `PIP_INDEX_URL`,
    /// `PIP_EXTRA_INDEX_URL` (passed in by the caller; this module reads no env vars).
    pub index_urls: Vec<String>,
    /// Local folders with wheel files (like pip's `--find-links`).
    pub find_links: Vec<PathBuf>,
}

/// The wheel chosen for one package: what `mlimg.lock` records per platform.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct ResolvedWheel {
    /// PEP 503 normalized project name.
    pub name: String,
    pub version: String,
    pub filename: String,
    /// Lowercase hex sha256 the downloaded file must have.
    pub sha256: String,
    /// `http(s)://` URL (never with credentials), `file://` URL or local path.
    pub url_or_path: String,
    /// Size in bytes, when the index states it: the download is cut there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
}

/// Where a requirement came from, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub file: std::sync::Arc<Path>,
    pub line: usize,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

/// Everything that can go wrong while resolving, fetching or installing a dependency set.
#[derive(Debug, thiserror::Error)]
pub enum PythonError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{origin}: {message}")]
    Syntax { origin: Origin, message: String },
    #[error("{origin}: {message}")]
    Unsupported { origin: Origin, message: String },
    #[error(
        "{origin}: package `{package}` is not pinned (`{requirement}`); every requirement needs an exact `==` version"
    )]
    Unpinned {
        origin: Origin,
        package: String,
        requirement: String,
    },
    #[error("{origin}: package `{package}` has no `--hash=sha256:...`; every pin needs a hash")]
    MissingHash { origin: Origin, package: String },
    #[error("{origin}: package `{package}` is listed twice in this dependency set")]
    Duplicate { origin: Origin, package: String },
    #[error(
        "{origin}: package `{package}` not found on any index ({indexes}) or find-links folder"
    )]
    UnknownPackage {
        origin: Origin,
        package: String,
        indexes: String,
    },
    #[error(
        "{origin}: package `{package}` has no files for version {version} in {searched} (versions seen: {available})"
    )]
    VersionNotFound {
        origin: Origin,
        package: String,
        version: String,
        /// `the find_links folder …`, `the index …`.
        searched: String,
        available: String,
    },
    #[error(
        "{origin}: package `{package}` {version}: {found}; no index was consulted because of --no-index ({no_index})"
    )]
    NoIndex {
        origin: Origin,
        package: String,
        version: String,
        found: String,
        no_index: Origin,
    },
    #[error(
        "{origin}: package `{package}` {version} has only a source distribution ({sdist}); mlimg installs wheels only: build a wheel with `pip wheel --no-deps {package}=={version} -w wheels/` and add that folder to `find_links`"
    )]
    SdistOnly {
        origin: Origin,
        package: String,
        version: String,
        sdist: String,
    },
    #[error(
        "{origin}: package `{package}` {version}: {filename} requires Python {requires}, the target is CPython {python}; pin a version of `{package}` that supports {python}, or build on a base with a Python it supports"
    )]
    RequiresPython {
        origin: Origin,
        package: String,
        version: Box<str>,
        filename: Box<str>,
        requires: Box<str>,
        python: Box<str>,
    },
    #[error(
        "{origin}: package `{package}` {version} has no wheel compatible with {target} in {searched}; wheel tags seen: {seen}"
    )]
    NoCompatibleWheel {
        origin: Origin,
        package: String,
        version: String,
        target: Box<str>,
        searched: Box<str>,
        seen: Box<str>,
    },
    #[error(
        "{origin}: package `{package}`: {found_in} has {filename} with sha256 {published}, which is not among the pinned hashes ({allowed})"
    )]
    HashNotPinned {
        origin: Origin,
        package: String,
        /// `the find_links folder …`, `the index …`.
        found_in: Box<str>,
        filename: String,
        published: Box<str>,
        allowed: Box<str>,
    },
    #[error(
        "{origin}: package `{package}`: {found_in} publishes no sha256 for {filename} and the pin allows {count} hashes; pin only that wheel's hash"
    )]
    AmbiguousHash {
        origin: Origin,
        package: String,
        found_in: String,
        filename: String,
        count: usize,
    },
    #[error("{filename} from {source_url} is larger than the {limit} bytes its index states")]
    TooLarge {
        filename: String,
        source_url: String,
        limit: u64,
    },
    #[error("wrong hash for {filename} from {source_url}: expected sha256 {expected}, got {got}")]
    WrongHash {
        filename: String,
        source_url: String,
        expected: String,
        got: String,
    },
    #[error("cannot set up the HTTP client: {0}")]
    HttpClient(#[source] reqwest::Error),
    #[error("GET {url}: HTTP {status}")]
    HttpStatus { url: String, status: u16 },
    #[error("GET {url}: {source}")]
    Http {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// A request that got no usable answer, or a page over its size limit (names the URL
    /// without credentials).
    #[error(transparent)]
    Transport(#[from] crate::transport::TransportError),
    #[error("reading {url}: {source}")]
    Download {
        url: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{url}: {message}")]
    BadIndexPage { url: String, message: String },
    #[error("wheel {wheel}: {message}")]
    InvalidWheel { wheel: PathBuf, message: String },
    #[error("bytecode: {message}")]
    Bytecode { message: String },
    #[error("wheel {wheel}: member `{member}` would be installed outside its target directory")]
    UnsafeMember { wheel: PathBuf, member: String },
    #[error("wheels {first} and {second} both install {path}, with different contents")]
    FileClash {
        first: String,
        second: String,
        path: String,
    },
    #[error(
        "package `{package}` is in dependency sets `{first}` and `{second}`; a package may be in one set only"
    )]
    InTwoSets {
        package: String,
        first: String,
        second: String,
    },
    #[error("{message}")]
    Detect { message: String },
    #[error("dependency set `{set}`: give exactly one of `requirements` or `pylock`")]
    NoLockFile { set: String },
}

impl PythonError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        PythonError::Io {
            path: path.into(),
            source,
        }
    }
}

/// PEP 503 name normalization: lowercase, runs of `-`, `_`, `.` become one `-`.
pub fn normalize_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut sep = false;
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            sep = true;
        } else {
            if sep && !out.is_empty() {
                out.push('-');
            }
            sep = false;
            out.push(c.to_ascii_lowercase());
        }
    }
    out
}

/// A pinned package from either lock format, after marker evaluation for the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pin {
    /// Normalized name.
    pub name: String,
    pub version: String,
    /// Allowed sha256 hashes (lowercase hex). Empty for pylock packages, whose files carry their own.
    pub hashes: Vec<String>,
    pub origin: Origin,
    /// Files listed by a pylock.toml (bypass the index).
    pub files: Option<Vec<index::FileLink>>,
}

/// Parses the set's lock, evaluates markers for `target` and picks one wheel per package.
/// Lists find-links folders and reads index pages (only for pins the folders do not
/// satisfy), downloads no wheel. Same as [`resolve_with`] without a wheel cache.
pub fn resolve(
    input: &DepsSetInput,
    target: &PythonTarget,
) -> Result<Vec<ResolvedWheel>, PythonError> {
    Ok(resolve_with(input, target, None)?.wheels)
}

/// The wheels chosen for a set, and what the user should be told about them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resolution {
    pub wheels: Vec<ResolvedWheel>,
    /// E.g. a wheel taken from the cache whose download URL was never recorded.
    pub warnings: Vec<String>,
    /// Yanked files (PEP 592) that were chosen because the pin names their version exactly.
    pub yanked: Vec<String>,
}

/// Like [`resolve`], looking in the wheel cache too (`wheel_cache` is the folder given to
/// [`fetch`]): a pin is looked up in the find-links folders, then in the cache under its
/// hashes, and only then on the indexes, so a set those satisfy asks no index anything (an
/// offline build works). `--no-index` in the requirements file means no index at all.
pub fn resolve_with(
    input: &DepsSetInput,
    target: &PythonTarget,
    wheel_cache: Option<&Path>,
) -> Result<Resolution, PythonError> {
    target.check()?;
    let env = markers::Environment::for_target(target);
    let (pins, extra_indexes, extra_links, no_index) = match (&input.requirements, &input.pylock) {
        (Some(req), None) => {
            let parsed = requirements::parse_file(req)?;
            let pins = requirements::pins_for(&parsed, &env)?;
            (pins, parsed.index_urls, parsed.find_links, parsed.no_index)
        }
        (None, Some(lock)) => (pylock::pins_for(lock, &env)?, Vec::new(), Vec::new(), None),
        _ => {
            return Err(PythonError::NoLockFile {
                set: input.name.clone(),
            });
        }
    };
    let mut indexes = input.index_urls.clone();
    indexes.extend(extra_indexes);
    let mut links = input.find_links.clone();
    links.extend(extra_links);
    let finder = index::Finder::new(indexes, links)?
        .with_cache(wheel_cache)
        .with_no_index(no_index);
    let priorities = tags::TagPriorities::for_target(target);
    let mut out = Vec::with_capacity(pins.len());
    for pin in &pins {
        out.push(finder.choose(pin, &priorities, target)?);
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Resolution {
        wheels: out,
        warnings: finder.take_warnings(),
        yanked: finder.take_yanked(),
    })
}

/// Take the credentials out of index URLs (`https://user:token@host/simple`) and keep them
/// for those origins, so wheel downloads there (also from a lock, without resolving) send
/// them; returns the URLs without credentials.
pub fn remember_index_credentials(urls: &[String]) -> Vec<String> {
    urls.iter()
        .map(|u| crate::transport::credentials::remember_userinfo(u))
        .collect()
}

/// Downloads (or copies from a local folder) each wheel into
/// `cache_dir/wheels/<sha256>/<filename>`, verifying its sha256; reuses files already there.
/// Returns the cached paths in the order of `wheels`.
pub fn fetch(wheels: &[ResolvedWheel], cache_dir: &Path) -> Result<Vec<PathBuf>, PythonError> {
    fetch_reporting(wheels, cache_dir, &|_| {})
}

/// [`fetch`], telling `warn` about each cached wheel that no longer matched its sha256 (it is
/// dropped and fetched again).
pub fn fetch_reporting(
    wheels: &[ResolvedWheel],
    cache_dir: &Path,
    warn: &(dyn Fn(String) + Sync),
) -> Result<Vec<PathBuf>, PythonError> {
    let cache = index::WheelCache::new(cache_dir);
    let client = index::http_client()?;
    // Downloads are network-bound: a few at a time, results kept in input order.
    let next = AtomicUsize::new(0);
    let results: Vec<Mutex<Option<Result<PathBuf, PythonError>>>> =
        wheels.iter().map(|_| Mutex::new(None)).collect();
    std::thread::scope(|s| {
        for _ in 0..FETCH_PARALLELISM.min(wheels.len()) {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(w) = wheels.get(i) else { break };
                    let r = cache.get(&client, w);
                    *results[i].lock().unwrap_or_else(|e| e.into_inner()) = Some(r);
                }
            });
        }
    });
    for m in cache.take_warnings() {
        warn(m);
    }
    results
        .into_iter()
        .zip(wheels)
        .map(|(slot, w)| {
            slot.into_inner()
                .unwrap_or_else(|e| e.into_inner())
                .unwrap_or_else(|| {
                    Err(PythonError::InvalidWheel {
                        wheel: PathBuf::from(&w.filename),
                        message: "download worker stopped".into(),
                    })
                })
        })
        .collect()
}

/// Concurrent downloads in [`fetch`].
const FETCH_PARALLELISM: usize = 4;

/// Turns wheel files into the tar entries of one layer (files only), as pip would install them.
///
/// Two wheels may ship the same file (`nvidia/__init__.py` in every `nvidia-*-cu12` wheel);
/// pip lets the last one win. Here identical copies collapse to the first, and different
/// contents are an error, so the layer never depends on install order.
pub fn install_entries(
    wheel_files: &[PathBuf],
    target: &PythonTarget,
) -> Result<Vec<Entry>, PythonError> {
    let mut seen: BTreeMap<String, (String, usize)> = BTreeMap::new();
    let mut out: Vec<Entry> = Vec::new();
    for wheel in wheel_files {
        let label = wheel
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        for entry in install::wheel_entries(wheel, target)? {
            if let Some((first, i)) = seen.get(&entry.path) {
                let prev = &out[*i];
                if prev.mode == entry.mode
                    && install::entry_sha256(prev)? == install::entry_sha256(&entry)?
                {
                    continue;
                }
                return Err(PythonError::FileClash {
                    first: first.clone(),
                    second: label,
                    path: format!("/{}", entry.path),
                });
            }
            seen.insert(entry.path.clone(), (label.clone(), out.len()));
            out.push(entry);
        }
    }
    Ok(out)
}

/// Fails when one package is in two dependency sets (it would be installed in two layers).
pub fn check_disjoint(sets: &[(String, Vec<ResolvedWheel>)]) -> Result<(), PythonError> {
    let mut owner: BTreeMap<&str, &str> = BTreeMap::new();
    for (set, wheels) in sets {
        for w in wheels {
            if let Some(first) = owner.insert(&w.name, set)
                && first != set
            {
                return Err(PythonError::InTwoSets {
                    package: w.name.clone(),
                    first: first.to_string(),
                    second: set.clone(),
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_names_per_pep_503() {
        assert_eq!(normalize_name("Friendly-Bard"), "friendly-bard");
        assert_eq!(normalize_name("FRIENDLY-BARD"), "friendly-bard");
        assert_eq!(normalize_name("friendly.bard"), "friendly-bard");
        assert_eq!(normalize_name("friendly_bard"), "friendly-bard");
        assert_eq!(normalize_name("friendly--bard"), "friendly-bard");
        assert_eq!(normalize_name("FrIeNdLy-._.-bArD"), "friendly-bard");
        assert_eq!(normalize_name("MarkupSafe"), "markupsafe");
    }

    fn target() -> PythonTarget {
        PythonTarget {
            version: (3, 11),
            prefix: "/usr/local".into(),
            libc: Libc::Glibc(2, 36),
            arch: "x86_64".into(),
            site_packages_dir: None,
        }
    }

    #[test]
    fn target_paths() {
        let t = target();
        assert_eq!(t.site_packages(), "/usr/local/lib/python3.11/site-packages");
        assert_eq!(t.scripts_dir(), "/usr/local/bin");
        assert_eq!(t.interpreter(), "/usr/local/bin/python3.11");
        assert_eq!(PythonTarget::arch_from_oci("arm64"), "aarch64");
    }

    fn rw(name: &str) -> ResolvedWheel {
        ResolvedWheel {
            name: name.into(),
            version: "1".into(),
            filename: format!("{name}-1-py3-none-any.whl"),
            sha256: "00".into(),
            url_or_path: String::new(),
            size: None,
        }
    }

    #[test]
    fn disjoint_sets() {
        let ok = vec![
            ("a".to_string(), vec![rw("six")]),
            ("b".to_string(), vec![rw("idna")]),
        ];
        assert!(check_disjoint(&ok).is_ok());
        let bad = vec![
            ("framework".to_string(), vec![rw("six"), rw("numpy")]),
            ("app".to_string(), vec![rw("idna"), rw("numpy")]),
        ];
        let err = check_disjoint(&bad).unwrap_err().to_string();
        assert!(err.contains("`numpy`"), "{err}");
        assert!(
            err.contains("`framework`") && err.contains("`app`"),
            "{err}"
        );
    }
}
