//! Golden digests for the layer writer: a fixed tree must give fixed bytes. The layer cache
//! keys every layer by `layer::FORMAT_VERSION`, so any change in the bytes the writer produces
//! (tar headers, ordering, padding, compressor settings or library versions) must bump it;
//! this test is what notices a change that did not.

use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use mlimg::layer;
use mlimg::plan::{Compression, Content, Entry};

/// One golden value per compression: (compression, digest, diff_id, size).
type Golden = [(&'static str, &'static str, &'static str, u64); 3];

/// Golden values keyed by `layer::FORMAT_VERSION`. Add an entry for a new version; keep the
/// old ones (they document what each version wrote). Version 2: gzip cut into fixed blocks
/// compressed in parallel (`layer::pargz`), zstd in its multi-threaded mode. Version 3: zstd
/// as independent 4 MiB frames compressed in parallel (`layer::parzstd`); gzip and none as in 2.
const GOLDEN: &[(u32, Golden)] = &[
    (
        3,
        [
            (
                "gzip",
                "sha256:cebeb0f106dd0ece460a27d7d4ce60d8884815b4e586f169dc926b406255ac1f",
                "sha256:b42229d24c16e6b678e1ea4984c2787e8d31ba98d81113fe8b9b78a94383d43c",
                1503,
            ),
            (
                "zstd",
                "sha256:2c1c7b765c401716aa6c028b05b7fc4e58bb424146b024a484e35cd6c08e768e",
                "sha256:b42229d24c16e6b678e1ea4984c2787e8d31ba98d81113fe8b9b78a94383d43c",
                894,
            ),
            (
                "none",
                "sha256:b42229d24c16e6b678e1ea4984c2787e8d31ba98d81113fe8b9b78a94383d43c",
                "sha256:b42229d24c16e6b678e1ea4984c2787e8d31ba98d81113fe8b9b78a94383d43c",
                81920,
            ),
        ],
    ),
    (
        2,
        [
            (
                "gzip",
                "sha256:cebeb0f106dd0ece460a27d7d4ce60d8884815b4e586f169dc926b406255ac1f",
                "sha256:b42229d24c16e6b678e1ea4984c2787e8d31ba98d81113fe8b9b78a94383d43c",
                1503,
            ),
            (
                "zstd",
                "sha256:e5333bdcf6937b7307f0b642ae9a39bcce82a4ace4372e654d4af0aec47a2db2",
                "sha256:b42229d24c16e6b678e1ea4984c2787e8d31ba98d81113fe8b9b78a94383d43c",
                891,
            ),
            (
                "none",
                "sha256:b42229d24c16e6b678e1ea4984c2787e8d31ba98d81113fe8b9b78a94383d43c",
                "sha256:b42229d24c16e6b678e1ea4984c2787e8d31ba98d81113fe8b9b78a94383d43c",
                81920,
            ),
        ],
    ),
    (
        1,
        [
            (
                "gzip",
                "sha256:9a4587b5f92720e025cb28c7233cf003a3466c5f5ce3d96d3ec761ad3c5fca36",
                "sha256:b42229d24c16e6b678e1ea4984c2787e8d31ba98d81113fe8b9b78a94383d43c",
                1512,
            ),
            (
                "zstd",
                "sha256:e5333bdcf6937b7307f0b642ae9a39bcce82a4ace4372e654d4af0aec47a2db2",
                "sha256:b42229d24c16e6b678e1ea4984c2787e8d31ba98d81113fe8b9b78a94383d43c",
                891,
            ),
            (
                "none",
                "sha256:b42229d24c16e6b678e1ea4984c2787e8d31ba98d81113fe8b9b78a94383d43c",
                "sha256:b42229d24c16e6b678e1ea4984c2787e8d31ba98d81113fe8b9b78a94383d43c",
                81920,
            ),
        ],
    ),
];

const MTIME: u64 = 1_700_000_000;

const LONG: &str = "opt/models/a-rather-long-directory-name-for-the-ustar-limit/and-one-more-level/weights-shard-00001-of-00002.safetensors";

/// The fixed tree: files with fixed content (on disk and inline), explicit and implied
/// directories, a symlink, modes 0644 and 0755, and a path longer than tar's 100 bytes.
fn tree(dir: &Path) -> Vec<Entry> {
    let file = |name: &str, bytes: &[u8]| -> Content {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        Content::File {
            path: p,
            size: bytes.len() as u64,
        }
    };
    let big: Vec<u8> = (0..70_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let entries = vec![
        Entry {
            path: "app/main.py".into(),
            mode: 0o644,
            content: file("main.py", b"print('hello')\n"),
        },
        Entry {
            path: "app/run.sh".into(),
            mode: 0o755,
            content: file("run.sh", b"#!/bin/sh\nexec python3 /app/main.py\n"),
        },
        Entry {
            path: "app/data.bin".into(),
            mode: 0o644,
            content: file("data.bin", &big),
        },
        Entry {
            path: "etc/mlimg".into(),
            mode: 0o750,
            content: Content::Dir,
        },
        Entry {
            path: "etc/mlimg/generated.txt".into(),
            mode: 0o644,
            content: Content::Inline(Arc::from(&b"generated\n"[..])),
        },
        Entry {
            path: "usr/bin/app".into(),
            mode: 0o777,
            content: Content::Symlink("../../app/run.sh".into()),
        },
        Entry {
            path: LONG.into(),
            mode: 0o644,
            content: file("long", b"weights"),
        },
    ];
    layer::finalize(entries).expect("finalize")
}

fn compression(name: &str) -> Compression {
    match name {
        "gzip" => Compression::Gzip,
        "zstd" => Compression::Zstd,
        "none" => Compression::None,
        _ => unreachable!(),
    }
}

#[test]
fn the_layer_writer_gives_the_golden_digests() {
    let goldens = GOLDEN
        .iter()
        .find(|(v, _)| *v == layer::FORMAT_VERSION)
        .map(|(_, g)| g)
        .unwrap_or_else(|| {
            panic!(
                "layer::FORMAT_VERSION is {} but tests/it/layer_golden.rs has no golden values \
                 for it: add them (the failure message of this test prints the new ones)",
                layer::FORMAT_VERSION
            )
        });
    let dir = tempfile::tempdir().unwrap();
    let entries = tree(dir.path());
    let mut mismatches = Vec::new();
    let mut actual = Vec::new();
    for (name, digest, diff_id, size) in goldens {
        let mut blob = Vec::new();
        let got =
            layer::write(&entries, compression(name), MTIME, &mut blob, &|_| {}).expect("write");
        assert_eq!(got.size, blob.len() as u64);
        assert_eq!(got.media_type, compression(name).media_type());
        actual.push(format!(
            "(\"{name}\", \"{}\", \"{}\", {}),",
            got.digest, got.diff_id, got.size
        ));
        if (got.digest.as_str(), got.diff_id.as_str(), got.size) != (*digest, *diff_id, *size) {
            mismatches.push(*name);
        }
    }
    assert!(
        mismatches.is_empty(),
        "the layer writer's output changed for {mismatches:?}.\n\
         If this fails you changed the layer format: bump `layer::FORMAT_VERSION` (src/layer/mod.rs) \
         and add the new golden values under the new version in tests/it/layer_golden.rs \
         (a dependency upgrade that changes compressed bytes counts too). Values now:\n{}",
        actual.join("\n")
    );
}

#[test]
fn the_golden_tree_is_what_the_goldens_describe() {
    // The digests above pin bytes; this pins what those bytes contain, so a tree that stopped
    // exercising long names, modes or symlinks would be noticed too.
    let dir = tempfile::tempdir().unwrap();
    let entries = tree(dir.path());
    let mut blob = Vec::new();
    layer::write(&entries, Compression::None, MTIME, &mut blob, &|_| {}).expect("write");
    let mut ar = tar::Archive::new(&blob[..]);
    let mut seen = Vec::new();
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let h = e.header().clone();
        let path = e.path().unwrap().to_string_lossy().into_owned();
        let mut body = Vec::new();
        e.read_to_end(&mut body).unwrap();
        assert_eq!(h.mtime().unwrap(), MTIME, "{path}");
        assert_eq!((h.uid().unwrap(), h.gid().unwrap()), (0, 0), "{path}");
        let kind = match h.entry_type() {
            tar::EntryType::Directory => "dir".to_string(),
            tar::EntryType::Symlink => format!("-> {}", e.link_name().unwrap().unwrap().display()),
            tar::EntryType::Regular => format!("{} bytes", body.len()),
            other => panic!("{path}: unexpected {other:?}"),
        };
        seen.push(format!("{path} {:o} {kind}", h.mode().unwrap()));
    }
    let long_dirs = {
        let mut v = Vec::new();
        let parts: Vec<&str> = LONG.split('/').collect();
        for i in 1..parts.len() {
            v.push(format!("{}/ 755 dir", parts[..i].join("/")));
        }
        v
    };
    assert!(LONG.len() > 100);
    let mut want = vec![
        "app/ 755 dir".to_string(),
        "app/data.bin 644 70000 bytes".into(),
        "app/main.py 644 15 bytes".into(),
        "app/run.sh 755 36 bytes".into(),
        "etc/ 755 dir".into(),
        "etc/mlimg/ 750 dir".into(),
        "etc/mlimg/generated.txt 644 10 bytes".into(),
    ];
    want.extend(long_dirs);
    want.push(format!("{LONG} 644 7 bytes"));
    want.extend([
        "usr/ 755 dir".to_string(),
        "usr/bin/ 755 dir".into(),
        "usr/bin/app 777 -> ../../app/run.sh".into(),
    ]);
    assert_eq!(seen, want);
}
