//! The bundled service (specs/iris-service) end to end against the Docker Engine: a Debian
//! Python base made from bookworm's packages (scripts/make-python-rootfs, .debs cached in
//! target/debs) pushed to a local registry, the service built on it with pinned, hash-checked
//! wheels from PyPI (cached between runs in target/mlimg-test/wheels) and pushed, then pulled,
//! run until healthy, asked for predictions and stopped. Needs docker, apt-get, the registry
//! and a python3.11 (scripts/setup): a missing one fails the test.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::common::registry::TestRegistry;
use crate::common::{TestContext, copy_missing, copy_tree, repo_root, run_ok, stdout};

/// Where wheels downloaded by these tests are kept between runs.
fn wheel_store() -> PathBuf {
    repo_root().join("target/mlimg-test/wheels")
}

/// Hard-links (or copies) the stored wheels into `cache`'s wheel cache
/// (`<cache>/wheels/wheels/<sha256>/<file>`), so a fresh cache downloads nothing again.
pub(crate) fn seed_wheels(cache: &Path) {
    copy_missing(&wheel_store(), &cache.join("wheels/wheels"), &|_| true);
}

/// Keeps the wheels a build downloaded into `cache` for the next run.
pub(crate) fn keep_wheels(cache: &Path) {
    copy_missing(&cache.join("wheels/wheels"), &wheel_store(), &|n| {
        n.ends_with(".whl")
    });
}

static ROOTFS: Mutex<()> = Mutex::new(());

/// A Debian bookworm Python 3.11 root file system for `arch` (a Debian architecture), made
/// once per test run in target/mlimg-test/python-rootfs-ARCH by scripts/make-python-rootfs.
pub(crate) fn python_rootfs(arch: &str) -> PathBuf {
    made_rootfs("make-python-rootfs", "python-rootfs", arch)
}

/// The root file system `scripts/SCRIPT DIR ARCH` makes, made once per test run in
/// target/mlimg-test/NAME-ARCH.
pub(crate) fn made_rootfs(script: &str, name: &str, arch: &str) -> PathBuf {
    let _one = ROOTFS.lock().unwrap_or_else(|e| e.into_inner());
    let dir = repo_root().join(format!("target/mlimg-test/{name}-{arch}"));
    let stamp = dir.with_extension("done");
    let made_now = fs::read_to_string(&stamp).ok() == Some(std::process::id().to_string());
    if !made_now {
        run_ok(
            Command::new(repo_root().join("scripts").join(script))
                .arg(&dir)
                .arg(arch),
        );
        fs::write(&stamp, std::process::id().to_string()).expect("stamp");
    }
    dir
}

/// Builds specs/python-base for each Debian architecture in `arches` and pushes it to
/// `reg` as `mlimg-python:3.11-ARCH`; returns those references.
pub(crate) fn push_python_base(
    cx: &TestContext,
    reg: &TestRegistry,
    arches: &[&str],
) -> Vec<String> {
    push_rootfs_base(cx, reg, arches, "mlimg-python", &python_rootfs)
}

/// Builds specs/python-base with the root file system `rootfs(arch)` for each Debian
/// architecture in `arches` and pushes it to `reg` as `REPO:3.11-ARCH`.
pub(crate) fn push_rootfs_base(
    cx: &TestContext,
    reg: &TestRegistry,
    arches: &[&str],
    repo: &str,
    rootfs: &dyn Fn(&str) -> PathBuf,
) -> Vec<String> {
    let mut refs = Vec::new();
    for arch in arches {
        let rootfs = rootfs(arch);
        let dir = cx.path().join(format!("{repo}-base-{arch}"));
        fs::create_dir_all(&dir).expect("mkdir");
        let text = fs::read_to_string(repo_root().join("specs/python-base/mlimg.toml"))
            .expect("base spec")
            .replace(
                "platforms = [\"linux/amd64\"]",
                &format!("platforms = [\"linux/{arch}\"]"),
            )
            .replace(
                "dir = \"rootfs\"",
                &format!("dir = \"{}\"", rootfs.display()),
            );
        fs::write(dir.join("mlimg.toml"), text).expect("write base spec");
        let r = format!("{}/{repo}:3.11-{arch}", reg.host());
        run_ok(
            cx.mlimg()
                .args(["build", "--allow-outside-context", "-f"])
                .arg(dir.join("mlimg.toml"))
                .arg("-o")
                .arg(format!("registry:{r}")),
        );
        refs.push(r);
    }
    refs
}

