//! `mlimg build --push` end to end: a base in the real registry, pushes to another repo,
//! Docker pulls and runs the result; auth through config.json, a credential helper and the
//! Bearer flow; faults injected by a proxy.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::common::faultproxy::{FaultConfig, FaultProxy};
use crate::common::registry::TestRegistry;
use crate::common::*;

/// Pushes the busybox base layout that `example()` built into `reg` as `base/busybox:latest`.
pub(crate) fn push_base(cx: &TestContext, spec_dir: &Path, reg: &TestRegistry) -> String {
    let layout = spec_dir.parent().expect("specs").join("busybox-base/out");
    let base = format!("{}/base/busybox:latest", reg.host());
    run_ok(
        Command::new("skopeo")
            .args(["copy", "--dest-tls-verify=false"])
            .arg(format!("oci:{}:latest", layout.display()))
            .arg(format!("docker://{base}")),
    );
    let _ = cx;
    base
}

/// The example spec's text with another `[image].name`.
fn with_name(text: &str, name: &str) -> String {
    text.replace(
        "name = \"localhost/sentiment-api\"",
        &format!("name = \"{name}\""),
    )
}

/// Points the example at a registry base and a registry target.
pub(crate) fn retarget(spec: &Path, base: &str, name: &str) {
    let text = fs::read_to_string(spec).expect("spec");
    let text = with_name(&text, name).replace(
        "base = \"oci:../busybox-base/out:latest\"",
        &format!("base = \"{base}\""),
    );
    fs::write(spec, text).expect("write spec");
}

fn layer<'a>(report: &'a serde_json::Value, role: &str) -> &'a serde_json::Value {
    report["layers"]
        .as_array()
        .and_then(|ls| ls.iter().find(|l| l["role"] == role))
        .unwrap_or_else(|| panic!("no {role} layer in {report}"))
}

fn docker_config(dir: &Path, auths: serde_json::Value) -> PathBuf {
    let d = dir.join("docker-config");
    fs::create_dir_all(&d).expect("mkdir");
    fs::write(
        d.join("config.json"),
        serde_json::to_vec(&auths).expect("json"),
    )
    .expect("write config");
    d
}

