//! Hostile inputs through the public API (issue 9): property tests that nothing panics on
//! arbitrary spec text or image references. Each runs `PROPTEST_CASES` cases (256 by default;
//! see docs/security.md for long runs).

use std::path::Path;

use mlimg::registry::Reference;
use mlimg::spec::Spec;
use proptest::prelude::*;

/// Fragments that make arbitrary text look enough like a spec to reach the validators.
fn spec_fragment() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("[image]\n".to_string()),
        Just("[python]\n".to_string()),
        Just("[[deps]]\n".to_string()),
        Just("[[weights]]\n".to_string()),
        Just("[app]\n".to_string()),
        Just("[config]\n".to_string()),
        Just("[config.healthcheck]\n".to_string()),
        prop::sample::select(vec![
            "name",
            "tags",
            "base",
            "platforms",
            "context",
            "version",
            "prefix",
            "libc",
            "site_packages",
            "dir",
            "dest",
            "requirements",
            "pylock",
            "index_url",
            "find_links",
            "compression",
            "source",
            "revision",
            "subfolder",
            "include",
            "exclude",
            "layers",
            "src",
            "entrypoint",
            "cmd",
            "env",
            "workdir",
            "user",
            "ports",
            "volumes",
            "labels",
            "annotations",
            "stop_signal",
            "test",
            "interval",
            "retries",
        ])
        .prop_flat_map(|k| (Just(k), toml_value()))
        .prop_map(|(k, v)| format!("{k} = {v}\n")),
        "\\PC{0,40}",
    ]
}

fn toml_value() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        "\"[^\"\\\\]{0,30}\"".prop_map(|s| s),
        prop::sample::select(vec![
            "\"scratch\"",
            "\"oci:..\"",
            "\"../..\"",
            "\"/\"",
            "\"hf://a/b\"",
            "\"3.11\"",
            "\"3.4000000\"",
            "\"glibc 2.36\"",
            "\"musl 1.99999999999\"",
            "\"linux/amd64\"",
            "\"${weights.w.dest}\"",
            "\"${\"",
            "\"/app\"",
            "\"30s\"",
            "-1",
            "99999999999",
            "true",
            "1.5",
        ])
        .prop_map(str::to_string),
    ];
    leaf.prop_recursive(4, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(|v| format!("[{}]", v.join(", "))),
            prop::collection::vec(("[a-z_]{1,8}", inner), 0..3).prop_map(|v| {
                let kv: Vec<String> = v.into_iter().map(|(k, v)| format!("{k} = {v}")).collect();
                format!("{{ {} }}", kv.join(", "))
            }),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::default())]

    #[test]
    fn spec_parser_never_panics(parts in prop::collection::vec(spec_fragment(), 0..24)) {
        let dir = std::env::temp_dir();
        let text = parts.concat();
        let _ = Spec::parse(&dir.join("mlimg-fuzz/proj/mlimg.toml"), &text);
    }

    #[test]
    fn spec_parser_never_panics_on_any_text(text in "\\PC{0,400}") {
        let _ = Spec::parse(Path::new("/nonexistent/mlimg.toml"), &text);
    }

    #[test]
    fn reference_parser_never_panics(s in "[a-zA-Z0-9:/@._+-]{0,120}|\\PC{0,120}") {
        if let Ok(r) = Reference::parse(&s) {
            // What parsed prints as something that parses.
            let _ = r.to_string();
            let _ = r.manifest_ref();
            let _ = r.repo_name();
        }
    }
}

/// Nesting that a recursive parser would follow until the stack overflows.
#[test]
fn deeply_nested_spec_values_are_errors_not_crashes() {
    for (open, close) in [("[", "]"), ("{ a = ", " }")] {
        let n = 100_000;
        let text = format!("[image]\nname = {}1{}\n", open.repeat(n), close.repeat(n));
        let e = Spec::parse(Path::new("/nonexistent/mlimg.toml"), &text)
            .expect_err("a 100 000 deep value is not a spec");
        assert!(e.to_string().contains("mlimg.toml"), "{e}");
    }
}
