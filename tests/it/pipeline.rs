//! The pipeline's contracts as a user sees them: each source byte is read once by a cold
//! build (or push), an unchanged rebuild into the same layout reads none, and a dry run — with
//! a wheel set, a Hub source and a registry base — writes nothing to the cache.

use std::fs;
use std::path::Path;

use crate::common::hub::{Hub, tiny_model_files};
use crate::common::oci;
use crate::common::registry::TestRegistry;
use crate::common::{TestContext, run_ok, stdout};

/// Bytes the plan reads from files: every entry that has a file (or download) behind it.
fn planned_file_bytes(cx: &TestContext, spec: &Path) -> u64 {
    let out = run_ok(
        cx.mlimg()
            .args(["build", "--dry-run", "--json", "-f"])
            .arg(spec),
    );
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).expect("plan json");
    let mut seen = std::collections::BTreeSet::new();
    let mut total = 0;
    for l in plan["platforms"][0]["layers"].as_array().expect("layers") {
        if !seen.insert(l["selector"].to_string()) {
            continue;
        }
        for e in l["entries"].as_array().expect("entries") {
            let src = e["source"].as_str().unwrap_or_default();
            if !src.starts_with('(') {
                total += e["size"].as_u64().unwrap_or(0);
            }
        }
    }
    total
}

#[test]
fn a_cold_build_reads_each_source_byte_once_and_an_unchanged_rebuild_into_the_same_layout_none() {
    let cx = TestContext::new();
    let spec = cx.example("sentiment").join("mlimg.toml");
    let sources = planned_file_bytes(&cx, &spec);
    assert!(sources > 0);
    let dir = cx.path().join("out/image");
    let target = format!("oci:{}", dir.display());

    let cold = cx.build_json(&spec, &["-o", &target]);
    assert_eq!(
        cold["source_bytes_read"], sources,
        "a cold build reads every source byte exactly once: {cold}"
    );
    oci::assert_layout(&dir);

    let again = cx.build_json(&spec, &["-o", &target]);
    assert_eq!(again["manifest_digest"], cold["manifest_digest"]);
    assert_eq!(
        again["source_bytes_read"], 0,
        "the layers are cached and the layout already holds every blob: {again}"
    );
    let checked = oci::assert_layout(&dir);
    assert_eq!(
        checked.images[0].manifest_digest,
        cold["manifest_digest"].as_str().expect("digest")
    );

    // A new folder has no blobs to take over: the unstored weights layer is read once more.
    let other = cx.path().join("out/other");
    let fresh = cx.build_json(&spec, &["-o", &format!("oci:{}", other.display())]);
    let weights = fs::metadata(
        spec.parent()
            .expect("dir")
            .join("models/sst2/model.safetensors"),
    )
    .expect("weights")
    .len();
    let read = fresh["source_bytes_read"].as_u64().expect("bytes");
    assert!(
        read >= weights && read < sources,
        "only the weights are regenerated ({read} of {sources}, weights {weights})"
    );
    oci::assert_layout(&other);
}

