//! `mlimg inspect`: the same image read back from an OCI layout, an OCI archive, a docker
//! archive and a registry shows the same layers; roles, config and provenance summary are
//! snapshotted (issue 13, item 1).

use std::path::Path;

use serde_json::Value;

use crate::common::registry::TestRegistry;
use crate::common::snapshot::{self, render};
use crate::common::{TestContext, run_ok};

/// `mlimg inspect ARGS --json` parsed.
pub fn inspect_json(cx: &TestContext, image: &str) -> Value {
    let out = run_ok(cx.mlimg().args(["inspect", "--json", image]));
    serde_json::from_slice(&out.stdout).expect("one JSON object")
}

/// The base layer (the host's busybox) differs per machine: its size is blanked in the JSON
/// form, and filters blank it (and the totals it is part of) in the text forms.
pub fn blank_base(text: &str, base: &Value) -> String {
    let size = base["size"].as_u64().expect("base size");
    text.replace(&format!("\"size\": {size},"), "\"size\": \"[BASE SIZE]\",")
}

/// Snapshot settings with the base-size filters.
pub fn settings(cx: &TestContext) -> insta::Settings {
    let mut s = snapshot::settings(cx);
    s.add_filter(r"(?m)^(    base\s+)\d+(\.\d)? [KMGT]?i?B", "${1}[SIZE]");
    s.add_filter(r"layers \((\d+), [^)]*\)", "layers ($1, [SIZE])");
    s.add_filter(r"of \d+(\.\d)? [KMGT]?i?B", "of [SIZE]");
    s
}

fn build(cx: &TestContext, spec: &Path, outputs: &[String]) -> Value {
    let mut args = Vec::new();
    for o in outputs {
        args.push("-o");
        args.push(o.as_str());
    }
    cx.build_json(spec, &args)
}

fn layers(v: &Value) -> Vec<(String, String, u64)> {
    v["platforms"][0]["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|l| {
            (
                l["role"].as_str().unwrap_or_default().to_string(),
                l["digest"].as_str().unwrap_or_default().to_string(),
                l["size"].as_u64().unwrap_or_default(),
            )
        })
        .collect()
}

#[test]
fn inspect_an_oci_layout_shows_roles_config_and_provenance() {
    let cx = TestContext::new();
    let spec = cx.example("sentiment").join("mlimg.toml");
    let dir = cx.path().join("image");
    let report = build(&cx, &spec, &[format!("oci:{}", dir.display())]);
    let image = format!("oci:{}", dir.display());
    let v = inspect_json(&cx, &image);
    let p = &v["platforms"][0];
    assert_eq!(p["platform"], "linux/amd64");
    assert_eq!(p["manifest_digest"], report["manifest_digest"]);
    let roles: Vec<String> = layers(&v).into_iter().map(|l| l.0).collect();
    assert_eq!(roles, ["base", "deps vendor", "weights sst2", "app"]);
    // the same digests and sizes as the build reported
    for (i, (_, digest, size)) in layers(&v).iter().enumerate() {
        assert_eq!(report["layers"][i]["digest"], digest.as_str());
        assert_eq!(report["layers"][i]["size"], *size);
    }
    assert_eq!(p["config"]["entrypoint"][1], "/app/serve.sh");
    assert_eq!(p["config"]["user"], "1000:1000");
    assert_eq!(p["config"]["ports"][0], "8000/tcp");
    assert_eq!(p["config"]["healthcheck"]["retries"], 3);
    assert_eq!(
        p["provenance"]["base"], "oci:../busybox-base/out:latest",
        "{v}"
    );
    assert_eq!(p["provenance"]["wheels"], 0);
    assert!(p["provenance"]["sbom"].is_string() && p["provenance"]["attestation"].is_string());

    let base = &p["layers"][0];
    let mut out = run_ok(cx.mlimg().args(["inspect", "--json", &image]));
    out.stdout = blank_base(&String::from_utf8_lossy(&out.stdout), base).into_bytes();
    settings(&cx).bind(|| {
        insta::assert_snapshot!("inspect_json_of_an_oci_layout", render(&out));
    });
    let out = run_ok(cx.mlimg().args(["inspect", &image]));
    settings(&cx).bind(|| insta::assert_snapshot!("inspect_of_an_oci_layout", render(&out)));
}

