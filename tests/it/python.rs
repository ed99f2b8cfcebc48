//! Python dependency sets: resolve against a local simple index (PEP 503 HTML and PEP 691
//! JSON), fetch into the wheel cache, install into entries; compare with a real `pip install`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use mlimg::plan::{Content, Entry};
use mlimg::sources::python::{self, DepsSetInput, Libc, PythonError, PythonTarget, ResolvedWheel};
use sha2::{Digest, Sha256};
use zip::write::SimpleFileOptions;

use crate::common::pyindex;

// ---------------------------------------------------------------- wheels

fn sha256_hex(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

fn record_hash(b: &[u8]) -> String {
    format!(
        "sha256={}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(b))
    )
}

/// A file inside a test wheel: path, bytes, unix mode.
type WFile = (String, Vec<u8>, u32);

fn f(path: &str, data: &str, mode: u32) -> WFile {
    (path.to_string(), data.as_bytes().to_vec(), mode)
}

/// Writes a wheel with METADATA, WHEEL and a correct RECORD; returns (path, sha256 hex).
fn build_wheel(
    dir: &Path,
    dist: &str,
    version: &str,
    tag: &str,
    purelib: bool,
    files: &[WFile],
) -> (PathBuf, String) {
    let norm = dist.to_lowercase().replace('-', "_");
    let filename = format!("{norm}-{version}-{tag}.whl");
    let info = format!("{norm}-{version}.dist-info");
    let mut all: Vec<WFile> = files.to_vec();
    all.push(f(
        &format!("{info}/METADATA"),
        &format!("Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n\nA test package.\n"),
        0o644,
    ));
    all.push(f(
        &format!("{info}/WHEEL"),
        &format!(
            "Wheel-Version: 1.0\nGenerator: mlimg-test\nRoot-Is-Purelib: {purelib}\nTag: {tag}\n"
        ),
        0o644,
    ));
    let mut record = String::new();
    for (p, d, _) in &all {
        record.push_str(&format!("{p},{},{}\n", record_hash(d), d.len()));
    }
    record.push_str(&format!("{info}/RECORD,,\n"));
    all.push((format!("{info}/RECORD"), record.into_bytes(), 0o644));

    let path = dir.join(&filename);
    let file = std::fs::File::create(&path).unwrap();
    let mut zw = zip::ZipWriter::new(file);
    for (p, d, mode) in &all {
        let opts = SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .unix_permissions(*mode);
        zw.start_file(p.as_str(), opts).unwrap();
        zw.write_all(d).unwrap();
    }
    zw.finish().unwrap();
    let sha = sha256_hex(&std::fs::read(&path).unwrap());
    (path, sha)
}

// ---------------------------------------------------------------- HTTP server

type Routes = Arc<Mutex<HashMap<String, (String, Vec<u8>)>>>;

/// A tiny HTTP/1.1 server on loopback: GET of a registered path, else 404. Records hits.
struct Server {
    base: String,
    routes: Routes,
    hits: Arc<Mutex<Vec<String>>>,
    /// path -> how many more requests answer 503
    flaky: Arc<Mutex<HashMap<String, usize>>>,
}

impl Server {
    fn start() -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let routes: Routes = Arc::default();
        let hits: Arc<Mutex<Vec<String>>> = Arc::default();
        let flaky: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
        let (r, h, fl) = (routes.clone(), hits.clone(), flaky.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let (r, h, fl) = (r.clone(), h.clone(), fl.clone());
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(conn.try_clone().unwrap());
                    let mut first = String::new();
                    if reader.read_line(&mut first).is_err() {
                        return;
                    }
                    loop {
                        let mut l = String::new();
                        if reader.read_line(&mut l).unwrap_or(0) == 0 || l == "\r\n" {
                            break;
                        }
                    }
                    let path = first.split_whitespace().nth(1).unwrap_or("").to_string();
                    h.lock().unwrap().push(path.clone());
                    let fail = match fl.lock().unwrap().get_mut(&path) {
                        Some(n) if *n > 0 => {
                            *n -= 1;
                            true
                        }
                        _ => false,
                    };
                    let resp = r.lock().unwrap().get(&path).cloned();
                    let (status, ctype, body) = match resp {
                        _ if fail => (
                            "503 Service Unavailable",
                            "text/plain".into(),
                            b"busy".to_vec(),
                        ),
                        Some((c, b)) => ("200 OK", c, b),
                        None => ("404 Not Found", "text/plain".into(), b"not found".to_vec()),
                    };
                    let head = format!(
                        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = conn.write_all(head.as_bytes());
                    let _ = conn.write_all(&body);
                });
            }
        });
        Server {
            base,
            routes,
            hits,
            flaky,
        }
    }

    fn add(&self, path: &str, ctype: &str, body: Vec<u8>) {
        self.routes
            .lock()
            .unwrap()
            .insert(path.to_string(), (ctype.to_string(), body));
    }

    /// The next `n` requests for `path` get a 503.
    fn flaky(&self, path: &str, n: usize) {
        self.flaky.lock().unwrap().insert(path.to_string(), n);
    }

    fn hits(&self, path: &str) -> usize {
        self.hits
            .lock()
            .unwrap()
            .iter()
            .filter(|p| *p == path)
            .count()
    }
}

// ---------------------------------------------------------------- fixture

struct Fixture {
    dir: tempfile::TempDir,
    server: Server,
    /// filename -> sha256 hex
    sha: BTreeMap<String, String>,
}

const PURE: &str = "purepkg-1.0-py3-none-any.whl";
const FAST_X86: &str = "fastpkg-2.0-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl";
const FAST_ARM: &str = "fastpkg-2.0-cp311-cp311-manylinux_2_17_aarch64.manylinux2014_aarch64.whl";
const FAST_ANY: &str = "fastpkg-2.0-py3-none-any.whl";
const ABI_X86: &str = "abipkg-3.0-cp38-abi3-manylinux_2_28_x86_64.whl";
const ABI_ARM: &str = "abipkg-3.0-cp38-abi3-manylinux_2_28_aarch64.whl";
const SDIST: &str = "srconly-0.1.tar.gz";

const RUN_IT: &str = "#!python\n# -*- a script -*-\nimport purepkg\nprint(purepkg.VERSION)\n";
const ENTRY_POINTS: &str = "[console_scripts]\npurepkg-cli = purepkg.cli:main\n\n[gui_scripts]\npurepkg-gui = purepkg.gui:App.run [gui]\n\n[purepkg.plugins]\nignored = purepkg:x\n";

