//! Snapshots of mlimg's CLI output (see common/snapshot.rs for the filters and how to update):
//! the dry-run plan, the `--json` report of a build, and the exit code, stderr and `--json`
//! error object of the failures users meet most (issue 8, item 9). Each failure's message must
//! say what to fix: a change to one shows up here as a `.snap` diff to review.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::common::hub::Hub;
use crate::common::pyindex::{PyIndex, testdata_wheel};
use crate::common::registry::TestRegistry;
use crate::common::snapshot::{self, assert_cli_snapshot};
use crate::common::{TestContext, copy_tree, repo_root, run_ok};

#[test]
fn dry_run_of_the_sentiment_example() {
    let cx = TestContext::new();
    let spec = cx.example("sentiment").join("mlimg.toml");
    let out = cx
        .mlimg()
        .args(["build", "--dry-run", "-f"])
        .arg(&spec)
        .output()
        .expect("run mlimg");
    assert!(out.status.success(), "{}", snapshot::render(&out));
    assert_cli_snapshot!(&cx, &out);
}

#[test]
fn dry_run_json_of_the_sentiment_example() {
    let cx = TestContext::new();
    let spec = cx.example("sentiment").join("mlimg.toml");
    let out = cx
        .mlimg()
        .args(["build", "--dry-run", "--json", "-f"])
        .arg(&spec)
        .output()
        .expect("run mlimg");
    assert!(out.status.success(), "{}", snapshot::render(&out));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(plan["warnings"], serde_json::json!([]));
    assert!(out.stderr.is_empty(), "{}", snapshot::render(&out));
    assert_cli_snapshot!(&cx, &out);
}

/// The report of a cold build into `oci:DIR`. Digests are filtered; the base layer (built
/// from the host's busybox) also has its size blanked, everything else is the same on every
/// machine.
#[test]
fn json_report_of_a_build_to_an_oci_layout() {
    let cx = TestContext::new();
    let spec = cx.example("sentiment").join("mlimg.toml");
    let dir = cx.path().join("image");
    let mut out = cx
        .mlimg()
        .args(["build", "-j", "1", "--json", "-f"])
        .arg(&spec)
        .arg("-o")
        .arg(format!("oci:{}", dir.display()))
        .output()
        .expect("run mlimg");
    assert!(out.status.success(), "{}", snapshot::render(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    let base_size = report["layers"][0]["size"]
        .as_u64()
        .expect("base layer size");
    assert_eq!(report["layers"][0]["role"], "base", "{report}");
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("index.json")).expect("index"))
            .expect("json");
    assert_eq!(index["manifests"][0]["digest"], report["manifest_digest"]);
    // blank it in the text as printed (keys in mlimg's order)
    let text = String::from_utf8(out.stdout.clone()).expect("UTF-8");
    let from = format!("\"size\": {base_size},");
    assert_eq!(text.matches(&from).count(), 2, "{text}");
    out.stdout = text
        .replace(&from, "\"size\": \"[BASE SIZE]\",")
        .into_bytes();
    assert_cli_snapshot!(&cx, &out);
}

// ---------------------------------------------------------------- failures

/// Runs `cmd` (an `mlimg build …` without `--json`), checks the exit code and snapshots it as
/// `error_NAME`; with `json`, runs it again with `--json` and snapshots that as
/// `error_NAME_json` after checking stdout is exactly `{"error": {"code", "message"}}` and
/// the message is the one stderr shows.
fn failure(name: &str, cx: &TestContext, cmd: impl Fn() -> Command, code: i32, json: bool) {
    let out = cmd().output().expect("run mlimg");
    assert_eq!(out.status.code(), Some(code), "{}", snapshot::render(&out));
    assert!(out.stdout.is_empty(), "{}", snapshot::render(&out));
    assert_no_panic(&out);
    assert_cli_snapshot!(format!("error_{name}"), cx, &out);
    if !json {
        return;
    }
    let out = cmd().arg("--json").output().expect("run mlimg");
    assert_eq!(out.status.code(), Some(code), "{}", snapshot::render(&out));
    assert_no_panic(&out);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", snapshot::render(&out)));
    let err = v["error"].as_object().expect("an error object");
    assert_eq!(v.as_object().map(|o| o.len()), Some(1), "only `error`: {v}");
    assert!(err["code"].is_string() && err["message"].is_string(), "{v}");
    let message = err["message"].as_str().unwrap_or_default();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("error: {message}\n")),
        "stderr shows the same message: {}",
        snapshot::render(&out)
    );
    assert_cli_snapshot!(format!("error_{name}_json"), cx, &out);
}

