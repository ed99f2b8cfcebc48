//! What a Dockerfile could say and the spec now can: file owners (`owner`, `[config]
//! writable`), the build context's `.dockerignore`, docker's default `PATH`, `created` from
//! the git checkout, and `tags = []` refused for `--push`.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::oci::{Strictness, check_layout};
use crate::common::{TestContext, run_ok};

/// Every layer's entries of the one image in an OCI layout: path → (uid, gid, mode).
fn layer_entries(layout: &Path) -> Vec<BTreeMap<String, (u64, u64, u32)>> {
    // structure, digests and diff_ids (the reproducibility rules want 0:0 everywhere; the
    // owners are what this test checks, entry by entry)
    let checked = check_layout(layout, Strictness::Structure).unwrap_or_else(|e| panic!("{e}"));
    let image = checked.images.first().expect("one image");
    image
        .layers
        .iter()
        .map(|l| {
            let hex = l.digest.trim_start_matches("sha256:");
            let f = fs::File::open(layout.join("blobs/sha256").join(hex)).expect("blob");
            let r: Box<dyn Read> = if l.media_type.ends_with("+gzip") {
                Box::new(flate2::read::GzDecoder::new(f))
            } else {
                Box::new(f)
            };
            let mut a = tar::Archive::new(r);
            a.entries()
                .expect("tar")
                .map(|e| {
                    let e = e.expect("entry");
                    let h = e.header();
                    (
                        e.path()
                            .expect("path")
                            .to_string_lossy()
                            .trim_end_matches('/')
                            .to_string(),
                        (
                            h.uid().expect("uid"),
                            h.gid().expect("gid"),
                            h.mode().expect("mode"),
                        ),
                    )
                })
                .collect()
        })
        .collect()
}

fn write(path: &Path, text: &str) {
    fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    fs::write(path, text).expect("write");
}

fn project(cx: &TestContext, spec: &str) -> PathBuf {
    let dir = cx.path().join("project");
    write(&dir.join("app/main.sh"), "#!/bin/sh\n");
    write(&dir.join("app/data/state.txt"), "x\n");
    write(&dir.join("models/m/config.json"), "{}\n");
    write(&dir.join("mlimg.toml"), spec);
    dir.join("mlimg.toml")
}

#[test]
fn owner_and_writable_folders_are_numeric_and_reproducible() {
    let cx = TestContext::new();
    let spec = project(
        &cx,
        r#"[image]
name = "localhost/owned"

[[weights]]
name = "m"
source = "models/m"
dest = "/models/m"
owner = "2000:3000"

[app]
src = "app"
owner = "1000:1000"

[config]
cmd = ["/app/main.sh"]
user = "1001:1002"
writable = ["/app/cache", "/app/data", "/var/cache/hf"]
"#,
    );
    let out = cx.path().join("out");
    run_ok(
        cx.mlimg()
            .args(["build", "--no-sbom", "--no-provenance", "-f"])
            .arg(&spec)
            .arg("-o")
            .arg(format!("oci:{}", out.display())),
    );
    let layers = layer_entries(&out);
    let [weights, app] = layers.as_slice() else {
        panic!("two layers: {layers:?}")
    };
    assert_eq!(weights["models/m/config.json"].0, 2000);
    assert_eq!(weights["models/m/config.json"].1, 3000);
    assert_eq!(weights["models/m"].0, 2000, "dest itself");
    assert_eq!(weights["models"].0, 0, "parents of dest stay root's");
    // writable folders belong to [config] user, inside the app's folder too
    let owner = |p: &str| (app[p].0, app[p].1);
    assert_eq!(owner("app/main.sh"), (1000, 1000), "{app:?}");
    assert_eq!(owner("app"), (1000, 1000));
    assert_eq!(owner("app/cache"), (1001, 1002));
    assert_eq!(owner("app/data"), (1001, 1002));
    assert_eq!(owner("app/data/state.txt"), (1001, 1002));
    assert_eq!(owner("var/cache/hf"), (1001, 1002));
    assert_eq!(owner("var/cache"), (0, 0));
    assert_eq!(app["app/cache"].2 & 0o777, 0o755);

    // the same spec builds the same bytes again, in another folder with another cache
    let cx2 = TestContext::new();
    let spec2 = project(&cx2, &fs::read_to_string(&spec).expect("spec"));
    let out2 = cx2.path().join("out");
    run_ok(
        cx2.mlimg()
            .args(["build", "--no-sbom", "--no-provenance", "-f"])
            .arg(&spec2)
            .arg("-o")
            .arg(format!("oci:{}", out2.display())),
    );
    assert_eq!(
        fs::read(out.join("index.json")).expect("index"),
        fs::read(out2.join("index.json")).expect("index")
    );
}

