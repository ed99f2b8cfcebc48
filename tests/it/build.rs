//! End-to-end tests of `mlimg build` on the bundled example, checked with independent tools.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use crate::common::*;

fn mode(p: &Path) -> u32 {
    fs::symlink_metadata(p).expect("stat").permissions().mode() & 0o7777
}

#[test]
fn example_layout_passes_skopeo_umoci_and_oci_check() {
    let cx = TestContext::new();
    let spec = cx.example("sentiment").join("mlimg.toml");
    let out = cx.path().join("layout");
    let report = cx.build_json(&spec, &["-o", &format!("oci:{}", out.display())]);
    let digest = report["manifest_digest"]
        .as_str()
        .expect("manifest_digest")
        .to_string();
    let roles: Vec<&str> = report["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|l| l["role"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(roles, ["base", "deps vendor", "weights sst2", "app"]);

    // independent checker: schemas, digests, diff_ids, sorted entries, owners, one mtime
    let checked = oci::assert_layout(&out);
    assert_eq!(checked.images.len(), 1, "{}", checked.report);
    assert_eq!(checked.images[0].manifest_digest, digest);
    assert_eq!(checked.images[0].layers.len(), 4, "{}", checked.report);

    // skopeo reads the layout under the first tag and sees the same digest and config
    let insp: serde_json::Value = serde_json::from_str(&stdout(&run_ok(
        Command::new("skopeo")
            .arg("inspect")
            .arg(format!("oci:{}:0.1.0", out.display())),
    )))
    .expect("skopeo json");
    assert_eq!(insp["Digest"], digest.as_str());
    assert_eq!(insp["Layers"].as_array().map(Vec::len), Some(4));
    let cfg: serde_json::Value = serde_json::from_str(&stdout(&run_ok(
        Command::new("skopeo")
            .arg("inspect")
            .arg("--config")
            .arg(format!("oci:{}:0.1.0", out.display())),
    )))
    .expect("config json");
    let c = &cfg["config"];
    assert!(
        c["Env"]
            .as_array()
            .expect("Env")
            .iter()
            .any(|e| e == "MODEL_PATH=/models/sst2"),
        "{c}"
    );
    assert_eq!(c["User"], "1000:1000");
    assert_eq!(c["WorkingDir"], "/app");
    assert_eq!(
        c["Entrypoint"],
        serde_json::json!(["/bin/sh", "/app/serve.sh"])
    );
    assert!(
        c.get("Cmd").is_none(),
        "the entrypoint resets the base cmd: {c}"
    );
    assert_eq!(c["ExposedPorts"], serde_json::json!({"8000/tcp": {}}));
    // skopeo's config view drops Docker's Healthcheck: read the config blob itself
    let cfg_digest = insp["Digest"].as_str().map(|_| ()).and_then(|_| {
        let m: serde_json::Value = serde_json::from_slice(
            &fs::read(
                out.join("blobs/sha256")
                    .join(digest.trim_start_matches("sha256:")),
            )
            .ok()?,
        )
        .ok()?;
        m["config"]["digest"].as_str().map(str::to_string)
    });
    let raw_cfg: serde_json::Value = serde_json::from_slice(
        &fs::read(
            out.join("blobs/sha256").join(
                cfg_digest
                    .expect("config digest")
                    .trim_start_matches("sha256:"),
            ),
        )
        .expect("config blob"),
    )
    .expect("config json");
    assert_eq!(
        raw_cfg["config"]["Healthcheck"]["Interval"],
        30_000_000_000u64
    );
    assert_eq!(
        raw_cfg["config"]["Healthcheck"]["Test"],
        serde_json::json!(["CMD", "test", "-f", "/models/sst2/config.json"])
    );
    assert_eq!(c["StopSignal"], "SIGTERM");
    assert_eq!(cfg["created"], "1970-01-01T00:00:00Z");
    let history: Vec<&str> = cfg["history"]
        .as_array()
        .expect("history")
        .iter()
        .filter_map(|h| h["created_by"].as_str())
        .collect();
    assert_eq!(
        history,
        [
            "mlimg deps busybox",
            "mlimg deps vendor",
            "mlimg weights sst2",
            "mlimg app"
        ]
    );

    // umoci unpacks it; the rootfs holds the expected files with the expected modes
    let bundle = cx.path().join("bundle");
    run_ok(
        Command::new("umoci")
            .args(["unpack", "--rootless", "--image"])
            .arg(format!("{}:0.1.0", out.display()))
            .arg(&bundle),
    );
    let root = bundle.join("rootfs");
    let src = spec.parent().expect("spec dir");
    assert_eq!(
        fs::read(root.join("models/sst2/model.safetensors")).expect("weights in rootfs"),
        fs::read(src.join("models/sst2/model.safetensors")).expect("weights source")
    );
    assert_eq!(mode(&root.join("models/sst2/model.safetensors")), 0o644);
    assert_eq!(mode(&root.join("app/serve.sh")), 0o755);
    assert_eq!(mode(&root.join("app/app.py")), 0o644);
    assert_eq!(mode(&root.join("models")), 0o755);
    assert!(
        root.join("usr/local/lib/python3.11/site-packages/tinytok/__init__.py")
            .is_file()
    );
    assert!(
        !root.join("models/sst2/README.md").exists(),
        "include globs leave README.md out"
    );
    assert!(
        !root.join("app/tests").exists(),
        "[app].exclude leaves tests/ out"
    );
    assert_eq!(
        fs::read_link(root.join("bin/sh")).expect("bin/sh is a symlink"),
        Path::new("busybox")
    );
}

#[test]
fn docker_archive_loads_and_runs() {
    let cx = TestContext::new();
    let spec = cx.example("sentiment").join("mlimg.toml");
    // a name of its own so parallel runs and other tests cannot collide
    let toml = fs::read_to_string(&spec).expect("spec");
    let tag = format!("t{}", std::process::id());
    fs::write(
        &spec,
        toml.replace(
            "tags = [\"0.1.0\", \"latest\"]",
            &format!("tags = [\"{tag}\"]"),
        ),
    )
    .expect("write spec");
    let tar = cx.path().join("image.tar");
    run_ok(
        cx.mlimg()
            .arg("build")
            .arg("-f")
            .arg(&spec)
            .arg("-o")
            .arg(format!("docker-archive:{}", tar.display())),
    );
    let image = format!("localhost/sentiment-api:{tag}");
    let load = stdout(&run_ok(
        Command::new("docker").arg("load").arg("-i").arg(&tar),
    ));
    assert!(load.contains(&image), "{load}");
    let run = Command::new("docker")
        .args(["run", "--rm", &image])
        .output()
        .expect("docker run");
    let _ = Command::new("docker").args(["rmi", "-f", &image]).output();
    let text = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "docker run failed: {text}{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(text.contains("model: /models/sst2"), "{text}");
    assert!(text.contains("model.safetensors"), "{text}");
    assert!(text.contains("TinySentiment"), "{text}");
    assert!(text.contains("user: 1000:1000"), "{text}");
}

/// Rewrites every file and folder of a tree with other mtimes and restrictive (umask 077) modes.
fn perturb(dir: &Path, mtime: i64) {
    for e in walkdir(dir) {
        let md = fs::symlink_metadata(&e).expect("stat");
        if md.file_type().is_symlink() {
            continue;
        }
        let m = md.permissions().mode();
        let new = if md.is_dir() || m & 0o100 != 0 {
            0o700
        } else {
            0o600
        };
        fs::set_permissions(&e, fs::Permissions::from_mode(new)).expect("chmod");
        filetime::set_file_mtime(&e, filetime::FileTime::from_unix_time(mtime, 0)).expect("mtime");
    }
}

fn walkdir(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).expect("read_dir") {
        let p = e.expect("entry").path();
        if p.is_dir() && !p.is_symlink() {
            out.extend(walkdir(&p));
        }
        out.push(p);
    }
    out
}