#[test]
fn a_cold_push_streams_new_layers_while_it_writes_them_reading_each_source_byte_once() {
    let cx = TestContext::new();
    let reg = TestRegistry::start();
    let spec = cx.example("sentiment").join("mlimg.toml");
    let sources = planned_file_bytes(&cx, &spec);
    let text = fs::read_to_string(&spec).expect("spec");
    fs::write(
        &spec,
        text.replace(
            "name = \"localhost/sentiment-api\"",
            &format!("name = \"{}/acme/streamed\"", reg.host()),
        ),
    )
    .expect("retarget");
    let report = cx.build_json(&spec, &["--push"]);
    assert_eq!(
        report["source_bytes_read"], sources,
        "tar, hash and upload in one pass: {report}"
    );
    let weights = report["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .find(|l| l["role"] == "weights sst2")
        .expect("weights layer");
    assert_eq!(weights["push"], "uploaded", "{report}");
    // the registry has the blob under the digest the report names, and serves the image
    let client =
        mlimg::registry::RegistryClient::new(mlimg::registry::ClientOptions::default()).unwrap();
    let r = reg.reference("acme/streamed");
    let m = client
        .fetch_manifest(&mlimg::registry::Reference {
            tag: Some("0.1.0".into()),
            ..r
        })
        .expect("manifest");
    assert_eq!(
        m.digest,
        report["manifest_digest"].as_str().expect("digest")
    );
    let blob = reg.blob_path(weights["digest"].as_str().expect("digest"));
    let got = {
        use sha2::Digest as _;
        format!(
            "sha256:{}",
            hex::encode(sha2::Sha256::digest(
                fs::read(&blob).expect("blob in storage")
            ))
        )
    };
    assert_eq!(got, weights["digest"].as_str().expect("digest"));
}

#[test]
fn a_dry_run_with_a_wheel_set_a_hub_source_and_a_registry_base_writes_nothing() {
    let cx = TestContext::new();
    let reg = TestRegistry::start();
    let hub = Hub::start("acme/tiny");
    hub.add_commit(tiny_model_files(1));

    // A base with a Python in it (found by streaming its layer), pushed by mlimg itself.
    let base_dir = cx.path().join("pybase");
    let root = base_dir.join("root");
    fs::create_dir_all(root.join("usr/local/lib/python3.11")).expect("dirs");
    fs::create_dir_all(root.join("var/lib/dpkg")).expect("dirs");
    fs::write(root.join("usr/local/lib/python3.11/os.py"), "# os\n").expect("os.py");
    fs::write(
        root.join("var/lib/dpkg/status"),
        "Package: libc6\nStatus: install ok installed\nArchitecture: amd64\nVersion: 2.36-9\n\n",
    )
    .expect("status");
    let base_ref = format!("{}/acme/pybase:1", reg.host());
    fs::write(
        base_dir.join("mlimg.toml"),
        format!(
            "[image]\nname = \"{}/acme/pybase\"\ntags = [\"1\"]\nbase = \"scratch\"\n\n\
             [[deps]]\nname = \"root\"\ndir = \"root\"\ndest = \"/\"\n",
            reg.host()
        ),
    )
    .expect("base spec");
    cx.build_json(&base_dir.join("mlimg.toml"), &["--push"]);

    // The project: that base, a wheel from a find-links folder, Hub weights.
    let proj = cx.path().join("proj");
    let wheels = proj.join("wheels");
    fs::create_dir_all(&wheels).expect("wheels dir");
    let six = fs::read_dir(crate::common::repo_root().join("testdata/wheels"))
        .expect("testdata wheels")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("six-"))
        })
        .expect("a six wheel in testdata/wheels");
    let six_name = six
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    fs::copy(&six, wheels.join(&six_name)).expect("copy wheel");
    let hash = {
        use sha2::Digest as _;
        hex::encode(sha2::Sha256::digest(fs::read(&six).expect("read")))
    };
    let version = six_name.split('-').nth(1).expect("version");
    fs::write(
        proj.join("requirements.txt"),
        format!("six=={version} --hash=sha256:{hash}\n"),
    )
    .expect("requirements");
    let spec = proj.join("mlimg.toml");
    fs::write(
        &spec,
        format!(
            "[image]\nbase = \"{base_ref}\"\n\n\
             [[deps]]\nname = \"py\"\nrequirements = \"requirements.txt\"\nfind_links = [\"wheels\"]\n\n\
             [[weights]]\nname = \"tiny\"\nsource = \"hf://acme/tiny\"\ndest = \"/models/tiny\"\n\n\
             [config]\nentrypoint = [\"python3\", \"-m\", \"app\"]\nuser = \"1000:1000\"\n\
             env = {{ MODEL_PATH = \"${{weights.tiny.dest}}\" }}\n"
        ),
    )
    .expect("spec");

    let cache = cx.path().join("cache-dry");
    let out = run_ok(
        cx.mlimg()
            .env("MLIMG_CACHE_DIR", &cache)
            .env("HF_ENDPOINT", hub.endpoint())
            .env("HF_HOME", cx.path().join("hf"))
            .env("HF_HUB_CACHE", cx.path().join("hf/hub"))
            .env("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
            .env_remove("PIP_EXTRA_INDEX_URL")
            .env_remove("HF_TOKEN")
            .args(["build", "--dry-run", "-f"])
            .arg(&spec),
    );
    let text = stdout(&out);
    for want in [
        "found /usr/local/lib/python3.11/os.py",
        "CPython 3.11 on linux x86_64 (glibc 2.36)",
        &format!("wheel {six_name} sha256:{hash}"),
        "/models/tiny/",
        "(download sha256:",
        "Entrypoint: [\"python3\",\"-m\",\"app\"]",
        "User: \"1000:1000\"",
        "MODEL_PATH=/models/tiny",
    ] {
        assert!(text.contains(want), "dry run lacks {want:?}:\n{text}");
    }
    assert!(
        !cache.exists(),
        "a dry run writes nothing to the cache: {:?}",
        walkdir::WalkDir::new(&cache)
            .into_iter()
            .filter_map(Result::ok)
            .map(|e| e.path().display().to_string())
            .collect::<Vec<_>>()
    );
    let hub_cache = cx.path().join("hf/hub");
    assert!(
        !hub_cache.exists()
            || fs::read_dir(&hub_cache)
                .expect("hub cache")
                .next()
                .is_none(),
        "nor to the Hub cache (small files are hashed in a temporary folder)"
    );
    // the base's layer was streamed for detection, never stored
    let base_layer_gets = reg
        .requests()
        .iter()
        .filter(|r| r.starts_with("GET /v2/acme/pybase/blobs/"))
        .count();
    assert!(base_layer_gets >= 1, "detection read the base layer");
}
