//! Python sets resolved without the network when they can (issue 8, item 1), and index
//! credentials and links from hostile index pages (issue 9, items 8 and 14).
//!
//! Wheels here are only resolved and downloaded (never installed), so any bytes under a wheel
//! filename do.

use std::path::{Path, PathBuf};

use mlimg::sources::python::{self, DepsSetInput, Libc, PythonTarget, ResolvedWheel};
use sha2::{Digest, Sha256};

use crate::common::hostile::{Req, Resp, Server, closed_port_url};

const PURE: &str = "purepkg-1.0-py3-none-any.whl";
const FAST: &str = "fastpkg-2.0-py3-none-any.whl";

fn sha(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

fn bytes_of(name: &str) -> Vec<u8> {
    format!("pretend wheel {name}").into_bytes()
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

struct Dir {
    tmp: tempfile::TempDir,
}

impl Dir {
    fn new() -> Dir {
        Dir {
            tmp: tempfile::tempdir().unwrap(),
        }
    }
    fn path(&self) -> &Path {
        self.tmp.path()
    }
    /// A find-links folder with these wheels.
    fn find_links(&self, names: &[&str]) -> PathBuf {
        let d = self.path().join("wheels");
        std::fs::create_dir_all(&d).unwrap();
        for n in names {
            std::fs::write(d.join(n), bytes_of(n)).unwrap();
        }
        d
    }
    fn requirements(&self, text: &str) -> PathBuf {
        let p = self.path().join("requirements.txt");
        std::fs::write(&p, text).unwrap();
        p
    }
    fn cache(&self) -> PathBuf {
        self.path().join("cache")
    }
}

fn pins(names: &[(&str, &str)]) -> String {
    names
        .iter()
        .map(|(pin, file)| format!("{pin} --hash=sha256:{}\n", sha(&bytes_of(file))))
        .collect()
}

fn input(req: PathBuf, index_urls: Vec<String>, find_links: Vec<PathBuf>) -> DepsSetInput {
    DepsSetInput {
        name: "app".into(),
        requirements: Some(req),
        pylock: None,
        index_urls,
        find_links,
    }
}

/// A PEP 503 index serving PURE and FAST (pages and files), counting requests.
fn index_server() -> Server {
    Server::start(|req: &Req| serve_index(req, None))
}

fn serve_index(req: &Req, other_host_for_fast: Option<&str>) -> Resp {
    let page = |file: &str, href: String| {
        Resp::ok(format!(
            "<html><body><a href=\"{href}#sha256={}\">{file}</a></body></html>",
            sha(&bytes_of(file))
        ))
        .header("Content-Type", "text/html")
    };
    match req.path.as_str() {
        "/simple/purepkg/" => page(PURE, format!("../../files/{PURE}")),
        "/simple/fastpkg/" => match other_host_for_fast {
            Some(h) => page(FAST, format!("{h}/files/{FAST}")),
            None => page(FAST, format!("../../files/{FAST}")),
        },
        p if p == format!("/files/{PURE}") => Resp::ok(bytes_of(PURE)),
        p if p == format!("/files/{FAST}") => Resp::ok(bytes_of(FAST)),
        _ => Resp::status(404),
    }
}

// ---------------------------------------------------------------- offline (issue 8)

/// A set its find-links folder satisfies asks no index: one index is a closed port, the
/// other counts requests and gets none.
#[test]
fn a_set_satisfied_by_find_links_asks_no_index() {
    let d = Dir::new();
    let links = d.find_links(&[PURE, FAST]);
    let req = d.requirements(&pins(&[("purepkg==1.0", PURE), ("fastpkg==2.0", FAST)]));
    let counting = index_server();
    let indexes = vec![
        format!("{}/simple", closed_port_url()),
        format!("{}/simple", counting.url()),
    ];
    let r = python::resolve_with(
        &input(req, indexes, vec![links.clone()]),
        &target(),
        Some(&d.cache()),
    )
    .expect("resolves from the find_links folder alone");
    assert_eq!(r.wheels.len(), 2);
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    assert!(
        r.wheels
            .iter()
            .all(|w| w.url_or_path.starts_with(&*links.to_string_lossy()))
    );
    assert!(
        counting.requests().is_empty(),
        "an index was asked: {}",
        counting.all_text()
    );
    let paths = python::fetch(&r.wheels, &d.cache()).unwrap();
    assert!(paths.iter().all(|p| p.is_file()));
}

/// After one online resolution and fetch, the wheel cache satisfies the set with the index
/// down, and the lock still gets the wheels' real URLs.
#[test]
fn the_wheel_cache_satisfies_a_set_with_the_index_down() {
    let d = Dir::new();
    let req = d.requirements(&pins(&[("purepkg==1.0", PURE), ("fastpkg==2.0", FAST)]));
    let server = index_server();
    let index = format!("{}/simple", server.url());
    let online = python::resolve_with(
        &input(req.clone(), vec![index.clone()], vec![]),
        &target(),
        Some(&d.cache()),
    )
    .unwrap();
    python::fetch(&online.wheels, &d.cache()).unwrap();
    let asked = server.requests().len();
    assert!(asked >= 4, "{}", server.all_text());
    drop(server); // the index is gone: its port refuses connections

    let offline = python::resolve_with(
        &input(req.clone(), vec![index.clone()], vec![]),
        &target(),
        Some(&d.cache()),
    )
    .expect("resolves from the wheel cache");
    assert!(offline.warnings.is_empty(), "{:?}", offline.warnings);
    assert_eq!(offline.wheels, online.wheels);
    assert!(
        offline.wheels[0]
            .url_or_path
            .starts_with(&index[..index.len() - "/simple".len()]),
        "{:?}",
        offline.wheels
    );
    let host = index
        .trim_start_matches("http://")
        .trim_end_matches("/simple");
    assert!(
        std::net::TcpStream::connect(host).is_err(),
        "the index is really down"
    );

    // A cache entry whose origin was never recorded is still used, with a warning that says so.
    let fast: &ResolvedWheel = online.wheels.iter().find(|w| w.name == "fastpkg").unwrap();
    let cached = d.cache().join("wheels").join(&fast.sha256).join(FAST);
    std::fs::remove_file(cached.with_file_name(format!("{FAST}.url"))).unwrap();
    let r = python::resolve_with(
        &input(req, vec![index], vec![]),
        &target(),
        Some(&d.cache()),
    )
    .unwrap();
    assert_eq!(r.warnings.len(), 1, "{:?}", r.warnings);
    assert!(
        r.warnings[0].contains("does not record where it was downloaded from"),
        "{:?}",
        r.warnings
    );
    let w = r.wheels.iter().find(|w| w.name == "fastpkg").unwrap();
    assert_eq!(w.url_or_path, cached.to_string_lossy());
}

/// `--no-index` in the requirements file: no index is asked, and a pin the folders do not
/// satisfy is an error that says why (and where the switch is).
#[test]
fn no_index_in_the_requirements_file_is_honoured() {
    let d = Dir::new();
    let links = d.find_links(&[PURE]);
    let counting = index_server();
    let indexes = vec![format!("{}/simple", counting.url())];
    let ok = d.requirements(&format!("--no-index\n{}", pins(&[("purepkg==1.0", PURE)])));
    python::resolve_with(
        &input(ok, indexes.clone(), vec![links.clone()]),
        &target(),
        None,
    )
    .expect("find_links satisfies it");
    let req = d.requirements(&format!(
        "--no-index\n{}",
        pins(&[("purepkg==1.0", PURE), ("fastpkg==2.0", FAST)])
    ));
    let err = python::resolve_with(&input(req, indexes, vec![links.clone()]), &target(), None)
        .expect_err("fastpkg is on no folder");
    let msg = err.to_string();
    assert!(msg.contains("`fastpkg`"), "{msg}");
    assert!(
        msg.contains("no index was consulted because of --no-index (")
            && msg.contains("requirements.txt:1)"),
        "{msg}"
    );
    assert!(msg.contains(&*links.to_string_lossy()), "{msg}");
    assert!(counting.requests().is_empty(), "{}", counting.all_text());
}

/// Errors say where a file came from.
#[test]
fn errors_name_the_folder_or_index_a_file_came_from() {
    let d = Dir::new();
    let links = d.find_links(&[PURE]);
    let bad_hash = format!("purepkg==1.0 --hash=sha256:{}\n", "0".repeat(64));
    let err = python::resolve_with(
        &input(d.requirements(&bad_hash), vec![], vec![links.clone()]),
        &target(),
        None,
    )
    .expect_err("hash not pinned");
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("the find_links folder {}", links.display())),
        "{msg}"
    );
    let server = index_server();
    let index = format!("{}/simple", server.url());
    let err = python::resolve_with(
        &input(
            d.requirements(&format!("purepkg==9.9 --hash=sha256:{}\n", "0".repeat(64))),
            vec![index.clone()],
            vec![],
        ),
        &target(),
        None,
    )
    .expect_err("no such version");
    let msg = err.to_string();
    assert!(msg.contains(&format!("the index {index}")), "{msg}");
}

