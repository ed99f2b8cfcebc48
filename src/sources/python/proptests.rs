//! Property tests (issue 9, item 18): the parsers that read what a requirements file, a lock,
//! an index or a base image says never panic and stay within their limits on arbitrary input.
//! `PROPTEST_CASES` sets the number of cases (256 by default; docs/security.md).

use std::io::Write;
use std::path::Path;

use proptest::prelude::*;

use super::detect::{TarMember, detect_target, walk_tar};
use super::markers::{self, Environment, Version};
use super::requirements;
use super::tags::{MAX_TAGS_PER_FIELD, TagPriorities, WheelName};
use super::{Libc, PythonTarget};

fn target() -> PythonTarget {
    PythonTarget {
        version: (3, 11),
        prefix: "/usr/local".into(),
        libc: Libc::Glibc(2, 36),
        arch: "x86_64".into(),
        site_packages_dir: None,
    }
}

const H: &str = "8abb2f1d86890a2dfb989f9a77cfcfd3e47c2a354b01111771326f8aa26e0254";

fn marker_token() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "(",
            ")",
            "and",
            "or",
            "not",
            "in",
            "==",
            "!=",
            "<=",
            ">=",
            "<",
            ">",
            "~=",
            "===",
            "python_version",
            "python_full_version",
            "platform_machine",
            "sys_platform",
            "extra",
            "extras",
            "dependency_groups",
            "\"3.11\"",
            "'3.*'",
            "\"x86_64\"",
            "\"linux\"",
            "\"1.0rc1\"",
            "\"gpu\"",
            "\"",
            "'",
            "=>",
            "!",
            "~",
        ])
        .prop_map(str::to_string),
        "\\PC{0,6}",
    ]
}

fn marker() -> impl Strategy<Value = String> {
    prop::collection::vec(marker_token(), 0..40).prop_map(|t| t.join(" "))
}

fn requirement_line() -> impl Strategy<Value = String> {
    prop_oneof![
        (
            "[A-Za-z][A-Za-z0-9._-]{0,12}",
            prop::sample::select(vec!["==", "===", ">=", "~=", "", "@"]),
            "[0-9][0-9a-z.+!*-]{0,10}",
            prop::option::of(marker()),
            prop::collection::vec(
                prop::sample::select(vec![
                    format!("--hash=sha256:{H}"),
                    "--hash".to_string(),
                    format!("sha256:{H}"),
                    "--hash=md5:x".to_string(),
                    "--hash=sha256:zz".to_string(),
                    "-e".to_string(),
                ]),
                0..3
            )
        )
            .prop_map(|(n, op, v, m, h)| {
                let m = m.map(|m| format!(" ; {m}")).unwrap_or_default();
                format!("{n}{op}{v}{m} {}", h.join(" "))
            }),
        prop::sample::select(vec![
            "-r missing.txt",
            "-r /dev/null",
            "--requirement=x",
            "-c c.txt",
            "-e .",
            "-f wheels",
            "-f https://x",
            "--index-url https://i",
            "-i",
            "--pre",
            "--bogus",
            "\\",
            "#",
            "  # c",
            "-r",
        ])
        .prop_map(str::to_string),
        "\\PC{0,60}",
    ]
}

/// A small valid layer: long names, a pax header, a dpkg status, whiteouts.
fn sample_tar() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |path: &str, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, path, data).expect("in-memory tar");
    };
    add(
        "var/lib/dpkg/status",
        b"Package: libc6\nVersion: 2.36-9\n\nPackage: x\n",
    );
    add("usr/lib/python3.11/os.py", b"");
    add(&format!("usr/{}/libc.so.6", "d".repeat(150)), b"x");
    add("usr/lib/.wh.python3.9", b"");
    add("usr/local/.wh..wh..opq", b"");
    add("lib/ld-musl-x86_64.so.1", b"");
    b.into_inner().expect("in-memory tar")
}

proptest! {
    #![proptest_config(ProptestConfig::default())]

    #[test]
    fn marker_evaluation_never_panics(m in marker()) {
        let mut env = Environment::for_target(&target());
        env.extras = vec!["gpu".into()];
        let _ = markers::evaluate(&m, &env);
    }

    #[test]
    fn marker_evaluation_never_panics_on_any_text(m in "\\PC{0,200}") {
        let _ = markers::evaluate(&m, &Environment::for_target(&target()));
    }

    #[test]
    fn versions_never_panic(v in "[0-9v.!+a-z_-]{0,30}|\\PC{0,30}", w in "[0-9.*]{0,12}") {
        if let (Some(a), Some(b)) = (Version::parse(&v), Version::parse(&w)) {
            let _ = a.matches_pin(&b);
        }
    }

    #[test]
    fn requirements_parser_never_panics(lines in prop::collection::vec(requirement_line(), 0..30)) {
        let text = lines.join("\n");
        if let Ok(f) = requirements::parse_str(&text, Path::new("/nonexistent/requirements.txt")) {
            let _ = requirements::pins_for(&f, &Environment::for_target(&target()));
        }
    }

    #[test]
    fn wheel_names_stay_bounded(
        name in "[A-Za-z0-9_.]{0,10}",
        fields in prop::collection::vec(prop::collection::vec("[a-z0-9_]{0,8}", 0..40), 3..5),
        junk in "\\PC{0,40}",
    ) {
        let parts: Vec<String> = fields.iter().map(|f| f.join(".")).collect();
        let filename = format!("{name}-1.0-{}.whl", parts.join("-"));
        let priorities = TagPriorities::for_target(&target());
        for f in [filename.as_str(), junk.as_str()] {
            if let Some(w) = WheelName::parse(f) {
                prop_assert!(w.python.len() <= MAX_TAGS_PER_FIELD);
                prop_assert!(w.abi.len() <= MAX_TAGS_PER_FIELD);
                prop_assert!(w.platform.len() <= MAX_TAGS_PER_FIELD);
                let _ = priorities.rank(&w);
                let _ = w.tag_string();
            }
        }
    }

    #[test]
    fn tar_reader_never_panics_on_bytes(bytes in prop::collection::vec(any::<u8>(), 0..3000)) {
        let mut seen = 0usize;
        let _ = walk_tar(&mut &bytes[..], &mut |m: TarMember| {
            seen += 1;
            let mut sink = Vec::new();
            std::io::Read::read_to_end(&mut std::io::Read::take(m.data, 1 << 16), &mut sink)?;
            Ok(())
        });
        // Every member costs at least one 512-byte header.
        prop_assert!(seen <= bytes.len() / 512);
    }

    /// A valid layer with bytes flipped and a random cut, through the whole detection.
    #[test]
    fn detection_never_panics_on_damaged_layers(
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
        cut in any::<prop::sample::Index>(),
        gzip in any::<bool>(),
    ) {
        let mut raw = sample_tar();
        for (i, b) in &flips {
            let at = i.index(raw.len());
            raw[at] = *b;
        }
        raw.truncate(cut.index(raw.len() + 1).max(raw.len() / 2));
        let dir = tempfile::tempdir().expect("tempdir");
        let data = if gzip {
            let mut g = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            g.write_all(&raw).expect("gzip");
            g.finish().expect("gzip")
        } else {
            raw
        };
        std::fs::write(dir.path().join("l"), data).expect("write layer");
        let d = dir.path().to_path_buf();
        let locate = move |digest: &str| Some(d.join(digest));
        let _ = detect_target(
            &serde_json::json!({}),
            &[("l".to_string(), "x".to_string())],
            &locate,
            "amd64",
            None,
        );
    }
}
