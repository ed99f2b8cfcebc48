//! Parallel compression keeps layers reproducible: the same spec built with `-j 1` and `-j 2`
//! (one compressor thread vs two) from empty caches gives the same digests for gzip and zstd
//! layers that span many compression blocks.

use std::io::Write;

use crate::common::{TestContext, layer_digest};

/// A project with a multi-MiB half-compressible app tree (gzip) and weights file (zstd).
fn project(cx: &TestContext) -> std::path::PathBuf {
    let root = cx.path().join("proj");
    std::fs::create_dir_all(root.join("app")).unwrap();
    std::fs::create_dir_all(root.join("models")).unwrap();
    let mut x = 7u64;
    let mut noisy = |n: usize| -> Vec<u8> {
        let mut v = Vec::with_capacity(n);
        while v.len() < n {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            writeln!(v, "value {} {:x}", v.len() % 1013, x >> 44).unwrap();
        }
        v
    };
    for i in 0..3 {
        std::fs::write(root.join(format!("app/part{i}.txt")), noisy(2 << 20)).unwrap();
    }
    std::fs::write(root.join("models/w.bin"), noisy(6 << 20)).unwrap();
    std::fs::write(
        root.join("mlimg.toml"),
        r#"[image]
name = "localhost/compress"
base = "scratch"

[[weights]]
name = "w"
source = "models"
dest = "/models"
compression = "zstd"

[app]
src = "app"
dest = "/app"
compression = "gzip"

[config]
entrypoint = ["/app/run"]
"#,
    )
    .unwrap();
    root.join("mlimg.toml")
}

#[test]
fn digests_do_not_depend_on_the_compression_threads() {
    let cx = TestContext::new();
    let spec = project(&cx);
    // two empty caches, so both builds compress every layer
    let a = TestContext::new();
    let b = TestContext::new();
    let ra = a.build_json(
        &spec,
        &[
            "-j",
            "1",
            "-o",
            &format!("oci:{}", a.path().join("o").display()),
        ],
    );
    let rb = b.build_json(
        &spec,
        &[
            "-j",
            "2",
            "-o",
            &format!("oci:{}", b.path().join("o").display()),
        ],
    );
    for role in ["app", "weights w"] {
        assert_eq!(
            layer_digest(&ra, role),
            layer_digest(&rb, role),
            "{role} layer with -j 1 vs -j 2"
        );
    }
    assert_eq!(ra["manifest_digest"], rb["manifest_digest"]);
    // the layers really are compressed as asked
    let types: Vec<&str> = ra["layers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l["media_type"].as_str())
        .collect();
    assert!(types.iter().any(|t| t.ends_with("+gzip")), "{types:?}");
    assert!(types.iter().any(|t| t.ends_with("+zstd")), "{types:?}");
}
