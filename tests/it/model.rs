//! `[model]`: the weights as a ModelPack artifact and a weights-only image beside the service
//! image, made of the same blobs; in an OCI layout, pushed (each weights blob uploaded once),
//! pulled by Docker and by `mlimg pull-model`.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::common::registry::TestRegistry;
use crate::common::*;

const MODEL_TOML: &str = r#"
[model]
name = "NAME"
formats = ["modelpack", "image"]

[model.metadata]
name = "sst2"
family = "distilbert"
architecture = "transformer"
format = "safetensors"
precision = "float32"
param_size = "66M"
licenses = ["Apache-2.0"]
"#;

/// The sentiment example with its weights one layer per file (README included) and a
/// `[model]` table naming `model_name`.
fn model_example(cx: &TestContext, model_name: &str) -> PathBuf {
    let spec = cx.example("sentiment").join("mlimg.toml");
    let text = fs::read_to_string(&spec).expect("spec");
    let text = text.replace(
        "include = [\"*.safetensors\", \"*.json\"]",
        "layers = \"per-file\"",
    ) + &MODEL_TOML.replace("NAME", model_name);
    fs::write(&spec, text).expect("write spec");
    spec
}

fn models_dir(spec: &Path) -> PathBuf {
    spec.parent().expect("dir").join("models/sst2")
}

/// `(role, digest)` of the report's weights layers, in image order.
fn weights_digests(report: &Value) -> Vec<String> {
    report["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .filter(|l| l["role"].as_str().is_some_and(|r| r.starts_with("weights")))
        .map(|l| l["digest"].as_str().expect("digest").to_string())
        .collect()
}

fn artifact<'a>(report: &'a Value, kind: &str) -> &'a Value {
    report["artifacts"]
        .as_array()
        .and_then(|a| a.iter().find(|x| x["kind"] == kind))
        .unwrap_or_else(|| panic!("no {kind} artifact in {report}"))
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn read_blob(layout: &Path, digest: &str) -> Vec<u8> {
    fs::read(
        layout
            .join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:")),
    )
    .expect("blob")
}

/// Files of an (uncompressed) tar: path → bytes.
fn untar(bytes: &[u8]) -> BTreeMap<String, Vec<u8>> {
    use std::io::Read as _;
    let mut out = BTreeMap::new();
    let mut ar = tar::Archive::new(bytes);
    for e in ar.entries().expect("tar") {
        let mut e = e.expect("entry");
        if e.header().entry_type().is_file() {
            let p = e.path().expect("path").to_string_lossy().into_owned();
            let mut b = Vec::new();
            e.read_to_end(&mut b).expect("read");
            out.insert(p, b);
        }
    }
    out
}

