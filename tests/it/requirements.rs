//! Requirements as users write them: `requires-python` from the index and the wheel's METADATA,
//! yanked files (PEP 592), `PIP_FIND_LINKS`, a private index behind basic auth (credentials in
//! the URL or `~/.netrc`), and a package with only an sdist. Everything is served by the local
//! index stand-in on 127.0.0.1; scratch base with a full `[python]` table.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Output;

use crate::common::pyindex::{FileMeta, IndexConfig, PyIndex, testdata_wheel};
use crate::common::{TestContext, sha256_file};

const SIX: &str = "six-1.16.0-py2.py3-none-any.whl";

/// A spec with one wheel set pinning `six` (or the given requirements).
fn project(cx: &TestContext, requirements: &str) -> PathBuf {
    let dir = cx.path().join("project");
    fs::create_dir_all(&dir).expect("mkdir");
    fs::write(
        dir.join("mlimg.toml"),
        r#"[image]
name = "localhost/req"

[python]
version = "3.11"
prefix = "/usr/local"
libc = "glibc 2.36"

[[deps]]
name = "py"
requirements = "requirements.txt"

[config]
cmd = ["python3"]
user = "1000:1000"
env = { PYTHONUNBUFFERED = "1" }
"#,
    )
    .expect("spec");
    fs::write(dir.join("requirements.txt"), requirements).expect("requirements");
    dir.join("mlimg.toml")
}

fn six_requirements() -> String {
    let six = testdata_wheel("six-");
    format!("six==1.16.0 --hash=sha256:{}\n", sha256_file(&six))
}

