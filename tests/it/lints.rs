//! Lints: one small spec per lint under `tests/lints/<code>/` that triggers exactly that lint
//! (as a warning in the `--json` report, as an error with `--strict`), every code documented in
//! `docs/lints.md`, and the bundled examples in `specs/` trigger none.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::common::pyindex::{PyIndex, testdata_wheels};
use crate::common::registry::TestRegistry;
use crate::common::{TestContext, copy_tree, repo_root, run_ok};

fn lint_codes() -> BTreeSet<&'static str> {
    mlimg::lint::LINTS.iter().map(|l| l.code).collect()
}

fn lint_dirs() -> BTreeSet<String> {
    fs::read_dir(repo_root().join("tests/lints"))
        .expect("tests/lints")
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("mlimg.toml").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// The lint codes among a `--json` output's warnings.
fn lints_of(v: &serde_json::Value) -> Vec<String> {
    let codes = lint_codes();
    v["warnings"]
        .as_array()
        .unwrap_or_else(|| panic!("no warnings array in {v}"))
        .iter()
        .filter_map(|w| w["code"].as_str())
        .filter(|c| codes.contains(c))
        .map(str::to_string)
        .collect()
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// Copies `tests/lints/<code>` into the context, prepares what it needs (its `base/` built or
/// pushed, sparse files, a token file) and returns its spec.
fn prepare(cx: &TestContext, code: &str, reg: &TestRegistry) -> PathBuf {
    let dir = cx.path().join(code);
    copy_tree(&repo_root().join("tests/lints").join(code), &dir);
    crate::shared_libs::prepare_fixture(&dir);
    if let Ok(list) = fs::read_to_string(dir.join("sparse")) {
        for line in list.lines().filter(|l| !l.trim().is_empty()) {
            let (path, size) = line.split_once(' ').expect("`path size` lines");
            let f = fs::File::create(dir.join(path)).expect("sparse file");
            f.set_len(size.trim().parse().expect("size"))
                .expect("set_len");
        }
    }
    let spec = dir.join("mlimg.toml");
    let text = fs::read_to_string(&spec).expect("spec");
    if dir.join("base/mlimg.toml").is_file() {
        let target = if text.contains("@REGISTRY@") {
            format!("registry:{}/lints/base:1", reg.host())
        } else {
            format!("oci:{}", dir.join("base/out").display())
        };
        run_ok(
            cx.mlimg()
                .args(["build", "--no-sbom", "--no-provenance", "-f"])
                .arg(dir.join("base/mlimg.toml"))
                .args(["-o", &target]),
        );
    }
    fs::write(&spec, text.replace("@REGISTRY@", &reg.host())).expect("write spec");
    spec
}

fn dry_run(cx: &TestContext, spec: &Path, strict: bool) -> Output {
    let mut c = cx.mlimg();
    // nothing here may reach a package index: a closed port in place of PyPI
    c.env("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
        .env_remove("PIP_EXTRA_INDEX_URL")
        .args(["build", "--dry-run", "--json", "-f"])
        .arg(spec);
    if strict {
        c.arg("--strict");
    }
    c.output().expect("run mlimg")
}

#[test]
fn every_lint_has_a_spec_that_triggers_exactly_it() {
    assert_eq!(
        lint_dirs(),
        lint_codes().iter().map(|c| c.to_string()).collect(),
        "tests/lints/ must hold one spec per lint code"
    );
    let cx = TestContext::new();
    let reg = TestRegistry::start();
    for code in lint_codes() {
        let spec = prepare(&cx, code, &reg);
        let out = dry_run(&cx, &spec, false);
        assert!(
            out.status.success(),
            "{code}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v = json(&out);
        assert_eq!(lints_of(&v), [code], "{code}: {v}");
        let w = v["warnings"]
            .as_array()
            .and_then(|a| a.iter().find(|w| w["code"] == code))
            .expect("the warning");
        assert_eq!(
            w["hint"].as_str(),
            mlimg::lint::lint(code).map(|l| l.hint),
            "{code}: {w}"
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&format!("warning[{code}]")) && stderr.contains("hint: "),
            "{code}: {stderr}"
        );

        let strict = dry_run(&cx, &spec, true);
        assert_eq!(strict.status.code(), Some(2), "{code} --strict");
        let e = json(&strict);
        assert_eq!(e["error"]["code"], "lint", "{code}: {e}");
        let msg = e["error"]["message"].as_str().unwrap_or("");
        assert!(msg.contains(&format!("[{code}]")), "{code}: {msg}");
    }
}

#[test]
fn lint_messages_name_what_to_fix() {
    let cx = TestContext::new();
    let reg = TestRegistry::start();
    let msg = |code: &str| -> String {
        let spec = prepare(&cx, code, &reg);
        let v = json(&dry_run(&cx, &spec, false));
        v["warnings"]
            .as_array()
            .and_then(|a| a.iter().find(|w| w["code"] == code))
            .and_then(|w| w["message"].as_str())
            .unwrap_or_else(|| panic!("no {code} in {v}"))
            .to_string()
    };
    // a file the vendored package's RECORD lists is not a stray weight; the app's is
    let m = msg("stray-weights");
    assert!(
        m.contains("/app/model.pt") && !m.contains("data.pkl"),
        "{m}"
    );
    assert!(msg("user-unknown").contains("\"svc\""));
    assert!(msg("base-unpinned").contains("/lints/base:1"));

    // an hf_ token in a text file is found, and never printed
    let spec = prepare(&cx, "root-user", &reg);
    let token = format!("hf_{}", "Zq7".repeat(12));
    fs::write(
        spec.with_file_name("app").join("settings.txt"),
        format!("HF_TOKEN={token}\n"),
    )
    .expect("token file");
    let out = dry_run(&cx, &spec, false);
    let v = json(&out);
    let all = format!("{v}{}", String::from_utf8_lossy(&out.stderr));
    assert!(!all.contains(&token), "the token was printed: {all}");
    let secret = v["warnings"]
        .as_array()
        .and_then(|a| a.iter().find(|w| w["code"] == "secret"))
        .unwrap_or_else(|| panic!("no secret lint: {v}"));
    assert!(
        secret["message"]
            .as_str()
            .is_some_and(|m| m.contains("/app/settings.txt")),
        "{secret}"
    );
}

#[test]
fn every_lint_is_documented() {
    let doc = fs::read_to_string(repo_root().join("docs/lints.md")).expect("docs/lints.md");
    for l in mlimg::lint::LINTS {
        assert!(
            doc.contains(&format!("## `{}`", l.code)),
            "docs/lints.md has no section ## `{}`",
            l.code
        );
        assert!(
            doc.contains(l.hint),
            "docs/lints.md does not give {}'s hint: {}",
            l.code,
            l.hint
        );
    }
}

/// Examples that are bases of the other examples (built by scripts, run as root on purpose).
const BASE_FIXTURES: [&str; 2] = ["busybox-base", "python-base"];

/// Builds `specs/NAME` (a base of another example) into `specs/NAME/out` in `root`.
fn build_base(cx: &TestContext, root: &Path, name: &str) {
    let dir = root.join(name);
    if dir.join("out/index.json").exists() {
        return;
    }
    let script = match name {
        "busybox-base" => Some("scripts/make-busybox-rootfs"),
        "python-base" => Some("scripts/make-python-rootfs"),
        _ => None,
    };
    if let Some(s) = script {
        run_ok(Command::new(repo_root().join(s)).arg(dir.join("rootfs")));
    }
    prepare_bases(cx, root, &dir.join("mlimg.toml"));
    run_ok(
        cx.mlimg()
            .args(["build", "--no-sbom", "--no-provenance", "-f"])
            .arg(dir.join("mlimg.toml"))
            .arg("-o")
            .arg(format!("oci:{}", dir.join("out").display())),
    );
}

/// Builds the example bases (`oci:../NAME/out…`) a spec uses.
fn prepare_bases(cx: &TestContext, root: &Path, spec: &Path) {
    let text = fs::read_to_string(spec).expect("spec");
    for line in text.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("base = \"oci:../")
            && let Some((name, _)) = rest.split_once('/')
        {
            build_base(cx, root, name);
        }
    }
}

/// Registry bases the examples name, and the example that makes each (built and pushed to
/// the test's registry in its place, as tests/it/service_e2e.rs does).
const REGISTRY_BASES: [(&str, &str); 1] = [("127.0.0.1:5000/mlimg-python:3.11", "python-base")];

/// Points an example on a registry base at the test registry (its base pushed there), locks
/// it (a registry base is meant to be locked: that is what `base-unpinned` asks for) and
/// returns the build flags. Wheels come from the local index (testdata) and the wheels
/// service_e2e keeps in target/mlimg-test/wheels; when the example's pins are not among them
/// (nothing may be downloaded here) its wheel sets are left out, with a note on stderr.
fn prepare_registry_example(
    cx: &TestContext,
    reg: &TestRegistry,
    spec: &Path,
    index: &PyIndex,
) -> Vec<&'static str> {
    let mut text = fs::read_to_string(spec).expect("spec");
    let Some((from, base)) = REGISTRY_BASES
        .iter()
        .find(|(r, _)| text.contains(&format!("base = \"{r}\"")))
    else {
        return Vec::new();
    };
    assert_eq!(
        *base, "python-base",
        "only python-base is made for a registry"
    );
    let pushed = crate::service_e2e::push_python_base(cx, reg, &["amd64"]);
    text = text
        .replace(
            &format!("base = \"{from}\""),
            &format!("base = \"{}\"", pushed[0]),
        )
        .replace("127.0.0.1:5000", &reg.host());
    fs::write(spec, &text).expect("write spec");
    crate::service_e2e::seed_wheels(&cx.cache);
    let lock = |cx: &TestContext| {
        cx.mlimg()
            .env("PIP_INDEX_URL", &index.url)
            .env_remove("PIP_EXTRA_INDEX_URL")
            .args(["lock", "-f"])
            .arg(spec)
            .output()
            .expect("run mlimg lock")
    };
    if !lock(cx).status.success() {
        // drop the [[deps]] tables that need an index (the wheels are not here)
        let mut kept = String::new();
        let mut skipping = false;
        for line in text.lines() {
            let t = line.trim();
            if t.starts_with('[') {
                skipping = t == "[[deps]]";
            }
            if !skipping {
                kept.push_str(line);
                kept.push('\n');
            }
        }
        eprintln!(
            "{}: its wheels are not available offline (run service_e2e once to keep them in \
             target/mlimg-test/wheels): linted without its [[deps]] sets",
            spec.display()
        );
        fs::write(spec, kept).expect("write spec");
        let out = lock(cx);
        assert!(
            out.status.success(),
            "mlimg lock {}: {}",
            spec.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    vec!["--locked"]
}

#[test]
fn the_examples_trigger_no_lint() {
    let cx = TestContext::new();
    let reg = TestRegistry::start();
    let root = cx.path().join("specs");
    copy_tree(&repo_root().join("specs"), &root);
    let index = PyIndex::serve(&testdata_wheels(), &[]);
    let mut checked = Vec::new();
    for e in fs::read_dir(repo_root().join("specs")).expect("specs") {
        let name = e.expect("entry").file_name().to_string_lossy().into_owned();
        let spec = root.join(&name).join("mlimg.toml");
        if BASE_FIXTURES.contains(&name.as_str()) || !spec.is_file() {
            continue;
        }
        prepare_bases(&cx, &root, &spec);
        let extra = prepare_registry_example(&cx, &reg, &spec, &index);
        let out = cx
            .mlimg()
            .env("PIP_INDEX_URL", &index.url)
            .env_remove("PIP_EXTRA_INDEX_URL")
            .args(["build", "--dry-run", "--json", "--strict", "-f"])
            .arg(&spec)
            .args(&extra)
            .output()
            .expect("run mlimg");
        assert!(
            out.status.success(),
            "specs/{name} fails --strict:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(lints_of(&json(&out)), Vec::<String>::new(), "specs/{name}");
        checked.push(name);
    }
    checked.sort();
    assert!(
        checked.contains(&"sentiment".to_string()) && checked.contains(&"python-app".to_string()),
        "{checked:?}"
    );
}