#[test]
fn two_copies_with_other_mtimes_umask_and_caches_build_identical_digests() {
    let a = TestContext::new();
    let b = TestContext::new();
    let spec_a = a.example("sentiment").join("mlimg.toml");
    let spec_b = b.example("sentiment").join("mlimg.toml");
    perturb(spec_b.parent().expect("dir"), 1_600_000_000);
    let out_a = a.path().join("img.tar");
    let out_b = b.path().join("img.tar");
    let ra = a.build_json(
        &spec_a,
        &["-o", &format!("oci-archive:{}", out_a.display())],
    );
    let rb = b.build_json(
        &spec_b,
        &["-o", &format!("oci-archive:{}", out_b.display())],
    );
    assert_ne!(a.cache, b.cache);
    assert_eq!(ra["manifest_digest"], rb["manifest_digest"]);
    assert_eq!(
        ra["layers"], rb["layers"],
        "same layers, both built from empty caches"
    );
    assert_eq!(
        sha256_file(&out_a),
        sha256_file(&out_b),
        "oci-archive outputs are byte-identical"
    );

    // SOURCE_DATE_EPOCH moves every timestamp, so the digest changes, and stays reproducible
    let with_epoch = |cx: &TestContext, spec: &Path| -> serde_json::Value {
        let out = run_ok(
            cx.mlimg()
                .env("SOURCE_DATE_EPOCH", "1700000000")
                .arg("build")
                .arg("-f")
                .arg(spec)
                .arg("--json"),
        );
        serde_json::from_slice(&out.stdout).expect("json")
    };
    let ea = with_epoch(&a, &spec_a);
    let eb = with_epoch(&b, &spec_b);
    assert_eq!(ea["manifest_digest"], eb["manifest_digest"]);
    assert_ne!(ea["manifest_digest"], ra["manifest_digest"]);
}