/// The full checks on a layout holding artifacts: mlimg's own checker on everything (the
/// ModelPack artifact against the official schema included), then [`oci::assert_layout`] (and
/// with it `../shared/tools/oci-check`, which knows only images) on a copy whose index.json
/// lists the images alone.
fn check_model_layout(cx: &TestContext, out: &Path) -> oci::Checked {
    let checked = oci::check_layout(out, oci::Strictness::Repro)
        .unwrap_or_else(|e| panic!("{} is not a valid layout: {e}", out.display()));
    let images = cx.path().join("images-only");
    let _ = fs::remove_dir_all(&images);
    copy_tree(out, &images);
    let mut index: Value =
        serde_json::from_slice(&fs::read(out.join("index.json")).expect("index")).expect("json");
    if let Some(ms) = index["manifests"].as_array_mut() {
        ms.retain(|m| m.get("artifactType").is_none());
    }
    fs::write(
        images.join("index.json"),
        serde_json::to_vec(&index).expect("json"),
    )
    .expect("write index");
    oci::assert_layout(&images);
    checked
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn oci_output_holds_the_modelpack_artifact_and_the_weights_image_on_the_same_blobs() {
    let cx = TestContext::new();
    let spec = model_example(&cx, "registry.example/acme/sst2-model");
    let out = cx.path().join("out");
    let report = cx.build_json(&spec, &["-o", &format!("oci:{}", out.display())]);

    // every entry of index.json passes the checker: the service image and the weights image
    // as OCI images, the ModelPack artifact against the official config schema
    let checked = check_model_layout(&cx, &out);
    assert_eq!(checked.images.len(), 3, "{}", checked.report);
    let index: Value =
        serde_json::from_slice(&fs::read(out.join("index.json")).expect("index")).expect("json");
    let names: Vec<&str> = index["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        .filter_map(|m| m["annotations"]["org.opencontainers.image.ref.name"].as_str())
        .collect();
    assert_eq!(
        names,
        [
            "0.1.0",
            "registry.example/acme/sst2-model:0.1.0",
            "registry.example/acme/sst2-model:0.1.0-image"
        ]
    );

    let weights = weights_digests(&report);
    assert_eq!(weights.len(), 3, "one layer per file: {report}");
    let mp = artifact(&report, "modelpack");
    let wi = artifact(&report, "weights-image");
    assert_eq!(strings(&mp["layers"]), weights, "same blobs: {report}");
    assert_eq!(strings(&wi["layers"]), weights, "same blobs: {report}");
    assert_eq!(strings(&mp["tags"]), ["0.1.0", "latest"]);
    assert_eq!(strings(&wi["tags"]), ["0.1.0-image", "latest-image"]);
    assert_eq!(index["manifests"][1]["digest"], mp["manifest_digest"]);
    assert_eq!(index["manifests"][2]["digest"], wi["manifest_digest"]);

    // the ModelPack manifest: artifactType, config media type, per-file media types and
    // annotations; the config's metadata and diffIds
    let m: Value =
        serde_json::from_slice(&read_blob(&out, mp["manifest_digest"].as_str().expect("d")))
            .expect("manifest");
    assert_eq!(
        m["artifactType"],
        "application/vnd.cncf.model.manifest.v1+json"
    );
    assert_eq!(
        m["config"]["mediaType"],
        "application/vnd.cncf.model.config.v1+json"
    );
    let models = models_dir(&spec);
    let mut by_path = BTreeMap::new();
    for l in m["layers"].as_array().expect("layers") {
        let path = l["annotations"]["org.cncf.model.filepath"]
            .as_str()
            .expect("filepath")
            .to_string();
        let meta: Value = serde_json::from_str(
            l["annotations"]["org.cncf.model.file.metadata+json"]
                .as_str()
                .expect("file metadata"),
        )
        .expect("metadata JSON");
        let file = path.rsplit('/').next().expect("name").to_string();
        assert_eq!(meta["name"], file.as_str());
        assert_eq!(
            meta["size"],
            fs::metadata(models.join(&file)).expect("stat").len()
        );
        // the layer untars to the original file
        let files = untar(&read_blob(&out, l["digest"].as_str().expect("digest")));
        assert_eq!(
            files.get(&path),
            Some(&fs::read(models.join(&file)).expect("original")),
            "{path}"
        );
        by_path.insert(file, l["mediaType"].as_str().expect("mt").to_string());
    }
    assert_eq!(
        by_path,
        BTreeMap::from([
            (
                "README.md".into(),
                "application/vnd.cncf.model.doc.v1.tar".into()
            ),
            (
                "config.json".into(),
                "application/vnd.cncf.model.weight.config.v1.tar".into()
            ),
            (
                "model.safetensors".into(),
                "application/vnd.cncf.model.weight.v1.tar".into()
            ),
        ])
    );
    let mp_checked = checked
        .images
        .iter()
        .find(|i| i.manifest_digest == mp["manifest_digest"])
        .expect("checked modelpack");
    let c = &mp_checked.config;
    oci::validate_modelpack_config(c).expect("schema");
    assert_eq!(c["descriptor"]["name"], "sst2");
    assert_eq!(c["descriptor"]["licenses"][0], "Apache-2.0");
    assert_eq!(c["config"]["paramSize"], "66M");
    assert_eq!(c["config"]["format"], "safetensors");
    assert_eq!(c["modelfs"]["type"], "layers");
    assert_eq!(c["modelfs"]["diffIds"].as_array().map(Vec::len), Some(3));

    // the weights-only image: runnable-shaped, no base, only the weights
    let wi_checked = checked
        .images
        .iter()
        .find(|i| i.manifest_digest == wi["manifest_digest"])
        .expect("checked weights image");
    assert_eq!(wi_checked.config["os"], "linux");
    assert_eq!(wi_checked.config["architecture"], "amd64");
    assert_eq!(
        wi_checked.config["rootfs"]["diff_ids"]
            .as_array()
            .map(Vec::len),
        Some(3)
    );

    // independent tools read the weights image out of the same layout
    let reference = format!(
        "oci:{}:registry.example/acme/sst2-model:0.1.0-image",
        out.display()
    );
    if have("skopeo") {
        let o = run_ok(Command::new("skopeo").args(["inspect", &reference]));
        let v: Value = serde_json::from_slice(&o.stdout).expect("skopeo json");
        assert_eq!(strings(&v["Layers"]), weights);
    } else {
        eprintln!("skopeo not installed: skipped skopeo inspect");
    }
    if have("umoci") {
        let bundle = cx.path().join("bundle");
        run_ok(
            Command::new("umoci")
                .args(["raw", "unpack", "--rootless", "--image"])
                .arg(format!(
                    "{}:registry.example/acme/sst2-model:0.1.0-image",
                    out.display()
                ))
                .arg(&bundle),
        );
        for f in ["README.md", "config.json", "model.safetensors"] {
            assert_eq!(
                fs::read(bundle.join("models/sst2").join(f)).expect("unpacked"),
                fs::read(models.join(f)).expect("original"),
                "{f}"
            );
        }
    } else {
        eprintln!("umoci not installed: skipped umoci unpack");
    }
}

#[test]
fn a_weights_only_change_changes_the_same_blob_in_all_three() {
    let cx = TestContext::new();
    let spec = model_example(&cx, "registry.example/acme/sst2-model");
    let out = cx.path().join("out");
    let o = format!("oci:{}", out.display());
    let first = cx.build_json(&spec, &["-o", &o]);
    let before = weights_digests(&first);

    let w = models_dir(&spec).join("model.safetensors");
    let mut bytes = fs::read(&w).expect("weights");
    let last = bytes.len() - 1;
    bytes[last] ^= 0x5a;
    fs::write(&w, bytes).expect("write weights");
    let second = cx.build_json(&spec, &["-o", &o]);
    let after = weights_digests(&second);

    let changed: Vec<(&String, &String)> =
        before.iter().zip(&after).filter(|(a, b)| a != b).collect();
    assert_eq!(
        changed.len(),
        1,
        "only the changed file's layer: {before:?} {after:?}"
    );
    for kind in ["modelpack", "weights-image"] {
        assert_eq!(strings(&artifact(&second, kind)["layers"]), after, "{kind}");
        assert_ne!(
            artifact(&first, kind)["manifest_digest"],
            artifact(&second, kind)["manifest_digest"]
        );
    }
    for role in ["base", "deps vendor", "app"] {
        assert_eq!(
            layer_digest(&first, role),
            layer_digest(&second, role),
            "{role}"
        );
    }
    check_model_layout(&cx, &out);
}

#[test]
fn one_push_uploads_each_weights_blob_once_and_docker_reads_the_weights_image() {
    let cx = TestContext::new();
    let reg = TestRegistry::start();
    let model_name = format!("{}/acme/sst2-model", reg.host());
    let spec = model_example(&cx, &model_name);
    let text = fs::read_to_string(&spec).expect("spec").replace(
        "name = \"localhost/sentiment-api\"",
        &format!("name = \"{}/acme/sentiment\"", reg.host()),
    );
    fs::write(&spec, text).expect("write spec");

    let report = cx.build_json(&spec, &["--push"]);
    let weights = weights_digests(&report);
    assert_eq!(weights.len(), 3);
    for d in &weights {
        assert_eq!(
            reg.uploads_of(d),
            1,
            "{d} uploaded once for the three manifests: {:#?}",
            reg.requests()
        );
    }
    // the image uploaded them; the first artifact mounted them, the second found them
    let mp = artifact(&report, "modelpack");
    let wi = artifact(&report, "weights-image");
    let action = |a: &Value, d: &str| -> String {
        a["blobs"]
            .as_array()
            .and_then(|bs| bs.iter().find(|b| b["digest"] == d))
            .and_then(|b| b["action"].as_str())
            .unwrap_or("none")
            .to_string()
    };
    for d in &weights {
        assert_eq!(action(mp, d), "mounted", "{report}");
        assert_eq!(action(wi, d), "skipped", "{report}");
    }
    let mp_digest = mp["manifest_digest"].as_str().expect("digest");
    assert_eq!(
        strings(&mp["pushed"]),
        [
            format!("{model_name}:0.1.0@{mp_digest}"),
            format!("{model_name}:latest@{mp_digest}")
        ]
    );

    // `mlimg pull-model` writes the files of either artifact, verified
    let models = models_dir(&spec);
    for (tag, kind) in [("0.1.0", "modelpack"), ("0.1.0-image", "image")] {
        let dir = cx.path().join(format!("pulled-{kind}"));
        let out = run_ok(
            cx.mlimg()
                .args(["pull-model", &format!("{model_name}:{tag}")])
                .arg(&dir)
                .arg("--json"),
        );
        let r: Value = serde_json::from_slice(&out.stdout).expect("pull-model --json");
        assert_eq!(r["kind"], kind);
        assert_eq!(strings(&r["layers"]), weights);
        for f in ["README.md", "config.json", "model.safetensors"] {
            assert_eq!(
                fs::read(dir.join("models/sst2").join(f)).expect("pulled"),
                fs::read(models.join(f)).expect("original"),
                "{kind} {f}"
            );
        }
        let leftovers: Vec<_> = fs::read_dir(&dir)
            .expect("dir")
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(leftovers, ["models"], "no staging left behind");
        // pulling over what is there is refused, and changes nothing
        let again = cx
            .mlimg()
            .args(["pull-model", &format!("{model_name}:{tag}")])
            .arg(&dir)
            .output()
            .expect("run");
        assert!(!again.status.success());
        assert!(String::from_utf8_lossy(&again.stderr).contains("already holds"));
    }
    // Docker pulls the weights-only image and copies a weight file out of it
    if have("docker") {
        docker_copies_a_weight_file(cx.path(), &model_name, &spec);
    } else {
        eprintln!("docker not installed: skipped docker pull/create/cp");
    }

    // a blob that does not match its digest fails the pull, and nothing appears
    fs::write(reg.blob_path(&weights[2]), b"tampered").expect("tamper");
    let dir = cx.path().join("pulled-tampered");
    let bad = cx
        .mlimg()
        .args([
            "pull-model",
            &format!("{model_name}:0.1.0"),
            "--retries",
            "0",
        ])
        .arg(&dir)
        .output()
        .expect("run");
    assert!(!bad.status.success(), "a tampered blob must fail the pull");
    assert_eq!(fs::read_dir(&dir).map(|d| d.count()).unwrap_or(0), 0);
}

fn docker_copies_a_weight_file(tmp: &Path, model_name: &str, spec: &Path) {
    let image = format!("{model_name}:0.1.0-image");
    run_ok(Command::new("docker").args(["pull", &image]));
    let created = run_ok(Command::new("docker").args(["create", &image, "/none"]));
    let id = stdout(&created).trim().to_string();
    let dest = tmp.join("copied.safetensors");
    let cp = Command::new("docker")
        .args(["cp", &format!("{id}:/models/sst2/model.safetensors")])
        .arg(&dest)
        .output();
    let _ = Command::new("docker").args(["rm", &id]).output();
    let _ = Command::new("docker").args(["rmi", &image]).output();
    let cp = cp.expect("docker cp");
    assert!(
        cp.status.success(),
        "{}",
        String::from_utf8_lossy(&cp.stderr)
    );
    assert_eq!(
        fs::read(&dest).expect("copied"),
        fs::read(models_dir(spec).join("model.safetensors")).expect("original")
    );
}
