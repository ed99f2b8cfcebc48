//! Where wheels come from: simple-API indexes (PEP 503 HTML, PEP 691 JSON), local find-links
//! folders and files named by a pylock; and the content-addressed wheel cache
//! (`<cache>/wheels/<sha256>/<filename>`).

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use std::sync::Mutex;

use crate::transport::credentials::{self, remember_userinfo};
use crate::transport::{MAX_LISTING_BYTES, Retry, Transport, describe, redact_url};

use super::markers::Version;
use super::tags::{TagPriorities, WheelName};
use super::{Origin, Pin, PythonError, PythonTarget, ResolvedWheel, normalize_name};

/// A distribution file offered for a project.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileLink {
    pub filename: String,
    /// Absolute `http(s)://` / `file://` URL, or a local path. Never with credentials.
    pub url_or_path: String,
    /// sha256 published by the source (index fragment / JSON hashes / pylock), if any.
    pub sha256: Option<String>,
    /// The Python versions the file supports, as the index states them (PEP 503
    /// `data-requires-python`, PEP 691 `requires-python`).
    pub requires_python: Option<String>,
    /// PEP 592: the file is yanked (with the reason, possibly empty).
    pub yanked: Option<String>,
}

const JSON_TYPE: &str = "application/vnd.pypi.simple.v1+json";

/// The shared transport, with the process's default options (set from `--retries` /
/// `--timeout` by the CLI).
pub(crate) fn http_client() -> Result<Transport, PythonError> {
    Ok(Transport::from_defaults()?)
}

/// Where a candidate file was found, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Source {
    FindLinks(PathBuf),
    /// Index URL without credentials.
    Index(String),
    Pylock,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::FindLinks(d) => write!(f, "the find_links folder {}", d.display()),
            Source::Index(u) => write!(f, "the index {u}"),
            Source::Pylock => f.write_str("the pylock file"),
        }
    }
}

/// A file offered for a pin, and where it was found.
#[derive(Debug, Clone)]
struct Candidate {
    link: FileLink,
    size: Option<u64>,
    from: Source,
}

/// Looks up projects: find-links folders and the wheel cache first (no network), then the
/// indexes, only for pins those do not satisfy.
pub(crate) struct Finder {
    /// Index URLs without credentials (those are kept by origin in
    /// [`crate::transport::credentials`]).
    indexes: Vec<String>,
    local: Vec<Candidate>,
    find_links: Vec<PathBuf>,
    cache: Option<WheelCache>,
    /// `--no-index` (where it was written): never ask an index.
    no_index: Option<Origin>,
    warnings: Mutex<Vec<String>>,
    yanked: Mutex<Vec<String>>,
    client: Transport,
}

impl Finder {
    pub fn new(indexes: Vec<String>, find_links: Vec<PathBuf>) -> Result<Self, PythonError> {
        let mut local = Vec::new();
        for dir in &find_links {
            let rd = std::fs::read_dir(dir).map_err(|e| PythonError::io(dir, e))?;
            for ent in rd {
                let ent = ent.map_err(|e| PythonError::io(dir, e))?;
                let filename = ent.file_name().to_string_lossy().into_owned();
                if WheelName::parse(&filename).is_some() || sdist_name(&filename).is_some() {
                    local.push(Candidate {
                        link: FileLink {
                            filename,
                            url_or_path: ent.path().to_string_lossy().into_owned(),
                            ..FileLink::default()
                        },
                        size: None,
                        from: Source::FindLinks(dir.clone()),
                    });
                }
            }
        }
        local.sort_by(|a, b| a.link.url_or_path.cmp(&b.link.url_or_path));
        let indexes = indexes.iter().map(|u| remember_userinfo(u)).collect();
        Ok(Finder {
            indexes,
            local,
            find_links,
            cache: None,
            no_index: None,
            warnings: Mutex::new(Vec::new()),
            yanked: Mutex::new(Vec::new()),
            client: http_client()?,
        })
    }

    /// Also look in the wheel cache (`<dir>/wheels/<sha256>/`) for pins with hashes.
    pub fn with_cache(mut self, dir: Option<&Path>) -> Self {
        self.cache = dir.map(WheelCache::new);
        self
    }

    /// `--no-index` at `origin`: no index is asked anything.
    pub fn with_no_index(mut self, origin: Option<Origin>) -> Self {
        self.no_index = origin;
        self
    }