// ---------------------------------------------------------------- hostile indexes (issue 9)

const USER: &str = "alice";
const TOKEN: &str = "tok-s3cret-42";

fn basic(user: &str, pw: &str) -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}"))
    )
}

/// (item 8) A private index's credentials, given in its URL: sent for its pages and for the
/// wheel files they link on the same origin, never to another origin, and printed nowhere
/// (the resolved URLs, error messages).
#[test]
fn index_credentials_go_to_the_index_origin_only_and_are_never_printed() {
    let attacker = Server::start(|req: &Req| serve_index(req, None));
    let other = attacker.url();
    let expected = basic(USER, TOKEN);
    let index = Server::start(move |req: &Req| {
        if req.header("authorization") != Some(expected.as_str()) {
            return Resp::status(401).header("WWW-Authenticate", "Basic realm=\"idx\"");
        }
        serve_index(req, Some(&other))
    });
    let url = format!("http://{USER}:{TOKEN}@{}/simple", index.host());
    let d = Dir::new();
    let req = d.requirements(&pins(&[("purepkg==1.0", PURE), ("fastpkg==2.0", FAST)]));
    let wheels = python::resolve(&input(req, vec![url.clone()], vec![]), &target())
        .expect("the index answers with the credentials");
    let shown = format!("{wheels:?}");
    assert!(!shown.contains(TOKEN), "{shown}");
    let pure: Vec<ResolvedWheel> = wheels
        .iter()
        .filter(|w| w.name == "purepkg")
        .cloned()
        .collect();
    let fast: Vec<ResolvedWheel> = wheels
        .iter()
        .filter(|w| w.name == "fastpkg")
        .cloned()
        .collect();
    assert!(fast[0].url_or_path.starts_with(&attacker.url()), "{fast:?}");
    // The wheel on the index's origin downloads with the credentials …
    python::fetch(&pure, &d.cache()).expect("the private wheel downloads");
    assert!(
        index
            .requests()
            .iter()
            .any(|r| r.path == format!("/files/{PURE}") && r.header("authorization").is_some())
    );
    // … the one on another origin without them.
    python::fetch(&fast, &d.cache()).unwrap();
    assert!(!attacker.requests().is_empty());
    assert!(
        attacker
            .requests()
            .iter()
            .all(|r| r.header("authorization").is_none()),
        "{}",
        attacker.all_text()
    );
    // Errors name the index without its credentials.
    let req = d.requirements(&pins(&[("nosuchpkg==1.0", PURE)]));
    let err = python::resolve(&input(req, vec![url], vec![]), &target()).expect_err("unknown");
    let msg = err.to_string();
    assert!(msg.contains(&index.host()), "{msg}");
    assert!(!msg.contains(TOKEN), "{msg}");
}