/// A copy of specs/iris-service in the context, its spec naming `base` and
/// `REG/iris-service` with tag `tag`, then `edits` applied (`(from, to)` replacements).
pub(crate) fn iris_spec(
    cx: &TestContext,
    reg: &TestRegistry,
    base: &str,
    tag: &str,
    edits: &[(&str, &str)],
) -> PathBuf {
    let dir = cx.path().join("iris-service");
    copy_tree(&repo_root().join("specs/iris-service"), &dir);
    let mut text = fs::read_to_string(dir.join("mlimg.toml"))
        .expect("spec")
        .replace(
            "base = \"127.0.0.1:5000/mlimg-python:3.11\"",
            &format!("base = \"{base}\""),
        )
        .replace("127.0.0.1:5000", &reg.host())
        .replace(
            "tags = [\"0.1.0\", \"latest\"]",
            &format!("tags = [\"{tag}\"]"),
        );
    for (from, to) in edits {
        assert!(text.contains(from), "spec has no {from:?}");
        text = text.replace(from, to);
    }
    fs::write(dir.join("mlimg.toml"), text).expect("write spec");
    dir.join("mlimg.toml")
}

/// Removes the container when dropped (also when the test fails).
pub(crate) struct Container(pub String);

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rm", "-f", &self.0]).output();
    }
}

pub(crate) fn docker(args: &[&str]) -> String {
    stdout(&run_ok(Command::new("docker").args(args)))
        .trim()
        .to_string()
}

