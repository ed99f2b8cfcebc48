//! Python wheels without the internet: the real wheels committed under `testdata/wheels/`
//! (checked against their `SHA256SUMS`), and a PEP 503 / PEP 691 simple index on 127.0.0.1 that
//! serves wheel files to mlimg (and pip) in place of a live package index.
//!
//! Why committed wheels and not a download in `scripts/setup`: they are small (six, idna,
//! packaging, wheel, and MarkupSafe for x86_64 and aarch64, each < 70 KB, 250 KB in all), the
//! binary MarkupSafe ones are what the aarch64 ELF and `import markupsafe._speedups` checks need,
//! and a fresh clone then runs every Python test with no network at all.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use super::{repo_root, sha256_file};

/// The committed wheels' folder.
pub fn wheels_dir() -> PathBuf {
    repo_root().join("testdata/wheels")
}

/// Every committed wheel (sorted by file name), each checked against `SHA256SUMS`.
pub fn testdata_wheels() -> Vec<PathBuf> {
    let dir = wheels_dir();
    let sums = std::fs::read_to_string(dir.join("SHA256SUMS")).expect("testdata/wheels/SHA256SUMS");
    let mut out = Vec::new();
    for line in sums.lines().filter(|l| !l.trim().is_empty()) {
        let (sha, name) = line.split_once("  ").expect("`<sha256>  <file>` lines");
        let path = dir.join(name);
        assert_eq!(
            sha256_file(&path),
            sha,
            "{} does not match testdata/wheels/SHA256SUMS",
            path.display()
        );
        out.push(path);
    }
    out.sort();
    assert_eq!(out.len(), 6, "testdata/wheels/SHA256SUMS lists {out:?}");
    out
}

/// The committed wheel whose file name starts with `prefix` (exactly one must).
pub fn testdata_wheel(prefix: &str) -> PathBuf {
    let found: Vec<PathBuf> = testdata_wheels()
        .into_iter()
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(prefix))
        .collect();
    assert_eq!(found.len(), 1, "wheels starting with {prefix:?}: {found:?}");
    found.into_iter().next().unwrap()
}

/// PEP 503 name normalization (the crate's own).
pub use mlimg::sources::python::normalize_name as normalize;

/// One request the index answered: the path and what it sent back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    pub path: String,
    /// `json` (PEP 691), `html` (PEP 503), `file`, `401` or `404`.
    pub served: &'static str,
}

/// A simple index on 127.0.0.1: `/simple/<project>/` as PEP 691 JSON when the client's Accept
/// asks for `application/vnd.pypi.simple.v1+json`, else PEP 503 HTML; files at `/files/<name>`.
/// Stops (and joins its thread) when dropped.
pub struct PyIndex {
    /// The index URL to give pip or mlimg: `http://127.0.0.1:PORT/simple`.
    pub url: String,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    hits: Arc<Mutex<Vec<Hit>>>,
    thread: Option<JoinHandle<()>>,
}

const JSON_TYPE: &str = "application/vnd.pypi.simple.v1+json";

struct Listing {
    filename: String,
    sha256: String,
}

/// What a file's listing says besides its name and hash.
#[derive(Debug, Clone, Default)]
pub struct FileMeta {
    /// PEP 503 `data-requires-python` / PEP 691 `requires-python`.
    pub requires_python: Option<String>,
    /// PEP 592: yanked, with this reason (may be empty).
    pub yanked: Option<String>,
}

/// How [`PyIndex::serve_with`] behaves beyond serving files.
#[derive(Debug, Clone, Default)]
pub struct IndexConfig {
    /// Per file name: requires-python and yanked.
    pub meta: BTreeMap<String, FileMeta>,
    /// Other files to list and serve (sdists): (file name, bytes).
    pub extra_files: Vec<(String, Vec<u8>)>,
    /// Answer 401 unless the request carries `Authorization: Basic` with these.
    pub basic_auth: Option<(String, String)>,
    /// PEP 503 HTML only, whatever the client accepts.
    pub html_only: bool,
}

impl PyIndex {
    /// Serves `wheels`; `listed_only` file names appear on their project's page (with a zero
    /// sha256) but answer 404, for "no compatible wheel" cases.
    pub fn serve(wheels: &[PathBuf], listed_only: &[&str]) -> PyIndex {
        PyIndex::serve_with(wheels, listed_only, &IndexConfig::default())
    }

