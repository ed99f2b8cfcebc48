//! `mlimg diff A B`: after a weights-only change, a node holding A pulls only the new weights
//! layer plus B's config and manifest (issue 13, item 2).

use serde_json::Value;

use crate::common::snapshot::render;
use crate::common::{TestContext, run_ok};
use crate::inspect::{inspect_json, settings};

#[test]
fn a_weights_only_update_costs_the_weights_layer() {
    let cx = TestContext::new();
    let spec = cx.example("sentiment").join("mlimg.toml");
    let a = cx.path().join("a");
    let b = cx.path().join("b");
    cx.build_json(&spec, &["-o", &format!("oci:{}", a.display())]);
    let weights = spec.parent().expect("dir").join("models/sst2/config.json");
    let mut cfg = std::fs::read_to_string(&weights).expect("read");
    cfg.push('\n');
    std::fs::write(&weights, cfg).expect("write");
    cx.build_json(&spec, &["-o", &format!("oci:{}", b.display())]);
    let (ia, ib) = (
        inspect_json(&cx, &format!("oci:{}", a.display())),
        inspect_json(&cx, &format!("oci:{}", b.display())),
    );
    let out = run_ok(cx.mlimg().args([
        "diff",
        "--json",
        &format!("oci:{}", a.display()),
        &format!("oci:{}", b.display()),
    ]));
    let d: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let p = &d["platforms"][0];
    let pull = p["layers_to_pull"].as_array().expect("layers");
    assert_eq!(pull.len(), 1, "{d}");
    assert_eq!(pull[0]["role"], "weights sst2");
    assert_eq!(pull[0]["digest"], ib["platforms"][0]["layers"][2]["digest"]);
    assert_eq!(
        p["layers_dropped"][0]["digest"],
        ia["platforms"][0]["layers"][2]["digest"]
    );
    assert_eq!(p["layers_shared"], 3);
    let pb = &ib["platforms"][0];
    let expected = pull[0]["size"].as_u64().expect("size")
        + pb["config_size"].as_u64().expect("config size")
        + pb["manifest_size"].as_u64().expect("manifest size");
    assert_eq!(d["bytes_to_pull"], expected, "{d}");
    assert_eq!(p["bytes_to_pull"], expected);

    let out = run_ok(cx.mlimg().args([
        "diff",
        &format!("oci:{}", a.display()),
        &format!("oci:{}", b.display()),
    ]));
    settings(&cx).bind(|| insta::assert_snapshot!("diff_after_a_weights_update", render(&out)));

    // an image against itself: nothing to pull
    let out = run_ok(cx.mlimg().args([
        "diff",
        "--json",
        &format!("oci:{}", a.display()),
        &format!("oci:{}", a.display()),
    ]));
    let d: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(d["bytes_to_pull"], 0, "{d}");
    assert_eq!(d["platforms"][0]["identical"], true);
}
