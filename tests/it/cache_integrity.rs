//! The cache and the outputs as an attacker (or a bad disk) leaves them (issue 9): outputs
//! share no inode with the cache, cached blobs and wheels are checked before reuse, a stale
//! selector record is dropped, `-o oci:DIR` never replaces someone's folder, and output temp
//! files are never opened through a planted symlink.

use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::common::*;

fn layer<'a>(report: &'a serde_json::Value, role: &str) -> &'a serde_json::Value {
    report["layers"]
        .as_array()
        .and_then(|ls| ls.iter().find(|l| l["role"] == role))
        .unwrap_or_else(|| panic!("no layer {role} in {report}"))
}

fn warning_codes(report: &serde_json::Value) -> Vec<String> {
    report["warnings"]
        .as_array()
        .expect("warnings")
        .iter()
        .map(|w| w["code"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path();
        if fs::symlink_metadata(&p).is_ok_and(|m| m.is_dir()) {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// (dev, ino) of every file under `dir`.
fn inodes(dir: &Path) -> std::collections::BTreeSet<(u64, u64)> {
    files_under(dir)
        .iter()
        .filter_map(|p| fs::symlink_metadata(p).ok())
        .map(|m| (m.dev(), m.ino()))
        .collect()
}

/// Every file of the layout: mode 0644, one link, no inode of the cache.
fn assert_own_files(layout: &Path, cache: &Path) {
    let cache_inodes = inodes(cache);
    let files = files_under(layout);
    assert!(files.len() > 4, "{files:?}");
    for f in files {
        let m = fs::symlink_metadata(&f).expect("stat");
        assert!(m.is_file(), "{}", f.display());
        assert_eq!(
            m.permissions().mode() & 0o7777,
            0o644,
            "{} has mode {:o}",
            f.display(),
            m.permissions().mode() & 0o7777
        );
        assert_eq!(m.nlink(), 1, "{} has other links", f.display());
        assert!(
            !cache_inodes.contains(&(m.dev(), m.ino())),
            "{} is a cache file",
            f.display()
        );
    }
}

/// `-o oci:DIR` blobs are files of their own, mode 0644 (layers spooled while written
/// included), never hard links to the cache — also when an earlier layout at the same path
/// had its blob hard-linked to the cache file by someone else.
#[test]
fn layout_blobs_are_0644_and_share_no_inode_with_the_cache() {
    let cx = TestContext::new();
    let spec = cx.example("sentiment").join("mlimg.toml");
    let dir = cx.path().join("out/image");
    let target = format!("oci:{}", dir.display());
    let first = cx.build_json(&spec, &["-o", &target]);
    assert_own_files(&dir, &cx.cache);

    // Someone replaces the app blob of the layout with a hard link to the cache's copy.
    let app = layer(&first, "app")["digest"]
        .as_str()
        .expect("digest")
        .trim_start_matches("sha256:")
        .to_string();
    let cached = cx.cache.join("blobs/sha256").join(&app);
    assert!(cached.is_file(), "the app layer is stored in the cache");
    let in_layout = dir.join("blobs/sha256").join(&app);
    fs::remove_file(&in_layout).expect("rm");
    fs::hard_link(&cached, &in_layout).expect("link");

    let again = cx.build_json(&spec, &["-o", &target]);
    assert_eq!(again["manifest_digest"], first["manifest_digest"]);
    assert_own_files(&dir, &cx.cache);
    oci::assert_layout(&dir);
    // and editing the output cannot reach the cache
    let before = fs::read(&cached).expect("read");
    let mut f = fs::OpenOptions::new()
        .write(true)
        .open(dir.join("blobs/sha256").join(&app))
        .expect("open");
    f.write_all(b"XXXX").expect("write");
    assert_eq!(fs::read(&cached).expect("read"), before);
}

/// A stored layer blob edited in place (same size): the next build notices (`cache-corrupt`),
/// drops it and builds the layer again, and its output verifies — never a copy error.
#[test]
fn a_cached_blob_edited_in_place_is_dropped_and_rebuilt() {
    let cx = TestContext::new();
    let spec = cx.example("sentiment").join("mlimg.toml");
    let first_dir = cx.path().join("first");
    let first = cx.build_json(&spec, &["-o", &format!("oci:{}", first_dir.display())]);
    let app = layer(&first, "app")["digest"]
        .as_str()
        .expect("digest")
        .to_string();
    let cached = cx
        .cache
        .join("blobs/sha256")
        .join(app.trim_start_matches("sha256:"));
    let size = fs::metadata(&cached).expect("stat").len();
    {
        let mut f = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&cached)
            .expect("open");
        let at = size / 2;
        let mut b = [0u8; 1];
        f.seek(SeekFrom::Start(at)).expect("seek");
        f.read_exact(&mut b).expect("read");
        f.seek(SeekFrom::Start(at)).expect("seek");
        f.write_all(&[b[0] ^ 0xff]).expect("write");
    }
    assert_eq!(fs::metadata(&cached).expect("stat").len(), size);

    let dir = cx.path().join("second");
    let out = run_ok(
        cx.mlimg()
            .args(["build", "--json", "-f"])
            .arg(&spec)
            .arg("-o")
            .arg(format!("oci:{}", dir.display())),
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("report");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        warning_codes(&report).contains(&"cache-corrupt".to_string()),
        "{report}"
    );
    assert!(!stderr.contains("do not match"), "{stderr}");
    assert_eq!(layer(&report, "app")["digest"], app.as_str());
    assert_eq!(layer(&report, "app")["cached"], false, "rebuilt: {report}");
    assert_eq!(report["manifest_digest"], first["manifest_digest"]);
    oci::assert_layout(&dir);
    assert_eq!(
        format!("sha256:{}", sha256_file(&cached)),
        app,
        "the cache holds good bytes again"
    );
}

/// A registry base's layer held in the cache, edited in place: the next build with a file
/// output drops it (`cache-corrupt`), fetches it again, and its output verifies.
#[test]
fn a_corrupt_cached_base_layer_is_dropped_and_fetched_again() {
    let cx = TestContext::new();
    let reg = crate::common::registry::TestRegistry::start();
    let spec = cx.example("sentiment").join("mlimg.toml");
    let base_spec = spec
        .parent()
        .expect("dir")
        .join("../busybox-base/mlimg.toml");
    let base_ref = format!("{}/acme/busybox:1", reg.host());
    run_ok(
        cx.mlimg()
            .args(["build", "-f"])
            .arg(&base_spec)
            .arg("-o")
            .arg(format!("registry:{base_ref}")),
    );
    let text = fs::read_to_string(&spec).expect("spec");
    fs::write(
        &spec,
        text.replace(
            "base = \"oci:../busybox-base/out:latest\"",
            &format!("base = \"{base_ref}\""),
        ),
    )
    .expect("spec");
    let first_dir = cx.path().join("first");
    let first = cx.build_json(&spec, &["-o", &format!("oci:{}", first_dir.display())]);
    let base = layer(&first, "base")["digest"]
        .as_str()
        .expect("digest")
        .to_string();
    let cached = cx
        .cache
        .join("blobs/sha256")
        .join(base.trim_start_matches("sha256:"));
    let mut bytes = fs::read(&cached).expect("the base layer is in the cache");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    fs::write(&cached, &bytes).expect("edit");

    let dir = cx.path().join("second");
    let report = cx.build_json(&spec, &["-o", &format!("oci:{}", dir.display())]);
    assert!(
        warning_codes(&report).contains(&"cache-corrupt".to_string()),
        "{report}"
    );
    assert_eq!(report["manifest_digest"], first["manifest_digest"]);
    oci::assert_layout(&dir);
    assert_eq!(format!("sha256:{}", sha256_file(&cached)), base);
}

/// A cached wheel edited in place is verified before use, dropped with a warning and fetched
/// again (here from its find-links folder).
#[test]
fn a_corrupt_cached_wheel_is_dropped_and_fetched_again() {
    use mlimg::sources::python::{self, ResolvedWheel};
    use sha2::Digest as _;
    let d = tempfile::tempdir().expect("tmp");
    let links = d.path().join("links");
    fs::create_dir_all(&links).expect("mkdir");
    let name = "purepkg-1.0-py3-none-any.whl";
    let bytes = b"pretend wheel purepkg, long enough to edit".to_vec();
    fs::write(links.join(name), &bytes).expect("write");
    let sha = hex::encode(sha2::Sha256::digest(&bytes));
    let wheel = ResolvedWheel {
        name: "purepkg".into(),
        version: "1.0".into(),
        filename: name.into(),
        sha256: sha.clone(),
        url_or_path: links.join(name).to_string_lossy().into_owned(),
        size: None,
    };
    let cache = d.path().join("cache/wheels");
    let paths = python::fetch(std::slice::from_ref(&wheel), &cache).expect("fetch");
    let cached = paths[0].clone();
    assert!(
        cached.starts_with(cache.join("wheels").join(&sha)),
        "{cached:?}"
    );
    // same size, other bytes
    let mut bad = bytes.clone();
    bad[5] ^= 0x20;
    fs::write(&cached, &bad).expect("edit");

    let warnings = std::sync::Mutex::new(Vec::new());
    let warn = |m: String| warnings.lock().unwrap().push(m);
    let again = python::fetch_reporting(std::slice::from_ref(&wheel), &cache, &warn)
        .expect("fetched again");
    assert_eq!(again, paths);
    assert_eq!(
        fs::read(&cached).expect("read"),
        bytes,
        "the good bytes are back"
    );
    let warnings = warnings.into_inner().unwrap();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains(name) && warnings[0].contains("does not match its sha256"),
        "{warnings:?}"
    );
    // and with its source gone, a corrupt copy is an error, not a wheel
    fs::write(&cached, &bad).expect("edit");
    fs::remove_file(links.join(name)).expect("rm");
    assert!(python::fetch(std::slice::from_ref(&wheel), &cache).is_err());
    assert!(!cached.exists(), "the corrupt copy is gone");
}

/// A selector record that names other bytes than its layer now regenerates to (what a stale
/// record looks like): the build that finds out fails, naming the layer, and drops the record,
/// so the next build writes the layer again instead of failing the same way.
#[test]
fn a_stale_selector_record_is_dropped_so_the_next_build_rebuilds() {
    let cx = TestContext::new();
    let spec = cx.example("sentiment").join("mlimg.toml");
    let config = spec.parent().expect("dir").join("models/sst2/config.json");
    let v1 = cx.build_json(
        &spec,
        &["-o", &format!("oci:{}", cx.path().join("v1").display())],
    );
    fs::write(&config, "{\"model_type\": \"changed\"}\n").expect("edit");
    let v2 = cx.build_json(
        &spec,
        &["-o", &format!("oci:{}", cx.path().join("v2").display())],
    );
    let (d1, d2) = (
        layer(&v1, "weights sst2")["digest"].as_str().expect("d1"),
        layer(&v2, "weights sst2")["digest"].as_str().expect("d2"),
    );
    assert_ne!(d1, d2);
    // the record the current weights map to now names the old layer
    let records: Vec<(PathBuf, serde_json::Value)> = files_under(&cx.cache.join("selectors"))
        .into_iter()
        .map(|p| {
            let v = serde_json::from_slice(&fs::read(&p).expect("read")).expect("json");
            (p, v)
        })
        .collect();
    let find = |d: &str| {
        records
            .iter()
            .find(|(_, v)| v["blob"]["digest"] == d)
            .unwrap_or_else(|| panic!("no record for {d}: {records:?}"))
    };
    let (current, _) = find(d2);
    let (_, old) = find(d1);
    fs::write(current, serde_json::to_vec(old).expect("json")).expect("write record");

    let out_dir = cx.path().join("v3");
    let out = cx
        .mlimg()
        .args(["build", "--json", "-f"])
        .arg(&spec)
        .arg("-o")
        .arg(format!("oci:{}", out_dir.display()))
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(d1) && err.contains("build again"), "{err}");
    assert!(!current.exists(), "the stale record is dropped");

    let v3 = cx.build_json(&spec, &["-o", &format!("oci:{}", out_dir.display())]);
    assert_eq!(layer(&v3, "weights sst2")["digest"], d2);
    assert_eq!(layer(&v3, "weights sst2")["cached"], false);
    assert_eq!(v3["manifest_digest"], v2["manifest_digest"]);
    oci::assert_layout(&out_dir);
}

/// `-o oci:DIR` where DIR is someone's non-empty folder without `oci-layout`: exit 1, the error
/// names the folder, and the folder and its files are left exactly as they were, with nothing
/// left beside them.
#[test]
fn oci_output_refuses_a_non_empty_folder_that_is_not_a_layout() {
    let cx = TestContext::new();
    let spec = cx.example("sentiment").join("mlimg.toml");
    let parent = cx.path().join("outputs");
    let dir = parent.join("photos");
    fs::create_dir_all(dir.join("2024")).expect("mkdir");
    fs::write(dir.join("notes.txt"), "keep me\n").expect("write");
    fs::write(dir.join("2024/beach.jpg"), [0xffu8, 0xd8, 0xff]).expect("write");
    let snapshot = |d: &Path| {
        let mut v: Vec<(PathBuf, Vec<u8>, i64, u32)> = files_under(d)
            .into_iter()
            .map(|p| {
                let m = fs::symlink_metadata(&p).expect("stat");
                (
                    p.clone(),
                    fs::read(&p).expect("read"),
                    m.mtime_nsec() + m.mtime() * 1_000_000_000,
                    m.permissions().mode(),
                )
            })
            .collect();
        v.sort();
        v
    };
    let before = snapshot(&dir);
    let out = cx
        .mlimg()
        .args(["build", "-f"])
        .arg(&spec)
        .arg("-o")
        .arg(format!("oci:{}", dir.display()))
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&*dir.to_string_lossy()) && err.contains("not an OCI layout"),
        "{err}"
    );
    assert_eq!(snapshot(&dir), before);
    let beside: Vec<_> = fs::read_dir(&parent)
        .expect("ls")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(beside, vec![std::ffi::OsString::from("photos")]);
}

