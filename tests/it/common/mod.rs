//! Shared test harness: temp project copies, the mlimg binary, and the independent checkers
//! (the project's own OCI checker in `oci`, skopeo, umoci, docker; `../shared/tools/oci-check`
//! in addition where it exists). A missing installed tool fails the test loudly.

#![allow(dead_code)]

pub mod faultproxy;
pub mod hostile;
pub mod hub;
pub mod hub_bench;
pub mod image;
pub mod limitproxy;
pub mod oci;
pub mod pyindex;
pub mod registry;
pub mod scripted;
pub mod snapshot;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A temp folder, a private cache, and helpers to run mlimg in it.
pub struct TestContext {
    pub tmp: tempfile::TempDir,
    pub cache: PathBuf,
}

impl TestContext {
    pub fn new() -> Self {
        let tmp = tempfile::Builder::new()
            .prefix("mlimg-it-")
            .tempdir()
            .expect("temp dir");
        let cache = tmp.path().join("cache");
        TestContext { tmp, cache }
    }

    pub fn path(&self) -> &Path {
        self.tmp.path()
    }

    /// `mlimg` with this context's cache and no SOURCE_DATE_EPOCH or shared-cache key from
    /// the outside.
    pub fn mlimg(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_mlimg"));
        c.env("MLIMG_CACHE_DIR", &self.cache)
            .env_remove("SOURCE_DATE_EPOCH")
            .env_remove("MLIMG_CACHE_KEY");
        c
    }

    /// Copies `specs/NAME` into `DEST/specs/NAME`, and builds the busybox base beside it
    /// (`DEST/specs/busybox-base/out`), which the examples use as their base.
    pub fn example_in(&self, name: &str, dest: &Path) -> PathBuf {
        let specs = dest.join("specs");
        copy_tree(&repo_root().join("specs").join(name), &specs.join(name));
        let base = specs.join("busybox-base");
        if !base.join("out/index.json").exists() {
            copy_tree(&repo_root().join("specs/busybox-base"), &base);
            let _ = std::fs::remove_dir_all(base.join("rootfs"));
            let _ = std::fs::remove_dir_all(base.join("out"));
            run_ok(
                Command::new(repo_root().join("scripts/make-busybox-rootfs"))
                    .arg(base.join("rootfs")),
            );
            run_ok(
                self.mlimg()
                    .arg("build")
                    .arg("-f")
                    .arg(base.join("mlimg.toml"))
                    .arg("-o")
                    .arg(format!("oci:{}", base.join("out").display())),
            );
        }
        specs.join(name)
    }

    pub fn example(&self, name: &str) -> PathBuf {
        self.example_in(name, &self.path().join("project"))
    }

    /// Builds a spec with `--json` and extra args; returns the parsed report.
    pub fn build_json(&self, spec: &Path, extra: &[&str]) -> serde_json::Value {
        let out = run_ok(
            self.mlimg()
                .arg("build")
                .arg("-f")
                .arg(spec)
                .arg("--json")
                .args(extra),
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "--json output is not JSON ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }
}

/// Recursively copies a folder, keeping symlinks as symlinks (no `target`, `out` or `rootfs`).
pub fn copy_tree(src: &Path, dest: &Path) {
    std::fs::create_dir_all(dest).expect("mkdir");
    for e in std::fs::read_dir(src).expect("read_dir") {
        let e = e.expect("entry");
        let ft = e.file_type().expect("file type");
        let to = dest.join(e.file_name());
        if ft.is_dir() {
            if ["out", "rootfs", "target"].contains(&e.file_name().to_string_lossy().as_ref()) {
                continue;
            }
            copy_tree(&e.path(), &to);
        } else if ft.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(e.path()).expect("readlink"), &to)
                .expect("symlink");
        } else {
            std::fs::copy(e.path(), &to).expect("copy");
        }
    }
}

/// Runs a command that must succeed; panics with its output otherwise.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e} (is it installed? see .ci/run)"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn sha256_file(p: &Path) -> String {
    use sha2::Digest as _;
    let bytes = std::fs::read(p).expect("read");
    hex::encode(sha2::Sha256::digest(bytes))
}

/// Layer digests of a `--json` report, keyed by role.
pub fn layer_digest(report: &serde_json::Value, role: &str) -> String {
    report["layers"]
        .as_array()
        .and_then(|ls| ls.iter().find(|l| l["role"] == role))
        .and_then(|l| l["digest"].as_str())
        .unwrap_or_else(|| panic!("no layer {role} in {report}"))
        .to_string()
}

pub fn layer_cached(report: &serde_json::Value, role: &str) -> bool {
    report["layers"]
        .as_array()
        .and_then(|ls| ls.iter().find(|l| l["role"] == role))
        .and_then(|l| l["cached"].as_bool())
        .unwrap_or_else(|| panic!("no layer {role} in {report}"))
}

/// Every file under `from` whose name `want` accepts and that `to` lacks (same relative path),
/// hard-linked there, or copied under a temporary name and renamed when a link is not possible:
/// how tests keep downloads between runs (a store in target/) and seed a fresh cache from it.
pub fn copy_missing(from: &Path, to: &Path, want: &dyn Fn(&str) -> bool) {
    for e in walkdir::WalkDir::new(from).into_iter().flatten() {
        if !e.file_type().is_file() || !want(&e.file_name().to_string_lossy()) {
            continue;
        }
        let Ok(rel) = e.path().strip_prefix(from) else {
            continue;
        };
        let dest = to.join(rel);
        if dest.exists() {
            continue;
        }
        std::fs::create_dir_all(dest.parent().expect("parent")).expect("mkdir");
        if std::fs::hard_link(e.path(), &dest).is_ok() {
            continue;
        }
        let tmp = dest.with_extension(format!("tmp{}", std::process::id()));
        if std::fs::copy(e.path(), &tmp).is_ok() {
            let _ = std::fs::rename(&tmp, &dest);
        }
    }
}