fn purepkg_files() -> Vec<WFile> {
    vec![
        f("purepkg/__init__.py", "VERSION = '1.0'\n", 0o644),
        f("purepkg/cli.py", "def main():\n    return 0\n", 0o644),
        f(
            "purepkg/gui.py",
            "class App:\n    @staticmethod\n    def run():\n        return 0\n",
            0o644,
        ),
        f(
            "purepkg-1.0.dist-info/entry_points.txt",
            ENTRY_POINTS,
            0o644,
        ),
        f("purepkg-1.0.data/scripts/run-it", RUN_IT, 0o755),
        // A setuptools wrapper for an entry point: pip drops it for its own launcher.
        f(
            "purepkg-1.0.data/scripts/purepkg-cli",
            "#!python\nold wrapper\n",
            0o755,
        ),
        f(
            "purepkg-1.0.data/scripts/plain.sh",
            "#!/bin/sh\necho plain\n",
            0o755,
        ),
        f(
            "purepkg-1.0.data/headers/purepkg.h",
            "#define PUREPKG 1\n",
            0o644,
        ),
        f(
            "purepkg-1.0.data/data/share/purepkg/notes.txt",
            "notes\n",
            0o644,
        ),
        f("purepkg-1.0.data/purelib/extra_mod.py", "X = 1\n", 0o644),
    ]
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let files = dir.path().join("files");
    std::fs::create_dir(&files).unwrap();
    let mut built = Vec::new();
    built.push(build_wheel(
        &files,
        "PurePkg",
        "1.0",
        "py3-none-any",
        true,
        &purepkg_files(),
    ));
    for (tag, arch) in [
        (
            "cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64",
            "x86_64",
        ),
        (
            "cp311-cp311-manylinux_2_17_aarch64.manylinux2014_aarch64",
            "aarch64",
        ),
        ("py3-none-any", "any"),
    ] {
        built.push(build_wheel(
            &files,
            "fastpkg",
            "2.0",
            tag,
            false,
            &[
                f("fastpkg/__init__.py", "", 0o644),
                f("fastpkg/_speed.so", &format!("ELF for {arch}"), 0o755),
            ],
        ));
    }
    for arch in ["x86_64", "aarch64"] {
        built.push(build_wheel(
            &files,
            "abipkg",
            "3.0",
            &format!("cp38-abi3-manylinux_2_28_{arch}"),
            false,
            &[f("abipkg/_ext.abi3.so", &format!("abi3 {arch}"), 0o755)],
        ));
    }
    let sdist = files.join(SDIST);
    std::fs::write(&sdist, b"not really a tarball").unwrap();
    built.push((sdist.clone(), sha256_hex(b"not really a tarball")));

    let server = Server::start();
    let mut sha = BTreeMap::new();
    let mut pages: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (path, h) in &built {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        server.add(
            &format!("/files/{name}"),
            "application/octet-stream",
            std::fs::read(path).unwrap(),
        );
        let project = name.split('-').next().unwrap().to_string();
        pages.entry(project).or_default().push(format!(
            r#"<a href="../../files/{name}#sha256={h}">{name}</a><br/>"#
        ));
        sha.insert(name, h.clone());
    }
    for (project, links) in &pages {
        let html = format!(
            "<!DOCTYPE html>\n<html><body><h1>Links for {project}</h1>\n{}\n</body></html>\n",
            links.join("\n")
        );
        server.add(
            &format!("/simple/{project}/"),
            "text/html",
            html.into_bytes(),
        );
    }
    Fixture { dir, server, sha }
}

impl Fixture {
    fn h(&self, filename: &str) -> &str {
        &self.sha[filename]
    }

    fn index(&self) -> String {
        format!("{}/simple", self.server.base)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    fn input(&self, req: &Path) -> DepsSetInput {
        DepsSetInput {
            name: "framework".into(),
            requirements: Some(req.to_path_buf()),
            pylock: None,
            index_urls: vec![self.index()],
            find_links: vec![],
        }
    }

    fn good_requirements(&self) -> PathBuf {
        let text = format!(
            "# fully pinned\n\
             PurePkg==1.0 --hash=sha256:{}\n\
             fastpkg==2.0 \\\n    --hash=sha256:{} \\\n    --hash=sha256:{} \\\n    --hash=sha256:{}\n\
             abipkg==3.0 ; python_version >= \"3.8\" and sys_platform == \"linux\" --hash=sha256:{} --hash=sha256:{}\n\
             winonly==1.0 ; sys_platform == \"win32\" --hash=sha256:{}\n",
            self.h(PURE),
            self.h(FAST_X86),
            self.h(FAST_ARM),
            self.h(FAST_ANY),
            self.h(ABI_X86),
            self.h(ABI_ARM),
            "0".repeat(64),
        );
        self.write("requirements.txt", &text)
    }
}

fn target(arch: &str, libc: Libc) -> PythonTarget {
    PythonTarget {
        version: (3, 11),
        prefix: "/usr/local".into(),
        libc,
        arch: arch.into(),
        site_packages_dir: None,
    }
}

fn by_name(ws: &[ResolvedWheel]) -> BTreeMap<&str, &ResolvedWheel> {
    ws.iter().map(|w| (w.name.as_str(), w)).collect()
}

// ---------------------------------------------------------------- resolution

#[test]
fn picks_the_best_wheel_per_target() {
    let fx = fixture();
    let req = fx.good_requirements();
    let input = fx.input(&req);

    let arm = python::resolve(&input, &target("aarch64", Libc::Glibc(2, 36))).unwrap();
    let m = by_name(&arm);
    assert_eq!(
        m.keys().copied().collect::<Vec<_>>(),
        ["abipkg", "fastpkg", "purepkg"]
    );
    assert_eq!(m["fastpkg"].filename, FAST_ARM);
    assert_eq!(m["fastpkg"].sha256, fx.h(FAST_ARM));
    assert_eq!(
        m["fastpkg"].url_or_path,
        format!("{}/files/{FAST_ARM}", fx.server.base)
    );
    assert_eq!(m["abipkg"].filename, ABI_ARM);
    assert_eq!(m["purepkg"].filename, PURE);
    assert_eq!(m["purepkg"].version, "1.0");
    // The marker kept `winonly` (not on the index) from being looked up at all.
    assert_eq!(fx.server.hits("/simple/winonly/"), 0);

    let x86 = python::resolve(&input, &target("x86_64", Libc::Glibc(2, 36))).unwrap();
    let m = by_name(&x86);
    assert_eq!(m["fastpkg"].filename, FAST_X86);
    assert_eq!(m["abipkg"].filename, ABI_X86);

    // glibc too old for abi3's manylinux_2_28 → error lists what exists.
    let e = python::resolve(&input, &target("x86_64", Libc::Glibc(2, 17))).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, PythonError::NoCompatibleWheel { .. }), "{msg}");
    assert!(msg.contains("requirements.txt:7"), "{msg}");
    assert!(msg.contains("`abipkg` 3.0"), "{msg}");
    assert!(
        msg.contains("CPython 3.11 on linux x86_64 (glibc 2.17)"),
        "{msg}"
    );
    assert!(
        msg.contains("cp38-abi3-manylinux_2_28_aarch64, cp38-abi3-manylinux_2_28_x86_64"),
        "{msg}"
    );

    // musl: manylinux wheels don't apply; the pure fallback of fastpkg does.
    let req2 = fx.write(
        "musl.txt",
        &format!(
            "fastpkg==2.0 --hash=sha256:{} --hash=sha256:{}\n",
            fx.h(FAST_X86),
            fx.h(FAST_ANY)
        ),
    );
    let musl = python::resolve(&fx.input(&req2), &target("x86_64", Libc::Musl(1, 2))).unwrap();
    assert_eq!(musl[0].filename, FAST_ANY);
}

