//! Snapshots of mlimg's CLI output (see common/snapshot.rs for the filters and how to update).

use crate::common::TestContext;
use crate::common::snapshot::{self, assert_cli_snapshot};

#[test]
fn dry_run_of_the_sentiment_example() {
    let cx = TestContext::new();
    let spec = cx.example("sentiment").join("mlimg.toml");
    let out = cx
        .mlimg()
        .args(["build", "--dry-run", "-f"])
        .arg(&spec)
        .output()
        .expect("run mlimg");
    assert!(out.status.success(), "{}", snapshot::render(&out));
    assert_cli_snapshot!(&cx, &out);
}

#[test]
fn the_filters_blank_what_changes_between_runs() {
    let cx = TestContext::new();
    let text = format!(
        "{}/project/x and {}/other/y\nsha256:{} {}\ntook 1.25s (3m 2s), 12ms\n\
         http://127.0.0.1:40123/v2/ localhost:5000\n4595 bytes, 3 layers, selector 86ed51180387\n",
        cx.path().display(),
        std::env::temp_dir().join(".tmpAbC123").display(),
        "ab".repeat(32),
        "0".repeat(64),
    );
    snapshot::settings(&cx).bind(|| insta::assert_snapshot!(text));
}