#[test]
fn archives_and_the_registry_show_the_same_layers() {
    let cx = TestContext::new();
    let reg = TestRegistry::start();
    let spec = cx.example("sentiment").join("mlimg.toml");
    let dir = cx.path().join("image");
    let oci_tar = cx.path().join("image.oci.tar");
    let docker_tar = cx.path().join("image.docker.tar");
    let name = format!("{}/acme/inspect:1", reg.host());
    build(
        &cx,
        &spec,
        &[
            format!("oci:{}", dir.display()),
            format!("oci-archive:{}", oci_tar.display()),
            format!("docker-archive:{}", docker_tar.display()),
            format!("registry:{name}"),
        ],
    );
    let layout = inspect_json(&cx, &format!("oci:{}", dir.display()));
    let archive = inspect_json(&cx, &format!("oci-archive:{}", oci_tar.display()));
    let remote = inspect_json(&cx, &name);
    let docker = inspect_json(&cx, &format!("docker-archive:{}", docker_tar.display()));
    assert_eq!(layers(&layout), layers(&archive));
    assert_eq!(layers(&layout), layers(&remote));
    for v in [&archive, &remote] {
        let (a, b) = (&layout["platforms"][0], &v["platforms"][0]);
        assert_eq!(a["manifest_digest"], b["manifest_digest"]);
        assert_eq!(a["config"], b["config"]);
        assert_eq!(a["provenance"], b["provenance"], "{v}");
    }
    // a docker archive has no manifest and no referrers: same blobs, same config
    let d = &docker["platforms"][0];
    assert_eq!(d["manifest_digest"], Value::Null);
    assert_eq!(d["config_digest"], layout["platforms"][0]["config_digest"]);
    assert_eq!(d["config"], layout["platforms"][0]["config"]);
    let digests = |v: &Value| -> Vec<String> { layers(v).into_iter().map(|l| l.1).collect() };
    assert_eq!(digests(&docker), digests(&layout));
    assert!(d.get("provenance").is_none(), "{docker}");
}

#[test]
fn inspect_errors_name_the_image() {
    let cx = TestContext::new();
    let missing = cx.path().join("nope");
    let out = cx
        .mlimg()
        .args(["inspect", &format!("oci:{}", missing.display())])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1), "{}", render(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&missing.join("index.json").display().to_string()),
        "{err}"
    );
    let out = cx
        .mlimg()
        .args(["inspect", "oci:/etc:nosuchtag"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1), "{}", render(&out));
    let t = cx.path().join("not-an-archive.tar");
    std::fs::write(&t, b"").expect("write");
    let out = cx
        .mlimg()
        .args(["inspect", &format!("oci-archive:{}", t.display())])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1), "{}", render(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not an OCI archive"),
        "{}",
        render(&out)
    );
}

#[test]
fn a_multi_platform_image_lists_each_platform_and_diffs_per_platform() {
    let cx = TestContext::new();
    let dir = cx.path().join("multi");
    std::fs::create_dir_all(dir.join("app")).expect("mkdir");
    std::fs::write(dir.join("app/run.sh"), "echo 1\n").expect("write");
    let spec = dir.join("mlimg.toml");
    std::fs::write(
        &spec,
        "[image]\nbase = \"scratch\"\nplatforms = [\"linux/amd64\", \"linux/arm64\"]\n\n[app]\nsrc = \"app\"\n\n[config]\nentrypoint = [\"/app/run.sh\"]\n",
    )
    .expect("spec");
    let a = cx.path().join("a");
    let b = cx.path().join("b");
    cx.build_json(&spec, &["-o", &format!("oci:{}", a.display())]);
    std::fs::write(dir.join("app/run.sh"), "echo 2\n").expect("write");
    cx.build_json(&spec, &["-o", &format!("oci:{}", b.display())]);
    let v = inspect_json(&cx, &format!("oci:{}", a.display()));
    assert!(v["index_digest"].is_string(), "{v}");
    let plats: Vec<&str> = v["platforms"]
        .as_array()
        .expect("platforms")
        .iter()
        .filter_map(|p| p["platform"].as_str())
        .collect();
    assert_eq!(plats, ["linux/amd64", "linux/arm64"]);
    assert_eq!(v["platforms"][1]["layers"][0]["role"], "app");
    let text = String::from_utf8_lossy(
        &run_ok(
            cx.mlimg()
                .args(["inspect", &format!("oci:{}", a.display())]),
        )
        .stdout,
    )
    .to_string();
    assert!(
        text.contains("(2 platforms)") && text.contains("linux/arm64"),
        "{text}"
    );
    let out = run_ok(cx.mlimg().args([
        "diff",
        "--json",
        &format!("oci:{}", a.display()),
        &format!("oci:{}", b.display()),
    ]));
    let d: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let ps = d["platforms"].as_array().expect("platforms");
    assert_eq!(ps.len(), 2, "{d}");
    for p in ps {
        assert_eq!(p["layers_to_pull"].as_array().map(Vec::len), Some(1), "{d}");
    }
    let sum: u64 = ps.iter().filter_map(|p| p["bytes_to_pull"].as_u64()).sum();
    assert_eq!(d["bytes_to_pull"], sum);
}
