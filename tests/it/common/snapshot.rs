//! Snapshot tests of mlimg's CLI output with insta: filters that blank out what changes from
//! run to run (temp paths, sha256 digests, durations, ports, layer selectors, staging names), so a
//! test is a few lines:
//!
//! ```ignore
//! let out = cx.mlimg().args(["build", "--dry-run", "-f"]).arg(&spec).output().unwrap();
//! assert_cli_snapshot!(&cx, &out);
//! ```
//!
//! Snapshots live in `tests/it/snapshots/` and are committed. Review new or changed ones with
//! `cargo insta review` (or run once with `INSTA_UPDATE=always` and read the diff). CI sets
//! `CI=true`, so there insta never writes snapshots: a mismatch or a missing `.snap` fails.

use std::path::Path;
use std::process::Output;

use super::{TestContext, repo_root};

/// insta settings with this project's filters; `cx`'s temp folder shows as `[TMP]`.
pub fn settings(cx: &TestContext) -> insta::Settings {
    settings_for(&[(cx.path(), "[TMP]")])
}

/// insta settings with the filters, plus exact `paths` replaced by their labels first.
pub fn settings_for(paths: &[(&Path, &str)]) -> insta::Settings {
    let mut s = insta::Settings::clone_current();
    s.set_prepend_module_to_snapshot(false);
    s.set_snapshot_path(repo_root().join("tests/it/snapshots"));
    let mut exact: Vec<(String, String)> = paths
        .iter()
        .map(|(p, label)| (p.display().to_string(), label.to_string()))
        .collect();
    // canonical forms too (/tmp may be a symlink)
    for (p, label) in paths {
        if let Ok(c) = p.canonicalize() {
            exact.push((c.display().to_string(), label.to_string()));
        }
    }
    exact.push((repo_root().display().to_string(), "[REPO]".into()));
    // longest first, so a path inside another is replaced whole
    exact.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
    for (p, label) in exact {
        s.add_filter(&regex_escape(&p), label);
    }
    let tmp = std::env::temp_dir();
    let tmp = tmp.display().to_string();
    let tmp = tmp.trim_end_matches('/');
    // any other temp folder: /tmp/.tmpAbC123, /tmp/mlimg-it-XyZ
    s.add_filter(&format!(r"{}/[^/\s]+", regex_escape(tmp)), "[TMP]");
    s.add_filter(r"sha256:[0-9a-f]{64}", "sha256:[DIGEST]");
    s.add_filter(r"\b[0-9a-f]{64}\b", "[SHA256]");
    // durations: 12ms, 1.5 s, 3m 2s, 250µs
    s.add_filter(
        r"\b\d+(\.\d+)?\s?(ns|µs|us|ms|s|m|h)(\s\d+(\.\d+)?\s?(ns|µs|us|ms|s|m|h))*\b",
        "[DURATION]",
    );
    s.add_filter(r"(127\.0\.0\.1|localhost|\[::1\]):\d+", "$1:[PORT]");
    // layer cache selectors (`selector 86ed51180387`) fingerprint source paths and mtimes
    s.add_filter(r"\bselector [0-9a-f]{12}\b", "selector [SELECTOR]");
    // staging names beside an output (`.image.mlimg-0123456789abcdef-dir`) are random
    s.add_filter(r"\.mlimg-[0-9a-f]{16}-", ".mlimg-[RAND]-");
    s
}

fn regex_escape(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if "\\.+*?()|[]{}^$#&-~".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A command's outcome as one text: exit code, stdout, stderr.
pub fn render(out: &Output) -> String {
    format!(
        "exit: {}\n--- stdout\n{}--- stderr\n{}",
        out.status
            .code()
            .map_or("signal".to_string(), |c| c.to_string()),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `assert_cli_snapshot!(&cx, &output)` or `assert_cli_snapshot!("name", &cx, &output)`:
/// the rendered output, filtered, against `tests/it/snapshots/<name>.snap`.
macro_rules! assert_cli_snapshot {
    ($cx:expr, $out:expr) => {
        $crate::common::snapshot::settings($cx).bind(|| {
            let output = $crate::common::snapshot::render($out);
            insta::assert_snapshot!(output)
        })
    };
    ($name:expr, $cx:expr, $out:expr) => {
        $crate::common::snapshot::settings($cx).bind(|| {
            let output = $crate::common::snapshot::render($out);
            insta::assert_snapshot!($name, output)
        })
    };
}
pub(crate) use assert_cli_snapshot;
