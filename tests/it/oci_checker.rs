//! The checker in common/oci.rs must reject what it claims to reject: hand-made layouts (no
//! mlimg code), each broken in one way.

use std::path::Path;

use serde_json::{Value, json};

use crate::common::image::sha256;
use crate::common::oci::{self, Strictness};

/// One tar entry: path, directory?, mtime, uid, user name.
struct E {
    path: &'static str,
    dir: bool,
    mtime: u64,
    uid: u64,
    uname: &'static str,
}

fn e(path: &'static str) -> E {
    E {
        path,
        dir: path.ends_with('/'),
        mtime: 0,
        uid: 0,
        uname: "",
    }
}

fn tar_of(entries: &[E]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for en in entries {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(if en.dir {
            tar::EntryType::Directory
        } else {
            tar::EntryType::Regular
        });
        let body: &[u8] = if en.dir { b"" } else { b"content\n" };
        h.set_size(body.len() as u64);
        h.set_mode(if en.dir { 0o755 } else { 0o644 });
        h.set_mtime(en.mtime);
        h.set_uid(en.uid);
        h.set_gid(0);
        if !en.uname.is_empty() {
            h.set_username(en.uname).unwrap();
        }
        b.append_data(&mut h, en.path, body).unwrap();
    }
    b.into_inner().unwrap()
}

fn good_entries() -> Vec<E> {
    vec![
        e("app/"),
        e("app/a.py"),
        e("app/b/"),
        e("app/b/c.py"),
        e("etc/"),
    ]
}

#[derive(Clone, Copy)]
enum Z {
    Gzip,
    Zstd,
    None,
}

fn compress(tar: &[u8], z: Z) -> (Vec<u8>, &'static str) {
    use std::io::Write;
    match z {
        Z::Gzip => {
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            enc.write_all(tar).unwrap();
            (
                enc.finish().unwrap(),
                "application/vnd.oci.image.layer.v1.tar+gzip",
            )
        }
        Z::Zstd => (
            zstd::encode_all(tar, 3).unwrap(),
            "application/vnd.oci.image.layer.v1.tar+zstd",
        ),
        Z::None => (tar.to_vec(), "application/vnd.oci.image.layer.v1.tar"),
    }
}

fn put(dir: &Path, bytes: &[u8]) -> Value {
    let d = sha256(bytes);
    let p = dir.join("blobs/sha256");
    std::fs::create_dir_all(&p).unwrap();
    std::fs::write(p.join(d.trim_start_matches("sha256:")), bytes).unwrap();
    json!({"digest": d, "size": bytes.len()})
}

/// Knobs for one hand-made single-image layout.
struct Spec {
    layers: Vec<(Vec<E>, Z)>,
    config: Box<dyn Fn(&mut Value)>,
    manifest: Box<dyn Fn(&mut Value)>,
    index_platform: Option<Value>,
}

impl Default for Spec {
    fn default() -> Self {
        Spec {
            layers: vec![(good_entries(), Z::Gzip)],
            config: Box::new(|_| {}),
            manifest: Box::new(|_| {}),
            index_platform: None,
        }
    }
}

/// Writes the layout; returns the layer blob paths.
fn write_layout(dir: &Path, spec: Spec) -> Vec<std::path::PathBuf> {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let mut layer_descs = Vec::new();
    let mut diff_ids = Vec::new();
    let mut paths = Vec::new();
    for (entries, z) in &spec.layers {
        let tar = tar_of(entries);
        diff_ids.push(sha256(&tar));
        let (blob, mt) = compress(&tar, *z);
        let mut d = put(dir, &blob);
        paths.push(
            dir.join("blobs/sha256")
                .join(d["digest"].as_str().unwrap().trim_start_matches("sha256:")),
        );
        d["mediaType"] = mt.into();
        layer_descs.push(d);
    }
    let mut config = json!({
        "created": "1970-01-01T00:00:00Z",
        "architecture": "amd64",
        "os": "linux",
        "config": {"Env": ["PATH=/usr/bin"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created_by": "test"}],
    });
    (spec.config)(&mut config);
    let config_bytes = serde_json::to_vec(&config).unwrap();
    let mut cd = put(dir, &config_bytes);
    cd["mediaType"] = "application/vnd.oci.image.config.v1+json".into();
    let mut manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": cd,
        "layers": layer_descs,
    });
    (spec.manifest)(&mut manifest);
    let mb = serde_json::to_vec(&manifest).unwrap();
    let mut md = put(dir, &mb);
    md["mediaType"] = "application/vnd.oci.image.manifest.v1+json".into();
    md["annotations"] = json!({"org.opencontainers.image.ref.name": "latest"});
    if let Some(p) = spec.index_platform {
        md["platform"] = p;
    }
    let index = json!({"schemaVersion": 2, "manifests": [md]});
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    paths
}

fn check(spec: Spec) -> Result<oci::Checked, String> {
    let dir = tempfile::tempdir().unwrap();
    write_layout(dir.path(), spec);
    oci::check_layout(dir.path(), Strictness::Repro)
}

fn rejects(spec: Spec, want: &str) {
    let e = check(spec).expect_err("the checker accepted a broken layout");
    assert!(e.contains(want), "expected {want:?} in: {e}");
}

#[test]
fn a_good_layout_passes_in_every_compression() {
    let c = check(Spec {
        layers: vec![
            (good_entries(), Z::Gzip),
            (good_entries(), Z::Zstd),
            (good_entries(), Z::None),
        ],
        ..Spec::default()
    })
    .expect("valid");
    assert_eq!(c.images.len(), 1);
    let img = &c.images[0];
    assert_eq!(img.what, "latest");
    assert_eq!(img.layers.len(), 3);
    for l in &img.layers {
        assert_eq!(l.entries, 5);
        assert_eq!(l.mtime, Some(0));
    }
    assert!(c.report.contains("mlimg oci checks: OK"), "{}", c.report);
}

