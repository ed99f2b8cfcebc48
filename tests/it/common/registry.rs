//! `TestRegistry`: a real CNCF distribution registry (Debian `docker-registry`) on a free
//! loopback port with temp storage; killed on drop.
//!
//! ```ignore
//! let reg = TestRegistry::start();                        // anonymous
//! let reg = TestRegistry::start_htpasswd("u", "p");       // Basic auth
//! let reg = TestRegistry::start_token("u", "p");          // Bearer: silly auth + token endpoint
//!                                                         // (Basic u:p, or POST refresh_token=p)
//! reg.host()              // "127.0.0.1:PORT"
//! reg.requests()          // access-log request lines, e.g. "PUT /v2/acme/app/blobs/uploads/…"
//! reg.blob_path(digest)   // the blob's data file in storage (to corrupt it in tests)
//! reg.token_scopes()      // scopes the token endpoint was asked for
//! ```

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;

pub const REGISTRY_BIN: &str = "/usr/bin/docker-registry";

pub struct TestRegistry {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
    token: Option<TokenServer>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral port")
}

impl TestRegistry {
    pub fn start() -> TestRegistry {
        Self::start_with(|_| String::new(), None)
    }

    /// Basic auth against an htpasswd file with one bcrypt entry.
    pub fn start_htpasswd(user: &str, pass: &str) -> TestRegistry {
        let out = Command::new("htpasswd")
            .args(["-Bbn", user, pass])
            .output()
            .expect("run htpasswd (apache2-utils)");
        assert!(out.status.success(), "htpasswd failed");
        Self::start_with(
            move |dir| {
                let path = dir.join("htpasswd");
                std::fs::write(&path, &out.stdout).expect("write htpasswd");
                format!(
                    "auth:\n  htpasswd:\n    realm: test-realm\n    path: {}\n",
                    path.display()
                )
            },
            None,
        )
    }

    /// Bearer token flow: the registry challenges with `Bearer realm=<our endpoint>`
    /// (`auth: silly` accepts any token); the endpoint issues tokens only for these
    /// Basic credentials and records the scopes asked for.
    pub fn start_token(user: &str, pass: &str) -> TestRegistry {
        let ts = TokenServer::start(user, pass);
        let realm = format!("http://127.0.0.1:{}/token", ts.port);
        Self::start_with(
            move |_| format!("auth:\n  silly:\n    realm: {realm}\n    service: test-registry\n"),
            Some(ts),
        )
    }

