//! Registry upload rules known before upload: each rule is enforced by a proxy in front of the
//! real registry (`common::limitproxy`), and mlimg, told which registry it talks to
//! (`MLIMG_REGISTRY_KIND`, as for a mirror of that registry), adapts before sending a byte —
//! or refuses a layer over the limit before building it. Each test also shows the proxy
//! refusing the push mlimg would make without the rule.

use std::process::Output;

use crate::common::limitproxy::{LimitProxy, Rules};
use crate::common::registry::TestRegistry;
use crate::common::*;

const MIB: u64 = 1 << 20;

/// A scratch-based project with one uncompressed weights file of `mib` MiB (noise).
fn project(cx: &TestContext, mib: u64) -> std::path::PathBuf {
    let root = cx.path().join("proj");
    std::fs::create_dir_all(root.join("models")).unwrap();
    std::fs::create_dir_all(root.join("app")).unwrap();
    let mut x = 1u64;
    let bytes: Vec<u8> = (0..mib * MIB)
        .map(|_| {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
            (x >> 56) as u8
        })
        .collect();
    std::fs::write(root.join("models/w.bin"), bytes).unwrap();
    std::fs::write(root.join("app/run.sh"), "echo hi\n").unwrap();
    std::fs::write(
        root.join("mlimg.toml"),
        r#"[image]
name = "localhost/limits"
base = "scratch"

[[weights]]
name = "w"
source = "models"
dest = "/models"

[app]
src = "app"
dest = "/app"

[config]
entrypoint = ["/bin/sh", "/app/run.sh"]
"#,
    )
    .unwrap();
    root.join("mlimg.toml")
}

fn push(
    cx: &TestContext,
    spec: &std::path::Path,
    to: &str,
    kind: Option<&str>,
    extra: &[&str],
) -> Output {
    let mut c = cx.mlimg();
    c.arg("build")
        .arg("-f")
        .arg(spec)
        .args(["--no-sbom", "--no-provenance", "--retries", "0", "--json"])
        .args(["-o", &format!("registry:{to}")])
        .args(extra);
    match kind {
        Some(k) => c.env("MLIMG_REGISTRY_KIND", k),
        None => c.env_remove("MLIMG_REGISTRY_KIND"),
    };
    c.output().expect("run mlimg")
}

fn report(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "mlimg failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json report")
}

#[test]
fn ghcr_patches_stay_under_4_mib() {
    let reg = TestRegistry::start();
    let proxy = LimitProxy::start(
        reg.port(),
        Rules {
            max_body: Some(4 * MIB),
            ..Rules::default()
        },
    );
    let cx = TestContext::new();
    let spec = project(&cx, 10);
    let to = format!("{}/acme/ghcr:v1", proxy.host());

    // without the rule the 10 MiB layer goes in one request, which the "registry" refuses
    let out = push(&cx, &spec, &to, None, &[]);
    assert!(
        !out.status.success(),
        "the proxy must refuse a > 4 MiB PATCH"
    );
    assert!(!proxy.refused().is_empty());

    let refused = proxy.refused().len();
    let before = proxy.requests().len();
    let r = report(&push(
        &cx,
        &spec,
        &to,
        Some(&format!("{}=ghcr", proxy.host())),
        &[],
    ));
    let new: Vec<String> = proxy.requests()[before..].to_vec();
    let patches: Vec<u64> = new
        .iter()
        .filter(|l| l.starts_with("PATCH "))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    assert!(patches.iter().all(|n| *n <= 4 * MIB), "{patches:?}");
    assert!(
        patches.len() >= 3,
        "the weights went in ≥ 3 chunks: {patches:?}"
    );
    assert_eq!(
        proxy.refused().len(),
        refused,
        "nothing refused this time: {:?}",
        proxy.refused()
    );
    assert!(
        r["manifest_digest"]
            .as_str()
            .is_some_and(|d| d.starts_with("sha256:"))
    );
}

#[test]
fn ecr_chunks_are_never_under_5_mib_but_the_last() {
    let reg = TestRegistry::start();
    let proxy = LimitProxy::start(
        reg.port(),
        Rules {
            min_chunk: Some(5 * MIB),
            ..Rules::default()
        },
    );
    let cx = TestContext::new();
    let spec = project(&cx, 12);
    let to = format!("{}/acme/ecr:v1", proxy.host());
    let one_mib = MIB.to_string();
    // with a file output the layers are hashed first, then pushed in chunks of the asked size
    let layout = format!("oci:{}", cx.path().join("layout").display());
    let chunked = ["--chunk-size", one_mib.as_str(), "-o", layout.as_str()];

    let out = push(&cx, &spec, &to, None, &chunked);
    assert!(!out.status.success(), "1 MiB chunks must be refused");
    let refused = proxy.refused().len();
    assert!(refused > 0);

    let before = proxy.requests().len();
    report(&push(
        &cx,
        &spec,
        &to,
        Some(&format!("{}=ecr", proxy.host())),
        &chunked,
    ));
    let patches: Vec<u64> = proxy.requests()[before..]
        .iter()
        .filter(|l| l.starts_with("PATCH "))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    assert!(
        patches.contains(&(5 * MIB)),
        "1 MiB chunks grew to 5 MiB: {patches:?}"
    );
    assert_eq!(proxy.refused().len(), refused, "{:?}", proxy.refused());
}