/// (item 14) A remote page cannot point at local files (`file:///dev/zero` would be read
/// without end), and a download is cut at the size the page states.
#[test]
fn remote_pages_cannot_link_local_files_and_downloads_stop_at_the_stated_size() {
    let h = sha(&bytes_of(PURE));
    let index = Server::start(move |req: &Req| {
        match req.path.as_str() {
        "/simple/purepkg/" => Resp::ok(format!(
            "<a href=\"file:///dev/zero#sha256={h}\">{PURE}</a>\n<a href=\"file:///etc/passwd#sha256={h}\">{PURE}</a>"
        ))
        .header("Content-Type", "text/html"),
        "/simple/fastpkg/" => Resp::ok(format!(
            r#"{{"meta":{{"api-version":"1.1"}},"name":"fastpkg","files":[{{"filename":"{FAST}","url":"/files/{FAST}","hashes":{{"sha256":"{}"}},"size":32}}]}}"#,
            sha(&bytes_of(FAST))
        ))
        .header("Content-Type", "application/vnd.pypi.simple.v1+json"),
        p if p == format!("/files/{FAST}") => Resp::Endless(16 << 20),
        _ => Resp::status(404),
    }
    });
    let d = Dir::new();
    let url = format!("{}/simple", index.url());
    let err = python::resolve(
        &input(
            d.requirements(&pins(&[("purepkg==1.0", PURE)])),
            vec![url.clone()],
            vec![],
        ),
        &target(),
    )
    .expect_err("the local links are ignored");
    assert!(
        err.to_string().contains("has no files for version 1.0"),
        "{err}"
    );
    let fast = python::resolve(
        &input(
            d.requirements(&pins(&[("fastpkg==2.0", FAST)])),
            vec![url],
            vec![],
        ),
        &target(),
    )
    .unwrap();
    assert_eq!(fast[0].size, Some(32));
    let err = python::fetch(&fast, &d.cache()).expect_err("more bytes than stated");
    assert!(
        err.to_string().contains("larger than the 32 bytes"),
        "{err}"
    );
}