fn assert_no_panic(out: &Output) {
    let all = snapshot::render(out);
    assert!(
        !all.contains("panicked") && !all.contains("RUST_BACKTRACE"),
        "{all}"
    );
}

/// `mlimg build -f SPEC` with this context's cache.
/// `mlimg build` writing one layer at a time, so progress lines come in plan order.
fn build(cx: &TestContext, spec: &Path) -> Command {
    let mut c = cx.mlimg();
    c.arg("build").arg("-j").arg("1").arg("-f").arg(spec);
    c
}

/// The sentiment example without building its base (for errors found before the base is read).
fn sentiment_spec(cx: &TestContext) -> PathBuf {
    let dir = cx.path().join("project/specs/sentiment");
    copy_tree(&repo_root().join("specs/sentiment"), &dir);
    dir.join("mlimg.toml")
}

fn edit(path: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).expect("read");
    assert!(text.contains(from), "{} lacks {from:?}", path.display());
    std::fs::write(path, text.replacen(from, to, 1)).expect("write");
}

/// (a) A misspelt key: the file, line and column, the field, and the keys it takes.
#[test]
fn error_unknown_spec_field() {
    let cx = TestContext::new();
    let spec = sentiment_spec(&cx);
    edit(&spec, "dest = \"/models/sst2\"", "dets = \"/models/sst2\"");
    failure("unknown_spec_field", &cx, || build(&cx, &spec), 2, true);
}

/// (a) A value of the wrong type.
#[test]
fn error_spec_field_of_the_wrong_type() {
    let cx = TestContext::new();
    let spec = sentiment_spec(&cx);
    edit(&spec, "retries = 3", "retries = \"3\"");
    failure(
        "spec_field_of_the_wrong_type",
        &cx,
        || build(&cx, &spec),
        2,
        false,
    );
}

/// (b) A weights folder that does not exist.
#[test]
fn error_missing_weights_folder() {
    let cx = TestContext::new();
    // the base must exist: the spec's fields are checked in order
    let spec = cx.example("sentiment").join("mlimg.toml");
    edit(
        &spec,
        "source = \"models/sst2\"",
        "source = \"models/sst3\"",
    );
    failure("missing_weights_folder", &cx, || build(&cx, &spec), 2, true);
}

