//! `mlimg lock`: what it writes and how stable it is.

use std::path::{Path, PathBuf};

use crate::common::hostile::closed_port_url;
use crate::common::pyindex::{Hit, PyIndex, file_name, testdata_wheel, testdata_wheels};
use crate::common::*;
use crate::hub_build::HubProject;

#[test]
fn lock_pins_commit_and_every_file_with_size_and_sha256() {
    let p = HubProject::new("revision = \"main\"\nexclude = [\"README.md\"]");
    let out = p.lock();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let main = p.hub.branch("main");
    assert!(stderr.contains(&main), "{stderr}");
    let path = p.cx.path().join("mlimg.lock");
    let text = std::fs::read_to_string(&path).expect("lock written");
    let lock: toml::Value = toml::from_str(&text).expect("TOML");
    let w = &lock["weights"][0];
    assert_eq!(w["name"].as_str(), Some("tiny"));
    assert_eq!(w["repo"].as_str(), Some("acme/tiny"));
    assert_eq!(w["revision"].as_str(), Some("main"));
    assert_eq!(w["commit"].as_str(), Some(main.as_str()));
    assert_eq!(w["exclude"][0].as_str(), Some("README.md"));
    let want = p.hub.files(&main);
    let files = w["files"].as_array().expect("files");
    let paths: Vec<&str> = files.iter().filter_map(|f| f["path"].as_str()).collect();
    let mut sorted = paths.clone();
    sorted.sort();
    assert_eq!(paths, sorted, "files in path order");
    assert_eq!(paths.len(), want.len() - 1, "README.md excluded");
    for f in files {
        let path = f["path"].as_str().expect("path");
        let d = &want[path];
        // regular (non-LFS) files too: their sha256 comes from the downloaded bytes
        assert_eq!(f["sha256"].as_str(), Some(d.sha256.as_str()), "{path}");
        assert_eq!(f["size"].as_integer(), Some(d.bytes.len() as i64), "{path}");
    }
    assert!(lock.get("base").is_none(), "scratch has no base entry");

    // Locking again without changes leaves the file byte-identical.
    let out = p.lock();
    assert!(String::from_utf8_lossy(&out.stderr).contains("up to date"));
    assert_eq!(std::fs::read_to_string(&path).expect("lock"), text);
}

#[test]
fn lock_records_the_oci_base_manifest_digest() {
    let cx = TestContext::new();
    let spec = cx.example("sentiment").join("mlimg.toml");
    run_ok(cx.mlimg().arg("lock").arg("-f").arg(&spec));
    let text = std::fs::read_to_string(spec.with_extension("lock")).expect("lock");
    let lock: toml::Value = toml::from_str(&text).expect("TOML");
    let base = &lock["base"];
    assert_eq!(
        base["reference"].as_str(),
        Some("oci:../busybox-base/out:latest")
    );
    let index: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            spec.parent()
                .expect("dir")
                .join("../busybox-base/out/index.json"),
        )
        .expect("index"),
    )
    .expect("json");
    let digest = index["manifests"][0]["digest"].as_str().expect("digest");
    assert_eq!(
        base["platforms"][0]["platform"].as_str(),
        Some("linux/amd64")
    );
    assert_eq!(base["platforms"][0]["digest"].as_str(), Some(digest));
    assert!(
        lock.get("weights").is_none(),
        "local weights are not locked"
    );
    // the example builds --locked against it
    let report = cx.build_json(&spec, &["--locked"]);
    assert!(report["manifest_digest"].is_string());
}

#[test]
fn locked_build_fails_when_the_base_changed() {
    let cx = TestContext::new();
    let spec = cx.example("sentiment").join("mlimg.toml");
    run_ok(cx.mlimg().arg("lock").arg("-f").arg(&spec));
    let lock_path = spec.with_extension("lock");
    let text = std::fs::read_to_string(&lock_path).expect("lock");
    // pretend the lock was made against another base build
    let lock: toml::Value = toml::from_str(&text).expect("TOML");
    let d = lock["base"]["platforms"][0]["digest"]
        .as_str()
        .expect("digest")
        .to_string();
    let other = format!("sha256:{}", "0".repeat(64));
    std::fs::write(&lock_path, text.replace(&d, &other)).expect("write");
    let out = cx
        .mlimg()
        .arg("build")
        .arg("-f")
        .arg(&spec)
        .arg("--locked")
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--locked") && err.contains(&other) && err.contains(&d),
        "{err}"
    );
    // a plain build builds and says the lock is stale
    let out = run_ok(cx.mlimg().arg("build").arg("-f").arg(&spec));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("stale") && err.contains(&d), "{err}");
}