    /// [`PyIndex::serve`] with listing metadata, extra files, basic auth or HTML only.
    pub fn serve_with(wheels: &[PathBuf], listed_only: &[&str], config: &IndexConfig) -> PyIndex {
        let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        let mut projects: BTreeMap<String, Vec<Listing>> = BTreeMap::new();
        let project_of = |name: &str| normalize(name.split('-').next().unwrap_or(""));
        for w in wheels {
            let name = w.file_name().unwrap().to_string_lossy().into_owned();
            let bytes = std::fs::read(w).unwrap_or_else(|e| panic!("{}: {e}", w.display()));
            projects
                .entry(project_of(&name))
                .or_default()
                .push(Listing {
                    filename: name.clone(),
                    sha256: sha256_file(w),
                });
            files.insert(name, bytes);
        }
        for (name, bytes) in &config.extra_files {
            use sha2::Digest as _;
            projects.entry(project_of(name)).or_default().push(Listing {
                filename: name.clone(),
                sha256: hex::encode(sha2::Sha256::digest(bytes)),
            });
            files.insert(name.clone(), bytes.clone());
        }
        for name in listed_only {
            projects.entry(project_of(name)).or_default().push(Listing {
                filename: name.to_string(),
                sha256: "0".repeat(64),
            });
        }
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        let addr = listener.local_addr().expect("addr");
        let base = format!("http://{addr}");
        let mut pages: BTreeMap<String, (String, String)> = BTreeMap::new();
        for (project, links) in &projects {
            let mut html = format!("<!DOCTYPE html>\n<html><body><h1>Links for {project}</h1>\n");
            let mut json_files = Vec::new();
            for l in links {
                let meta = config.meta.get(&l.filename).cloned().unwrap_or_default();
                let mut attrs = String::new();
                if let Some(r) = &meta.requires_python {
                    attrs.push_str(&format!(
                        " data-requires-python=\"{}\"",
                        r.replace('&', "&amp;")
                            .replace('<', "&lt;")
                            .replace('>', "&gt;")
                    ));
                }
                if let Some(y) = &meta.yanked {
                    attrs.push_str(&format!(" data-yanked=\"{y}\""));
                }
                html.push_str(&format!(
                    "<a href=\"../../files/{f}#sha256={h}\"{attrs}>{f}</a><br/>\n",
                    f = l.filename,
                    h = l.sha256
                ));
                let mut file = serde_json::json!({
                    "filename": l.filename,
                    // absolute, as PyPI's JSON points at another host
                    "url": format!("{base}/files/{}", l.filename),
                    "hashes": {"sha256": l.sha256},
                });
                if let Some(r) = &meta.requires_python {
                    file["requires-python"] = r.clone().into();
                }
                if let Some(y) = &meta.yanked {
                    file["yanked"] = if y.is_empty() {
                        true.into()
                    } else {
                        y.clone().into()
                    };
                }
                json_files.push(file);
            }
            html.push_str("</body></html>\n");
            let json = serde_json::json!({
                "meta": {"api-version": "1.1"},
                "name": project,
                "files": json_files,
            })
            .to_string();
            pages.insert(format!("/simple/{project}/"), (html, json));
        }
        let stop = Arc::new(AtomicBool::new(false));
        let hits: Arc<Mutex<Vec<Hit>>> = Arc::default();
        let auth = config.basic_auth.as_ref().map(|(u, p)| {
            use base64::Engine as _;
            format!(
                "basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
            )
        });
        let html_only = config.html_only;
        let shared = Arc::new((pages, files, auth, html_only));
        let (stop2, hits2) = (stop.clone(), hits.clone());
        let thread = std::thread::spawn(move || {
            let mut workers = Vec::new();
            for conn in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (shared, hits) = (shared.clone(), hits2.clone());
                workers.push(std::thread::spawn(move || {
                    let _ = answer(conn, &shared.0, &shared.1, &shared.2, shared.3, &hits);
                }));
            }
            for w in workers {
                let _ = w.join();
            }
        });
        PyIndex {
            url: format!("{base}/simple"),
            base,
            addr,
            stop,
            hits,
            thread: Some(thread),
        }
    }

    pub fn hits(&self) -> Vec<Hit> {
        self.hits.lock().unwrap().clone()
    }
}

impl Drop for PyIndex {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // wake the accept loop so it sees the flag
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(2));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Answers one request per connection (`Connection: close`), 10 s read/write limits.
fn answer(
    conn: TcpStream,
    pages: &BTreeMap<String, (String, String)>,
    files: &BTreeMap<String, Vec<u8>>,
    auth: &Option<String>,
    html_only: bool,
    hits: &Mutex<Vec<Hit>>,
) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    conn.set_write_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut out = conn;
    let mut first = String::new();
    if reader.read_line(&mut first)? == 0 {
        return Ok(());
    }
    let mut accept = String::new();
    let mut authorization = String::new();
    loop {
        let mut l = String::new();
        if reader.read_line(&mut l)? == 0 || l.trim().is_empty() {
            break;
        }
        let lower = l.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("accept:") {
            accept = v.trim().to_string();
        }
        if lower.starts_with("authorization:") {
            // the scheme's case does not matter, the credentials' does
            let v = l["authorization:".len()..].trim();
            authorization = match v.split_once(' ') {
                Some((scheme, rest)) => format!("{} {rest}", scheme.to_ascii_lowercase()),
                None => v.to_string(),
            };
        }
    }
    if html_only {
        accept.clear();
    }
    let mut parts = first.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let raw = parts.next().unwrap_or("/");
    let path = raw.split(['?', '#']).next().unwrap_or("/").to_string();
    let (status, ctype, body, served): (&str, &str, Vec<u8>, &'static str) =
        if auth.as_ref().is_some_and(|a| *a != authorization) {
            (
                "401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"index\"",
                "text/plain",
                b"unauthorized\n".to_vec(),
                "401",
            )
        } else if let Some((html, json)) = pages.get(&path) {
            if accept.contains(JSON_TYPE) {
                ("200 OK", JSON_TYPE, json.clone().into_bytes(), "json")
            } else {
                ("200 OK", "text/html", html.clone().into_bytes(), "html")
            }
        } else if let Some(bytes) = path.strip_prefix("/files/").and_then(|n| files.get(n)) {
            ("200 OK", "application/octet-stream", bytes.clone(), "file")
        } else {
            (
                "404 Not Found",
                "text/plain",
                b"not found\n".to_vec(),
                "404",
            )
        };
    hits.lock().unwrap().push(Hit { path, served });
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    out.write_all(head.as_bytes())?;
    if method != "HEAD" {
        out.write_all(&body)?;
    }
    out.flush()
}

/// The local CPython's machine name (`x86_64`, `aarch64`).
pub fn host_machine() -> String {
    let out = std::process::Command::new("python3")
        .args(["-c", "import platform; print(platform.machine())"])
        .output()
        .expect("python3 must be installed for these tests");
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// `path`'s file name as a string.
pub fn file_name(path: &Path) -> String {
    path.file_name().unwrap().to_string_lossy().into_owned()
}
