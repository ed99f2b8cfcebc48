//! `mlimg lock`: what it writes and how stable it is.

use crate::common::*;
use crate::hub_build::HubProject;

#[test]
fn lock_pins_commit_and_every_file_with_size_and_sha256() {
    let p = HubProject::new("revision = \"main\"\nexclude = [\"README.md\"]");
    let out = p.lock();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let main = p.hub.branch("main");
    assert!(stderr.contains(&main), "{stderr}");
    let path = p.cx.path().join("mlimg.lock");
    let text = std::fs::read_to_string(&path).expect("lock written");
    let lock: toml::Value = toml::from_str(&text).expect("TOML");
    let w = &lock["weights"][0];
    assert_eq!(w["name"].as_str(), Some("tiny"));
    assert_eq!(w["repo"].as_str(), Some("acme/tiny"));
    assert_eq!(w["revision"].as_str(), Some("main"));
    assert_eq!(w["commit"].as_str(), Some(main.as_str()));
    assert_eq!(w["exclude"][0].as_str(), Some("README.md"));
    let want = p.hub.files(&main);
    let files = w["files"].as_array().expect("files");
    let paths: Vec<&str> = files.iter().filter_map(|f| f["path"].as_str()).collect();
    let mut sorted = paths.clone();
    sorted.sort();
    assert_eq!(paths, sorted, "files in path order");
    assert_eq!(paths.len(), want.len() - 1, "README.md excluded");
    for f in files {
        let path = f["path"].as_str().expect("path");
        let d = &want[path];
        // regular (non-LFS) files too: their sha256 comes from the downloaded bytes
        assert_eq!(f["sha256"].as_str(), Some(d.sha256.as_str()), "{path}");
        assert_eq!(f["size"].as_integer(), Some(d.bytes.len() as i64), "{path}");
    }
    assert!(lock.get("base").is_none(), "scratch has no base entry");

    // Locking again without changes leaves the file byte-identical.
    let out = p.lock();
    assert!(String::from_utf8_lossy(&out.stderr).contains("up to date"));
    assert_eq!(std::fs::read_to_string(&path).expect("lock"), text);
}

#[test]
fn lock_records_the_oci_base_manifest_digest() {
    let cx = TestContext::new();
    let spec = cx.example("sentiment").join("mlimg.toml");
    run_ok(cx.mlimg().arg("lock").arg("-f").arg(&spec));
    let text = std::fs::read_to_string(spec.with_extension("lock")).expect("lock");
    let lock: toml::Value = toml::from_str(&text).expect("TOML");
    let base = &lock["base"];
    assert_eq!(
        base["reference"].as_str(),
        Some("oci:../busybox-base/out:latest")
    );
    let index: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            spec.parent()
                .expect("dir")
                .join("../busybox-base/out/index.json"),
        )
        .expect("index"),
    )
    .expect("json");
    let digest = index["manifests"][0]["digest"].as_str().expect("digest");
    assert_eq!(
        base["platforms"][0]["platform"].as_str(),
        Some("linux/amd64")
    );
    assert_eq!(base["platforms"][0]["digest"].as_str(), Some(digest));
    assert!(
        lock.get("weights").is_none(),
        "local weights are not locked"
    );
    // the example builds --locked against it
    let report = cx.build_json(&spec, &["--locked"]);
    assert!(report["manifest_digest"].is_string());
}

#[test]
fn locked_build_fails_when_the_base_changed() {
    let cx = TestContext::new();
    let spec = cx.example("sentiment").join("mlimg.toml");
    run_ok(cx.mlimg().arg("lock").arg("-f").arg(&spec));
    let lock_path = spec.with_extension("lock");
    let text = std::fs::read_to_string(&lock_path).expect("lock");
    // pretend the lock was made against another base build
    let lock: toml::Value = toml::from_str(&text).expect("TOML");
    let d = lock["base"]["platforms"][0]["digest"]
        .as_str()
        .expect("digest")
        .to_string();
    let other = format!("sha256:{}", "0".repeat(64));
    std::fs::write(&lock_path, text.replace(&d, &other)).expect("write");
    let out = cx
        .mlimg()
        .arg("build")
        .arg("-f")
        .arg(&spec)
        .arg("--locked")
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--locked") && err.contains(&other) && err.contains(&d),
        "{err}"
    );
    // a plain build builds and says the lock is stale
    let out = run_ok(cx.mlimg().arg("build").arg("-f").arg(&spec));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("stale") && err.contains(&d), "{err}");
}