fn b64(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// (c) `--push` to an htpasswd registry with a wrong password in the docker config.
#[test]
fn error_wrong_registry_password() {
    let cx = TestContext::new();
    let reg = TestRegistry::start_htpasswd("ci-user", "s3cret-pass");
    let spec = cx.example("sentiment").join("mlimg.toml");
    edit(
        &spec,
        "name = \"localhost/sentiment-api\"",
        &format!("name = \"{}/acme/sentiment\"", reg.host()),
    );
    let config = cx.path().join("docker-config");
    std::fs::create_dir_all(&config).expect("mkdir");
    std::fs::write(
        config.join("config.json"),
        serde_json::json!({"auths": {reg.host(): {"auth": b64("ci-user:wrong-pass-xyz")}}})
            .to_string(),
    )
    .expect("config.json");
    // the layers are built once; both runs fail at the first registry request
    run_ok(&mut build(&cx, &spec));
    let cmd = || {
        let mut c = build(&cx, &spec);
        c.env("DOCKER_CONFIG", &config)
            .args(["--push", "--retries", "0"]);
        c
    };
    failure("wrong_registry_password", &cx, cmd, 1, true);
    let out = cmd().arg("--json").output().expect("run");
    let all = snapshot::render(&out);
    assert!(!all.contains("wrong-pass-xyz") && !all.contains(&b64("ci-user:wrong-pass-xyz")));
}

/// (d) `--push` to a registry nobody listens on: with `--retries 1`, one retry line (one
/// upload job, so exactly one) and then the error.
#[test]
fn error_unreachable_registry() {
    let cx = TestContext::new();
    let spec = cx.example("sentiment").join("mlimg.toml");
    // port 1: nothing listens there, and no test server can be given it
    edit(
        &spec,
        "name = \"localhost/sentiment-api\"",
        "name = \"127.0.0.1:1/acme/sentiment\"",
    );
    run_ok(&mut build(&cx, &spec));
    let cmd = || {
        let mut c = build(&cx, &spec);
        c.env("DOCKER_CONFIG", cx.path().join("no-docker-config"))
            .args(["--push", "--retries", "1", "--upload-jobs", "1"]);
        c
    };
    failure("unreachable_registry", &cx, cmd, 1, true);
}

/// A scratch spec with `[python]` (no base Python to detect) and one wheel set: `six` pinned
/// to `hash`, with `find_links = ["wheels"]` holding the real six wheel.
fn wheel_set_project(cx: &TestContext, requirements: &str) -> PathBuf {
    let dir = cx.path().join("project");
    std::fs::create_dir_all(dir.join("wheels")).expect("mkdir");
    let six = testdata_wheel("six-");
    std::fs::copy(
        &six,
        dir.join("wheels").join(six.file_name().expect("name")),
    )
    .expect("copy");
    std::fs::write(dir.join("requirements.txt"), requirements).expect("requirements");
    let spec = dir.join("mlimg.toml");
    std::fs::write(
        &spec,
        "[image]\nbase = \"scratch\"\n\n\
         [python]\nversion = \"3.11\"\nprefix = \"/usr/local\"\nlibc = \"glibc 2.36\"\n\n\
         [[deps]]\nname = \"app\"\nrequirements = \"requirements.txt\"\nfind_links = [\"wheels\"]\n",
    )
    .expect("spec");
    spec
}

/// (e) A pin whose `--hash` is not the hash of the wheel in the find_links folder; the index
/// (a local one, without `six`) has nothing better.
#[test]
fn error_wheel_hash_mismatch() {
    let cx = TestContext::new();
    let index = PyIndex::serve(&[], &[]);
    let spec = wheel_set_project(
        &cx,
        &format!("six==1.16.0 --hash=sha256:{}\n", "0".repeat(64)),
    );
    let cmd = || {
        let mut c = build(&cx, &spec);
        c.env("PIP_INDEX_URL", &index.url)
            .env_remove("PIP_EXTRA_INDEX_URL")
            .args(["--retries", "0"]);
        c
    };
    failure("wheel_hash_mismatch", &cx, cmd, 1, true);
}

/// (e) The same with `--no-index` in the requirements file: no index is asked at all.
#[test]
fn error_wheel_hash_mismatch_with_no_index() {
    let cx = TestContext::new();
    let spec = wheel_set_project(
        &cx,
        &format!("--no-index\nsix==1.16.0 --hash=sha256:{}\n", "0".repeat(64)),
    );
    let cmd = || {
        let mut c = build(&cx, &spec);
        c.env("PIP_INDEX_URL", "http://127.0.0.1:1/simple")
            .env_remove("PIP_EXTRA_INDEX_URL");
        c
    };
    failure("wheel_hash_mismatch_with_no_index", &cx, cmd, 1, false);
}

/// A scratch spec with one Hub weights entry.
fn hub_project(cx: &TestContext, source: &str, revision: &str) -> PathBuf {
    let spec = cx.path().join("mlimg.toml");
    std::fs::write(
        &spec,
        format!(
            "[image]\nbase = \"scratch\"\n\n[[weights]]\nname = \"tiny\"\nsource = \"{source}\"\n\
             revision = \"{revision}\"\ndest = \"/models/tiny\"\n"
        ),
    )
    .expect("spec");
    spec
}

/// `mlimg ARGS -f SPEC` pointed at the stand-in `hub`, with a private hub cache and no token.
fn hub_cmd(cx: &TestContext, hub: &Hub, args: &[&str], spec: &Path) -> Command {
    let mut c = cx.mlimg();
    c.env("HF_ENDPOINT", hub.endpoint())
        .env("HF_HOME", cx.path().join("hfhome"))
        .env("HF_HUB_CACHE", cx.path().join("hfhome/hub"))
        .env_remove("HF_TOKEN")
        .env_remove("HF_TOKEN_PATH")
        .env_remove("HUGGINGFACE_HUB_CACHE")
        .args(args)
        .arg("-f")
        .arg(spec)
        .args(["--retries", "0"]);
    c
}

/// (f) A repo the Hub does not have (the Hub answers 401 RepoNotFound, as huggingface.co does
/// for a missing or private repo without a token).
#[test]
fn error_hub_repo_not_found() {
    let cx = TestContext::new();
    let hub = Hub::start("acme/tiny");
    let spec = hub_project(&cx, "hf://acme/no-such-model", "main");
    failure(
        "hub_repo_not_found",
        &cx,
        || hub_cmd(&cx, &hub, &["build"], &spec),
        1,
        true,
    );
}

/// (f) A revision the repo does not have (a real 404).
#[test]
fn error_hub_revision_not_found() {
    let cx = TestContext::new();
    let hub = Hub::start("acme/tiny");
    let spec = hub_project(&cx, "hf://acme/tiny", "v9");
    failure(
        "hub_revision_not_found",
        &cx,
        || hub_cmd(&cx, &hub, &["build"], &spec),
        1,
        false,
    );
}

/// (g) `--locked` with a lock made before the spec's revision changed.
#[test]
fn error_stale_lock_with_locked() {
    let cx = TestContext::new();
    let hub = Hub::start("acme/tiny");
    let commit = hub.branch("main");
    hub.set_branch("v2", &commit);
    let spec = hub_project(&cx, "hf://acme/tiny", "main");
    run_ok(&mut hub_cmd(&cx, &hub, &["lock"], &spec));
    hub_project(&cx, "hf://acme/tiny", "v2");
    failure(
        "stale_lock_with_locked",
        &cx,
        || hub_cmd(&cx, &hub, &["build", "--locked"], &spec),
        1,
        true,
    );
}

/// (h) An output folder that cannot be created: its parent is a regular file (as root,
/// permission bits would not stop the write).
#[test]
fn error_output_not_writable() {
    let cx = TestContext::new();
    let spec = cx.example("sentiment").join("mlimg.toml");
    let file = cx.path().join("a-file");
    std::fs::write(&file, "not a folder\n").expect("write");
    let target = format!("oci:{}", file.join("image").display());
    failure(
        "output_not_writable",
        &cx,
        || {
            let mut c = build(&cx, &spec);
            c.arg("-o").arg(&target);
            c
        },
        1,
        true,
    );
    assert_eq!(
        std::fs::read_to_string(&file).expect("read"),
        "not a folder\n",
        "the file is left alone"
    );
}

#[test]
fn the_filters_blank_what_changes_between_runs() {
    let cx = TestContext::new();
    let text = format!(
        "{}/project/x and {}/other/y\nsha256:{} {}\ntook 1.25s (3m 2s), 12ms\n\
         http://127.0.0.1:40123/v2/ localhost:5000\n4595 bytes, 3 layers, selector 86ed51180387\n\
         {}/.image.mlimg-0123456789abcdef-dir/blobs\n",
        cx.path().display(),
        std::env::temp_dir().join(".tmpAbC123").display(),
        "ab".repeat(32),
        "0".repeat(64),
        cx.path().display(),
    );
    snapshot::settings(&cx).bind(|| insta::assert_snapshot!(text));
}