#[test]
fn artifact_registry_gets_monolithic_uploads() {
    let reg = TestRegistry::start();
    let proxy = LimitProxy::start(
        reg.port(),
        Rules {
            no_patch: true,
            ..Rules::default()
        },
    );
    let cx = TestContext::new();
    let spec = project(&cx, 3);
    let to = format!("{}/acme/gar:v1", proxy.host());

    let out = push(&cx, &spec, &to, None, &[]);
    assert!(!out.status.success(), "PATCH uploads must be refused");

    let before = proxy.requests().len();
    let r = report(&push(
        &cx,
        &spec,
        &to,
        Some(&format!("{}=gar", proxy.host())),
        &[],
    ));
    let new: Vec<String> = proxy.requests()[before..].to_vec();
    assert!(!new.iter().any(|l| l.starts_with("PATCH ")), "{new:#?}");
    let weights = r["layers"]
        .as_array()
        .and_then(|ls| ls.iter().find(|l| l["role"] == "weights w"))
        .and_then(|l| l["size"].as_u64())
        .expect("weights size");
    assert!(
        new.iter()
            .any(|l| l.starts_with("PUT ") && l.ends_with(&format!(" {weights}"))),
        "the weights blob went in one PUT of {weights} bytes: {new:#?}"
    );
}

#[test]
fn announced_chunk_bounds_are_honoured_even_for_a_registry_mlimg_does_not_know() {
    let reg = TestRegistry::start();
    let proxy = LimitProxy::start(
        reg.port(),
        Rules {
            max_body: Some(2 * MIB),
            announce: Some((MIB, 2 * MIB)),
            ..Rules::default()
        },
    );
    let cx = TestContext::new();
    let spec = project(&cx, 5);
    let to = format!("{}/acme/announced:v1", proxy.host());
    let r = report(&push(&cx, &spec, &to, None, &[]));
    let patches = proxy.patch_sizes();
    assert!(
        !patches.is_empty() && patches.iter().all(|n| *n <= 2 * MIB),
        "{patches:?}"
    );
    assert!(proxy.refused().is_empty(), "{:?}", proxy.refused());
    // a push with no file output first tries to stream the new layer; the announced bound
    // makes it hash the layer first instead, and says so
    let warnings = r["warnings"].to_string();
    assert!(warnings.contains("stream-upload"), "{warnings}");
}

#[test]
fn a_file_or_layer_over_the_limit_is_refused_before_anything_is_built() {
    let reg = TestRegistry::start();
    let proxy = LimitProxy::start(reg.port(), Rules::default());
    let cx = TestContext::new();
    let root = cx.path().join("big");
    std::fs::create_dir_all(root.join("models")).unwrap();
    // sparse: stat says 10,001 MiB, nothing is read
    let f = std::fs::File::create(root.join("models/huge.bin")).unwrap();
    f.set_len(10_001 * MIB).unwrap();
    std::fs::write(
        root.join("mlimg.toml"),
        "[image]\nname = \"localhost/big\"\nbase = \"scratch\"\n\n[[weights]]\nname = \"w\"\nsource = \"models\"\ndest = \"/models\"\n\n[config]\nentrypoint = [\"/x\"]\n",
    )
    .unwrap();
    let spec = root.join("mlimg.toml");
    let kind = format!("{}=ecr-public", proxy.host());
    let to = format!("{}/acme/big:v1", proxy.host());
    let out = push(&cx, &spec, &to, Some(&kind), &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("huge.bin") && err.contains("Amazon ECR Public") && err.contains("per-file"),
        "{err}"
    );
    assert!(
        proxy.requests().is_empty(),
        "no request at all: {:?}",
        proxy.requests()
    );
    assert!(
        !cx.cache
            .join("selectors")
            .read_dir()
            .is_ok_and(|mut d| d.next().is_some()),
        "no layer was written"
    );

    // two files under the limit, one layer over it: the error says to split the layer, and
    // `layers = "per-file"` passes the check (a dry run, so nothing is read)
    std::fs::remove_file(root.join("models/huge.bin")).unwrap();
    for n in ["a.bin", "b.bin"] {
        let f = std::fs::File::create(root.join("models").join(n)).unwrap();
        f.set_len(6_000 * MIB).unwrap();
    }
    let out = push(&cx, &spec, &to, Some(&kind), &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("layer") && err.contains("per-file"), "{err}");
    let text = std::fs::read_to_string(&spec).unwrap();
    std::fs::write(
        &spec,
        text.replace(
            "dest = \"/models\"",
            "dest = \"/models\"\nlayers = \"per-file\"",
        ),
    )
    .unwrap();
    let out = push(&cx, &spec, &to, Some(&kind), &["--dry-run"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(proxy.requests().is_empty(), "{:?}", proxy.requests());
}
