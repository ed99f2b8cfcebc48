//! The pipeline's contracts as a user sees them: each source byte is read once by a cold
//! build, and an unchanged rebuild into the same layout reads none.

use std::fs;
use std::path::Path;

use crate::common::oci;
use crate::common::{TestContext, run_ok};

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
    let reg = crate::common::registry::TestRegistry::start();
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