#[test]
fn hash_pins_narrow_the_candidates() {
    // Only the pure wheel's hash is pinned: the better-tagged platform wheel is skipped
    // (pip's filter_unallowed_hashes).
    let fx = fixture();
    let req = fx.write(
        "r.txt",
        &format!("fastpkg==2.0 --hash=sha256:{}\n", fx.h(FAST_ANY)),
    );
    let w = python::resolve(&fx.input(&req), &target("x86_64", Libc::Glibc(2, 36))).unwrap();
    assert_eq!(w[0].filename, FAST_ANY);
}

#[test]
fn json_simple_api() {
    let fx = fixture();
    let files: Vec<serde_json::Value> = [FAST_X86, FAST_ARM, FAST_ANY]
        .iter()
        .map(|n| {
            serde_json::json!({
                "filename": n,
                "url": format!("/files/{n}"),
                "hashes": {"sha256": fx.h(n)},
            })
        })
        .collect();
    let body = serde_json::json!({
        "meta": {"api-version": "1.1"},
        "name": "fastpkg",
        "files": files,
    });
    fx.server.add(
        "/json/fastpkg/",
        "application/vnd.pypi.simple.v1+json",
        body.to_string().into_bytes(),
    );
    let req = fx.write(
        "r.txt",
        &format!(
            "fastpkg==2.0 --hash=sha256:{} --hash=sha256:{} --hash=sha256:{}\n",
            fx.h(FAST_X86),
            fx.h(FAST_ARM),
            fx.h(FAST_ANY)
        ),
    );
    let mut input = fx.input(&req);
    input.index_urls = vec![format!("{}/json/", fx.server.base)];
    let w = python::resolve(&input, &target("aarch64", Libc::Glibc(2, 28))).unwrap();
    assert_eq!(w[0].filename, FAST_ARM);
    assert_eq!(
        w[0].url_or_path,
        format!("{}/files/{FAST_ARM}", fx.server.base)
    );
    assert_eq!(fx.server.hits("/json/fastpkg/"), 1);
}

#[test]
fn find_links_folder_without_index() {
    let fx = fixture();
    let req = fx.write(
        "r.txt",
        &format!(
            "purepkg==1.0 --hash=sha256:{}\nfastpkg==2.0 --hash=sha256:{} --hash=sha256:{}\n",
            fx.h(PURE),
            fx.h(FAST_ARM),
            fx.h(FAST_X86)
        ),
    );
    let input = DepsSetInput {
        name: "app".into(),
        requirements: Some(req),
        pylock: None,
        index_urls: vec![],
        find_links: vec![fx.dir.path().join("files")],
    };
    let w = python::resolve(&input, &target("x86_64", Libc::Glibc(2, 31))).unwrap();
    let m = by_name(&w);
    assert_eq!(m["fastpkg"].filename, FAST_X86);
    assert_eq!(
        m["fastpkg"].url_or_path,
        fx.dir.path().join("files").join(FAST_X86).to_string_lossy()
    );
    let cache = fx.dir.path().join("cache");
    let paths = python::fetch(&w, &cache).unwrap();
    assert_eq!(
        paths[0],
        cache.join("wheels").join(fx.h(FAST_X86)).join(FAST_X86)
    );
    assert!(paths.iter().all(|p| p.is_file()));
}

#[test]
fn pylock_toml() {
    let fx = fixture();
    let b = &fx.server.base;
    let text = format!(
        r#"lock-version = "1.0"
created-by = "test"

[[packages]]
name = "purepkg"
version = "1.0"
wheels = [{{ url = "{b}/files/{PURE}", hashes = {{ sha256 = "{}" }} }}]

[[packages]]
name = "fastpkg"
version = "2.0"
marker = "platform_machine == 'aarch64'"
wheels = [
  {{ url = "{b}/files/{FAST_X86}", hashes = {{ sha256 = "{}" }} }},
  {{ name = "{FAST_ARM}", url = "{b}/files/{FAST_ARM}", hashes = {{ sha256 = "{}" }} }},
]

[[packages]]
name = "srconly"
version = "0.1"
marker = "platform_machine == 'x86_64'"
sdist = {{ path = "files/{SDIST}", hashes = {{ sha256 = "{}" }} }}
"#,
        fx.h(PURE),
        fx.h(FAST_X86),
        fx.h(FAST_ARM),
        fx.h(SDIST)
    );
    let lock = fx.write("pylock.toml", &text);
    let input = DepsSetInput {
        name: "framework".into(),
        requirements: None,
        pylock: Some(lock),
        index_urls: vec![],
        find_links: vec![],
    };
    let w = python::resolve(&input, &target("aarch64", Libc::Glibc(2, 36))).unwrap();
    let m = by_name(&w);
    assert_eq!(m.len(), 2);
    assert_eq!(m["fastpkg"].filename, FAST_ARM);
    assert_eq!(m["fastpkg"].sha256, fx.h(FAST_ARM));
    let e = python::resolve(&input, &target("x86_64", Libc::Glibc(2, 36)))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("pylock.toml:19") && e.contains("`srconly`"),
        "{e}"
    );
    assert!(e.contains("pip wheel") && e.contains("find_links"), "{e}");
}

// ---------------------------------------------------------------- errors

fn resolve_err(fx: &Fixture, text: &str) -> String {
    let req = fx.write("bad.txt", text);
    let e = python::resolve(&fx.input(&req), &target("x86_64", Libc::Glibc(2, 36)))
        .expect_err("resolve should fail");
    e.to_string()
}

#[test]
fn bad_requirements_files_name_line_and_package() {
    let fx = fixture();
    let pure = format!("purepkg==1.0 --hash=sha256:{}\n", fx.h(PURE));

    let e = resolve_err(
        &fx,
        &format!("{pure}fastpkg>=2.0 --hash=sha256:{}\n", fx.h(FAST_X86)),
    );
    assert!(
        e.contains("bad.txt:2") && e.contains("`fastpkg`") && e.contains("not pinned"),
        "{e}"
    );

    let e = resolve_err(&fx, &format!("{pure}\nfastpkg\n"));
    assert!(
        e.contains("bad.txt:3") && e.contains("`fastpkg`") && e.contains("not pinned"),
        "{e}"
    );

    let e = resolve_err(&fx, &format!("{pure}fastpkg==2.0\n"));
    assert!(
        e.contains("bad.txt:2") && e.contains("`fastpkg`") && e.contains("no `--hash"),
        "{e}"
    );

    let e = resolve_err(
        &fx,
        &format!("{pure}nosuchpkg==1.0 --hash=sha256:{}\n", "a".repeat(64)),
    );
    assert!(
        e.contains("bad.txt:2") && e.contains("`nosuchpkg`") && e.contains("not found"),
        "{e}"
    );
    assert!(e.contains(&fx.index()), "{e}");

    let e = resolve_err(
        &fx,
        &format!("{pure}srconly==0.1 --hash=sha256:{}\n", fx.h(SDIST)),
    );
    assert!(e.contains("bad.txt:2") && e.contains("`srconly`"), "{e}");
    assert!(
        e.contains("only a source distribution (srconly-0.1.tar.gz)"),
        "{e}"
    );
    assert!(e.contains("pip wheel") && e.contains("find_links"), "{e}");

    let e = resolve_err(
        &fx,
        &format!("{pure}fastpkg==9.9 --hash=sha256:{}\n", fx.h(FAST_X86)),
    );
    assert!(
        e.contains("bad.txt:2") && e.contains("no files for version 9.9"),
        "{e}"
    );
    assert!(e.contains("versions seen: 2.0"), "{e}");
}