#[test]
fn weights_only_change_rebuilds_only_the_weights_layer_and_unchanged_weights_are_not_read() {
    let cx = TestContext::new();
    let spec = cx.example("sentiment").join("mlimg.toml");
    let weights = spec
        .parent()
        .expect("dir")
        .join("models/sst2/model.safetensors");
    let first = cx.build_json(&spec, &[]);

    // change one weights file: exactly the weights layer changes (plus config and manifest)
    let mut bytes = fs::read(&weights).expect("weights");
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    fs::write(&weights, &bytes).expect("write weights");
    let second = cx.build_json(&spec, &[]);
    assert_ne!(
        layer_digest(&first, "weights sst2"),
        layer_digest(&second, "weights sst2")
    );
    for role in ["base", "deps vendor", "app"] {
        assert_eq!(
            layer_digest(&first, role),
            layer_digest(&second, role),
            "{role} must not change"
        );
        assert!(
            layer_cached(&second, role),
            "{role} must come from the cache"
        );
    }
    assert!(!layer_cached(&second, "weights sst2"));
    assert_ne!(first["manifest_digest"], second["manifest_digest"]);
    assert_ne!(
        first["platforms"][0]["config_digest"],
        second["platforms"][0]["config_digest"]
    );

    // an edit in place that keeps the size and puts the mtime back is still seen (the ctime
    // changes): the weights layer is rebuilt, not served stale from the cache (issue 9, item 5)
    let md = fs::metadata(&weights).expect("stat");
    let mtime = filetime::FileTime::from_last_modification_time(&md);
    std::thread::sleep(std::time::Duration::from_millis(50));
    bytes[0] ^= 0xff;
    fs::write(&weights, &bytes).expect("rewrite in place");
    filetime::set_file_mtime(&weights, mtime).expect("restore mtime");
    let third = cx.build_json(&spec, &[]);
    assert!(
        !layer_cached(&third, "weights sst2"),
        "a same-size edit with the mtime restored must rebuild the layer"
    );
    assert_ne!(
        layer_digest(&third, "weights sst2"),
        layer_digest(&second, "weights sst2")
    );

    // changing code re-uses the weights
    fs::write(
        spec.parent().expect("dir").join("app/app.py"),
        "print('v2')\n",
    )
    .expect("app");
    let fourth = cx.build_json(&spec, &[]);
    assert!(layer_cached(&fourth, "weights sst2"));
    assert!(!layer_cached(&fourth, "app"));
    assert_ne!(layer_digest(&fourth, "app"), layer_digest(&third, "app"));
}

