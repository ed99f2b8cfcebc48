//! A small Hugging Face Hub stand-in: std `TcpListener` + one thread per connection.
//!
//! It serves one model repository with the endpoints `hf-hub` and mlimg use:
//!
//! - `GET /api/models/{repo}[/revision/{rev}]` — repo info with the resolved `sha`
//! - `GET /api/models/{repo}/tree/{rev}[/{path}]?recursive=true` — tree listing with
//!   `oid` / `size` / `lfs.oid` / `lfs.size`, paginated with a `Link: <…>; rel="next"` header
//! - `HEAD|GET /{repo}/resolve/{rev}/{path}` — `ETag`, `X-Repo-Commit`; LFS files answer 302 to
//!   `/cdn/{sha256}` with `X-Linked-Etag` / `X-Linked-Size`
//! - `HEAD|GET /cdn/{sha256}` — the LFS payload, with `Range` support
//!
//! Tests can move branches, gate the repo behind a token, cut a body once after N bytes,
//! corrupt a file's bytes, and read the request log.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

use sha1::Digest as _;

/// One file in a commit.
#[derive(Clone)]
pub struct HubFileData {
    pub bytes: Arc<Vec<u8>>,
    pub lfs: bool,
    /// Hex sha256 of the bytes (the LFS oid).
    pub sha256: String,
    /// Hex git blob sha1 (`sha1("blob {len}\0" + bytes)`).
    pub git_oid: String,
}

impl HubFileData {
    pub fn new(bytes: Vec<u8>, lfs: bool) -> Self {
        let sha256 = hex::encode(sha2::Sha256::digest(&bytes));
        let git_oid = git_blob_oid(&bytes);
        HubFileData {
            bytes: Arc::new(bytes),
            lfs,
            sha256,
            git_oid,
        }
    }
}

pub fn git_blob_oid(bytes: &[u8]) -> String {
    let mut h = sha1::Sha1::new();
    h.update(format!("blob {}\0", bytes.len()).as_bytes());
    h.update(bytes);
    hex::encode(h.finalize())
}

/// One logged request.
#[derive(Clone, Debug)]
pub struct LoggedRequest {
    pub method: String,
    /// Path and query as sent.
    pub target: String,
    pub range: Option<String>,
    pub authorization: Option<String>,
    /// Status code answered.
    pub status: u16,
}

impl LoggedRequest {
    /// A GET that transfers file bytes (a non-LFS `resolve` GET answered 200/206, or a CDN GET).
    pub fn is_download(&self) -> bool {
        self.method == "GET"
            && (self.target.starts_with("/cdn/")
                || (self.target.contains("/resolve/")
                    && (self.status == 200 || self.status == 206)))
    }
}

#[derive(Default)]
struct State {
    repo: String,
    commits: HashMap<String, BTreeMap<String, HubFileData>>,
    branches: HashMap<String, String>,
    gated_token: Option<String>,
    /// sha256 -> bytes after which the next body is cut (once).
    cut_once: HashMap<String, usize>,
    /// sha256 -> bytes after which every body is cut.
    cut_always: HashMap<String, usize>,
    /// sha256 values whose bodies are served with one byte flipped.
    corrupt: Vec<String>,
    tree_page_size: usize,
    commit_counter: u64,
    log: Vec<LoggedRequest>,
}