#[test]
fn no_compatible_wheel_lists_tags_and_target() {
    let fx = fixture();
    let req = fx.write(
        "bad.txt",
        &format!(
            "# comment\nabipkg==3.0 --hash=sha256:{} --hash=sha256:{}\n",
            fx.h(ABI_X86),
            fx.h(ABI_ARM)
        ),
    );
    let e = python::resolve(&fx.input(&req), &target("aarch64", Libc::Musl(1, 2)))
        .unwrap_err()
        .to_string();
    assert!(e.contains("bad.txt:2") && e.contains("`abipkg`"), "{e}");
    assert!(
        e.contains("no wheel compatible with CPython 3.11 on linux aarch64 (musl 1.2)"),
        "{e}"
    );
    assert!(e.contains("cp38-abi3-manylinux_2_28_aarch64"), "{e}");
}

#[test]
fn wrong_hashes() {
    let fx = fixture();
    // Pinned hash differs from what the index publishes: refused before any download.
    let wrong = "b".repeat(64);
    let req = fx.write(
        "bad.txt",
        &format!("\n\npurepkg==1.0 --hash=sha256:{wrong}\n"),
    );
    let e = python::resolve(&fx.input(&req), &target("x86_64", Libc::Glibc(2, 36)))
        .unwrap_err()
        .to_string();
    assert!(e.contains("bad.txt:3") && e.contains("`purepkg`"), "{e}");
    assert!(e.contains(fx.h(PURE)) && e.contains(&wrong), "{e}");
    assert_eq!(fx.server.hits(&format!("/files/{PURE}")), 0);

    // The index publishes the pinned hash but serves other bytes: caught after download.
    let req = fx.write(
        "ok.txt",
        &format!("purepkg==1.0 --hash=sha256:{}\n", fx.h(PURE)),
    );
    let w = python::resolve(&fx.input(&req), &target("x86_64", Libc::Glibc(2, 36))).unwrap();
    fx.server.add(
        &format!("/files/{PURE}"),
        "application/octet-stream",
        b"tampered".to_vec(),
    );
    let cache = fx.dir.path().join("cache");
    let e = python::fetch(&w, &cache).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, PythonError::WrongHash { .. }), "{msg}");
    assert!(msg.contains(PURE), "{msg}");
    assert!(
        msg.contains(&format!("expected sha256 {}", fx.h(PURE))),
        "{msg}"
    );
    assert!(
        msg.contains(&format!("got {}", sha256_hex(b"tampered"))),
        "{msg}"
    );
    // Nothing half-written is left where the cache would trust it.
    let slot = cache.join("wheels").join(fx.h(PURE));
    assert!(!slot.join(PURE).exists());
    assert_eq!(std::fs::read_dir(&slot).unwrap().count(), 0);
}

#[test]
fn sets_must_be_disjoint() {
    let fx = fixture();
    let req = fx.good_requirements();
    let t = target("x86_64", Libc::Glibc(2, 36));
    let a = python::resolve(&fx.input(&req), &t).unwrap();
    let req2 = fx.write(
        "app.txt",
        &format!("purepkg==1.0 --hash=sha256:{}\n", fx.h(PURE)),
    );
    let b = python::resolve(&fx.input(&req2), &t).unwrap();
    let e = python::check_disjoint(&[("framework".into(), a), ("app".into(), b)])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("`purepkg`") && e.contains("`framework`") && e.contains("`app`"),
        "{e}"
    );
}

// ---------------------------------------------------------------- install

fn content_bytes(e: &Entry) -> Vec<u8> {
    match &e.content {
        Content::Inline(b) => b.to_vec(),
        Content::ZipMember {
            archive,
            name,
            size,
        } => {
            let mut z = zip::ZipArchive::new(std::fs::File::open(archive).unwrap()).unwrap();
            let mut m = z.by_name(name).unwrap();
            let mut out = Vec::new();
            m.read_to_end(&mut out).unwrap();
            assert_eq!(out.len() as u64, *size, "{name}");
            out
        }
        other => panic!("unexpected content {other:?}"),
    }
}