#[test]
fn structure_problems_are_found() {
    rejects(
        Spec {
            manifest: Box::new(|m| m["schemaVersion"] = 3.into()),
            ..Spec::default()
        },
        "fails image-manifest-schema.json at /schemaVersion",
    );
    rejects(
        Spec {
            config: Box::new(|c| c["created"] = "yesterday".into()),
            ..Spec::default()
        },
        "fails config-schema.json at /created",
    );
    rejects(
        Spec {
            manifest: Box::new(|m| m["layers"][0]["digest"] = "sha256:NOT HEX".into()),
            ..Spec::default()
        },
        "fails image-manifest-schema.json at /layers/0/digest",
    );
    rejects(
        Spec {
            manifest: Box::new(|m| {
                let n = m["layers"][0]["size"].as_u64().unwrap();
                m["layers"][0]["size"] = (n + 1).into();
            }),
            ..Spec::default()
        },
        "descriptor says",
    );
    rejects(
        Spec {
            config: Box::new(|c| c["rootfs"]["diff_ids"][0] = sha256(b"other").into()),
            ..Spec::default()
        },
        "is not the config's diff_id",
    );
    rejects(
        Spec {
            config: Box::new(|c| c["rootfs"]["diff_ids"] = json!([])),
            ..Spec::default()
        },
        "config has 0 diff_ids for 1 layers",
    );
    rejects(
        Spec {
            manifest: Box::new(|m| {
                m["layers"][0]["mediaType"] = "application/vnd.oci.image.layer.v1.tar+zstd".into()
            }),
            ..Spec::default()
        },
        "layer 0",
    );
    rejects(
        Spec {
            index_platform: Some(json!({"os": "linux", "architecture": "arm64"})),
            ..Spec::default()
        },
        "index says architecture arm64",
    );
}

#[test]
fn a_corrupt_or_missing_blob_is_found() {
    let dir = tempfile::tempdir().unwrap();
    let blobs = write_layout(dir.path(), Spec::default());
    let mut bytes = std::fs::read(&blobs[0]).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&blobs[0], &bytes).unwrap();
    let e = oci::check_layout(dir.path(), Strictness::Structure).unwrap_err();
    assert!(e.contains("does not hash to its digest"), "{e}");
    std::fs::remove_file(&blobs[0]).unwrap();
    let e = oci::check_layout(dir.path(), Strictness::Structure).unwrap_err();
    assert!(e.contains("is missing"), "{e}");
    std::fs::remove_file(dir.path().join("oci-layout")).unwrap();
    let e = oci::check_layout(dir.path(), Strictness::Structure).unwrap_err();
    assert!(e.contains("has no oci-layout"), "{e}");
}

#[test]
fn reproducibility_rules_are_enforced_only_when_strict() {
    let cases: Vec<(Vec<E>, &str)> = vec![
        (
            vec![e("etc/"), e("app/"), e("app/a.py")],
            "tar entries are not sorted",
        ),
        (
            vec![e("app/"), e("app/b.py"), e("app/a.py")],
            "tar entries are not sorted",
        ),
        (vec![e("app/a.py")], "comes before its parent directory"),
        (
            vec![
                e("app/"),
                E {
                    uid: 1000,
                    ..e("app/a.py")
                },
            ],
            "has owner 1000:0",
        ),
        (
            vec![
                e("app/"),
                E {
                    uname: "root",
                    ..e("app/a.py")
                },
            ],
            "has owner 0:0 \"root\"",
        ),
        (
            vec![
                e("app/"),
                E {
                    mtime: 5,
                    ..e("app/a.py")
                },
            ],
            "entries carry several mtimes",
        ),
    ];
    for (entries, want) in cases {
        let dir = tempfile::tempdir().unwrap();
        write_layout(
            dir.path(),
            Spec {
                layers: vec![(entries, Z::Gzip)],
                ..Spec::default()
            },
        );
        let e = oci::check_layout(dir.path(), Strictness::Repro).unwrap_err();
        assert!(e.contains(want), "expected {want:?} in: {e}");
        oci::check_layout(dir.path(), Strictness::Structure)
            .unwrap_or_else(|e| panic!("structurally fine, but: {e}"));
    }
}

#[test]
fn an_oci_archive_is_checked_like_its_layout() {
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    write_layout(&layout, Spec::default());
    let archive = dir.path().join("image.tar");
    let mut b = tar::Builder::new(std::fs::File::create(&archive).unwrap());
    b.append_dir_all(".", &layout).unwrap();
    b.finish().unwrap();
    drop(b);
    let c = oci::check_archive(&archive, Strictness::Repro).expect("valid archive");
    assert_eq!(c.images[0].layers.len(), 1);
    // the same archive with a corrupt blob fails
    let blobs = layout.join("blobs/sha256");
    let victim = std::fs::read_dir(&blobs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| std::fs::read(p).unwrap().starts_with(&[0x1f, 0x8b]))
        .expect("the gzip layer");
    std::fs::write(&victim, b"garbage").unwrap();
    let bad = dir.path().join("bad.tar");
    let mut b = tar::Builder::new(std::fs::File::create(&bad).unwrap());
    b.append_dir_all(".", &layout).unwrap();
    b.finish().unwrap();
    drop(b);
    let e = oci::check_archive(&bad, Strictness::Structure).unwrap_err();
    assert!(e.contains("descriptor says"), "{e}");
}