/// Waits until `docker inspect` reports the container healthy; fails with its logs if it
/// exits or stays unhealthy for `limit`.
pub(crate) fn wait_healthy(id: &str, limit: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let state = docker(&[
            "inspect",
            "-f",
            "{{.State.Running}} {{.State.Health.Status}}",
            id,
        ]);
        if state == "true healthy" {
            return start.elapsed();
        }
        if !state.starts_with("true") || start.elapsed() > limit {
            let logs = Command::new("docker").args(["logs", id]).output().ok();
            panic!(
                "container {id} is not healthy ({state}) after {:?}; logs:\n{}",
                start.elapsed(),
                logs.map(|o| format!(
                    "{}{}",
                    String::from_utf8_lossy(&o.stdout),
                    String::from_utf8_lossy(&o.stderr)
                ))
                .unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// One HTTP/1.0 request to 127.0.0.1:port; returns (status, body).
pub(crate) fn http(port: u16, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .expect("send");
    let mut resp = String::new();
    s.read_to_string(&mut resp).expect("read response");
    let status = resp
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not HTTP: {resp}"));
    let body = resp.split_once("\r\n\r\n").map(|x| x.1).unwrap_or("");
    (status, body.to_string())
}

/// The host port docker mapped to the container's 8000/tcp.
pub(crate) fn host_port(id: &str) -> u16 {
    let p = docker(&["port", id, "8000/tcp"]);
    p.lines()
        .next()
        .and_then(|l| l.rsplit(':').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no port mapping: {p}"))
}

pub(crate) fn predict(port: u16, features: &str) -> serde_json::Value {
    let (status, body) = http(
        port,
        "POST",
        "/predict",
        &format!("{{\"features\": {features}}}"),
    );
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

#[test]
fn iris_service_builds_pushes_runs_healthy_and_predicts() {
    let cx = TestContext::new();
    let reg = TestRegistry::start();
    let base = push_python_base(&cx, &reg, &["amd64"]).remove(0);
    let tag = format!("t{}", std::process::id());
    let spec = iris_spec(&cx, &reg, &base, &tag, &[]);
    seed_wheels(&cx.cache);
    let report = cx.build_json(&spec, &["--push"]);
    keep_wheels(&cx.cache);
    let warnings = report["warnings"].to_string();
    assert!(
        !warnings.contains("bytecode-no-interpreter"),
        "a python3.11 is needed on the build machine: {warnings}"
    );
    let image = format!("{}/iris-service:{tag}", reg.host());

    // Reproducible: a second build with a fresh cache and another checkout gives the same
    // image digest (bytecode included).
    let cx2 = TestContext::new();
    seed_wheels(&cx2.cache);
    let spec2 = iris_spec(&cx2, &reg, &base, &tag, &[]);
    let layout = cx2.path().join("out");
    let report2 = cx2.build_json(&spec2, &["-o", &format!("oci:{}", layout.display())]);
    assert_eq!(
        report["manifest_digest"], report2["manifest_digest"],
        "same inputs, same digest:\n{report}\n{report2}"
    );

    docker(&["pull", "-q", &image]);
    let _image_guard = ImageGuard(image.clone());
    let inspect: serde_json::Value =
        serde_json::from_str(&docker(&["image", "inspect", &image])).expect("inspect json");
    let c = &inspect[0]["Config"];
    assert_eq!(c["User"], "1000:1000");
    assert_eq!(c["WorkingDir"], "/app");
    assert_eq!(c["StopSignal"], "SIGTERM");
    assert!(c["ExposedPorts"]["8000/tcp"].is_object(), "{c}");
    assert_eq!(
        c["Labels"]["org.opencontainers.image.title"],
        "iris-service"
    );
    let env: Vec<&str> = c["Env"]
        .as_array()
        .expect("Env")
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert!(
        env.contains(&"MODEL_PATH=/models/iris/iris.safetensors"),
        "{env:?}"
    );
    assert!(env.contains(&"PYTHONUNBUFFERED=1"), "{env:?}");
    assert!(
        !env.iter()
            .any(|e| e.starts_with("PYTHONDONTWRITEBYTECODE")
                || e.starts_with("PYTHONPYCACHEPREFIX")),
        "{env:?}"
    );
    assert_eq!(c["Healthcheck"]["Test"][0], "CMD");
    assert_eq!(c["Healthcheck"]["Test"][1], "python3");
    assert_eq!(c["Healthcheck"]["Interval"], 2_000_000_000u64);

    // Run it: healthy (the model loaded), predictions, SIGTERM ends it cleanly.
    let id = docker(&["run", "-d", "-p", "127.0.0.1::8000", &image]);
    let container = Container(id.clone());
    let took = wait_healthy(&id, Duration::from_secs(90));
    eprintln!("healthy after {took:?}");
    let port = host_port(&id);
    let (status, body) = http(port, "GET", "/health", "");
    assert_eq!((status, body.contains("ok")), (200, true), "{body}");
    let p = predict(port, "[6.3, 3.3, 6.0, 2.5]");
    assert_eq!(p["label"], "virginica", "{p}");
    assert_eq!(predict(port, "[5.1, 3.5, 1.4, 0.2]")["label"], "setosa");
    assert_eq!(predict(port, "[5.9, 2.8, 4.3, 1.3]")["label"], "versicolor");
    let (status, _) = http(port, "POST", "/predict", "{\"features\": [1]}");
    assert_eq!(status, 422);
    let t = Instant::now();
    docker(&["stop", "-t", "10", &id]);
    let stopped = t.elapsed();
    assert!(
        stopped < Duration::from_secs(9),
        "SIGTERM took {stopped:?}: not handled?"
    );
    assert_eq!(docker(&["inspect", "-f", "{{.State.ExitCode}}", &id]), "0");
    drop(container);

    // Bytecode: the .pyc files are in the image, and a cold import writes none (root could:
    // `docker diff` would list them), also with a read-only root file system.
    let check = "import importlib.util as u, os, numpy, starlette, uvicorn\n\
                 for m in (numpy, starlette, uvicorn):\n\
                 \x20   c = u.cache_from_source(m.__file__)\n\
                 \x20   assert os.path.exists(c), c\n\
                 print(numpy.__file__)";
    let out = docker(&[
        "run",
        "--rm",
        "--entrypoint",
        "python3",
        &image,
        "-c",
        check,
    ]);
    assert!(out.contains("/numpy/__init__.py"), "{out}");
    let id = docker(&[
        "create",
        "--user",
        "0",
        "--entrypoint",
        "python3",
        &image,
        "-c",
        "import numpy, starlette, uvicorn, uvicorn.main, anyio, h11, click, idna",
    ]);
    let _c = Container(id.clone());
    run_ok(Command::new("docker").args(["start", "-a", &id]));
    let diff = docker(&["diff", &id]);
    assert!(
        !diff.contains(".pyc"),
        "a cold import wrote bytecode:\n{diff}"
    );
    docker(&[
        "run",
        "--rm",
        "--read-only",
        "--entrypoint",
        "python3",
        &image,
        "-c",
        "import numpy, starlette, uvicorn",
    ]);
}

/// Removes a pulled image when dropped.
pub(crate) struct ImageGuard(pub String);

impl Drop for ImageGuard {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rmi", &self.0]).output();
    }
}

#[test]
fn compile_bytecode_false_writes_no_pyc_and_a_missing_interpreter_is_reported() {
    let cx = TestContext::new();
    let reg = TestRegistry::start();
    let base = push_python_base(&cx, &reg, &["amd64"]).remove(0);
    let spec = iris_spec(
        &cx,
        &reg,
        &base,
        "nobc",
        &[("[[deps]]", "[python]\ncompile_bytecode = false\n\n[[deps]]")],
    );
    seed_wheels(&cx.cache);
    let plan = stdout(&run_ok(
        cx.mlimg().args(["build", "--dry-run", "-f"]).arg(&spec),
    ));
    assert!(plan.contains("bytecode: none"), "{plan}");
    let cx_on = TestContext::new();
    let on = iris_spec(&cx_on, &reg, &base, "bc", &[]);
    let plan_on = stdout(&run_ok(
        cx.mlimg().args(["build", "--dry-run", "-f"]).arg(&on),
    ));
    assert!(
        plan_on.contains("bytecode: .pyc (cpython-311) compiled by"),
        "{plan_on}"
    );
    // the selector differs: the layer's bytes do
    let sel = |p: &str| {
        p.lines()
            .find(|l| l.contains("deps runtime"))
            .and_then(|l| l.split("selector ").nth(1))
            .map(str::to_string)
            .expect("selector")
    };
    assert_ne!(sel(&plan), sel(&plan_on));
    // No interpreter of the target's version: a warning with a code, and the image sets
    // PYTHONPYCACHEPREFIX so that imports after the first are warm.
    let out = run_ok(
        cx.mlimg()
            .env("MLIMG_BYTECODE_PYTHON", "/nonexistent/python3.11")
            .args(["build", "--dry-run", "-f"])
            .arg(&on),
    );
    let all = format!("{}{}", stdout(&out), String::from_utf8_lossy(&out.stderr));
    assert!(all.contains("bytecode-no-interpreter"), "{all}");
    assert!(all.contains("PYTHONPYCACHEPREFIX=/tmp/pycache"), "{all}");
    assert!(all.contains("bytecode: none"), "{all}");
    let layout = cx.path().join("out");
    cx.build_json(&spec, &["-o", &format!("oci:{}", layout.display())]);
    keep_wheels(&cx.cache);
    let pycs = count_layer_pycs(&layout);
    // numpy's wheel ships one .pyc of its own (numpy/distutils/__pycache__/conv_template…)
    assert_eq!(pycs.0, 1, "compile_bytecode = false");
    assert!(pycs.1 > 500, "numpy's sources are there ({})", pycs.1);
}

/// (.pyc files, .py files) in the deps layer (the largest gzip layer after the base) of the
/// single image in an OCI layout.
fn count_layer_pycs(layout: &Path) -> (usize, usize) {
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(layout.join("index.json")).expect("index")).expect("json");
    let blob = |d: &str| {
        layout
            .join("blobs/sha256")
            .join(d.trim_start_matches("sha256:"))
    };
    let m: serde_json::Value = serde_json::from_slice(
        &fs::read(blob(
            index["manifests"][0]["digest"].as_str().expect("digest"),
        ))
        .expect("manifest"),
    )
    .expect("json");
    let mut best = (0, 0);
    for l in m["layers"].as_array().expect("layers").iter().skip(1) {
        let f = fs::File::open(blob(l["digest"].as_str().expect("digest"))).expect("blob");
        let r: Box<dyn Read> = if l["mediaType"].as_str().is_some_and(|t| t.ends_with("gzip")) {
            Box::new(flate2::read::GzDecoder::new(f))
        } else {
            Box::new(f)
        };
        let mut a = tar::Archive::new(r);
        let (mut pyc, mut py) = (0, 0);
        for e in a.entries().expect("tar") {
            let e = e.expect("entry");
            let p = e.path().expect("path").to_string_lossy().into_owned();
            if p.ends_with(".pyc") {
                pyc += 1;
            } else if p.ends_with(".py") {
                py += 1;
            }
        }
        if py > best.1 {
            best = (pyc, py);
        }
    }
    best
}

/// `[python]` alone may set `compile_bytecode`; `prefix`, `libc` or `site_packages` still need
/// a `version`.
#[test]
fn python_table_options_without_a_version() {
    let cx = TestContext::new();
    let dir = cx.path().join("s");
    fs::create_dir_all(&dir).expect("mkdir");
    let spec = dir.join("mlimg.toml");
    fs::write(&spec, "[image]\n\n[python]\ncompile_bytecode = false\n").expect("write");
    run_ok(cx.mlimg().args(["build", "--dry-run", "-f"]).arg(&spec));
    fs::write(&spec, "[image]\n\n[python]\nprefix = \"/usr\"\n").expect("write");
    let out = cx
        .mlimg()
        .args(["build", "--dry-run", "-f"])
        .arg(&spec)
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("mlimg.toml:3:1: python.version") && err.contains("need its version"),
        "{err}"
    );
}
