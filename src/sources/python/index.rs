//! Where wheels come from: simple-API indexes (PEP 503 HTML, PEP 691 JSON), local find-links
//! folders and files named by a pylock; and the content-addressed wheel cache
//! (`<cache>/wheels/<sha256>/<filename>`).

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::transport::{MAX_LISTING_BYTES, Retry, Transport, describe, redact_url};

use super::markers::Version;
use super::tags::{TagPriorities, WheelName};
use super::{Pin, PythonError, PythonTarget, ResolvedWheel, normalize_name};

/// A distribution file offered for a project.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileLink {
    pub filename: String,
    /// Absolute `http(s)://` / `file://` URL, or a local path.
    pub url_or_path: String,
    /// sha256 published by the source (index fragment / JSON hashes / pylock), if any.
    pub sha256: Option<String>,
}

const JSON_TYPE: &str = "application/vnd.pypi.simple.v1+json";

/// The shared transport, with the process's default options (set from `--retries` /
/// `--timeout` by the CLI).
pub(crate) fn http_client() -> Result<Transport, PythonError> {
    Ok(Transport::from_defaults()?)
}

/// Looks up projects on indexes and find-links folders.
pub(crate) struct Finder {
    indexes: Vec<String>,
    local: Vec<FileLink>,
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
                    local.push(FileLink {
                        filename,
                        url_or_path: ent.path().to_string_lossy().into_owned(),
                        sha256: None,
                    });
                }
            }
        }
        local.sort_by(|a, b| a.url_or_path.cmp(&b.url_or_path));
        Ok(Finder {
            indexes,
            local,
            client: http_client()?,
        })
    }

    /// All files offered for `name` (normalized) by find-links folders and every index
    /// (pip merges candidates from all of them). `None` if no source knows the project.
    fn files_for(&self, name: &str) -> Result<Option<Vec<FileLink>>, PythonError> {
        let mut found = false;
        let mut out: Vec<FileLink> = self
            .local
            .iter()
            .filter(|f| dist_name(&f.filename).as_deref() == Some(name))
            .cloned()
            .collect();
        found |= !out.is_empty();
        for index in &self.indexes {
            if let Some(files) = self.project_page(index, name)? {
                found = true;
                out.extend(files);
            }
        }
        Ok(found.then_some(out))
    }

    fn project_page(&self, index: &str, name: &str) -> Result<Option<Vec<FileLink>>, PythonError> {
        let url = format!("{}/{name}/", index.trim_end_matches('/'));
        let accept = format!("{JSON_TYPE}, text/html;q=0.1");
        let t = &self.client;
        let page = t.get_capped(
            || {
                t.client()
                    .get(&url)
                    .header(reqwest::header::ACCEPT, &accept)
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
            parse_json_page(&body, &base)
        } else {
            Ok(parse_html_page(&body, &base))
        }
        .map_err(|message| PythonError::BadIndexPage {
            url: redact_url(&url),
            message,
        })?;
        Ok(Some(links))
    }

    /// Picks the best wheel for `pin` on `target`.
    pub fn choose(
        &self,
        pin: &Pin,
        priorities: &TagPriorities,
        target: &PythonTarget,
    ) -> Result<ResolvedWheel, PythonError> {
        let files = match &pin.files {
            Some(f) => f.clone(),
            None => self
                .files_for(&pin.name)?
                .ok_or_else(|| PythonError::UnknownPackage {
                    origin: pin.origin.clone(),
                    package: pin.name.clone(),
                    indexes: if self.indexes.is_empty() {
                        "no index configured".into()
                    } else {
                        self.indexes.join(", ")
                    },
                })?,
        };
        let want = Version::parse(&pin.version);
        let matches_version = |v: &str| match (&want, Version::parse(v)) {
            (Some(w), Some(have)) => have.matches_pin(w),
            _ => v == pin.version,
        };
        let mut wheels = Vec::new();
        let mut sdists = Vec::new();
        let mut versions = BTreeSet::new();
        for f in files {
            if let Some(w) = WheelName::parse(&f.filename) {
                versions.insert(w.version.clone());
                if w.name == pin.name && matches_version(&w.version) {
                    wheels.push((w, f));
                }
            } else if let Some((n, v)) = sdist_name(&f.filename) {
                versions.insert(v.clone());
                if normalize_name(&n) == pin.name && matches_version(&v) {
                    sdists.push(f);
                }
            }
        }
        if wheels.is_empty() {
            if let Some(sdist) = sdists.first() {
                return Err(PythonError::SdistOnly {
                    origin: pin.origin.clone(),
                    package: pin.name.clone(),
                    version: pin.version.clone(),
                    sdist: sdist.filename.clone(),
                });
            }
            return Err(PythonError::VersionNotFound {
                origin: pin.origin.clone(),
                package: pin.name.clone(),
                version: pin.version.clone(),
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
        if wheels
            .iter()
            .any(|(_, f)| f.sha256.as_ref().is_some_and(|h| pin.hashes.contains(h)))
        {
            wheels.retain(|(_, f)| allowed(f));
        }
        // Best tag rank first; a higher build tag breaks ties.
        let mut best: Option<(usize, &WheelName, &FileLink)> = None;
        let mut seen = BTreeSet::new();
        for (w, f) in &wheels {
            seen.insert(w.tag_string());
            let Some(rank) = priorities.rank(w) else {
                continue;
            };
            let better = match &best {
                None => true,
                Some((r, bw, _)) => rank < *r || (rank == *r && build_num(w) > build_num(bw)),
            };
            if better {
                best = Some((rank, w, f));
            }
        }
        let Some((_, w, f)) = best else {
            return Err(PythonError::NoCompatibleWheel {
                origin: pin.origin.clone(),
                package: pin.name.clone(),
                version: pin.version.clone(),
                target: target.to_string(),
                seen: seen.into_iter().collect::<Vec<_>>().join(", "),
            });
        };
        let sha256 = self.expected_hash(pin, f)?;
        Ok(ResolvedWheel {
            name: pin.name.clone(),
            version: w.version.clone(),
            filename: f.filename.clone(),
            sha256,
            url_or_path: f.url_or_path.clone(),
        })
    }

    fn expected_hash(&self, pin: &Pin, f: &FileLink) -> Result<String, PythonError> {
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
                filename: f.filename.clone(),
                published: h,
                allowed: pin.hashes.join(", "),
            }),
            None if pin.hashes.len() == 1 => Ok(pin.hashes[0].clone()),
            None => Err(PythonError::AmbiguousHash {
                origin: pin.origin.clone(),
                package: pin.name.clone(),
                filename: f.filename.clone(),
                count: pin.hashes.len(),
            }),
        }
    }
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

pub(crate) fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

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
        out.push(FileLink {
            filename,
            url_or_path: url.to_string(),
            sha256,
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
}

/// PEP 691 JSON project page.
pub(crate) fn parse_json_page(body: &str, base: &reqwest::Url) -> Result<Vec<FileLink>, String> {
    let page: JsonPage = serde_json::from_str(body).map_err(|e| e.to_string())?;
    page.files
        .into_iter()
        .map(|f| {
            let url = base
                .join(&f.url)
                .map_err(|e| format!("bad url `{}`: {e}", f.url))?;
            Ok(FileLink {
                filename: f.filename,
                url_or_path: url.to_string(),
                sha256: f.hashes.get("sha256").map(|h| h.to_ascii_lowercase()),
            })
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
/// temp file in the same folder, hashed while streaming, renamed into place).
pub(crate) struct WheelCache {
    root: PathBuf,
}

impl WheelCache {
    pub fn new(cache_dir: &Path) -> Self {
        WheelCache {
            root: cache_dir.join("wheels"),
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
        if dest.is_file() {
            return Ok(dest);
        }
        std::fs::create_dir_all(&dir).map_err(|e| PythonError::io(&dir, e))?;
        // Each attempt downloads from the start (into a fresh temp file).
        client
            .retry(
                &describe("GET", &w.url_or_path),
                || self.download_once(client, w, &dir, &dest),
                |r| r.as_ref().err().and_then(|f| f.retry.clone()),
            )
            .map_err(|f| *f.error)
    }

    /// One try: stream into a temp file next to `dest`, hashing on the way; rename if good.
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
        if src.starts_with("http://") || src.starts_with("https://") {
            let req = client
                .client()
                .get(src)
                .build()
                .map_err(|e| PythonError::BadIndexPage {
                    url: redact_url(src),
                    message: format!("not a usable URL: {}", e.without_url()),
                })?;
            let mut resp = match client.send_once(req) {
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
            copy(&mut resp, &mut tee).map_err(|e| match e {
                CopyError::Read(source) => {
                    let e = crate::transport::TransportError::body(src, &source);
                    Failed {
                        retry: e.retry(),
                        error: Box::new(e.into()),
                    }
                }
                CopyError::Write(e) => PythonError::io(dest, e).into(),
            })?;
        } else {
            let path = match src.strip_prefix("file://") {
                Some(p) => PathBuf::from(percent_decode(p)),
                None => PathBuf::from(src),
            };
            let mut f = File::open(&path).map_err(|e| PythonError::io(&path, e))?;
            copy(&mut f, &mut tee).map_err(|e| match e {
                CopyError::Read(e) => PythonError::io(&path, e),
                CopyError::Write(e) => PythonError::io(dest, e),
            })?;
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