fn run(cx: &TestContext, spec: &Path, index: &str, args: &[&str]) -> Output {
    cx.mlimg()
        .env("PIP_INDEX_URL", index)
        .env_remove("PIP_EXTRA_INDEX_URL")
        .env_remove("PIP_FIND_LINKS")
        .env("NETRC", cx.path().join("no-netrc"))
        .args(["build", "--json", "-f"])
        .arg(spec)
        .args(args)
        .output()
        .expect("run mlimg")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn meta(file: &str, m: FileMeta) -> IndexConfig {
    IndexConfig {
        meta: [(file.to_string(), m)].into_iter().collect(),
        ..IndexConfig::default()
    }
}

#[test]
fn the_index_requires_python_rules_a_wheel_out_in_json_and_html() {
    for html_only in [false, true] {
        let cx = TestContext::new();
        let spec = project(&cx, &six_requirements());
        let mut config = meta(
            SIX,
            FileMeta {
                requires_python: Some(">=3.12, <4".into()),
                ..FileMeta::default()
            },
        );
        config.html_only = html_only;
        let index = PyIndex::serve_with(&[testdata_wheel("six-")], &[], &config);
        let out = run(&cx, &spec, &index.url, &["--dry-run"]);
        assert_eq!(
            out.status.code(),
            Some(1),
            "html {html_only}: {}",
            text(&out)
        );
        let t = text(&out);
        assert!(
            t.contains("requires Python >=3.12, <4") && t.contains("the target is CPython 3.11"),
            "html {html_only}: {t}"
        );
        let served: Vec<&str> = index.hits().iter().map(|h| h.served).collect();
        assert!(
            served.contains(&if html_only { "html" } else { "json" }),
            "{served:?}"
        );

        // a specifier the target meets keeps the wheel
        let config = IndexConfig {
            html_only,
            ..meta(
                SIX,
                FileMeta {
                    requires_python: Some(">=2.7, !=3.0.*, !=3.1.*".into()),
                    ..FileMeta::default()
                },
            )
        };
        let index = PyIndex::serve_with(&[testdata_wheel("six-")], &[], &config);
        let out = run(&cx, &spec, &index.url, &["--dry-run"]);
        assert!(out.status.success(), "html {html_only}: {}", text(&out));
        assert!(text(&out).contains(SIX));
    }
}

#[test]
fn a_yanked_file_is_used_for_an_exact_pin_with_a_warning() {
    let cx = TestContext::new();
    let spec = project(&cx, &six_requirements());
    let index = PyIndex::serve_with(
        &[testdata_wheel("six-")],
        &[],
        &meta(
            SIX,
            FileMeta {
                yanked: Some("broken metadata".into()),
                ..FileMeta::default()
            },
        ),
    );
    let out = run(&cx, &spec, &index.url, &["--dry-run"]);
    assert!(out.status.success(), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let w = v["warnings"]
        .as_array()
        .and_then(|a| a.iter().find(|w| w["code"] == "wheel-yanked"))
        .unwrap_or_else(|| panic!("no wheel-yanked warning: {v}"));
    let m = w["message"].as_str().unwrap_or("");
    assert!(
        m.contains("six 1.16.0 is yanked (broken metadata)") && m.contains("=="),
        "{m}"
    );
}

/// A pure-Python wheel whose METADATA says `Requires-Python: >=3.12`.
fn wheel_requiring_312(dir: &Path) -> PathBuf {
    let path = dir.join("newpy-1.0-py3-none-any.whl");
    let f = fs::File::create(&path).expect("wheel");
    let mut z = zip::ZipWriter::new(f);
    let opts = zip::write::SimpleFileOptions::default();
    for (name, body) in [
        ("newpy/__init__.py", "X = 1\n"),
        (
            "newpy-1.0.dist-info/METADATA",
            "Metadata-Version: 2.1\nName: newpy\nVersion: 1.0\nRequires-Python: >=3.12\n\nA long description.\n",
        ),
        (
            "newpy-1.0.dist-info/WHEEL",
            "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        ),
        ("newpy-1.0.dist-info/RECORD", ""),
    ] {
        z.start_file(name, opts).expect("member");
        z.write_all(body.as_bytes()).expect("write");
    }
    z.finish().expect("zip");
    path
}

#[test]
fn the_wheel_metadata_requires_python_is_checked() {
    let cx = TestContext::new();
    let wheels = cx.path().join("wheels");
    fs::create_dir_all(&wheels).expect("mkdir");
    let w = wheel_requiring_312(&wheels);
    let spec = project(
        &cx,
        &format!("newpy==1.0 --hash=sha256:{}\n", sha256_file(&w)),
    );
    // the index says nothing about it: the wheel's own METADATA decides
    let index = PyIndex::serve(&[w], &[]);
    let out = run(
        &cx,
        &spec,
        &index.url,
        &["-o", &format!("oci:{}", cx.path().join("out").display())],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let t = text(&out);
    assert!(
        t.contains("newpy-1.0-py3-none-any.whl")
            && t.contains("Requires-Python: >=3.12")
            && t.contains("CPython 3.11"),
        "{t}"
    );
}

#[test]
fn pip_find_links_is_honoured_after_the_spec() {
    let cx = TestContext::new();
    let spec = project(&cx, &six_requirements());
    let links = cx.path().join("links");
    fs::create_dir_all(&links).expect("mkdir");
    fs::copy(testdata_wheel("six-"), links.join(SIX)).expect("copy");
    let out = cx
        .mlimg()
        // no index answers: the wheel can only come from PIP_FIND_LINKS
        .env("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
        .env("PIP_FIND_LINKS", &links)
        .args(["build", "--dry-run", "-f"])
        .arg(&spec)
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("wheel {SIX}")),
        "{}",
        text(&out)
    );
    let out = cx
        .mlimg()
        .env("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
        .env_remove("PIP_FIND_LINKS")
        .args(["build", "--dry-run", "-f"])
        .arg(&spec)
        .output()
        .expect("run");
    assert!(
        !out.status.success(),
        "without PIP_FIND_LINKS: {}",
        text(&out)
    );
}

#[test]
fn a_private_index_with_basic_auth_from_the_url_or_netrc() {
    let cx = TestContext::new();
    let spec = project(&cx, &six_requirements());
    let config = IndexConfig {
        basic_auth: Some(("alice".into(), "s3cret-pw".into())),
        ..IndexConfig::default()
    };
    let index = PyIndex::serve_with(&[testdata_wheel("six-")], &[], &config);

    // no credentials: the 401 is named
    let out = run(&cx, &spec, &index.url, &["--dry-run"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("401"), "{}", text(&out));

    // in the URL: the build downloads the wheel with them, and prints them nowhere
    let with_creds = index.url.replace("http://", "http://alice:s3cret-pw@");
    let out = run(
        &cx,
        &spec,
        &with_creds,
        &["-o", &format!("oci:{}", cx.path().join("out1").display())],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(!text(&out).contains("s3cret-pw"), "{}", text(&out));

    // from a netrc file, with a fresh cache so the wheel is downloaded again
    let netrc = cx.path().join("netrc");
    fs::write(&netrc, "machine 127.0.0.1 login alice password s3cret-pw\n").expect("netrc");
    let out = cx
        .mlimg()
        .env("MLIMG_CACHE_DIR", cx.path().join("cache2"))
        .env("PIP_INDEX_URL", &index.url)
        .env("NETRC", &netrc)
        .args(["build", "--json", "-f"])
        .arg(&spec)
        .args(["-o", &format!("oci:{}", cx.path().join("out2").display())])
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", text(&out));
    assert!(!text(&out).contains("s3cret-pw"));
    let files: Vec<String> = index
        .hits()
        .iter()
        .filter(|h| h.served == "file")
        .map(|h| h.path.clone())
        .collect();
    assert_eq!(files.len(), 2, "one download per cache: {files:?}");
}

#[test]
fn a_package_with_only_an_sdist_says_how_to_provide_a_wheel() {
    let cx = TestContext::new();
    let sdist = b"not really a tarball".to_vec();
    let sha = {
        use sha2::Digest as _;
        hex::encode(sha2::Sha256::digest(&sdist))
    };
    let spec = project(&cx, &format!("tinysdist==1.0 --hash=sha256:{sha}\n"));
    let config = IndexConfig {
        extra_files: vec![("tinysdist-1.0.tar.gz".into(), sdist)],
        ..IndexConfig::default()
    };
    let index = PyIndex::serve_with(&[], &[], &config);
    let out = run(&cx, &spec, &index.url, &["--dry-run"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let t = text(&out);
    assert!(
        t.contains("only a source distribution (tinysdist-1.0.tar.gz)")
            && t.contains("pip wheel --no-deps tinysdist==1.0 -w wheels/")
            && t.contains("find_links"),
        "{t}"
    );
    assert!(t.contains("requirements.txt:1"), "names the line: {t}");
}

#[test]
fn the_requirements_files_index_url_replaces_pip_index_url() {
    let cx = TestContext::new();
    let index = PyIndex::serve(&[testdata_wheel("six-")], &[]);
    let spec = project(
        &cx,
        &format!("--index-url {}\n{}", index.url, six_requirements()),
    );
    // PIP_INDEX_URL points at a closed port: asking it would fail the build
    let out = run(&cx, &spec, "http://127.0.0.1:9/simple", &["--dry-run"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains(SIX), "{}", text(&out));
    // --extra-index-url adds an index: PIP_INDEX_URL is still asked (and fails here)
    let spec = project(
        &cx,
        &format!("--extra-index-url {}\n{}", index.url, six_requirements()),
    );
    let out = run(&cx, &spec, "http://127.0.0.1:9/simple", &["--dry-run"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("127.0.0.1:9"), "{}", text(&out));
}