// ---------------------------------------------------------------- wheel sets (issue 8, item 1)

const SIX: &str = "six-1.16.0-py2.py3-none-any.whl";
const IDNA: &str = "idna-3.7-py3-none-any.whl";
const MARKUPSAFE_X86: &str =
    "MarkupSafe-2.1.5-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl";
const MARKUPSAFE_ARM: &str =
    "MarkupSafe-2.1.5-cp311-cp311-manylinux_2_17_aarch64.manylinux2014_aarch64.whl";

/// A scratch spec for linux/amd64 and linux/arm64 with a `[python]` table (nothing to detect)
/// and two wheel sets served by a local index: `util` (six, idna: pure) and `web`
/// (MarkupSafe: one binary wheel per platform).
struct WheelProject {
    cx: TestContext,
    index: Option<PyIndex>,
    spec: PathBuf,
}

fn pin(wheel: &str) -> String {
    let path = testdata_wheel(wheel.split('-').next().expect("name"));
    assert_eq!(file_name(&path), wheel);
    let (name, rest) = wheel.split_once('-').expect("name-version");
    let version = rest.split('-').next().expect("version");
    format!("{name}=={version} --hash=sha256:{}", sha256_file(&path))
}

impl WheelProject {
    fn new() -> WheelProject {
        let cx = TestContext::new();
        let dir = cx.path().join("project");
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(
            dir.join("util.txt"),
            format!("{}\n{}\n", pin(SIX), pin(IDNA)),
        )
        .expect("util.txt");
        let markupsafe = testdata_wheels()
            .iter()
            .filter(|w| file_name(w).starts_with("MarkupSafe-"))
            .map(|w| format!(" --hash=sha256:{}", sha256_file(w)))
            .collect::<String>();
        std::fs::write(
            dir.join("web.txt"),
            format!("markupsafe==2.1.5{markupsafe}\n"),
        )
        .expect("web.txt");
        let spec = dir.join("mlimg.toml");
        std::fs::write(
            &spec,
            "[image]\nbase = \"scratch\"\nplatforms = [\"linux/amd64\", \"linux/arm64\"]\n\n\
             [python]\nversion = \"3.11\"\nprefix = \"/usr/local\"\nlibc = \"glibc 2.36\"\n\n\
             [[deps]]\nname = \"web\"\nrequirements = \"web.txt\"\n\n\
             [[deps]]\nname = \"util\"\nrequirements = \"util.txt\"\n\n\
             [config]\nuser = \"1000:1000\"\nenv = { PYTHONUNBUFFERED = \"1\" }\n",
        )
        .expect("spec");
        let index = PyIndex::serve(&testdata_wheels(), &[]);
        WheelProject {
            cx,
            index: Some(index),
            spec,
        }
    }

    fn index(&self) -> &PyIndex {
        self.index.as_ref().expect("the index is up")
    }

    /// `mlimg ARGS -f SPEC` with `PIP_INDEX_URL` at the index (or, once it is stopped, at
    /// `down`), no retries.
    fn mlimg(&self, args: &[&str], index_url: &str) -> std::process::Command {
        let mut c = self.cx.mlimg();
        c.env("PIP_INDEX_URL", index_url)
            .env_remove("PIP_EXTRA_INDEX_URL")
            .args(args)
            .arg("-f")
            .arg(&self.spec)
            .args(["--retries", "0"]);
        c
    }

    fn lock(&self) -> toml::Value {
        run_ok(&mut self.mlimg(&["lock"], &self.index().url));
        toml::from_str(&self.lock_text()).expect("TOML")
    }

    fn lock_text(&self) -> String {
        std::fs::read_to_string(self.spec.with_extension("lock")).expect("lock written")
    }

    fn out(&self, name: &str) -> String {
        format!("oci:{}", self.cx.path().join(name).display())
    }
}

/// Index page requests (PEP 503 / 691), not file downloads.
fn pages(hits: &[Hit]) -> Vec<&Hit> {
    hits.iter().filter(|h| h.served != "file").collect()
}

fn json(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}{}",
            stdout(out),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