    fn start_with(auth: impl Fn(&Path) -> String, token: Option<TokenServer>) -> TestRegistry {
        let mut token = token;
        for _ in 0..5 {
            let dir = tempfile::tempdir().expect("tempdir");
            let port = free_port();
            let storage = dir.path().join("storage");
            let cfg = format!(
                "version: 0.1\n\
                 log:\n  level: info\n  accesslog:\n    disabled: false\n\
                 storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n  \
                 maintenance:\n    uploadpurging:\n      enabled: false\n\
                 http:\n  addr: 127.0.0.1:{port}\n  secret: mlimg-test-secret\n{}",
                storage.display(),
                auth(dir.path())
            );
            let cfg_path = dir.path().join("config.yml");
            std::fs::write(&cfg_path, cfg).expect("write registry config");
            let access = std::fs::File::create(dir.path().join("access.log")).expect("log");
            let errlog = std::fs::File::create(dir.path().join("registry.log")).expect("log");
            let mut child = Command::new(REGISTRY_BIN)
                .arg("serve")
                .arg(&cfg_path)
                .stdin(Stdio::null())
                .stdout(access)
                .stderr(errlog)
                .spawn()
                .expect("start docker-registry");
            let deadline = Instant::now() + Duration::from_secs(10);
            let mut up = false;
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break; // exited: port race or bad config; retry
                }
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    up = true;
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            if up {
                return TestRegistry {
                    child,
                    port,
                    dir,
                    token: token.take(),
                };
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("docker-registry did not start");
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `host/repo` parsed as a reference.
    pub fn reference(&self, repo: &str) -> mlimg::registry::Reference {
        mlimg::registry::Reference::parse(&format!("{}/{repo}", self.host())).expect("reference")
    }

    /// Request lines from the access log ("METHOD /path HTTP/1.1" + status), in order.
    pub fn requests(&self) -> Vec<String> {
        let text = std::fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default();
        text.lines()
            .filter_map(|l| {
                // combined log format: ... "PUT /v2/x HTTP/1.1" 201 0 "" "ua"
                let start = l.find('"')?;
                let rest = &l[start + 1..];
                let end = rest.find('"')?;
                let status = rest[end + 1..].split_whitespace().next().unwrap_or("");
                Some(format!("{} {status}", &rest[..end]))
            })
            .collect()
    }

    /// How many times a blob was uploaded (`PUT …/blobs/uploads/…?digest=<digest>`, any
    /// repository, any status): a mount or a skipped blob is no upload.
    pub fn uploads_of(&self, digest: &str) -> usize {
        let hex = digest.trim_start_matches("sha256:");
        self.requests()
            .iter()
            .filter(|r| r.starts_with("PUT ") && r.contains("/blobs/uploads/"))
            .filter(|r| {
                r.contains(&format!("digest=sha256%3A{hex}"))
                    || r.contains(&format!("digest=sha256:{hex}"))
            })
            .count()
    }

    /// The registry's own log (stderr), for debugging failures.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    pub fn storage(&self) -> PathBuf {
        self.dir.path().join("storage")
    }

    /// The data file of a blob in filesystem storage.
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
        self.storage()
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    pub fn token_scopes(&self) -> Vec<String> {
        self.token
            .as_ref()
            .map(|t| t.scopes.lock().unwrap().clone())
            .unwrap_or_default()
    }

    pub fn token_requests(&self) -> usize {
        self.token
            .as_ref()
            .map(|t| *t.issued.lock().unwrap())
            .unwrap_or(0)
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A tiny token endpoint: `GET /token?service=..&scope=..` with Basic credentials.
pub struct TokenServer {
    port: u16,
    stop: Arc<AtomicBool>,
    scopes: Arc<Mutex<Vec<String>>>,
    issued: Arc<Mutex<usize>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TokenServer {
    fn start(user: &str, pass: &str) -> TokenServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind token server");
        let port = listener.local_addr().expect("addr").port();
        let stop = Arc::new(AtomicBool::new(false));
        let scopes = Arc::new(Mutex::new(Vec::new()));
        let issued = Arc::new(Mutex::new(0usize));
        let expected = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
        );
        let (st, sc, is) = (stop.clone(), scopes.clone(), issued.clone());
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if st.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let _ = handle_token(conn, &expected, &sc, &is);
            }
        });
        TokenServer {
            port,
            stop,
            scopes,
            issued,
            thread: Some(thread),
        }
    }
}

fn handle_token(
    mut conn: TcpStream,
    expected: &str,
    scopes: &Mutex<Vec<String>>,
    issued: &Mutex<usize>,
) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let target = line.split_whitespace().nth(1).unwrap_or("").to_string();
    let mut auth = String::new();
    let mut content_length = 0usize;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h == "\r\n" {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.eq_ignore_ascii_case("authorization") {
                auth = v.trim().to_string();
            }
            if k.eq_ignore_ascii_case("content-length") {
                content_length = v.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0; content_length];
    reader.read_exact(&mut body)?;
    let url = reqwest::Url::parse(&format!("http://x{target}")).expect("token url");
    for (k, v) in url.query_pairs() {
        if k == "scope" {
            scopes.lock().unwrap().push(v.into_owned());
        }
    }
    // OAuth2 refresh flow (identity tokens): the password doubles as the refresh token.
    let form = reqwest::Url::parse(&format!("http://x/?{}", String::from_utf8_lossy(&body)))
        .expect("form body");
    let refresh_ok = line.starts_with("POST ")
        && form
            .query_pairs()
            .any(|(k, v)| k == "grant_type" && v == "refresh_token")
        && form.query_pairs().any(|(k, v)| {
            k == "refresh_token" && expected_refresh(expected) == Some(v.into_owned())
        });
    if line.starts_with("POST ") {
        for (k, v) in form.query_pairs() {
            if k == "scope" {
                scopes
                    .lock()
                    .unwrap()
                    .extend(v.split(' ').map(String::from));
            }
        }
    }
    let (status, json) = if auth == expected || refresh_ok {
        *issued.lock().unwrap() += 1;
        let n = *issued.lock().unwrap();
        (
            "200 OK",
            format!(r#"{{"token":"test-token-{n}","expires_in":300}}"#),
        )
    } else {
        (
            "401 Unauthorized",
            r#"{"details":"bad credentials"}"#.to_string(),
        )
    };
    write!(
        conn,
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{json}",
        json.len()
    )?;
    conn.flush()
}

/// The password inside an expected `Basic …` header.
fn expected_refresh(expected_basic: &str) -> Option<String> {
    let b64 = expected_basic.strip_prefix("Basic ")?;
    let raw = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    let s = String::from_utf8(raw).ok()?;
    s.split_once(':').map(|(_, p)| p.to_string())
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