/// Output temp files used to be named `.NAME.mlimg-<pid>-tar` (and `-dir` for a layout's
/// staging folder): predictable, so a symlink planted there sent the archive (or the blobs)
/// into the victim. The build runs in this process, so the old names are known exactly.
#[test]
fn a_symlink_at_an_old_style_temp_name_is_not_followed() {
    use mlimg::pipeline::{BuildOptions, Quiet, build};
    let cx = TestContext::new();
    let spec = cx.example("sentiment").join("mlimg.toml");
    let out = cx.path().join("out");
    fs::create_dir_all(&out).expect("mkdir");
    let victim = cx.path().join("victim.txt");
    fs::write(&victim, "precious\n").expect("write");
    let victim_dir = cx.path().join("victim-dir");
    fs::create_dir_all(&victim_dir).expect("mkdir");
    let pid = std::process::id();
    for name in ["img.tar", "docker.tar"] {
        std::os::unix::fs::symlink(&victim, out.join(format!(".{name}.mlimg-{pid}-tar")))
            .expect("plant");
    }
    for suffix in ["dir", "old"] {
        std::os::unix::fs::symlink(
            &victim_dir,
            out.join(format!(".layout.mlimg-{pid}-{suffix}")),
        )
        .expect("plant");
    }
    let opts = BuildOptions {
        spec_path: spec.clone(),
        outputs: vec![
            format!("oci-archive:{}", out.join("img.tar").display()),
            format!("docker-archive:{}", out.join("docker.tar").display()),
            format!("oci:{}", out.join("layout").display()),
        ],
        cache_dir: cx.cache.clone(),
        ..Default::default()
    };
    build(&opts, &Quiet).expect("build");
    // a second build replaces the layout (the old one moves aside) and the archives
    build(&opts, &Quiet).expect("rebuild");
    assert_eq!(fs::read_to_string(&victim).expect("read"), "precious\n");
    assert_eq!(fs::read_dir(&victim_dir).expect("ls").count(), 0);
    for f in ["img.tar", "docker.tar"] {
        assert!(
            fs::symlink_metadata(out.join(f)).expect("stat").is_file(),
            "{f}"
        );
    }
    oci::assert_archive(&out.join("img.tar"));
    oci::assert_layout(&out.join("layout"));
}