fn b64(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[test]
fn push_on_a_registry_base_mounts_the_base_and_docker_runs_it() {
    let cx = TestContext::new();
    let reg = TestRegistry::start();
    let spec = cx.example("sentiment").join("mlimg.toml");
    let base = push_base(&cx, spec.parent().expect("dir"), &reg);
    let name = format!("{}/acme/sentiment", reg.host());
    retarget(&spec, &base, &name);

    let report = cx.build_json(&spec, &["--push"]);
    let digest = report["manifest_digest"].as_str().expect("digest");
    assert_eq!(layer(&report, "base")["push"], "mounted", "{report}");
    assert_eq!(layer(&report, "base")["bytes_sent"], 0);
    for role in ["deps vendor", "weights sst2", "app"] {
        assert_eq!(layer(&report, role)["push"], "uploaded", "{role}: {report}");
    }
    let pushed: Vec<String> = report["push"]["pushed"]
        .as_array()
        .expect("pushed")
        .iter()
        .filter_map(|p| p.as_str().map(str::to_string))
        .collect();
    assert_eq!(
        pushed,
        [
            format!("{name}:0.1.0@{digest}"),
            format!("{name}:latest@{digest}")
        ]
    );
    // the base layer was mounted, never uploaded: no upload session was opened without ?mount
    let base_digest = layer(&report, "base")["digest"]
        .as_str()
        .expect("base digest")
        .trim_start_matches("sha256:")
        .to_string();
    assert!(
        reg.requests()
            .iter()
            .any(|r| r.contains("/v2/acme/sentiment/blobs/uploads/?mount=")
                && r.contains(&base_digest)
                && r.ends_with(" 201")),
        "{:#?}",
        reg.requests()
    );

    // what the registry holds, copied out by skopeo, passes the independent layout checker
    let copy = cx.path().join("pulled");
    run_ok(
        Command::new("skopeo")
            .args(["copy", "--src-tls-verify=false"])
            .arg(format!("docker://{name}:0.1.0"))
            .arg(format!("oci:{}:0.1.0", copy.display())),
    );
    let checked = oci::assert_layout(&copy);
    assert_eq!(checked.images.len(), 1, "{}", checked.report);
    // skopeo rewrites the manifest (and compresses the uncompressed weights layer), but the
    // layers' contents are the ones mlimg built
    let copied: Vec<&str> = checked.images[0]
        .layers
        .iter()
        .map(|l| l.diff_id.as_str())
        .collect();
    let built: Vec<&str> = report["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .filter_map(|l| l["diff_id"].as_str())
        .collect();
    assert_eq!(copied, built);
    assert_eq!(checked.images[0].layers.len(), 4, "{}", checked.report);

    // Docker pulls it from the registry and runs a command of the base reading the app layer
    let image = format!("{name}:0.1.0");
    run_ok(Command::new("docker").args(["pull", &image]));
    let run = Command::new("docker")
        .args([
            "run",
            "--rm",
            "--entrypoint",
            "/bin/cat",
            &image,
            "/app/app.py",
        ])
        .output()
        .expect("docker run");
    let served = Command::new("docker")
        .args(["run", "--rm", &image])
        .output()
        .expect("docker run");
    let _ = Command::new("docker").args(["rmi", "-f", &image]).output();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(
        String::from_utf8_lossy(&run.stdout).contains("MODEL_PATH"),
        "app.py comes from the app layer"
    );
    assert!(String::from_utf8_lossy(&served.stdout).contains("model: /models/sst2"));
}

#[test]
fn a_second_push_after_a_weights_change_sends_only_weights_config_and_manifest() {
    let cx = TestContext::new();
    let reg = TestRegistry::start();
    let spec = cx.example("sentiment").join("mlimg.toml");
    let base = push_base(&cx, spec.parent().expect("dir"), &reg);
    retarget(&spec, &base, &format!("{}/acme/svc", reg.host()));
    // counts the image's own requests: no referrers (tests/it/provenance.rs covers them)
    let off = ["--push", "--no-sbom", "--no-provenance"];
    let first = cx.build_json(&spec, &off);
    let before = reg.requests().len();

    let w = spec
        .parent()
        .expect("dir")
        .join("models/sst2/model.safetensors");
    let mut bytes = fs::read(&w).expect("weights");
    bytes[100] ^= 1;
    fs::write(&w, bytes).expect("write");
    let second = cx.build_json(&spec, &off);
    assert_ne!(first["manifest_digest"], second["manifest_digest"]);
    assert_eq!(layer(&second, "weights sst2")["push"], "uploaded");
    for role in ["base", "deps vendor", "app"] {
        assert_eq!(layer(&second, role)["push"], "skipped", "{role}: {second}");
        assert_eq!(layer(&second, role)["bytes_sent"], 0);
    }
    // the registry saw exactly two blob uploads (weights and config) and the manifests
    let new: Vec<String> = reg.requests()[before..].to_vec();
    let uploads: Vec<&String> = new
        .iter()
        .filter(|r| r.starts_with("PUT /v2/acme/svc/blobs/uploads/"))
        .collect();
    assert_eq!(uploads.len(), 2, "{new:#?}");
    let weights_digest = layer(&second, "weights sst2")["digest"]
        .as_str()
        .expect("digest")
        .to_string();
    let config_digest = second["platforms"][0]["config_digest"]
        .as_str()
        .expect("config")
        .to_string();
    for d in [&weights_digest, &config_digest] {
        let hex = d.trim_start_matches("sha256:");
        assert!(
            uploads.iter().any(|u| u.contains(hex)),
            "{d} not uploaded: {uploads:#?}"
        );
    }
    let manifest_puts = new
        .iter()
        .filter(|r| r.starts_with("PUT /v2/acme/svc/manifests/"))
        .count();
    assert_eq!(manifest_puts, 3, "by digest, then two tags: {new:#?}");
}

#[test]
fn push_with_basic_auth_from_config_json_and_a_wrong_password_that_leaks_nothing() {
    let cx = TestContext::new();
    let reg = TestRegistry::start_htpasswd("ci-user", "s3cret-pass");
    let spec = cx.example("sentiment").join("mlimg.toml");
    let text = fs::read_to_string(&spec).expect("spec");
    fs::write(
        &spec,
        with_name(&text, &format!("{}/acme/auth", reg.host())),
    )
    .expect("spec");

    let good = docker_config(
        &cx.path().join("good"),
        serde_json::json!({"auths": {reg.host(): {"auth": b64("ci-user:s3cret-pass")}}}),
    );
    let out = run_ok(
        cx.mlimg()
            .env("DOCKER_CONFIG", &good)
            .arg("build")
            .arg("-f")
            .arg(&spec)
            .arg("--push")
            .arg("--json"),
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(report["push"]["pushed"].as_array().map(Vec::len), Some(2));
    assert!(
        !stdout(&out).contains("s3cret")
            && !String::from_utf8_lossy(&out.stderr).contains("s3cret")
    );

    let bad = docker_config(
        &cx.path().join("bad"),
        serde_json::json!({"auths": {reg.host(): {"auth": b64("ci-user:wrong-pass-xyz")}}}),
    );
    let out = cx
        .mlimg()
        .env("DOCKER_CONFIG", &bad)
        .arg("build")
        .arg("-f")
        .arg(&spec)
        .arg("--push")
        .arg("--tag")
        .arg("other")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        all.contains(&reg.host()) && all.contains("401"),
        "names the registry and the status: {all}"
    );
    assert!(
        !all.contains("wrong-pass-xyz") && !all.contains(&b64("ci-user:wrong-pass-xyz")),
        "no secret in output: {all}"
    );
    assert!(!all.contains("panicked"));
}

#[test]
fn push_with_a_credential_helper_and_with_the_bearer_token_flow() {
    let cx = TestContext::new();
    // a docker-credential-<name> helper on PATH, as docker runs it
    let bin = cx.path().join("bin");
    fs::create_dir_all(&bin).expect("mkdir");
    let helper = bin.join("docker-credential-mlimgtest");
    fs::write(&helper, "#!/bin/sh\nread server\necho \"$server\" >> \"$(dirname \"$0\")/asked\"\nprintf '{\"ServerURL\":\"%s\",\"Username\":\"helper-user\",\"Secret\":\"helper-pass\"}' \"$server\"\n").expect("helper");
    run_ok(Command::new("chmod").arg("755").arg(&helper));
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );

    let reg = TestRegistry::start_htpasswd("helper-user", "helper-pass");
    let spec = cx.example("sentiment").join("mlimg.toml");
    let text = fs::read_to_string(&spec).expect("spec");
    fs::write(
        &spec,
        with_name(&text, &format!("{}/acme/helper", reg.host())),
    )
    .expect("spec");
    let cfg = docker_config(
        &cx.path().join("h"),
        serde_json::json!({"credHelpers": {reg.host(): "mlimgtest"}}),
    );
    run_ok(
        cx.mlimg()
            .env("DOCKER_CONFIG", &cfg)
            .env("PATH", &path)
            .arg("build")
            .arg("-f")
            .arg(&spec)
            .arg("--push"),
    );
    let asked = fs::read_to_string(bin.join("asked")).expect("the helper was run");
    assert!(asked.contains(&reg.host()), "{asked}");

    // Bearer: the registry challenges, mlimg asks the token endpoint with the user's creds
    let treg = TestRegistry::start_token("tok-user", "tok-pass");
    fs::write(
        &spec,
        with_name(&text, &format!("{}/acme/bearer", treg.host())),
    )
    .expect("spec");
    let cfg = docker_config(
        &cx.path().join("t"),
        serde_json::json!({"auths": {treg.host(): {"auth": b64("tok-user:tok-pass")}}}),
    );
    let out = run_ok(
        cx.mlimg()
            .env("DOCKER_CONFIG", &cfg)
            .arg("build")
            .arg("-f")
            .arg(&spec)
            .arg("--push")
            .arg("--json"),
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(report["push"]["pushed"].as_array().map(Vec::len), Some(2));
    assert!(
        treg.token_scopes()
            .iter()
            .any(|s| s.contains("repository:acme/bearer:") && s.contains("push")),
        "{:?}",
        treg.token_scopes()
    );
}

#[test]
fn a_base_blob_that_does_not_match_its_digest_fails_the_build_naming_it() {
    let cx = TestContext::new();
    let reg = TestRegistry::start();
    let spec = cx.example("sentiment").join("mlimg.toml");
    let base = push_base(&cx, spec.parent().expect("dir"), &reg);
    retarget(&spec, &base, "localhost/corrupt");
    // find the base layer digest and corrupt its bytes in the registry's storage
    let plan = cx.build_json(&spec, &[]);
    let digest = layer(&plan, "base")["digest"]
        .as_str()
        .expect("digest")
        .to_string();
    let data = reg.blob_path(&digest);
    let mut bytes = fs::read(&data).expect("blob data");
    bytes[10] ^= 0xff;
    fs::write(&data, bytes).expect("corrupt");
    let cx2 = TestContext::new(); // empty cache: the base layer must be fetched
    let out = cx2
        .mlimg()
        .arg("build")
        .arg("-f")
        .arg(&spec)
        .arg("-o")
        .arg(format!("oci:{}", cx2.path().join("o").display()))
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&digest), "names the digest: {err}");
    assert!(!cx2.path().join("o").exists());
}