#[test]
fn owners_must_be_numbers_and_writable_needs_a_numeric_user() {
    let cx = TestContext::new();
    for (extra, field, want) in [
        (
            "[app]\nsrc = \"app\"\nowner = \"app\"\n",
            "app.owner",
            "UID:GID",
        ),
        (
            "[app]\nsrc = \"app\"\n[config]\nuser = \"app\"\nwritable = [\"/app/cache\"]\n",
            "config.writable[0]",
            "numeric",
        ),
    ] {
        let spec = project(&cx, &format!("[image]\nname = \"localhost/x\"\n{extra}"));
        let out = cx
            .mlimg()
            .args(["build", "--dry-run", "-f"])
            .arg(&spec)
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(2));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(field) && err.contains(want) && err.contains("mlimg.toml:"),
            "{err}"
        );
    }
}

/// The image paths of the dry-run plan's app layer.
fn app_paths(cx: &TestContext, spec: &Path) -> Vec<String> {
    let out = run_ok(
        cx.mlimg()
            .args(["build", "--dry-run", "--json", "-f"])
            .arg(spec),
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    v["platforms"][0]["layers"]
        .as_array()
        .and_then(|ls| ls.iter().find(|l| l["role"] == "app"))
        .and_then(|l| l["entries"].as_array())
        .unwrap_or_else(|| panic!("no app layer: {v}"))
        .iter()
        .filter_map(|e| e["path"].as_str().map(str::to_string))
        .collect()
}

#[test]
fn the_build_context_dockerignore_applies_to_the_app_layer() {
    let cx = TestContext::new();
    let spec = project(
        &cx,
        "[image]\nname = \"localhost/ctx\"\n[app]\nsrc = \"app\"\n[config]\ncmd = [\"/app/main.sh\"]\n",
    );
    let dir = spec.parent().expect("dir");
    write(&dir.join("app/secret.txt"), "s\n");
    write(&dir.join("app/debug.log"), "l\n");
    write(&dir.join("app/keep.log"), "k\n");
    write(&dir.join("app/sub/trace.log"), "t\n");
    // docker reads the context's .dockerignore with paths from the context
    write(
        &dir.join(".dockerignore"),
        "app/secret.txt\n**/*.log\nmodels\n",
    );
    // the app folder's own rules come after the context's: the last match wins
    write(&dir.join("app/.dockerignore"), "!keep.log\n");
    let paths = app_paths(&cx, &spec);
    for gone in ["/app/secret.txt", "/app/debug.log", "/app/sub/trace.log"] {
        assert!(!paths.contains(&gone.to_string()), "{gone} in {paths:?}");
    }
    for kept in ["/app/main.sh", "/app/keep.log", "/app/data/state.txt"] {
        assert!(paths.contains(&kept.to_string()), "{kept} not in {paths:?}");
    }
    // the context's file names the app folder itself: nothing of it is left
    write(&dir.join(".dockerignore"), "app\n");
    write(&dir.join("app/.dockerignore"), "");
    assert_eq!(app_paths(&cx, &spec), Vec::<String>::new());
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = run_ok(
        Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
            .args(args)
            .env("GIT_COMMITTER_DATE", "2024-05-06T07:08:09Z")
            .env("GIT_AUTHOR_DATE", "2024-05-06T07:08:09Z"),
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The built image's config `created` and its app layer's digest.
fn created_and_app_layer(
    cx: &TestContext,
    spec: &Path,
    out: &str,
    sde: Option<&str>,
) -> (String, String) {
    let dir = cx.path().join(out);
    let mut c = cx.mlimg();
    if let Some(v) = sde {
        c.env("SOURCE_DATE_EPOCH", v);
    }
    let report = run_ok(
        c.args(["build", "--json", "--no-sbom", "--no-provenance", "-f"])
            .arg(spec)
            .arg("-o")
            .arg(format!("oci:{}", dir.display())),
    );
    let v: serde_json::Value = serde_json::from_slice(&report.stdout).expect("json");
    let checked = check_layout(&dir, Strictness::Repro).unwrap_or_else(|e| panic!("{e}"));
    let image = checked.images.first().expect("image");
    let app = v["platforms"][0]["layers"]
        .as_array()
        .and_then(|ls| ls.iter().find(|l| l["role"] == "app"))
        .and_then(|l| l["digest"].as_str())
        .unwrap_or_else(|| panic!("no app layer: {v}"))
        .to_string();
    (
        image.config["created"]
            .as_str()
            .expect("created")
            .to_string(),
        app,
    )
}

#[test]
fn created_comes_from_the_last_commit_of_a_clean_checkout() {
    let cx = TestContext::new();
    let spec = project(
        &cx,
        "[image]\nname = \"localhost/g\"\n[app]\nsrc = \"app\"\n[config]\ncmd = [\"/app/main.sh\"]\n",
    );
    let dir = spec.parent().expect("dir").to_path_buf();
    // not a checkout: the epoch
    let (plain, app0) = created_and_app_layer(&cx, &spec, "o0", None);
    assert_eq!(plain, "1970-01-01T00:00:00Z");

    git(&dir, &["init", "-q"]);
    git(&dir, &["add", "-A"]);
    git(&dir, &["commit", "-qm", "first"]);
    let info = mlimg::sources::git::read(&dir).expect("a checkout");
    assert!(info.clean, "{info:?}");
    assert_eq!(info.commit_time, 1_714_979_289);
    assert_eq!(info.commit, git(&dir, &["rev-parse", "HEAD"]));
    assert_eq!(info.remote_url, None);
    git(
        &dir,
        &[
            "remote",
            "add",
            "origin",
            "https://bob:tok3n@example.com/acme/app.git",
        ],
    );
    let info = mlimg::sources::git::read(&dir).expect("a checkout");
    assert_eq!(
        info.remote_url.as_deref(),
        Some("https://example.com/acme/app.git")
    );

    let (clean, app1) = created_and_app_layer(&cx, &spec, "o1", None);
    assert_eq!(clean, "2024-05-06T07:08:09Z");
    // the layers keep their mtime: a commit does not change them
    assert_eq!(app1, app0);
    // SOURCE_DATE_EPOCH wins
    let (sde, _) = created_and_app_layer(&cx, &spec, "o2", Some("1700000000"));
    assert_eq!(sde, "2023-11-14T22:13:20Z");
    // a dirty tree: the epoch again
    write(&dir.join("app/new.txt"), "n\n");
    let (dirty, _) = created_and_app_layer(&cx, &spec, "o3", None);
    assert_eq!(dirty, "1970-01-01T00:00:00Z");
}

#[test]
fn a_base_without_path_gets_dockers_default() {
    let cx = TestContext::new();
    let spec = project(
        &cx,
        "[image]\nname = \"localhost/p\"\n[config]\ncmd = [\"/app/main.sh\"]\nenv = { A = \"1\" }\n",
    );
    let out = run_ok(
        cx.mlimg()
            .args(["build", "--dry-run", "--json", "-f"])
            .arg(&spec),
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(
        v["platforms"][0]["config"]["Env"],
        serde_json::json!([
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "A=1"
        ])
    );
    // a PATH of the spec's stays as it is
    let spec = project(
        &cx,
        "[image]\nname = \"localhost/p\"\n[config]\nenv = { PATH = \"/opt/bin\" }\n",
    );
    let out = run_ok(
        cx.mlimg()
            .args(["build", "--dry-run", "--json", "-f"])
            .arg(&spec),
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(
        v["platforms"][0]["config"]["Env"],
        serde_json::json!(["PATH=/opt/bin"])
    );
}

#[test]
fn push_without_any_tag_is_an_error_not_latest() {
    let cx = TestContext::new();
    for tags in ["tags = []\n", ""] {
        let spec = project(
            &cx,
            &format!("[image]\nname = \"127.0.0.1:9/acme/app\"\n{tags}[config]\ncmd = [\"/x\"]\n"),
        );
        let out = cx
            .mlimg()
            .args(["build", "--push", "--json", "-f"])
            .arg(&spec)
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(2), "{tags:?}");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        assert_eq!(v["error"]["code"], "spec");
        let m = v["error"]["message"].as_str().unwrap_or("");
        assert!(
            m.contains("--push needs a tag") && m.contains("--tag"),
            "{m}"
        );
    }
}

/// A Debian-shaped base (CPython 3.11 under /usr, a dpkg database whose python3-wheel owns
/// /usr/bin/wheel) built into `DIR/base/out`, and a spec installing the wheel package on it.
fn debian_project(cx: &TestContext) -> PathBuf {
    let dir = cx.path().join("deb");
    let fs_root = dir.join("base/fs");
    write(&fs_root.join("usr/lib/python3.11/os.py"), "# stdlib\n");
    write(&fs_root.join("etc/debian_version"), "12\n");
    write(
        &fs_root.join("var/lib/dpkg/status"),
        "Package: libc6\nStatus: install ok installed\nVersion: 2.36-9\n\n\
         Package: python3-wheel\nStatus: install ok installed\nVersion: 0.38.4-2\n\n",
    );
    write(
        &fs_root.join("var/lib/dpkg/info/python3-wheel.list"),
        "/.\n/usr\n/usr/bin\n/usr/bin/wheel\n/usr/lib/python3/dist-packages/wheel/__init__.py\n",
    );
    write(
        &dir.join("base/mlimg.toml"),
        "[image]\nname = \"localhost/deb\"\n[[deps]]\nname = \"fs\"\ndir = \"fs\"\ndest = \"/\"\n",
    );
    run_ok(
        cx.mlimg()
            .args(["build", "--no-sbom", "--no-provenance", "-f"])
            .arg(dir.join("base/mlimg.toml"))
            .arg("-o")
            .arg(format!("oci:{}", dir.join("base/out").display())),
    );
    let wheel = crate::common::pyindex::testdata_wheel("wheel-");
    fs::create_dir_all(dir.join("wheels")).expect("mkdir");
    fs::copy(
        &wheel,
        dir.join("wheels").join(wheel.file_name().expect("name")),
    )
    .expect("copy");
    write(
        &dir.join("requirements.txt"),
        &format!(
            "wheel==0.43.0 --hash=sha256:{}\n",
            crate::common::sha256_file(&wheel)
        ),
    );
    write(
        &dir.join("mlimg.toml"),
        "[image]\nname = \"localhost/debapp\"\nbase = \"oci:base/out\"\n\n\
         [[deps]]\nname = \"py\"\nrequirements = \"requirements.txt\"\nfind_links = [\"wheels\"]\n",
    );
    dir.join("mlimg.toml")
}

#[test]
fn on_a_debian_base_wheels_go_where_pip_puts_them_and_never_over_dpkg_files() {
    let cx = TestContext::new();
    let spec = debian_project(&cx);
    let plan = crate::common::stdout(&run_ok(
        cx.mlimg()
            .env("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
            .args(["build", "--dry-run", "-f"])
            .arg(&spec),
    ));
    assert!(
        plan.contains("into /usr/local/lib/python3.11/dist-packages for CPython 3.11"),
        "{plan}"
    );
    // the wheel's console script would replace /usr/bin/wheel of python3-wheel
    let out = cx
        .mlimg()
        .env("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
        .args(["build", "--json", "-f"])
        .arg(&spec)
        .arg("-o")
        .arg(format!("oci:{}", cx.path().join("out").display()))
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let m = v["error"]["message"].as_str().unwrap_or("");
    assert!(
        m.contains("wheel-0.43.0-py3-none-any.whl")
            && m.contains("/usr/bin/wheel")
            && m.contains("`python3-wheel`"),
        "{m}"
    );
    assert!(!cx.path().join("out").exists());
}
