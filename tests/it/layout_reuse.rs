//! `-o oci:DIR` rebuilt into the same folder: the earlier layout's blobs are taken over (hard
//! link after a size and stat check, or after hashing the old blob), never regenerated from
//! the weights; a folder that is not a layout is never replaced.

use std::fs;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use crate::common::image::{noise_file, sha256_file};
use crate::common::*;

/// A scratch image with one uncompressed weights layer of `size` noise bytes.
fn weights_project(cx: &TestContext, size: u64) -> (PathBuf, PathBuf) {
    let project = cx.path().join("project");
    fs::create_dir_all(project.join("weights")).expect("mkdir");
    let weights = project.join("weights/model.safetensors");
    noise_file(&weights, 8, size);
    let spec = project.join("mlimg.toml");
    fs::write(
        &spec,
        "[image]\nbase = \"scratch\"\n\n[[weights]]\nname = \"m\"\nsource = \"weights\"\n\
         dest = \"/models/m\"\ncompression = \"none\"\n",
    )
    .expect("spec");
    (spec, weights)
}

/// Every blob of the layout hashes to its name; returns their names.
fn verify_layout(dir: &Path) -> Vec<String> {
    assert!(dir.join("oci-layout").is_file(), "{}", dir.display());
    assert!(dir.join("index.json").is_file(), "{}", dir.display());
    let mut names = Vec::new();
    for e in fs::read_dir(dir.join("blobs/sha256")).expect("blobs") {
        let p = e.expect("entry").path();
        let name = p.file_name().expect("name").to_string_lossy().into_owned();
        assert_eq!(sha256_file(&p), format!("sha256:{name}"), "{}", p.display());
        names.push(name);
    }
    names.sort();
    names
}

/// Overwrites a file's bytes in place (same size, same inode) and puts its mtime back, so a
/// stat-based check sees no change.
fn rewrite_keeping_stat(path: &Path, bytes: &[u8]) {
    let md = fs::metadata(path).expect("stat");
    assert_eq!(md.len(), bytes.len() as u64);
    let mtime = filetime::FileTime::from_last_modification_time(&md);
    fs::write(path, bytes).expect("rewrite in place");
    filetime::set_file_mtime(path, mtime).expect("restore mtime");
}

fn blob(dir: &Path, digest: &str) -> PathBuf {
    dir.join("blobs/sha256")
        .join(digest.trim_start_matches("sha256:"))
}

/// The only way the rebuilds below can succeed is without reading the weights: their bytes
/// were replaced (same size and mtime), so the selector still hits, and a layer regenerated
/// from them would not match its recorded digest (the build would fail, see `generator`).
#[test]
fn unchanged_rebuild_into_the_same_layout_reuses_its_blobs_without_reading_the_weights() {
    let cx = TestContext::new();
    let (spec, weights) = weights_project(&cx, 3 << 20);
    let out = cx.path().join("layout");
    let target = format!("oci:{}", out.display());
    let first = cx.build_json(&spec, &["-o", &target]);
    assert!(!layer_cached(&first, "weights m"));
    let layer = layer_digest(&first, "weights m");
    let blobs = verify_layout(&out);
    assert!(blobs.contains(&layer.trim_start_matches("sha256:").to_string()));
    let ino = fs::metadata(blob(&out, &layer)).expect("blob").ino();

    let original = fs::read(&weights).expect("weights");
    let mut other = original.clone();
    for b in other.iter_mut().step_by(4096) {
        *b ^= 0xff;
    }
    rewrite_keeping_stat(&weights, &other);

    // 1. the stat recorded in the cache's outputs/ matches: the blob is hard-linked over
    let second = cx.build_json(&spec, &["-o", &target]);
    assert_eq!(second["manifest_digest"], first["manifest_digest"]);
    assert!(layer_cached(&second, "weights m"));
    assert_eq!(layer_digest(&second, "weights m"), layer);
    assert_eq!(verify_layout(&out), blobs, "the same blobs, all intact");
    assert_eq!(
        fs::metadata(blob(&out, &layer)).expect("blob").ino(),
        ino,
        "the old layout's file is taken over, not copied"
    );

    // 2. without the stat record (e.g. another cache), the old blob is hashed, not the weights
    fs::remove_dir_all(cx.cache.join("outputs")).expect("rm outputs/");
    let third = cx.build_json(&spec, &["-o", &target]);
    assert_eq!(third["manifest_digest"], first["manifest_digest"]);
    assert!(layer_cached(&third, "weights m"));
    assert_eq!(verify_layout(&out), blobs);
    assert_eq!(fs::metadata(blob(&out, &layer)).expect("blob").ino(), ino);

    // 3. an old blob whose bytes went bad (same size) is not taken over: the layer is
    // regenerated from the (restored) weights and the layout is right again
    rewrite_keeping_stat(&weights, &original);
    let mut bad = fs::read(blob(&out, &layer)).expect("blob");
    let mid = bad.len() / 2;
    bad[mid] ^= 0xff;
    // a new file renamed over it: another inode, so the stat record cannot match
    let tmp = cx.path().join("bad-blob");
    fs::write(&tmp, &bad).expect("write");
    fs::rename(&tmp, blob(&out, &layer)).expect("corrupt the blob");
    let fourth = cx.build_json(&spec, &["-o", &target]);
    assert_eq!(fourth["manifest_digest"], first["manifest_digest"]);
    assert_eq!(verify_layout(&out), blobs, "the bad blob was replaced");
}

#[test]
fn an_existing_folder_that_is_not_a_layout_is_refused_and_left_untouched() {
    let cx = TestContext::new();
    let (spec, _) = weights_project(&cx, 1 << 20);
    let parent = cx.path().join("outputs");
    let out = parent.join("mine");
    fs::create_dir_all(out.join("sub")).expect("mkdir");
    fs::write(out.join("notes.txt"), "my data\n").expect("write");
    fs::write(out.join("sub/blob"), "more data\n").expect("write");
    let listing = |d: &Path| {
        let mut v: Vec<_> = fs::read_dir(d)
            .expect("ls")
            .map(|e| e.expect("entry").file_name())
            .collect();
        v.sort();
        v
    };
    let before = listing(&out);

    let res = cx
        .mlimg()
        .arg("build")
        .arg("-f")
        .arg(&spec)
        .arg("-o")
        .arg(format!("oci:{}", out.display()))
        .output()
        .expect("run");
    assert_eq!(res.status.code(), Some(1));
    let err = String::from_utf8_lossy(&res.stderr);
    assert!(
        err.contains(&out.display().to_string()) && err.contains("not an OCI layout"),
        "{err}"
    );
    assert_eq!(listing(&out), before);
    assert_eq!(
        fs::read_to_string(out.join("notes.txt")).expect("read"),
        "my data\n"
    );
    assert_eq!(
        fs::read_to_string(out.join("sub/blob")).expect("read"),
        "more data\n"
    );
    assert_eq!(
        listing(&parent),
        vec![std::ffi::OsString::from("mine")],
        "no staging folder left beside it"
    );
}