#[test]
fn lock_writes_the_wheels_of_each_set_per_platform() {
    let p = WheelProject::new();
    let lock = p.lock();
    assert!(
        !pages(&p.index().hits()).is_empty(),
        "the lock asks the index"
    );
    let deps = lock["deps"].as_array().expect("[[deps]]");
    let keys: Vec<(&str, &str)> = deps
        .iter()
        .map(|d| {
            (
                d["name"].as_str().expect("name"),
                d["platform"].as_str().expect("platform"),
            )
        })
        .collect();
    assert_eq!(
        keys,
        [
            ("util", "linux/amd64"),
            ("util", "linux/arm64"),
            ("web", "linux/amd64"),
            ("web", "linux/arm64")
        ],
        "one entry per set and platform, sorted"
    );
    let want: [(&str, &str, &[&str]); 4] = [
        ("util", "x86_64", &[IDNA, SIX]),
        ("util", "aarch64", &[IDNA, SIX]),
        ("web", "x86_64", &[MARKUPSAFE_X86]),
        ("web", "aarch64", &[MARKUPSAFE_ARM]),
    ];
    for (d, (set, arch, files)) in deps.iter().zip(want) {
        let inputs = d["inputs"].as_str().expect("inputs");
        assert!(
            inputs.len() == 64 && inputs.bytes().all(|b| b.is_ascii_hexdigit()),
            "{d}"
        );
        assert_eq!(
            d["python"].as_str(),
            Some(format!("CPython 3.11 on linux {arch} (glibc 2.36)").as_str()),
            "{set}"
        );
        let wheels = d["wheels"].as_array().expect("wheels");
        let names: Vec<&str> = wheels
            .iter()
            .map(|w| w["filename"].as_str().expect("filename"))
            .collect();
        assert_eq!(names, files, "{set} {arch}");
        for w in wheels {
            let f = w["filename"].as_str().expect("filename");
            let path = pyindex_wheel(f);
            assert_eq!(
                w["sha256"].as_str(),
                Some(sha256_file(&path).as_str()),
                "{f}"
            );
            assert_eq!(
                w["url_or_path"].as_str(),
                Some(format!("{}/files/{f}", p.index().base).as_str()),
                "{f}: the lock holds where the wheel is downloaded from"
            );
        }
    }
    // a set's inputs are the same on every platform, and differ between sets
    assert_eq!(deps[0]["inputs"], deps[1]["inputs"]);
    assert_eq!(deps[2]["inputs"], deps[3]["inputs"]);
    assert_ne!(deps[0]["inputs"], deps[2]["inputs"]);

    // locking again changes nothing
    let text = p.lock_text();
    let out = run_ok(&mut p.mlimg(&["lock"], &p.index().url));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("up to date"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(p.lock_text(), text);
}

fn pyindex_wheel(filename: &str) -> PathBuf {
    testdata_wheels()
        .into_iter()
        .find(|w| file_name(w) == filename)
        .unwrap_or_else(|| panic!("no committed wheel {filename}"))
}

/// `--locked` asks no index page: with `PIP_INDEX_URL` at a closed port, the wheels come from
/// the URLs in the lock (the index's file server), then, with the index gone, from the wheel
/// cache; the image is the same each time.
#[test]
fn a_locked_build_asks_no_index_page() {
    let mut p = WheelProject::new();
    p.lock();
    let down = format!("{}/simple", closed_port_url());
    let asked = p.index().hits().len();

    let out = run_ok(&mut p.mlimg(&["build", "--locked", "--json", "-o", &p.out("a")], &down));
    let report = json(&out);
    let hits = p.index().hits()[asked..].to_vec();
    assert!(pages(&hits).is_empty(), "index pages asked: {hits:?}");
    let mut files: Vec<String> = hits.iter().map(|h| h.path.clone()).collect();
    files.sort();
    let mut want: Vec<String> = [IDNA, MARKUPSAFE_ARM, MARKUPSAFE_X86, SIX]
        .iter()
        .map(|f| format!("/files/{f}"))
        .collect();
    want.sort();
    assert_eq!(files, want, "each locked wheel downloaded once");
    // no lock-stale (or any other) warning; the base is scratch, so the shared-library lint
    // rightly says MarkupSafe's extension needs a libc the image lacks
    let codes: Vec<&str> = report["warnings"]
        .as_array()
        .expect("warnings")
        .iter()
        .filter_map(|w| w["code"].as_str())
        .filter(|c| *c != "shared-lib-missing")
        .collect();
    assert!(codes.is_empty(), "{report}");
    let platforms = report["platforms"].as_array().expect("platforms");
    assert_eq!(platforms.len(), 2);
    for pl in platforms {
        let roles: Vec<&str> = pl["layers"]
            .as_array()
            .expect("layers")
            .iter()
            .filter_map(|l| l["role"].as_str())
            .collect();
        assert_eq!(roles, ["deps web", "deps util"], "{pl}");
    }

    // The index is gone (its port refuses connections): the wheel cache has every wheel.
    let base = p.index().base.clone();
    p.index = None;
    assert!(std::net::TcpStream::connect(base.trim_start_matches("http://")).is_err());
    let out = run_ok(&mut p.mlimg(&["build", "--locked", "--json", "-o", &p.out("b")], &down));
    assert_eq!(json(&out)["manifest_digest"], report["manifest_digest"]);

    // Without the cache, the only thing a locked build asks for is a locked file URL.
    let out = p
        .mlimg(&["build", "--locked", "--json", "-o", &p.out("c")], &down)
        .env("MLIMG_CACHE_DIR", p.cx.path().join("empty-cache"))
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let msg = json(&out)["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        msg.contains(&format!("{base}/files/")) && !msg.contains("/simple"),
        "{msg}"
    );
}

/// A changed requirements file: `--locked` fails naming the set and `mlimg lock` (asking
/// nothing); a plain build warns `lock-stale` and resolves that set again, the other set
/// still from the lock.
#[test]
fn changed_requirements_make_the_deps_entry_stale() {
    let p = WheelProject::new();
    p.lock();
    let text = p.lock_text();
    std::fs::write(p.spec.with_file_name("util.txt"), format!("{}\n", pin(SIX))).expect("util.txt");

    let asked = p.index().hits().len();
    let out = p
        .mlimg(&["build", "--locked", "--json"], &p.index().url)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = &json(&out)["error"];
    assert_eq!(err["code"], "lock", "{err}");
    let msg = err["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains("deps \"util\"")
            && msg.contains("requirements changed")
            && msg.contains("mlimg lock"),
        "{msg}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("deps \"util\"") && stderr.contains("mlimg lock"),
        "{stderr}"
    );
    assert!(p.index().hits().len() == asked, "--locked asked the index");

    let out = run_ok(&mut p.mlimg(&["build", "--json", "-o", &p.out("img")], &p.index().url));
    let report = json(&out);
    let stale: Vec<&str> = report["warnings"]
        .as_array()
        .expect("warnings")
        .iter()
        .filter(|w| w["code"] == "lock-stale")
        .filter_map(|w| w["message"].as_str())
        .collect();
    assert_eq!(stale.len(), 2, "one per platform: {report}");
    for w in &stale {
        assert!(
            w.contains("deps \"util\"") && w.contains("mlimg lock"),
            "{w}"
        );
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("warning[lock-stale]"), "{stderr}");
    let hits = p.index().hits()[asked..].to_vec();
    let pages: Vec<&str> = pages(&hits).iter().map(|h| h.path.as_str()).collect();
    assert!(
        pages.contains(&"/simple/six/"),
        "util resolved again: {pages:?}"
    );
    assert!(
        !pages
            .iter()
            .any(|p| p.contains("markupsafe") || p.contains("idna")),
        "only the stale set is resolved: {pages:?}"
    );
    assert_eq!(p.lock_text(), text, "a build does not rewrite the lock");
    // the util layer now holds six alone
    for pl in report["platforms"].as_array().expect("platforms") {
        let util = pl["layers"]
            .as_array()
            .expect("layers")
            .iter()
            .find(|l| l["role"] == "deps util")
            .and_then(|l| l["digest"].as_str())
            .expect("deps util");
        let paths = layer_paths(&p.cx.path().join("img"), util);
        let site = "usr/local/lib/python3.11/site-packages/";
        assert!(
            paths.iter().any(|x| x == &format!("{site}six.py")),
            "{paths:?}"
        );
        assert!(!paths.iter().any(|x| x.contains("idna")), "{paths:?}");
    }
}

/// The entry paths of a gzip layer in an OCI layout.
fn layer_paths(layout: &Path, digest: &str) -> Vec<String> {
    let blob = layout
        .join("blobs/sha256")
        .join(digest.trim_start_matches("sha256:"));
    let f = std::fs::File::open(&blob).expect("layer blob");
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(f));
    tar.entries()
        .expect("tar")
        .map(|e| {
            e.expect("entry")
                .path()
                .expect("path")
                .to_string_lossy()
                .into_owned()
        })
        .collect()
}