    /// What the caller should be told (wheels taken from the cache with no known origin).
    pub fn take_warnings(&self) -> Vec<String> {
        std::mem::take(&mut *self.warnings.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// The yanked files chosen (PEP 592), one message each.
    pub fn take_yanked(&self) -> Vec<String> {
        std::mem::take(&mut *self.yanked.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn local_for(&self, name: &str) -> Vec<Candidate> {
        self.local
            .iter()
            .filter(|c| dist_name(&c.link.filename).as_deref() == Some(name))
            .cloned()
            .collect()
    }

    fn project_page(&self, index: &str, name: &str) -> Result<Option<Vec<Candidate>>, PythonError> {
        let url = format!("{}/{name}/", index.trim_end_matches('/'));
        let parsed = reqwest::Url::parse(&url).map_err(|e| PythonError::BadIndexPage {
            url: redact_url(&url),
            message: format!("not a usable URL: {e}"),
        })?;
        let accept = format!("{JSON_TYPE}, text/html;q=0.1");
        let t = &self.client;
        let page = t.get_capped(
            || {
                credentials::authorize(
                    t.client()
                        .get(parsed.clone())
                        .header(reqwest::header::ACCEPT, &accept),
                    &parsed,
                )
            },
            MAX_LISTING_BYTES,
        )?;
        if page.status.as_u16() == 404 {
            return Ok(None);
        }
        if !page.status.is_success() {
            return Err(PythonError::HttpStatus {
                url: redact_url(&url),
                status: page.status.as_u16(),
            });
        }
        // Relative links resolve against the final URL (after redirects).
        let base = page.url.clone();
        let json = page
            .headers
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with(JSON_TYPE));
        let body = String::from_utf8_lossy(&page.body);
        let links = if json {
            parse_json_page_sized(&body, &base)
        } else {
            Ok(parse_html_page(&body, &base)
                .into_iter()
                .map(|l| (l, None))
                .collect())
        }
        .map_err(|message| PythonError::BadIndexPage {
            url: redact_url(&url),
            message,
        })?;
        let from = Source::Index(index.to_string());
        Ok(Some(
            links
                .into_iter()
                // A remote page may only point at remote files: never at `file:` URLs or
                // other local things (they would be read from this machine).
                .filter_map(|(mut link, size)| {
                    let u = reqwest::Url::parse(&link.url_or_path).ok()?;
                    if !matches!(u.scheme(), "http" | "https") {
                        return None;
                    }
                    link.url_or_path = remember_userinfo(&link.url_or_path);
                    Some(Candidate {
                        link,
                        size,
                        from: from.clone(),
                    })
                })
                .collect(),
        ))
    }

    /// Picks the best wheel for `pin` on `target`: from the find-links folders if they have a
    /// compatible wheel with an allowed hash, else from the wheel cache (by the pin's hashes),
    /// else from find-links and the indexes together (pip merges candidates). With
    /// `--no-index` the last step is an error.
    pub fn choose(
        &self,
        pin: &Pin,
        priorities: &TagPriorities,
        target: &PythonTarget,
    ) -> Result<ResolvedWheel, PythonError> {
        if let Some(files) = &pin.files {
            let cands = files
                .iter()
                .map(|f| Candidate {
                    link: f.clone(),
                    size: None,
                    from: Source::Pylock,
                })
                .collect();
            return self.select(pin, cands, priorities, target);
        }
        let local = self.local_for(&pin.name);
        let mut local_err = None;
        if !local.is_empty() {
            match self.select(pin, local.clone(), priorities, target) {
                Ok(w) => return Ok(w),
                Err(e) => local_err = Some(e),
            }
        }
        if let Some(w) = self.cached_wheel(pin, priorities)? {
            return Ok(w);
        }
        if let Some(at) = &self.no_index {
            let looked = if self.find_links.is_empty() {
                "no find_links folder".to_string()
            } else {
                format!(
                    "the find_links folders ({})",
                    self.find_links
                        .iter()
                        .map(|d| d.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            let found = match local_err {
                Some(e) => strip_origin(&e.to_string(), &pin.origin),
                None => format!(
                    "not found in {looked}{}",
                    if self.cache.is_some() {
                        " or the wheel cache"
                    } else {
                        ""
                    }
                ),
            };
            return Err(PythonError::NoIndex {
                origin: pin.origin.clone(),
                package: pin.name.clone(),
                version: pin.version.clone(),
                found,
                no_index: at.clone(),
            });
        }
        let mut found = !local.is_empty();
        let mut cands = local;
        for index in &self.indexes {
            if let Some(files) = self.project_page(index, &pin.name)? {
                found = true;
                cands.extend(files);
            }
        }
        if !found {
            return Err(PythonError::UnknownPackage {
                origin: pin.origin.clone(),
                package: pin.name.clone(),
                indexes: if self.indexes.is_empty() {
                    "no index configured".into()
                } else {
                    self.indexes.join(", ")
                },
            });
        }
        self.select(pin, cands, priorities, target)
    }

    /// A wheel in the cache under one of the pin's hashes, of the pinned version and a tag the
    /// target accepts (the best such). Its URL is the one recorded when it was downloaded.
    fn cached_wheel(
        &self,
        pin: &Pin,
        priorities: &TagPriorities,
    ) -> Result<Option<ResolvedWheel>, PythonError> {
        let Some(cache) = &self.cache else {
            return Ok(None);
        };
        let want = Version::parse(&pin.version);
        let mut best: Option<(usize, WheelName, String, PathBuf)> = None;
        for h in &pin.hashes {
            if h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
                continue;
            }
            let h = h.to_ascii_lowercase();
            let Ok(rd) = std::fs::read_dir(cache.root.join(&h)) else {
                continue;
            };
            for ent in rd.flatten() {
                let filename = ent.file_name().to_string_lossy().into_owned();
                let Some(w) = WheelName::parse(&filename) else {
                    continue;
                };
                let version_ok = match (&want, Version::parse(&w.version)) {
                    (Some(v), Some(have)) => have.matches_pin(v),
                    _ => w.version == pin.version,
                };
                if w.name != pin.name || !version_ok || !ent.path().is_file() {
                    continue;
                }
                let Some(rank) = priorities.rank(&w) else {
                    continue;
                };
                if best.as_ref().is_none_or(|(r, bw, _, _)| {
                    rank < *r || (rank == *r && build_num(&w) > build_num(bw))
                }) {
                    best = Some((rank, w, h.clone(), ent.path()));
                }
            }
        }
        let Some((_, w, sha256, path)) = best else {
            return Ok(None);
        };
        let filename = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let url_or_path = match WheelCache::recorded_origin(&path) {
            Some(u) => u,
            None => {
                self.warnings
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(format!(
                        "{}: {filename} was taken from the wheel cache, which does not record \
                         where it was downloaded from; the lock names the cached file {} \
                         (resolve once with the index reachable to record its URL)",
                        pin.origin,
                        path.display()
                    ));
                path.to_string_lossy().into_owned()
            }
        };
        Ok(Some(ResolvedWheel {
            name: pin.name.clone(),
            version: w.version.clone(),
            filename,
            sha256,
            url_or_path,
            size: None,
        }))
    }

    /// The best wheel among `files` for `pin` on `target`.
    fn select(
        &self,
        pin: &Pin,
        files: Vec<Candidate>,
        priorities: &TagPriorities,
        target: &PythonTarget,
    ) -> Result<ResolvedWheel, PythonError> {
        let mut searched: Vec<String> = Vec::new();
        for c in &files {
            let s = c.from.to_string();
            if !searched.contains(&s) {
                searched.push(s);
            }
        }
        let searched = if searched.is_empty() {
            "no source".to_string()
        } else {
            searched.join(", ")
        };
        let want = Version::parse(&pin.version);
        let matches_version = |v: &str| match (&want, Version::parse(v)) {
            (Some(w), Some(have)) => have.matches_pin(w),
            _ => v == pin.version,
        };
        let mut wheels = Vec::new();
        let mut sdists = Vec::new();
        let mut versions = BTreeSet::new();
        for c in files {
            if let Some(w) = WheelName::parse(&c.link.filename) {
                versions.insert(w.version.clone());
                if w.name == pin.name && matches_version(&w.version) {
                    wheels.push((w, c));
                }
            } else if let Some((n, v)) = sdist_name(&c.link.filename) {
                versions.insert(v.clone());
                if normalize_name(&n) == pin.name && matches_version(&v) {
                    sdists.push(c);
                }
            }
        }
        if wheels.is_empty() {
            if let Some(sdist) = sdists.first() {
                return Err(PythonError::SdistOnly {
                    origin: pin.origin.clone(),
                    package: pin.name.clone(),
                    version: pin.version.clone(),
                    sdist: sdist.link.filename.clone(),
                });
            }
            return Err(PythonError::VersionNotFound {
                origin: pin.origin.clone(),
                package: pin.name.clone(),
                version: pin.version.clone(),
                searched,
                available: if versions.is_empty() {
                    "none".into()
                } else {
                    versions.into_iter().collect::<Vec<_>>().join(", ")
                },
            });
        }
        // Like pip's `filter_unallowed_hashes`: if some file's published hash is pinned, files
        // with a published hash that is not pinned are dropped (a lock pinned for one platform
        // keeps to those files); otherwise all stay and a mismatch is reported below.
        let allowed = |f: &FileLink| f.sha256.as_ref().is_none_or(|h| pin.hashes.contains(h));
        if wheels.iter().any(|(_, c)| {
            c.link
                .sha256
                .as_ref()
                .is_some_and(|h| pin.hashes.contains(h))
        }) {
            wheels.retain(|(_, c)| allowed(&c.link));
        }
        // The index's requires-python (PEP 503 / 691): files the target cannot run are out.
        let mut unsupported: Vec<(String, String)> = Vec::new();
        wheels.retain(|(_, c)| {
            let Some(r) = c.link.requires_python.as_deref() else {
                return true;
            };
            if super::markers::python_satisfies(r, target.version) == Some(false) {
                unsupported.push((c.link.filename.clone(), r.to_string()));
                return false;
            }
            true
        });
        if wheels.is_empty()
            && let Some((filename, requires)) = unsupported.first()
        {
            return Err(PythonError::RequiresPython {
                origin: pin.origin.clone(),
                package: pin.name.clone(),
                version: pin.version.as_str().into(),
                filename: filename.as_str().into(),
                requires: requires.as_str().into(),
                python: format!("{}.{}", target.version.0, target.version.1).into(),
            });
        }
        // PEP 592: a yanked file is taken only when nothing else fits. Every pin is exact
        // (`==`), which is when pip takes a yanked file too, with a warning.
        let usable = |c: &Candidate| {
            c.link.yanked.is_none()
                || !wheels
                    .iter()
                    .any(|(w, c)| c.link.yanked.is_none() && priorities.rank(w).is_some())
        };
        // Best tag rank first; a higher build tag breaks ties.
        let mut best: Option<(usize, &WheelName, &Candidate)> = None;
        let mut seen = BTreeSet::new();
        for (w, c) in &wheels {
            seen.insert(w.tag_string());
            if !usable(c) {
                continue;
            }
            let Some(rank) = priorities.rank(w) else {
                continue;
            };
            let better = match &best {
                None => true,
                Some((r, bw, _)) => rank < *r || (rank == *r && build_num(w) > build_num(bw)),
            };
            if better {
                best = Some((rank, w, c));
            }
        }
        let Some((_, w, c)) = best else {
            return Err(PythonError::NoCompatibleWheel {
                origin: pin.origin.clone(),
                package: pin.name.clone(),
                version: pin.version.clone(),
                target: target.to_string().into(),
                searched: searched.into(),
                seen: seen.into_iter().collect::<Vec<_>>().join(", ").into(),
            });
        };
        let sha256 = self.expected_hash(pin, c)?;
        if let Some(reason) = &c.link.yanked {
            self.yanked
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(format!(
                    "{}: {} {} is yanked{}; using {} because the pin is exact (==)",
                    pin.origin,
                    pin.name,
                    pin.version,
                    if reason.is_empty() {
                        String::new()
                    } else {
                        format!(" ({reason})")
                    },
                    c.link.filename
                ));
        }
        Ok(ResolvedWheel {
            name: pin.name.clone(),
            version: w.version.clone(),
            filename: c.link.filename.clone(),
            sha256,
            url_or_path: c.link.url_or_path.clone(),
            size: c.size,
        })
    }

    fn expected_hash(&self, pin: &Pin, c: &Candidate) -> Result<String, PythonError> {
        let f = &c.link;
        let published = match &f.sha256 {
            Some(h) => Some(h.clone()),
            // A local file: hash it now (cheap, and the lock wants the exact hash).
            None if !f.url_or_path.contains("://") => Some(hash_file(Path::new(&f.url_or_path))?),
            None => None,
        };
        match published {
            Some(h) if pin.hashes.is_empty() || pin.hashes.contains(&h) => Ok(h),
            Some(h) => Err(PythonError::HashNotPinned {
                origin: pin.origin.clone(),
                package: pin.name.clone(),
                found_in: c.from.to_string().into(),
                filename: f.filename.clone(),
                published: h.into(),
                allowed: pin.hashes.join(", ").into(),
            }),
            None if pin.hashes.len() == 1 => Ok(pin.hashes[0].clone()),
            None => Err(PythonError::AmbiguousHash {
                origin: pin.origin.clone(),
                package: pin.name.clone(),
                found_in: c.from.to_string(),
                filename: f.filename.clone(),
                count: pin.hashes.len(),
            }),
        }
    }
}

/// An error's text without its leading `file:line: `.
fn strip_origin(msg: &str, origin: &Origin) -> String {
    let prefix = format!("{origin}: ");
    msg.strip_prefix(&prefix).unwrap_or(msg).to_string()
}

fn build_num(w: &WheelName) -> (u64, String) {
    match &w.build {
        None => (0, String::new()),
        Some(b) => {
            let digits: String = b.chars().take_while(char::is_ascii_digit).collect();
            (digits.parse().unwrap_or(0), b[digits.len()..].to_string())
        }
    }
}

/// The normalized project name of a wheel or sdist filename.
fn dist_name(filename: &str) -> Option<String> {
    WheelName::parse(filename)
        .map(|w| w.name)
        .or_else(|| sdist_name(filename).map(|(n, _)| normalize_name(&n)))
}

/// `(name, version)` of a source distribution filename.
pub(crate) fn sdist_name(filename: &str) -> Option<(String, String)> {
    let stem = [".tar.gz", ".zip", ".tar.bz2", ".tar.xz", ".tgz", ".tar"]
        .iter()
        .find_map(|ext| filename.strip_suffix(ext))?;
    let (n, v) = stem.rsplit_once('-')?;
    (!n.is_empty() && v.starts_with(|c: char| c.is_ascii_digit()))
        .then(|| (n.to_string(), v.to_string()))
}

fn split_fragment(url: &str) -> (&str, Option<String>) {
    match url.split_once('#') {
        Some((u, frag)) => {
            let sha = frag
                .split('&')
                .find_map(|kv| kv.strip_prefix("sha256="))
                .map(str::to_ascii_lowercase);
            (u, sha)
        }
        None => (url, None),
    }
}

fn filename_of(url: &reqwest::Url) -> Option<String> {
    let last = url.path_segments()?.next_back()?;
    Some(percent_decode(last))
}

pub(crate) use crate::transport::percent_decode;

fn html_unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&#x27;", "'")
        .replace("&amp;", "&")
}

/// PEP 503: every `<a href="...">` is a file; the sha256 is in the URL fragment.
pub(crate) fn parse_html_page(body: &str, base: &reqwest::Url) -> Vec<FileLink> {
    let mut out = Vec::new();
    let lower = body.to_ascii_lowercase();
    let mut pos = 0;
    while let Some(i) = lower[pos..].find("<a") {
        let start = pos + i;
        let Some(end_rel) = lower[start..].find('>') else {
            break;
        };
        let tag = &body[start..start + end_rel];
        pos = start + end_rel + 1;
        if !tag[2..].starts_with(|c: char| c.is_ascii_whitespace()) {
            continue;
        }
        let Some(href) = attr(tag, "href") else {
            continue;
        };
        let href = html_unescape(&href);
        let (u, sha256) = split_fragment(&href);
        let Ok(url) = base.join(u) else { continue };
        let Some(filename) = filename_of(&url) else {
            continue;
        };
        let lower_tag = tag.to_ascii_lowercase();
        let yanked = lower_tag
            .split(|c: char| c.is_ascii_whitespace())
            .any(|a| a == "data-yanked" || a.starts_with("data-yanked="))
            .then(|| {
                attr(tag, "data-yanked")
                    .map(|r| html_unescape(&r))
                    .unwrap_or_default()
            });
        out.push(FileLink {
            filename,
            url_or_path: url.to_string(),
            sha256,
            requires_python: attr(tag, "data-requires-python").map(|r| html_unescape(&r)),
            yanked,
        });
    }
    out
}

/// The value of attribute `name` in an HTML start tag (quoted with `"` or `'`, or bare).
fn attr(tag: &str, name: &str) -> Option<String> {
    let lower = tag.to_ascii_lowercase();
    let mut from = 0;
    while let Some(i) = lower[from..].find(name) {
        let at = from + i;
        from = at + name.len();
        let before_ok = lower[..at].ends_with(|c: char| c.is_ascii_whitespace());
        let rest = lower[from..].trim_start();
        if !before_ok || !rest.starts_with('=') {
            continue;
        }
        let vstart = tag.len() - rest.len() + 1;
        let v = tag[vstart..].trim_start();
        return Some(match v.chars().next() {
            Some(q @ ('"' | '\'')) => v[1..].split(q).next().unwrap_or("").to_string(),
            _ => v
                .split(|c: char| c.is_ascii_whitespace() || c == '>')
                .next()
                .unwrap_or("")
                .to_string(),
        });
    }
    None
}

#[derive(serde::Deserialize)]
struct JsonPage {
    files: Vec<JsonFile>,
}

#[derive(serde::Deserialize)]
struct JsonFile {
    filename: String,
    url: String,
    #[serde(default)]
    hashes: std::collections::BTreeMap<String, String>,
    /// PEP 700 (API 1.1): the file's size in bytes.
    #[serde(default)]
    size: Option<u64>,
    #[serde(default, rename = "requires-python")]
    requires_python: Option<String>,
    /// PEP 592 / 691: `false`, `true`, or the reason.
    #[serde(default)]
    yanked: Option<serde_json::Value>,
}

/// PEP 691 JSON project page.
#[cfg(test)]
pub(crate) fn parse_json_page(body: &str, base: &reqwest::Url) -> Result<Vec<FileLink>, String> {
    Ok(parse_json_page_sized(body, base)?
        .into_iter()
        .map(|(l, _)| l)
        .collect())
}

/// PEP 691 JSON project page, with each file's size when the page states it.
fn parse_json_page_sized(
    body: &str,
    base: &reqwest::Url,
) -> Result<Vec<(FileLink, Option<u64>)>, String> {
    let page: JsonPage = serde_json::from_str(body).map_err(|e| e.to_string())?;
    page.files
        .into_iter()
        .map(|f| {
            let url = base
                .join(&f.url)
                .map_err(|e| format!("bad url `{}`: {e}", redact_url(&f.url)))?;
            Ok((
                FileLink {
                    filename: f.filename,
                    url_or_path: url.to_string(),
                    sha256: f.hashes.get("sha256").map(|h| h.to_ascii_lowercase()),
                    requires_python: f.requires_python.filter(|r| !r.trim().is_empty()),
                    yanked: match f.yanked {
                        Some(serde_json::Value::Bool(true)) => Some(String::new()),
                        Some(serde_json::Value::String(r)) => Some(r),
                        _ => None,
                    },
                },
                f.size,
            ))
        })
        .collect()
}

/// Streams `path` through sha256 (lowercase hex).
pub(crate) fn hash_file(path: &Path) -> Result<String, PythonError> {
    let mut f = File::open(path).map_err(|e| PythonError::io(path, e))?;
    let digest = sha256_reader(&mut f).map_err(|e| PythonError::io(path, e))?;
    Ok(hex::encode(digest))
}

/// sha256 of everything `r` yields, read in 64 KiB blocks.
pub(crate) fn sha256_reader(r: &mut impl Read) -> std::io::Result<[u8; 32]> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => h.update(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(h.finalize().into())
}

/// Writes to a file and a hasher at once.
struct TeeHash<'a> {
    file: &'a mut File,
    hasher: Sha256,
}

impl Write for TeeHash<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// `<root>/wheels/<sha256>/<filename>`: a file there is complete and verified (written to a
/// temp file in the same folder, hashed while streaming, renamed into place). Beside it,
/// `<filename>.url` records where it was downloaded from (without credentials), so a
/// resolution from the cache can still name a real URL in the lock.
pub(crate) struct WheelCache {
    root: PathBuf,
    warnings: std::sync::Mutex<Vec<String>>,
}

/// Largest origin record read back.
const MAX_ORIGIN_RECORD: u64 = 16 << 10;

impl WheelCache {
    pub fn new(cache_dir: &Path) -> Self {
        WheelCache {
            root: cache_dir.join("wheels"),
            warnings: Default::default(),
        }
    }

    fn warn(&self, msg: String) {
        self.warnings
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(msg);
    }

    /// What the caller should be told (cached wheels found corrupt and fetched again).
    pub fn take_warnings(&self) -> Vec<String> {
        std::mem::take(&mut *self.warnings.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn origin_record(wheel: &Path) -> PathBuf {
        let mut name = wheel.file_name().unwrap_or_default().to_os_string();
        name.push(".url");
        wheel.with_file_name(name)
    }

    /// Where the cached `wheel` was downloaded from, if recorded.
    pub fn recorded_origin(wheel: &Path) -> Option<String> {
        let rec = Self::origin_record(wheel);
        let meta = std::fs::symlink_metadata(&rec).ok()?;
        if !meta.is_file() || meta.len() > MAX_ORIGIN_RECORD {
            return None;
        }
        let text = std::fs::read_to_string(rec).ok()?;
        let url = text.trim();
        (!url.is_empty() && !url.contains(['\n', '\r'])).then(|| redact_url(url))
    }

    /// Record `src` as the origin of the cached `wheel` (best effort: a cache that cannot be
    /// written here still works, the next offline resolution just says the origin is unknown).
    fn record_origin(&self, wheel: &Path, src: &str) {
        if src.is_empty() || Path::new(src).starts_with(&self.root) {
            return;
        }
        let rec = Self::origin_record(wheel);
        let Some(dir) = rec.parent() else { return };
        if let Ok(mut tmp) = tempfile::Builder::new()
            .prefix(".partial-url-")
            .tempfile_in(dir)
            && tmp.write_all(redact_url(src).as_bytes()).is_ok()
        {
            let _ = tmp.persist(&rec);
        }
    }

    pub fn get(&self, client: &Transport, w: &ResolvedWheel) -> Result<PathBuf, PythonError> {
        let bad_name = w.filename.contains(['/', '\\']) || w.filename.starts_with('.');
        let bad_hash = w.sha256.len() != 64 || !w.sha256.chars().all(|c| c.is_ascii_hexdigit());
        if bad_name || bad_hash {
            return Err(PythonError::InvalidWheel {
                wheel: PathBuf::from(&w.filename),
                message: format!("not a valid wheel filename and sha256 ({})", w.sha256),
            });
        }
        let dir = self.root.join(w.sha256.to_ascii_lowercase());
        let dest = dir.join(&w.filename);
        if let Ok(m) = std::fs::symlink_metadata(&dest) {
            // Re-verified on every use (one read of a file about to be read anyway): a
            // damaged or edited copy is dropped and fetched again.
            if m.is_file() && hash_file(&dest).is_ok_and(|h| h.eq_ignore_ascii_case(&w.sha256)) {
                // its last use, for `mlimg cache prune` (best effort)
                if let Ok(f) = std::fs::File::open(&dest) {
                    let _ = f.set_modified(std::time::SystemTime::now());
                }
                if !Self::origin_record(&dest).exists() {
                    self.record_origin(&dest, &w.url_or_path);
                }
                return Ok(dest);
            }
            let removed = if m.is_dir() {
                std::fs::remove_dir_all(&dest)
            } else {
                std::fs::remove_file(&dest)
            };
            removed.map_err(|e| PythonError::io(&dest, e))?;
            self.warn(format!(
                "{}: the copy in the wheel cache ({}) does not match its sha256 {}; dropped \
                 it and fetching the wheel again",
                w.filename,
                dest.display(),
                w.sha256
            ));
        }
        std::fs::create_dir_all(&dir).map_err(|e| PythonError::io(&dir, e))?;
        // Each attempt downloads from the start (into a fresh temp file).
        let got = client
            .retry(
                &describe("GET", &w.url_or_path),
                || self.download_once(client, w, &dir, &dest),
                |r| r.as_ref().err().and_then(|f| f.retry.clone()),
            )
            .map_err(|f| *f.error)?;
        self.record_origin(&got, &w.url_or_path);
        Ok(got)
    }

    /// One try: stream into a temp file next to `dest`, hashing on the way; rename if good.
    /// At most the size the index or lock states is read, when it states one.
    fn download_once(
        &self,
        client: &Transport,
        w: &ResolvedWheel,
        dir: &Path,
        dest: &Path,
    ) -> Result<PathBuf, Failed> {
        let mut tmp = tempfile::Builder::new()
            .prefix(".partial-")
            .tempfile_in(dir)
            .map_err(|e| PythonError::io(dir, e))?;
        let mut tee = TeeHash {
            file: tmp.as_file_mut(),
            hasher: Sha256::new(),
        };
        let src = &w.url_or_path;
        let too_large = |limit: u64| PythonError::TooLarge {
            filename: w.filename.clone(),
            source_url: redact_url(src),
            limit,
        };
        let limit = w.size.unwrap_or(u64::MAX);
        let n = if src.starts_with("http://") || src.starts_with("https://") {
            let url = reqwest::Url::parse(src).map_err(|e| PythonError::BadIndexPage {
                url: redact_url(src),
                message: format!("not a usable URL: {e}"),
            })?;
            let req = credentials::authorize(client.client().get(url.clone()), &url)
                .build()
                .map_err(|e| PythonError::BadIndexPage {
                    url: redact_url(src),
                    message: format!("not a usable URL: {}", e.without_url()),
                })?;
            let resp = match client.send_once(req) {
                Ok(r) => r,
                Err(e) => {
                    return Err(Failed {
                        retry: e.retry(),
                        error: Box::new(e.into()),
                    });
                }
            };
            let status = resp.status();
            if !status.is_success() {
                return Err(Failed {
                    retry: Retry::for_status(status, resp.headers()),
                    error: Box::new(PythonError::HttpStatus {
                        url: redact_url(src),
                        status: status.as_u16(),
                    }),
                });
            }
            if resp.content_length().is_some_and(|n| n > limit) {
                return Err(too_large(limit).into());
            }
            let mut body = resp.take(limit.saturating_add(1));
            copy(&mut body, &mut tee).map_err(|e| match e {
                CopyError::Read(source) => {
                    let e = crate::transport::TransportError::body(src, &source);
                    Failed {
                        retry: e.retry(),
                        error: Box::new(e.into()),
                    }
                }
                CopyError::Write(e) => PythonError::io(dest, e).into(),
            })?
        } else {
            let path = match src.strip_prefix("file://") {
                Some(p) => PathBuf::from(percent_decode(p)),
                None => PathBuf::from(src),
            };
            let f = File::open(&path).map_err(|e| PythonError::io(&path, e))?;
            // Only regular files: never a device (`/dev/zero`) or a FIFO.
            let meta = f.metadata().map_err(|e| PythonError::io(&path, e))?;
            if !meta.is_file() {
                return Err(PythonError::InvalidWheel {
                    wheel: path.clone(),
                    message: "not a regular file".into(),
                }
                .into());
            }
            let mut body = f.take(limit.saturating_add(1));
            copy(&mut body, &mut tee).map_err(|e| match e {
                CopyError::Read(e) => PythonError::io(&path, e),
                CopyError::Write(e) => PythonError::io(dest, e),
            })?
        };
        if n > limit {
            return Err(too_large(limit).into());
        }
        let got = hex::encode(tee.hasher.finalize());
        if !got.eq_ignore_ascii_case(&w.sha256) {
            return Err(PythonError::WrongHash {
                filename: w.filename.clone(),
                source_url: redact_url(src),
                expected: w.sha256.clone(),
                got,
            }
            .into());
        }
        tmp.as_file()
            .sync_all()
            .map_err(|e| PythonError::io(dest, e))?;
        tmp.persist(dest)
            .map_err(|e| PythonError::io(dest, e.error))?;
        Ok(dest.to_path_buf())
    }
}

/// A failed download attempt, and whether the transport policy says to try again.
struct Failed {
    error: Box<PythonError>,
    retry: Option<Retry>,
}

impl From<PythonError> for Failed {
    fn from(error: PythonError) -> Self {
        Failed {
            error: Box::new(error),
            retry: None,
        }
    }
}

enum CopyError {
    Read(std::io::Error),
    Write(std::io::Error),
}

fn copy(r: &mut impl Read, w: &mut impl Write) -> Result<u64, CopyError> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut n = 0u64;
    loop {
        let k = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(k) => k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(CopyError::Read(e)),
        };
        w.write_all(&buf[..k]).map_err(CopyError::Write)?;
        n += k as u64;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_page() {
        let base = reqwest::Url::parse("https://idx.example/simple/six/").unwrap();
        let body = r#"<!DOCTYPE html><html><body>
<h1>Links for six</h1>
<a href="../../packages/six-1.16.0-py2.py3-none-any.whl#sha256=8ABB2F1D86890A2DFB989F9A77CFCFD3E47C2A354B01111771326F8AA26E0254" data-requires-python="&gt;=2.7">six-1.16.0-py2.py3-none-any.whl</a><br/>
<A HREF='https://files.example/six-1.16.0.tar.gz?x=1&amp;y=2#md5=abc'>six-1.16.0.tar.gz</A>
<abbr>not a link</abbr>
<a href=my%2Bpkg-1.0-py3-none-any.whl>x</a>
</body></html>"#;
        let links = parse_html_page(body, &base);
        assert_eq!(links.len(), 3, "{links:?}");
        assert_eq!(links[0].filename, "six-1.16.0-py2.py3-none-any.whl");
        assert_eq!(
            links[0].url_or_path,
            "https://idx.example/packages/six-1.16.0-py2.py3-none-any.whl"
        );
        assert_eq!(
            links[0].sha256.as_deref(),
            Some("8abb2f1d86890a2dfb989f9a77cfcfd3e47c2a354b01111771326f8aa26e0254")
        );
        assert_eq!(links[1].filename, "six-1.16.0.tar.gz");
        assert_eq!(
            links[1].url_or_path,
            "https://files.example/six-1.16.0.tar.gz?x=1&y=2"
        );
        assert_eq!(links[1].sha256, None);
        assert_eq!(links[2].filename, "my+pkg-1.0-py3-none-any.whl");
    }

    #[test]
    fn json_page() {
        let base = reqwest::Url::parse("http://127.0.0.1:1/simple/six/").unwrap();
        let body = r#"{"meta":{"api-version":"1.1"},"name":"six","files":[
            {"filename":"six-1.16.0-py2.py3-none-any.whl","url":"/files/six-1.16.0-py2.py3-none-any.whl","hashes":{"sha256":"AB"}},
            {"filename":"six-1.16.0.tar.gz","url":"https://x/six-1.16.0.tar.gz","hashes":{}}]}"#;
        let links = parse_json_page(body, &base).unwrap();
        assert_eq!(
            links[0].url_or_path,
            "http://127.0.0.1:1/files/six-1.16.0-py2.py3-none-any.whl"
        );
        assert_eq!(links[0].sha256.as_deref(), Some("ab"));
        assert_eq!(links[1].sha256, None);
        assert!(parse_json_page("{", &base).is_err());
    }

    #[test]
    fn sdist_names() {
        assert_eq!(
            sdist_name("zope.interface-6.0.tar.gz"),
            Some(("zope.interface".into(), "6.0".into()))
        );
        assert_eq!(
            sdist_name("foo-bar-1.0.zip"),
            Some(("foo-bar".into(), "1.0".into()))
        );
        assert_eq!(sdist_name("foo-1.0-py3-none-any.whl"), None);
        assert_eq!(dist_name("Foo_Bar-1.0.tar.gz").as_deref(), Some("foo-bar"));
    }
}