#[test]
fn concurrent_builds_sharing_a_cache_agree_and_leave_it_valid() {
    let cx = TestContext::new();
    let spec = cx.example("sentiment").join("mlimg.toml");
    let outs: Vec<_> = (0..3).map(|i| cx.path().join(format!("out{i}"))).collect();
    let children: Vec<_> = outs
        .iter()
        .map(|o| {
            cx.mlimg()
                .arg("build")
                .arg("-f")
                .arg(&spec)
                .arg("--json")
                .arg("-o")
                .arg(format!("oci:{}", o.display()))
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("spawn")
        })
        .collect();
    let digests: Vec<String> = children
        .into_iter()
        .map(|c| {
            let out = c.wait_with_output().expect("wait");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
            v["manifest_digest"].as_str().expect("digest").to_string()
        })
        .collect();
    assert!(digests.windows(2).all(|w| w[0] == w[1]), "{digests:?}");
    for o in &outs {
        let checked = oci::assert_layout(o);
        assert_eq!(checked.images[0].manifest_digest, digests[0]);
    }
    // and a later build from the shared cache still agrees
    let again = cx.build_json(&spec, &[]);
    assert_eq!(again["manifest_digest"], digests[0].as_str());
    assert!(layer_cached(&again, "weights sst2"));
}

#[test]
fn a_failed_build_leaves_no_output_behind() {
    let cx = TestContext::new();
    let spec = cx.example("sentiment").join("mlimg.toml");
    let app = spec.parent().expect("dir").join("app");
    std::os::unix::fs::symlink("../../../../etc/passwd", app.join("escape")).expect("symlink");
    let outdir = cx.path().join("outputs");
    fs::create_dir_all(&outdir).expect("mkdir");
    let out = cx
        .mlimg()
        .arg("build")
        .arg("-f")
        .arg(&spec)
        .arg("-o")
        .arg(format!("oci:{}", outdir.join("layout").display()))
        .arg("-o")
        .arg(format!(
            "docker-archive:{}",
            outdir.join("img.tar").display()
        ))
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("escape") && err.contains("points outside"),
        "{err}"
    );
    assert_eq!(
        fs::read_dir(&outdir).expect("ls").count(),
        0,
        "nothing written, not even temp files"
    );
}

#[test]
fn dry_run_prints_the_plan_and_writes_nothing() {
    let cx = TestContext::new();
    let spec = cx.example("sentiment").join("mlimg.toml");
    let out = run_ok(
        cx.mlimg()
            .arg("build")
            .arg("-f")
            .arg(&spec)
            .arg("--dry-run")
            .env("MLIMG_CACHE_DIR", cx.path().join("dry-cache")),
    );
    let text = stdout(&out);
    assert!(text.contains("layer 0: deps vendor"), "{text}");
    assert!(text.contains("layer 1: weights sst2"), "{text}");
    assert!(text.contains("layer 2: app"), "{text}");
    assert!(
        text.contains("0644 /models/sst2/model.safetensors <- "),
        "{text}"
    );
    assert!(text.contains("0755 /app/serve.sh <- "), "{text}");
    assert!(!text.contains("README.md"), "{text}");
    assert!(
        !cx.path().join("dry-cache").exists(),
        "a dry run writes nothing"
    );
}