pub struct Hub {
    addr: std::net::SocketAddr,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// The generated tiny model: safetensors weights + config + tokenizer, and a `text_encoder/` subfolder.
pub fn tiny_model_files(seed: u32) -> BTreeMap<String, HubFileData> {
    let mut files = BTreeMap::new();
    let put = |files: &mut BTreeMap<String, HubFileData>, path: &str, bytes: Vec<u8>, lfs: bool| {
        files.insert(path.to_string(), HubFileData::new(bytes, lfs));
    };
    put(
        &mut files,
        "config.json",
        format!("{{\"model_type\":\"tiny\",\"hidden_size\":64,\"seed\":{seed}}}\n").into_bytes(),
        false,
    );
    put(
        &mut files,
        "tokenizer.json",
        b"{\"version\":\"1.0\",\"model\":{\"type\":\"WordLevel\",\"vocab\":{\"a\":0,\"b\":1}}}\n"
            .to_vec(),
        false,
    );
    put(&mut files, "README.md", b"# tiny model\n".to_vec(), false);
    // ~256 KiB so a body can be cut in the middle.
    put(
        &mut files,
        "model.safetensors",
        safetensors(&[("weight", 65_536)], seed),
        true,
    );
    put(
        &mut files,
        "text_encoder/model.safetensors",
        safetensors(&[("embed", 4096), ("proj", 1024)], seed + 1),
        true,
    );
    put(
        &mut files,
        "text_encoder/config.json",
        b"{\"model_type\":\"tiny-text\"}\n".to_vec(),
        false,
    );
    files
}

/// safetensors: 8-byte little-endian header length, JSON header, then f32 data.
pub fn safetensors(tensors: &[(&str, usize)], seed: u32) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    let mut offset = 0usize;
    for (name, n) in tensors {
        header.insert(
            (*name).to_string(),
            serde_json::json!({"dtype": "F32", "shape": [n], "data_offsets": [offset, offset + n * 4]}),
        );
        offset += n * 4;
    }
    header.insert("__metadata__".into(), serde_json::json!({"format": "pt"}));
    let mut header = serde_json::Value::Object(header).to_string().into_bytes();
    while !header.len().is_multiple_of(8) {
        header.push(b' ');
    }
    let mut out = Vec::with_capacity(8 + header.len() + offset);
    out.extend_from_slice(&(header.len() as u64).to_le_bytes());
    out.extend_from_slice(&header);
    let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    for _ in 0..offset / 4 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        let v = (x % 2000) as f32 / 1000.0 - 1.0;
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

impl Hub {
    /// Start a stand-in serving `repo` (e.g. `acme/tiny`) with one commit on `main`.
    pub fn start(repo: &str) -> Hub {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind stand-in hub");
        let addr = listener.local_addr().expect("local addr");
        let state = Arc::new(Mutex::new(State {
            repo: repo.to_string(),
            tree_page_size: 1000,
            ..State::default()
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let hub = {
            let st = state.clone();
            let stopped = stop.clone();
            let thread = std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stopped.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let state = st.clone();
                    std::thread::spawn(move || handle(conn, &state));
                }
            });
            Hub {
                addr,
                state,
                stop,
                thread: Some(thread),
            }
        };
        let first = hub.add_commit(tiny_model_files(1));
        hub.set_branch("main", &first);
        hub
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Add a commit with exactly these files; returns its 40-hex sha.
    pub fn add_commit(&self, files: BTreeMap<String, HubFileData>) -> String {
        let mut st = self.lock();
        st.commit_counter += 1;
        let mut h = sha1::Sha1::new();
        h.update(format!("commit {} {}", st.repo, st.commit_counter).as_bytes());
        for (p, f) in &files {
            h.update(p.as_bytes());
            h.update(f.git_oid.as_bytes());
        }
        let sha = hex::encode(h.finalize());
        st.commits.insert(sha.clone(), files);
        sha
    }

    pub fn set_branch(&self, name: &str, commit: &str) {
        self.lock()
            .branches
            .insert(name.to_string(), commit.to_string());
    }

    pub fn branch(&self, name: &str) -> String {
        self.lock().branches.get(name).cloned().unwrap_or_default()
    }

    pub fn files(&self, commit: &str) -> BTreeMap<String, HubFileData> {
        self.lock().commits.get(commit).cloned().unwrap_or_default()
    }

    /// Require `Authorization: Bearer <token>` for file downloads (info and tree stay public).
    pub fn set_gated(&self, token: &str) {
        self.lock().gated_token = Some(token.to_string());
    }

    pub fn set_tree_page_size(&self, n: usize) {
        self.lock().tree_page_size = n.max(1);
    }

    fn sha_of(&self, path: &str) -> String {
        let st = self.lock();
        let main = st.branches.get("main").cloned().unwrap_or_default();
        st.commits
            .get(&main)
            .and_then(|c| c.get(path))
            .map(|f| f.sha256.clone())
            .unwrap_or_else(|| panic!("no file {path} on main"))
    }

    /// Cut the next body of `path` (as on `main`) after `n` bytes; later requests are served normally.
    pub fn cut_once(&self, path: &str, n: usize) {
        let sha = self.sha_of(path);
        self.lock().cut_once.insert(sha, n);
    }

    /// Cut every body of `path` (as on `main`) after `n` bytes.
    pub fn cut_always(&self, path: &str, n: usize) {
        let sha = self.sha_of(path);
        self.lock().cut_always.insert(sha, n);
    }

    /// Serve `path` (as on `main`) with one byte flipped, same length, until further notice.
    pub fn corrupt(&self, path: &str) {
        let sha = self.sha_of(path);
        self.lock().corrupt.push(sha);
    }

    pub fn requests(&self) -> Vec<LoggedRequest> {
        self.lock().log.clone()
    }

    pub fn clear_requests(&self) {
        self.lock().log.clear();
    }

    /// Logged requests that transferred file bytes.
    pub fn downloads(&self) -> Vec<LoggedRequest> {
        self.requests()
            .into_iter()
            .filter(|r| r.is_download())
            .collect()
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Request {
    method: String,
    target: String,
    headers: HashMap<String, String>,
}

struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Arc<Vec<u8>>,
    /// Byte range of `body` to send.
    range: std::ops::Range<usize>,
    /// Close the connection after this many body bytes.
    cut_after: Option<usize>,
    corrupt: bool,
}

impl Response {
    fn new(status: u16) -> Self {
        Response {
            status,
            headers: Vec::new(),
            body: Arc::new(Vec::new()),
            range: 0..0,
            cut_after: None,
            corrupt: false,
        }
    }
    fn json(status: u16, v: serde_json::Value) -> Self {
        let body = v.to_string().into_bytes();
        let len = body.len();
        let mut r = Response::new(status);
        r.headers
            .push(("Content-Type".into(), "application/json".into()));
        r.body = Arc::new(body);
        r.range = 0..len;
        r
    }
    fn error(status: u16, code: &str, msg: &str) -> Self {
        let mut r = Response::json(status, serde_json::json!({ "error": msg }));
        r.headers.push(("X-Error-Code".into(), code.into()));
        r.headers.push(("X-Error-Message".into(), msg.into()));
        r
    }
    fn header(mut self, k: &str, v: impl Into<String>) -> Self {
        self.headers.push((k.to_string(), v.into()));
        self
    }
}

fn handle(mut conn: TcpStream, state: &Mutex<State>) {
    let Some(req) = read_request(&conn) else {
        return;
    };
    let resp = {
        let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
        let resp = route(&mut st, &req);
        st.log.push(LoggedRequest {
            method: req.method.clone(),
            target: req.target.clone(),
            range: req.headers.get("range").cloned(),
            authorization: req.headers.get("authorization").cloned(),
            status: resp.status,
        });
        resp
    };
    let _ = write_response(&mut conn, &req, resp);
}

fn read_request(conn: &TcpStream) -> Option<Request> {
    let mut reader = BufReader::new(conn.try_clone().ok()?);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let target = parts.next()?.to_string();
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).ok()? == 0 {
            break;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    Some(Request {
        method,
        target,
        headers,
    })
}

fn write_response(conn: &mut TcpStream, req: &Request, resp: Response) -> std::io::Result<()> {
    let reason = match resp.status {
        200 => "OK",
        206 => "Partial Content",
        302 => "Found",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        416 => "Range Not Satisfiable",
        _ => "Other",
    };
    let mut head = format!("HTTP/1.1 {} {}\r\n", resp.status, reason);
    let len = resp.range.end - resp.range.start;
    head.push_str(&format!("Content-Length: {len}\r\nConnection: close\r\n"));
    for (k, v) in &resp.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    conn.write_all(head.as_bytes())?;
    if req.method != "HEAD" {
        let mut body = resp.body[resp.range.clone()].to_vec();
        // Flip the byte in the middle of the whole file (if this range covers it).
        let mid = resp.body.len() / 2;
        if resp.corrupt && resp.range.contains(&mid) {
            body[mid - resp.range.start] ^= 0x5a;
        }
        match resp.cut_after {
            Some(n) if n < body.len() => {
                conn.write_all(&body[..n])?;
                conn.flush()?;
                let _ = conn.shutdown(Shutdown::Both);
                return Ok(());
            }
            _ => conn.write_all(&body)?,
        }
    }
    conn.flush()?;
    let _ = conn.shutdown(Shutdown::Write);
    Ok(())
}

fn split_query(target: &str) -> (&str, HashMap<String, String>) {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let q = query
        .split('&')
        .filter(|s| !s.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (k.to_string(), v.to_string())
        })
        .collect();
    (path, q)
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(hex) = std::str::from_utf8(&b[i + 1..i + 3])
            && let Ok(v) = u8::from_str_radix(hex, 16)
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

fn resolve_rev(st: &State, rev: &str) -> Option<String> {
    let rev = percent_decode(rev);
    if let Some(c) = st.branches.get(&rev) {
        return Some(c.clone());
    }
    st.commits.contains_key(&rev).then_some(rev)
}

fn route(st: &mut State, req: &Request) -> Response {
    let (path, query) = split_query(&req.target);
    let api_prefix = format!("/api/models/{}", st.repo);
    let resolve_prefix = format!("/{}/resolve/", st.repo);
    if let Some(rest) = path.strip_prefix(&api_prefix) {
        if req.method != "GET" {
            return Response::error(405, "MethodNotAllowed", "method not allowed");
        }
        if rest.is_empty() {
            return info(st, "main");
        }
        if let Some(rev) = rest.strip_prefix("/revision/") {
            return info(st, rev);
        }
        if let Some(rest) = rest.strip_prefix("/tree/") {
            let (rev, sub) = rest.split_once('/').unwrap_or((rest, ""));
            return tree(st, rev, &percent_decode(sub), &query, &req.target);
        }
        return Response::error(404, "NotFound", "no such endpoint");
    }
    if path.starts_with("/api/") {
        // Like the Hub: anonymous requests for unknown (or private) repos get 401.
        return Response::error(401, "RepoNotFound", "Repository not found");
    }
    if let Some(rest) = path.strip_prefix(&resolve_prefix) {
        let (rev, file) = rest.split_once('/').unwrap_or((rest, ""));
        return resolve(st, req, rev, &percent_decode(file));
    }
    if let Some(sha) = path.strip_prefix("/cdn/") {
        return cdn(st, req, sha);
    }
    Response::error(401, "RepoNotFound", "Repository not found")
}

fn info(st: &State, rev: &str) -> Response {
    let Some(commit) = resolve_rev(st, rev) else {
        return Response::error(404, "RevisionNotFound", &format!("Invalid rev id: {rev}"));
    };
    let files = &st.commits[&commit];
    let siblings: Vec<_> = files
        .keys()
        .map(|p| serde_json::json!({ "rfilename": p }))
        .collect();
    let gated = if st.gated_token.is_some() {
        serde_json::json!("manual")
    } else {
        serde_json::json!(false)
    };
    Response::json(
        200,
        serde_json::json!({
            "_id": "0123456789abcdef01234567",
            "id": st.repo,
            "modelId": st.repo,
            "sha": commit,
            "private": false,
            "gated": gated,
            "siblings": siblings,
        }),
    )
}

fn tree(
    st: &State,
    rev: &str,
    sub: &str,
    query: &HashMap<String, String>,
    target: &str,
) -> Response {
    let Some(commit) = resolve_rev(st, rev) else {
        return Response::error(404, "RevisionNotFound", &format!("Invalid rev id: {rev}"));
    };
    let files = &st.commits[&commit];
    let recursive = query
        .get("recursive")
        .is_some_and(|v| v == "true" || v == "1");
    let prefix = if sub.is_empty() {
        String::new()
    } else {
        format!("{}/", sub.trim_end_matches('/'))
    };
    let mut entries: BTreeMap<String, serde_json::Value> = BTreeMap::new();
    for (p, f) in files {
        let Some(rel) = p.strip_prefix(&prefix) else {
            continue;
        };
        // Directories along the way.
        let comps: Vec<&str> = rel.split('/').collect();
        for i in 1..comps.len() {
            if !recursive && i > 1 {
                break;
            }
            let dir = format!("{prefix}{}", comps[..i].join("/"));
            entries
                .entry(dir.clone())
                .or_insert_with(|| serde_json::json!({"type": "directory", "oid": "0".repeat(40), "size": 0, "path": dir}));
        }
        if !recursive && comps.len() > 1 {
            continue;
        }
        let mut e =
            serde_json::json!({"type": "file", "oid": f.git_oid, "size": f.bytes.len(), "path": p});
        if f.lfs {
            e["lfs"] =
                serde_json::json!({"oid": f.sha256, "size": f.bytes.len(), "pointerSize": 134});
            e["oid"] =
                serde_json::json!(git_blob_oid(format!("lfs pointer {}", f.sha256).as_bytes()));
        }
        entries.insert(p.clone(), e);
    }
    if entries.is_empty() && !prefix.is_empty() {
        return Response::error(
            404,
            "EntryNotFound",
            &format!("{sub} does not exist on {rev}"),
        );
    }
    let all: Vec<_> = entries.into_values().collect();
    let cursor: usize = query
        .get("cursor")
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let end = (cursor + st.tree_page_size).min(all.len());
    let page: Vec<_> = all.get(cursor..end).map(|s| s.to_vec()).unwrap_or_default();
    let mut resp = Response::json(200, serde_json::Value::Array(page));
    if end < all.len() {
        let (path, _) = target.split_once('?').unwrap_or((target, ""));
        let mut q: Vec<String> = query
            .iter()
            .filter(|(k, _)| *k != "cursor")
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        q.sort();
        q.push(format!("cursor={end}"));
        resp = resp.header("Link", format!("<{path}?{}>; rel=\"next\"", q.join("&")));
    }
    resp
}

fn authorized(st: &State, req: &Request) -> Result<(), Response> {
    let Some(token) = &st.gated_token else {
        return Ok(());
    };
    match req.headers.get("authorization") {
        None => Err(Response::error(
            401,
            "GatedRepo",
            "Access to model is restricted. You must have access to it and be authenticated to access it. Please log in.",
        )),
        Some(v) if v == &format!("Bearer {token}") => Ok(()),
        Some(_) => Err(Response::error(
            403,
            "GatedRepo",
            "Access to model is restricted and you are not in the authorized list.",
        )),
    }
}

fn resolve(st: &mut State, req: &Request, rev: &str, file: &str) -> Response {
    let Some(commit) = resolve_rev(st, rev) else {
        return Response::error(404, "RevisionNotFound", &format!("Invalid rev id: {rev}"));
    };
    if let Err(r) = authorized(st, req) {
        return r.header("X-Repo-Commit", commit);
    }
    let Some(f) = st.commits[&commit].get(file).cloned() else {
        return Response::error(
            404,
            "EntryNotFound",
            &format!("{file} does not exist on {rev}"),
        )
        .header("X-Repo-Commit", commit);
    };
    if f.lfs {
        // Absolute, like the Hub's redirects to its CDN (hf-hub follows relative ones itself).
        let host = req.headers.get("host").cloned().unwrap_or_default();
        let mut r = Response::new(302)
            .header("Location", format!("http://{host}/cdn/{}", f.sha256))
            .header("X-Repo-Commit", commit)
            .header("X-Linked-Etag", format!("\"{}\"", f.sha256))
            .header("X-Linked-Size", f.bytes.len().to_string())
            .header("ETag", format!("\"{}\"", f.git_oid));
        r.body = Arc::new(Vec::new());
        return r;
    }
    serve_bytes(st, req, &f).header("X-Repo-Commit", commit)
}

fn cdn(st: &mut State, req: &Request, sha: &str) -> Response {
    let found = st
        .commits
        .values()
        .flat_map(|c| c.values())
        .find(|f| f.lfs && f.sha256 == sha)
        .cloned();
    match found {
        Some(f) => serve_bytes(st, req, &f),
        None => Response::error(404, "NotFound", "no such object"),
    }
}

fn serve_bytes(st: &mut State, req: &Request, f: &HubFileData) -> Response {
    let total = f.bytes.len();
    let mut r = Response::new(200)
        .header(
            "ETag",
            format!("\"{}\"", if f.lfs { &f.sha256 } else { &f.git_oid }),
        )
        .header("Accept-Ranges", "bytes");
    r.body = f.bytes.clone();
    r.range = 0..total;
    if let Some(range) = req.headers.get("range") {
        match parse_range(range, total) {
            Some(rg) => {
                r.status = 206;
                r = r.header(
                    "Content-Range",
                    format!("bytes {}-{}/{}", rg.start, rg.end - 1, total),
                );
                r.range = rg;
            }
            None => {
                return Response::error(416, "RangeNotSatisfiable", "bad range")
                    .header("Content-Range", format!("bytes */{total}"));
            }
        }
    }
    if req.method == "GET" {
        r.corrupt = st.corrupt.contains(&f.sha256);
        r.cut_after = st
            .cut_once
            .remove(&f.sha256)
            .or_else(|| st.cut_always.get(&f.sha256).copied());
    }
    r
}

fn parse_range(h: &str, total: usize) -> Option<std::ops::Range<usize>> {
    let spec = h.strip_prefix("bytes=")?;
    let (a, b) = spec.split_once('-')?;
    let start: usize = a.trim().parse().ok()?;
    let end: usize = if b.trim().is_empty() {
        total
    } else {
        b.trim().parse::<usize>().ok()?.checked_add(1)?.min(total)
    };
    (start < end).then_some(start..end)
}