#[test]
fn installs_entries_like_pip() {
    let fx = fixture();
    let req = fx.good_requirements();
    let t = target("aarch64", Libc::Glibc(2, 36));
    let wheels = python::resolve(&fx.input(&req), &t).unwrap();
    let cache = fx.dir.path().join("cache");
    let files = python::fetch(&wheels, &cache).unwrap();
    // Fetch again: served from the cache, no second download.
    let again = python::fetch(&wheels, &cache).unwrap();
    assert_eq!(files, again);
    assert_eq!(fx.server.hits(&format!("/files/{FAST_ARM}")), 1);

    let entries = python::install_entries(&files, &t).unwrap();
    let map: BTreeMap<&str, &Entry> = entries.iter().map(|e| (e.path.as_str(), e)).collect();
    assert_eq!(map.len(), entries.len(), "duplicate paths");
    let sp = "usr/local/lib/python3.11/site-packages";
    let expected: BTreeSet<String> = [
        "usr/local/bin/plain.sh",
        "usr/local/bin/purepkg-cli",
        "usr/local/bin/purepkg-gui",
        "usr/local/bin/run-it",
        "usr/local/include/python3.11/purepkg/purepkg.h",
        "usr/local/share/purepkg/notes.txt",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain(
        [
            "abipkg-3.0.dist-info/INSTALLER",
            "abipkg-3.0.dist-info/METADATA",
            "abipkg-3.0.dist-info/RECORD",
            "abipkg-3.0.dist-info/REQUESTED",
            "abipkg-3.0.dist-info/WHEEL",
            "abipkg/_ext.abi3.so",
            "extra_mod.py",
            "fastpkg-2.0.dist-info/INSTALLER",
            "fastpkg-2.0.dist-info/METADATA",
            "fastpkg-2.0.dist-info/RECORD",
            "fastpkg-2.0.dist-info/REQUESTED",
            "fastpkg-2.0.dist-info/WHEEL",
            "fastpkg/__init__.py",
            "fastpkg/_speed.so",
            "purepkg-1.0.dist-info/INSTALLER",
            "purepkg-1.0.dist-info/METADATA",
            "purepkg-1.0.dist-info/RECORD",
            "purepkg-1.0.dist-info/REQUESTED",
            "purepkg-1.0.dist-info/WHEEL",
            "purepkg-1.0.dist-info/entry_points.txt",
            "purepkg/__init__.py",
            "purepkg/cli.py",
            "purepkg/gui.py",
        ]
        .iter()
        .map(|p| format!("{sp}/{p}")),
    )
    .collect();
    let got: BTreeSet<String> = map.keys().map(|s| s.to_string()).collect();
    assert_eq!(got, expected);

    // The aarch64 build of the extension, streamed from the wheel, executable.
    let so = map[format!("{sp}/fastpkg/_speed.so").as_str()];
    assert_eq!(so.mode, 0o755);
    assert!(
        matches!(&so.content, Content::ZipMember { archive, .. } if archive.ends_with(FAST_ARM))
    );
    assert_eq!(content_bytes(so), b"ELF for aarch64");
    let init = map[format!("{sp}/purepkg/__init__.py").as_str()];
    assert_eq!(init.mode, 0o644);
    assert!(matches!(init.content, Content::ZipMember { .. }));

    // `#!python` rewritten; other scripts verbatim; all 0755.
    let run = map["usr/local/bin/run-it"];
    assert_eq!(run.mode, 0o755);
    assert_eq!(
        String::from_utf8(content_bytes(run)).unwrap(),
        RUN_IT.replacen("#!python\n", "#!/usr/local/bin/python3.11\n", 1)
    );
    let plain = map["usr/local/bin/plain.sh"];
    assert_eq!(
        (plain.mode, content_bytes(plain)),
        (0o755, b"#!/bin/sh\necho plain\n".to_vec())
    );

    // pip's launcher, not the wheel's own wrapper.
    let cli = String::from_utf8(content_bytes(map["usr/local/bin/purepkg-cli"])).unwrap();
    assert_eq!(
        cli,
        "#!/usr/local/bin/python3.11\n# -*- coding: utf-8 -*-\nimport re\nimport sys\nfrom purepkg.cli import main\nif __name__ == '__main__':\n    sys.argv[0] = re.sub(r'(-script\\.pyw|\\.exe)?$', '', sys.argv[0])\n    sys.exit(main())\n"
    );
    let gui = String::from_utf8(content_bytes(map["usr/local/bin/purepkg-gui"])).unwrap();
    assert!(
        gui.contains("from purepkg.gui import App\n") && gui.contains("sys.exit(App.run())\n"),
        "{gui}"
    );
    assert_eq!(map["usr/local/bin/purepkg-cli"].mode, 0o755);

    let info = format!("{sp}/purepkg-1.0.dist-info");
    assert_eq!(
        content_bytes(map[format!("{info}/INSTALLER").as_str()]),
        b"mlimg\n"
    );
    assert_eq!(
        content_bytes(map[format!("{info}/REQUESTED").as_str()]),
        b""
    );

    // RECORD: installed paths relative to site-packages, sorted, CRLF, rehashed where changed.
    let record = String::from_utf8(content_bytes(map[format!("{info}/RECORD").as_str()])).unwrap();
    let files = purepkg_files();
    let orig = |p: &str| {
        let d = &files.iter().find(|(n, _, _)| n == p).unwrap().1;
        format!("{},{}", record_hash(d), d.len())
    };
    let meta = "Metadata-Version: 2.1\nName: PurePkg\nVersion: 1.0\n\nA test package.\n";
    let wheel =
        "Wheel-Version: 1.0\nGenerator: mlimg-test\nRoot-Is-Purelib: true\nTag: py3-none-any\n";
    let run_new = RUN_IT.replacen("#!python\n", "#!/usr/local/bin/python3.11\n", 1);
    let gen_ = |d: &str| format!("{},{}", record_hash(d.as_bytes()), d.len());
    let mut want = vec![
        format!(
            "../../../bin/plain.sh,{}",
            orig("purepkg-1.0.data/scripts/plain.sh")
        ),
        format!("../../../bin/purepkg-cli,{}", gen_(&cli)),
        format!("../../../bin/purepkg-gui,{}", gen_(&gui)),
        format!("../../../bin/run-it,{}", gen_(&run_new)),
        format!(
            "../../../include/python3.11/purepkg/purepkg.h,{}",
            orig("purepkg-1.0.data/headers/purepkg.h")
        ),
        format!(
            "../../../share/purepkg/notes.txt,{}",
            orig("purepkg-1.0.data/data/share/purepkg/notes.txt")
        ),
        format!(
            "extra_mod.py,{}",
            orig("purepkg-1.0.data/purelib/extra_mod.py")
        ),
        // The dropped setuptools wrapper keeps its wheel path, as pip leaves it.
        format!(
            "purepkg-1.0.data/scripts/purepkg-cli,{}",
            orig("purepkg-1.0.data/scripts/purepkg-cli")
        ),
        format!("purepkg-1.0.dist-info/INSTALLER,{}", gen_("mlimg\n")),
        format!("purepkg-1.0.dist-info/METADATA,{}", gen_(meta)),
        "purepkg-1.0.dist-info/RECORD,,".to_string(),
        format!("purepkg-1.0.dist-info/REQUESTED,{}", gen_("")),
        format!("purepkg-1.0.dist-info/WHEEL,{}", gen_(wheel)),
        format!(
            "purepkg-1.0.dist-info/entry_points.txt,{}",
            orig("purepkg-1.0.dist-info/entry_points.txt")
        ),
        format!("purepkg/__init__.py,{}", orig("purepkg/__init__.py")),
        format!("purepkg/cli.py,{}", orig("purepkg/cli.py")),
        format!("purepkg/gui.py,{}", orig("purepkg/gui.py")),
    ];
    want.sort();
    let want = want.iter().map(|l| format!("{l}\r\n")).collect::<String>();
    assert_eq!(record, want);
}

#[test]
fn rejects_members_escaping_the_target() {
    let dir = tempfile::tempdir().unwrap();
    let t = target("x86_64", Libc::Glibc(2, 36));
    for bad in [
        "../evil.py",
        "pkg/../../evil.py",
        "/etc/evil",
        "evil-1.0.data/scripts/../../x",
    ] {
        let (w, _) = build_wheel(
            dir.path(),
            "evil",
            "1.0",
            "py3-none-any",
            true,
            &[f(bad, "x", 0o644)],
        );
        let e = python::install_entries(&[w], &t).unwrap_err();
        let msg = e.to_string();
        assert!(
            matches!(e, PythonError::UnsafeMember { .. }),
            "{bad}: {msg}"
        );
        assert!(msg.contains(bad), "{msg}");
    }
}

// ---------------------------------------------------------------- against real pip

/// The local CPython as a target: its prefix, version, machine and glibc.
fn local_target() -> PythonTarget {
    let out = Command::new("python3")
        .args([
            "-c",
            "import sys, platform; print(sys.prefix); print(sys.version_info[0]); \
             print(sys.version_info[1]); print(platform.machine()); print(platform.libc_ver()[1])",
        ])
        .output()
        .expect("python3 must be installed for these tests");
    assert!(out.status.success());
    let s = String::from_utf8(out.stdout).unwrap();
    let l: Vec<&str> = s.lines().collect();
    let (maj, min) = l[4].split_once('.').expect("a glibc python");
    PythonTarget {
        version: (l[1].parse().unwrap(), l[2].parse().unwrap()),
        prefix: l[0].to_string(),
        libc: Libc::Glibc(maj.parse().unwrap(), min.parse().unwrap()),
        arch: l[3].to_string(),
        site_packages_dir: None,
    }
}

/// `pip install --target` with the interpreter our target names, so shebangs agree.
fn pip_install(t: &PythonTarget, wheels: &[PathBuf], dest: &Path) {
    let out = Command::new(t.interpreter())
        .args([
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--no-compile",
            "--no-index",
            "-q",
            "--target",
        ])
        .arg(dest)
        .args(wheels)
        .env_remove("PIP_FIND_LINKS")
        .env("PIP_DISABLE_PIP_VERSION_CHECK", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pip install failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Our entries mapped onto pip's `--target` layout: (path → (bytes, executable)).
fn ours_as_pip_target(entries: &[Entry], t: &PythonTarget) -> BTreeMap<String, (Vec<u8>, bool)> {
    let sp = format!("{}/", t.site_packages().trim_start_matches('/'));
    let inc = format!("{}/", t.include_dir().trim_start_matches('/'));
    let prefix = format!("{}/", t.prefix.trim_start_matches('/'));
    let mut out = BTreeMap::new();
    for e in entries {
        let p = if let Some(r) = e.path.strip_prefix(&sp) {
            r.to_string()
        } else if let Some(r) = e.path.strip_prefix(&inc) {
            format!("include/python/{r}")
        } else if let Some(r) = e.path.strip_prefix(&prefix) {
            r.to_string() // bin/..., share/...
        } else {
            panic!("entry outside the prefix: {}", e.path)
        };
        assert!(
            e.mode == 0o644 || e.mode == 0o755,
            "{}: {:o}",
            e.path,
            e.mode
        );
        out.insert(p, (content_bytes(e), e.mode == 0o755));
    }
    out
}

fn pip_tree(root: &Path) -> BTreeMap<String, (Vec<u8>, bool)> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = BTreeMap::new();
    for e in walkdir::WalkDir::new(root) {
        let e = e.unwrap();
        if !e.file_type().is_file() {
            continue;
        }
        let rel = e
            .path()
            .strip_prefix(root)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let exec = e.metadata().unwrap().permissions().mode() & 0o111 != 0;
        out.insert(rel, (std::fs::read(e.path()).unwrap(), exec));
    }
    out
}

/// RECORD lines in order, minus the rows only one installer writes; pip's `--target` paths
/// (`../../bin`, `../../include/python/`) mapped onto the prefix layout (`../../../bin`, ...).
fn record_rows(text: &[u8], from_pip: bool, py: (u32, u32)) -> Vec<String> {
    let text = String::from_utf8(text.to_vec()).unwrap();
    assert!(text.ends_with("\r\n"), "RECORD lines end in CRLF");
    text.split("\r\n")
        .filter(|l| !l.is_empty())
        .filter(|l| {
            !l.contains(".dist-info/direct_url.json,") && !l.contains(".dist-info/INSTALLER,")
        })
        .map(|l| match l.strip_prefix("../../") {
            Some(r) if from_pip => format!(
                "../../../{}",
                r.replacen(
                    "include/python/",
                    &format!("include/python{}.{}/", py.0, py.1),
                    1
                )
            ),
            _ => l.to_string(),
        })
        .collect()
}

fn compare_with_pip(wheels: &[PathBuf]) -> usize {
    let t = local_target();
    let entries = python::install_entries(wheels, &t).unwrap();
    let ours = ours_as_pip_target(&entries, &t);
    let dir = tempfile::tempdir().unwrap();
    pip_install(&t, wheels, dir.path());
    let theirs = pip_tree(dir.path());

    let only_pip = |p: &str| p.ends_with(".dist-info/direct_url.json");
    let a: BTreeSet<&String> = ours.keys().collect();
    let b: BTreeSet<&String> = theirs.keys().filter(|p| !only_pip(p)).collect();
    assert_eq!(a, b, "installed file lists differ");
    let mut compared = 0;
    for (p, (bytes, exec)) in &ours {
        let (pbytes, pexec) = &theirs[p];
        assert_eq!(exec, pexec, "{p}: executable bit");
        if p.ends_with(".dist-info/INSTALLER") {
            assert_eq!(
                (bytes.as_slice(), pbytes.as_slice()),
                (&b"mlimg\n"[..], &b"pip\n"[..])
            );
        } else if p.ends_with(".dist-info/RECORD") {
            assert_eq!(
                record_rows(bytes, false, t.version),
                record_rows(pbytes, true, t.version),
                "{p}"
            );
        } else {
            assert!(bytes == pbytes, "{p}: contents differ");
        }
        compared += 1;
    }
    compared
}

#[test]
fn synthetic_wheel_matches_pip_install() {
    let dir = tempfile::tempdir().unwrap();
    let (w, _) = build_wheel(
        dir.path(),
        "PurePkg",
        "1.0",
        "py3-none-any",
        true,
        &purepkg_files(),
    );
    let n = compare_with_pip(&[w]);
    assert!(n >= 15, "compared {n} files");
}

/// The real wheels (testdata/wheels, see common/pyindex.rs) a `pip install` on this machine
/// would pick: six, idna, packaging, and the MarkupSafe built for the local machine.
fn host_real_wheels() -> Vec<PathBuf> {
    let machine = pyindex::host_machine();
    let wheels: Vec<PathBuf> = REAL
        .iter()
        .map(|prefix| {
            if *prefix == "MarkupSafe-" {
                pyindex::testdata_wheel(&format!(
                    "MarkupSafe-2.1.5-cp311-cp311-manylinux_2_17_{machine}."
                ))
            } else {
                pyindex::testdata_wheel(prefix)
            }
        })
        .collect();
    wheels
}

const REAL: [&str; 4] = ["six-1.16.0-", "idna-3.7-", "packaging-24.1-", "MarkupSafe-"];

#[test]
fn real_wheels_match_pip_install() {
    let wheels = host_real_wheels();
    let names: Vec<String> = wheels.iter().map(|p| pyindex::file_name(p)).collect();
    assert!(
        names
            .iter()
            .any(|n| n.starts_with("MarkupSafe-2.1.5-cp311-cp311-manylinux")),
        "{names:?}"
    );

    // Resolution from a find-links folder (all committed wheels: both MarkupSafe builds, and
    // `wheel`, which is not asked for) picks exactly these files for the local target.
    let tmp = tempfile::tempdir().unwrap();
    // MarkupSafe is pinned to both builds, as `pip-compile --generate-hashes` writes it.
    let all = pyindex::testdata_wheels();
    let mut req = String::new();
    for w in &wheels {
        let name = pyindex::file_name(w);
        let mut parts = name.split('-');
        let (n, v) = (parts.next().unwrap(), parts.next().unwrap());
        req.push_str(&format!("{n}=={v}"));
        for same in all
            .iter()
            .filter(|a| pyindex::file_name(a).starts_with(&format!("{n}-{v}-")))
        {
            req.push_str(&format!(
                " --hash=sha256:{}",
                sha256_hex(&std::fs::read(same).unwrap())
            ));
        }
        req.push('\n');
    }
    assert!(req.matches("--hash").count() == 5, "{req}");
    let req_path = tmp.path().join("requirements.txt");
    std::fs::write(&req_path, req).unwrap();
    let input = DepsSetInput {
        name: "real".into(),
        requirements: Some(req_path),
        pylock: None,
        index_urls: vec![],
        find_links: vec![pyindex::wheels_dir()],
    };
    let t = local_target();
    let resolved = python::resolve(&input, &t).unwrap();
    let mut picked: Vec<String> = resolved.iter().map(|w| w.filename.clone()).collect();
    picked.sort();
    let mut want = names.clone();
    want.sort();
    assert_eq!(picked, want);
    let fetched = python::fetch(&resolved, &tmp.path().join("cache")).unwrap();

    // pip reads the same local files (`--no-index`): no package index is reached.
    let n = compare_with_pip(&fetched);
    assert!(n > 40, "compared only {n} files");
}

#[test]
fn simple_index_json_serves_the_real_aarch64_markupsafe() {
    // A PEP 691 JSON index (what PyPI answers when asked), served locally with the real
    // MarkupSafe wheels; the requirement pins the x86_64 and aarch64 hashes.
    let x86 = pyindex::testdata_wheel("MarkupSafe-2.1.5-cp311-cp311-manylinux_2_17_x86_64.");
    let arm = pyindex::testdata_wheel("MarkupSafe-2.1.5-cp311-cp311-manylinux_2_17_aarch64.");
    let index = pyindex::PyIndex::serve(&[x86.clone(), arm.clone()], &[]);
    let hx = sha256_hex(&std::fs::read(&x86).unwrap());
    let ha = sha256_hex(&std::fs::read(&arm).unwrap());
    let tmp = tempfile::tempdir().unwrap();
    let req = tmp.path().join("requirements.txt");
    std::fs::write(
        &req,
        format!("MarkupSafe==2.1.5 --hash=sha256:{hx} --hash=sha256:{ha}\n"),
    )
    .unwrap();
    let input = DepsSetInput {
        name: "real".into(),
        requirements: Some(req),
        pylock: None,
        index_urls: vec![index.url.clone()],
        find_links: vec![],
    };
    let w = python::resolve(&input, &target("aarch64", Libc::Glibc(2, 36))).unwrap();
    assert_eq!(w[0].filename, pyindex::file_name(&arm));
    assert!(
        w[0].filename.contains("manylinux_2_17_aarch64"),
        "{}",
        w[0].filename
    );
    assert_eq!(w[0].sha256, ha);
    // the absolute file URL from the JSON page, not one built from the index URL
    assert_eq!(
        w[0].url_or_path,
        format!("{}/files/{}", index.base, w[0].filename)
    );
    let pages: Vec<_> = index
        .hits()
        .into_iter()
        .filter(|h| h.path == "/simple/markupsafe/")
        .collect();
    assert!(
        !pages.is_empty() && pages.iter().all(|h| h.served == "json"),
        "{pages:?}"
    );
    let w = python::resolve(&input, &target("x86_64", Libc::Glibc(2, 36))).unwrap();
    assert_eq!(w[0].sha256, hx);
    // and the file fetched from the index is the real one
    let fetched = python::fetch(&w, &tmp.path().join("cache")).unwrap();
    assert_eq!(
        std::fs::read(&fetched[0]).unwrap(),
        std::fs::read(&x86).unwrap()
    );
}

#[test]
fn shared_files_must_agree() {
    // Every nvidia-*-cu12 wheel ships the same empty `nvidia/__init__.py`.
    let dir = tempfile::tempdir().unwrap();
    let t = target("x86_64", Libc::Glibc(2, 36));
    let (a, _) = build_wheel(
        dir.path(),
        "nvidia-cublas-cu12",
        "12.1",
        "py3-none-manylinux1_x86_64",
        false,
        &[
            f("nvidia/__init__.py", "", 0o644),
            f("nvidia/cublas/lib/libcublas.so.12", "cublas", 0o755),
        ],
    );
    let (b, _) = build_wheel(
        dir.path(),
        "nvidia-cudnn-cu12",
        "9.1",
        "py3-none-manylinux1_x86_64",
        false,
        &[
            f("nvidia/__init__.py", "", 0o644),
            f("nvidia/cudnn/lib/libcudnn.so.9", "cudnn", 0o755),
        ],
    );
    let entries = python::install_entries(&[a.clone(), b], &t).unwrap();
    let init: Vec<_> = entries
        .iter()
        .filter(|e| e.path.ends_with("site-packages/nvidia/__init__.py"))
        .collect();
    assert_eq!(init.len(), 1);
    assert!(
        entries
            .iter()
            .any(|e| e.path.ends_with("nvidia/cudnn/lib/libcudnn.so.9") && e.mode == 0o755)
    );

    let (c, _) = build_wheel(
        dir.path(),
        "nvidia-other-cu12",
        "1.0",
        "py3-none-any",
        true,
        &[f("nvidia/__init__.py", "# not empty\n", 0o644)],
    );
    let e = python::install_entries(&[a, c], &t)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("nvidia_cublas_cu12-12.1-py3-none-manylinux1_x86_64.whl")
            && e.contains("nvidia_other_cu12-1.0-py3-none-any.whl")
            && e.contains("/usr/local/lib/python3.11/site-packages/nvidia/__init__.py"),
        "{e}"
    );
}

#[test]
fn transient_server_errors_are_retried() {
    let fx = fixture();
    let req = fx.write(
        "r.txt",
        &format!("purepkg==1.0 --hash=sha256:{}\n", fx.h(PURE)),
    );
    fx.server.flaky("/simple/purepkg/", 1);
    fx.server.flaky(&format!("/files/{PURE}"), 2);
    let t = target("x86_64", Libc::Glibc(2, 36));
    let w = python::resolve(&fx.input(&req), &t).unwrap();
    assert_eq!(fx.server.hits("/simple/purepkg/"), 2);
    let cache = fx.dir.path().join("cache");
    let p = python::fetch(&w, &cache).unwrap();
    assert_eq!(fx.server.hits(&format!("/files/{PURE}")), 3);
    assert_eq!(sha256_hex(&std::fs::read(&p[0]).unwrap()), fx.h(PURE));

    // A server that stays down: the error names the URL and the status, after the shared
    // transport policy's default 4 retries (5 tries).
    fx.server.flaky("/simple/fastpkg/", 10);
    let req = fx.write(
        "r2.txt",
        &format!("fastpkg==2.0 --hash=sha256:{}\n", fx.h(FAST_ANY)),
    );
    let e = python::resolve(&fx.input(&req), &t)
        .unwrap_err()
        .to_string();
    assert_eq!(
        fx.server.hits("/simple/fastpkg/"),
        mlimg::transport::TransportOptions::default().retries as usize + 1
    );
    assert!(
        e.contains("/simple/fastpkg/") && e.contains("HTTP 503"),
        "{e}"
    );
}

// ---------------------------------------------------------------- against `packaging`

/// Runs a Python snippet with pip's vendored `packaging` and returns its stdout lines.
fn packaging_says(script: &str) -> Vec<String> {
    let out = Command::new("python3")
        .args(["-c", script])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn tag_order_matches_packaging() {
    let cases = [
        ((3, 11), Libc::Glibc(2, 36), "x86_64"),
        ((3, 11), Libc::Glibc(2, 17), "aarch64"),
        ((3, 12), Libc::Glibc(2, 28), "aarch64"),
        ((3, 10), Libc::Musl(1, 2), "x86_64"),
    ];
    for (version, libc, arch) in cases {
        let (glibc, musl) = match libc {
            Libc::Glibc(a, b) => (format!("({a}, {b})"), "None".to_string()),
            Libc::Musl(a, b) => (
                "(-1, -1)".to_string(),
                format!("_musllinux._MuslVersion({a}, {b})"),
            ),
        };
        let script = format!(
            r#"
from pip._vendor.packaging import tags, _manylinux, _musllinux
_manylinux._get_glibc_version = lambda: {glibc}
_musllinux._get_musl_version = lambda exe: {musl}
py = {version:?}
linux = "linux_{arch}"
plats = list(_manylinux.platform_tags(linux, "{arch}")) + list(_musllinux.platform_tags("{arch}")) + [linux]
interp = "cp%d%d" % py
for t in tags.cpython_tags(py, ["cp%d%d" % py], plats):
    print(t)
for t in tags.compatible_tags(py, interp, plats):
    print(t)
"#
        );
        let want = packaging_says(&script);
        let t = PythonTarget {
            version,
            prefix: "/usr/local".into(),
            libc,
            arch: arch.into(),
            site_packages_dir: None,
        };
        let got: Vec<String> = python::tags::supported_tags(&t)
            .iter()
            .map(|t| t.to_string())
            .collect();
        assert!(want.len() > 50, "{want:?}");
        assert_eq!(got, want, "{version:?} {libc:?} {arch}");
    }
}

#[test]
fn markers_match_packaging() {
    let markers = [
        r#"python_version >= "3.8""#,
        r#"python_version < "3.9""#,
        r#"python_version > "3.10""#,
        r#"python_version == "3.11""#,
        r#"python_version != "3.11""#,
        r#"python_version == "3.*""#,
        r#"python_version == "3.1*""#,
        r#"python_version ~= "3.7""#,
        r#"python_version ~= "3.12""#,
        r#"python_full_version >= "3.11.0""#,
        r#"python_full_version < "3.11.1""#,
        r#"python_full_version >= "3.6.2" and python_version < "3.12""#,
        r#"sys_platform == "linux" and platform_machine == "aarch64""#,
        r#"sys_platform == "win32" or platform_machine == "x86_64""#,
        r#"platform_machine in "x86_64 AMD64""#,
        r#"platform_machine not in "arm64 aarch64""#,
        r#"os_name == "posix" and platform_system == "Linux""#,
        r#"implementation_name == "cpython" and platform_python_implementation != "PyPy""#,
        r#"(sys_platform == "darwin" or sys_platform == "linux") and python_version >= "3""#,
        r#"sys_platform == "darwin" or sys_platform == "linux" and python_version < "3""#,
        r#"extra == "gpu""#,
        r#"extra != "gpu" and python_version > "2.7""#,
        r#""3.9" <= python_version"#,
        r#"platform_machine == 'x86_64' and python_version < '3.12' or extra == 'cuda'"#,
    ];
    for (arch, minor) in [("x86_64", 11), ("aarch64", 11), ("x86_64", 9)] {
        let t = target(arch, Libc::Glibc(2, 36));
        let t = PythonTarget {
            version: (3, minor),
            ..t
        };
        let env = python::markers::Environment::for_target(&t);
        let list = markers
            .iter()
            .map(|m| format!("{m:?}"))
            .collect::<Vec<_>>()
            .join(", ");
        let script = format!(
            r#"
from pip._vendor.packaging.markers import Marker
env = dict(python_version="3.{minor}", python_full_version="3.{minor}.0",
    implementation_version="3.{minor}.0", platform_machine="{arch}", sys_platform="linux",
    os_name="posix", platform_system="Linux", implementation_name="cpython",
    platform_python_implementation="CPython", platform_release="", platform_version="", extra="")
for m in [{list}]:
    print(Marker(m).evaluate(env))
"#
        );
        let want = packaging_says(&script);
        assert_eq!(want.len(), markers.len());
        for (m, w) in markers.iter().zip(&want) {
            let got = python::markers::evaluate(m, &env).unwrap();
            assert_eq!(got.to_string(), w.to_lowercase(), "{arch} 3.{minor}: {m}");
        }
    }
}

#[test]
fn index_without_published_hashes() {
    let fx = fixture();
    // An index page without `#sha256=` fragments.
    fx.server.add(
        "/bare/fastpkg/",
        "text/html",
        format!(
            "<a href=\"/files/{FAST_X86}\">{FAST_X86}</a>\n<a href=\"/files/{FAST_ARM}\">{FAST_ARM}</a>\n"
        )
        .into_bytes(),
    );
    let t = target("x86_64", Libc::Glibc(2, 36));
    let mut input = fx.input(&fx.write(
        "one.txt",
        &format!("fastpkg==2.0 --hash=sha256:{}\n", fx.h(FAST_X86)),
    ));
    input.index_urls = vec![format!("{}/bare", fx.server.base)];
    // One pinned hash: that is the expected one, checked after download.
    let w = python::resolve(&input, &t).unwrap();
    assert_eq!(
        (w[0].filename.as_str(), w[0].sha256.as_str()),
        (FAST_X86, fx.h(FAST_X86))
    );
    python::fetch(&w, &fx.dir.path().join("cache")).unwrap();

    // Two pinned hashes and none published: the lock cannot say which one this file has.
    input.requirements = Some(fx.write(
        "two.txt",
        &format!(
            "\nfastpkg==2.0 --hash=sha256:{} --hash=sha256:{}\n",
            fx.h(FAST_X86),
            fx.h(FAST_ARM)
        ),
    ));
    let e = python::resolve(&input, &t).unwrap_err().to_string();
    assert!(
        e.contains("two.txt:2") && e.contains("`fastpkg`") && e.contains("publishes no sha256"),
        "{e}"
    );
}