#[test]
fn a_256_mib_weights_push_survives_dropped_connections_or_leaves_no_tag() {
    let cx = TestContext::new();
    let reg = TestRegistry::start();
    let dir = cx.path().join("proj");
    fs::create_dir_all(dir.join("weights")).expect("mkdir");
    crate::common::image::noise_file(&dir.join("weights/model.bin"), 7, 256 << 20);
    let spec = dir.join("mlimg.toml");
    let write_spec = |host: &str, repo: &str| {
        fs::write(&spec, format!("[image]\nname = \"{host}/{repo}\"\ntags = [\"v1\"]\n\n[[weights]]\nname = \"big\"\nsource = \"weights\"\ndest = \"/models/big\"\n")).expect("spec");
    };
    write_spec(&reg.host(), "warm/up");
    run_ok(cx.mlimg().arg("build").arg("-f").arg(&spec)); // the layer is built once, then cached

    let mut ok = 0;
    let mut failures = Vec::new();
    for seed in 1..=10u64 {
        let proxy = FaultProxy::start(
            reg.port(),
            FaultConfig {
                seed,
                drop_prob: 0.15,
                max_drop_after: 256 << 20,
                stall_prob: 0.03,
                stall: Duration::from_millis(300),
                error_prob: 0.10,
                clean_first: 0,
                strip_mount: false,
            },
        );
        let repo = format!("fault/s{seed}");
        write_spec(&proxy.host(), &repo);
        let out = cx
            .mlimg()
            .arg("build")
            .arg("-f")
            .arg(&spec)
            .arg("--push")
            .arg("--retries")
            .arg("8")
            .output()
            .expect("run");
        // ask the registry directly (not through the proxy) whether the tag exists
        let tag = Command::new("skopeo")
            .args(["inspect", "--tls-verify=false"])
            .arg(format!("docker://{}/{repo}:v1", reg.host()))
            .output()
            .expect("skopeo");
        if out.status.success() {
            ok += 1;
            assert!(
                tag.status.success(),
                "seed {seed}: push said OK but the tag is missing"
            );
        } else {
            assert!(
                !tag.status.success(),
                "seed {seed}: a failed push left a tag"
            );
            failures.push(format!(
                "seed {seed}: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    assert!(
        ok >= 9,
        "only {ok}/10 pushes survived the faults:\n{}",
        failures.join("\n")
    );
}

#[test]
fn a_two_platform_build_pushes_an_index_whose_images_share_the_weights_layer() {
    let cx = TestContext::new();
    let reg = TestRegistry::start();
    let dir = cx.path().join("proj");
    fs::create_dir_all(dir.join("weights")).expect("mkdir");
    fs::write(dir.join("weights/w.bin"), vec![3u8; 4096]).expect("weights");
    fs::write(
        dir.join("mlimg.toml"),
        format!(
            "[image]\nname = \"{}/acme/multi\"\ntags = [\"v1\"]\nplatforms = [\"linux/amd64\", \"linux/arm64/v8\"]\n\n[[weights]]\nname = \"w\"\nsource = \"weights\"\ndest = \"/w\"\n",
            reg.host()
        ),
    )
    .expect("spec");
    let layout = cx.path().join("layout");
    let report = cx.build_json(
        &dir.join("mlimg.toml"),
        &["--push", "-o", &format!("oci:{}", layout.display())],
    );
    assert_eq!(
        report["media_type"],
        "application/vnd.oci.image.index.v1+json"
    );
    let plats = report["platforms"].as_array().expect("platforms");
    assert_eq!(plats.len(), 2);
    assert_eq!(
        plats[0]["layers"][0]["digest"], plats[1]["layers"][0]["digest"],
        "the weights layer is shared"
    );
    assert_ne!(plats[0]["manifest_digest"], plats[1]["manifest_digest"]);
    let checked = oci::assert_layout(&layout);
    assert_eq!(checked.images.len(), 2, "{}", checked.report);
    assert_eq!(
        checked.images[0].layers[0].digest,
        checked.images[1].layers[0].digest
    );
    let raw: serde_json::Value = serde_json::from_slice(
        &run_ok(
            Command::new("skopeo")
                .args(["inspect", "--raw", "--tls-verify=false"])
                .arg(format!("docker://{}/acme/multi:v1", reg.host())),
        )
        .stdout,
    )
    .expect("index json");
    let archs: Vec<&str> = raw["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        .filter_map(|m| m["platform"]["architecture"].as_str())
        .collect();
    assert_eq!(archs, ["amd64", "arm64"]);
    assert_eq!(raw["manifests"][1]["platform"]["variant"], "v8");
    // the weights blob was uploaded once
    let uploads = reg
        .requests()
        .iter()
        .filter(|r| r.starts_with("PUT /v2/acme/multi/blobs/uploads/"))
        .count();
    assert_eq!(
        uploads, 10,
        "one weights layer and two configs; then the referrers: the empty config once and \
         six documents (SPDX, CycloneDX and a provenance statement per platform)"
    );
}

#[test]
fn output_registry_ref_pushes_with_its_own_tag_beside_a_file_output() {
    let cx = TestContext::new();
    let reg = TestRegistry::start();
    let spec = cx.example("sentiment").join("mlimg.toml");
    let base = push_base(&cx, spec.parent().expect("dir"), &reg);
    retarget(&spec, &base, &format!("{}/acme/svc", reg.host()));
    let layout = cx.path().join("layout");
    let out = format!("registry:{}/acme/other:candidate", reg.host());
    let report = cx.build_json(
        &spec,
        &["-o", &out, "-o", &format!("oci:{}", layout.display())],
    );
    let digest = report["manifest_digest"].as_str().expect("digest");
    // the tag of the reference, not [image].tags; the [image].name repository is untouched
    let pushed = report["push"]["pushed"].to_string();
    assert!(pushed.contains("acme/other:candidate@"), "pushed: {pushed}");
    let requests = reg.requests();
    assert!(
        requests
            .iter()
            .any(|r| r.starts_with("PUT /v2/acme/other/manifests/candidate")),
        "{requests:#?}"
    );
    assert!(
        !requests.iter().any(|r| r.contains("/v2/acme/svc/")),
        "nothing goes to [image].name without --push: {requests:#?}"
    );
    // the same image went to both sinks
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(layout.join("index.json")).expect("index")).expect("json");
    assert_eq!(index["manifests"][0]["digest"], digest);
    let base = reg.reference("acme/other");
    let client =
        mlimg::registry::RegistryClient::new(mlimg::registry::ClientOptions::default()).unwrap();
    let m = client
        .fetch_manifest(&mlimg::registry::Reference {
            tag: Some("candidate".into()),
            ..base
        })
        .expect("manifest by tag");
    assert_eq!(m.digest, digest);
}
