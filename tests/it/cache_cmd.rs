//! `mlimg cache ls|prune` on the local cache and `mlimg cache prune --registry` on a real
//! registry's selector records (issue 13, item 5).

use std::time::{Duration, SystemTime};

use serde_json::Value;

use mlimg::layer::LayerBlob;
use mlimg::pipeline::shared_cache::{self, CacheKey};
use mlimg::registry::{ClientOptions, RegistryClient};

use crate::common::image::make_image;
use crate::common::registry::TestRegistry;
use crate::common::snapshot::render;
use crate::common::{TestContext, run_ok, stdout};

fn json(cx: &TestContext, args: &[&str]) -> Value {
    let out = run_ok(cx.mlimg().args(args).arg("--json"));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", render(&out)))
}

#[test]
fn ls_and_prune_the_local_cache() {
    let cx = TestContext::new();
    let spec = cx.example("sentiment").join("mlimg.toml");
    let out = cx.path().join("image");
    let report = cx.build_json(&spec, &["-o", &format!("oci:{}", out.display())]);
    let l = json(&cx, &["cache", "ls"]);
    let blobs = l["totals"]["blobs"].as_u64().expect("blobs");
    assert!(blobs >= 3, "{l}");
    assert!(
        l["totals"]["selectors"].as_u64().expect("selectors") >= 3,
        "{l}"
    );
    let app = report["layers"][3]["digest"].as_str().expect("app digest");
    assert!(
        l["entries"]
            .as_array()
            .expect("entries")
            .iter()
            .any(|e| e["name"] == app),
        "the app layer's blob is listed: {l}"
    );
    let text = stdout(&run_ok(cx.mlimg().args(["cache", "ls"])));
    assert!(text.contains("blobs") && text.contains(app), "{text}");

    // nothing is old yet
    let p = json(&cx, &["cache", "prune", "--older-than", "1d"]);
    assert_eq!(p["removed"], serde_json::json!([]), "{p}");

    // the app blob and its selector record last used 3 days ago: only it goes
    let old = SystemTime::now() - Duration::from_secs(3 * 86400);
    let hex = app.trim_start_matches("sha256:");
    let blob = cx.cache.join("blobs/sha256").join(hex);
    filetime::set_file_mtime(&blob, filetime::FileTime::from_system_time(old)).expect("mtime");
    for e in std::fs::read_dir(cx.cache.join("selectors")).expect("selectors") {
        let p = e.expect("entry").path();
        if std::fs::read_to_string(&p).expect("read").contains(hex) {
            filetime::set_file_mtime(&p, filetime::FileTime::from_system_time(old)).expect("mtime");
        }
    }
    let dry = json(&cx, &["cache", "prune", "--older-than", "2d", "--dry-run"]);
    assert_eq!(dry["removed"].as_array().map(Vec::len), Some(1), "{dry}");
    assert!(blob.exists(), "a dry run removes nothing");
    let p = json(&cx, &["cache", "prune", "--older-than", "2d"]);
    assert_eq!(p["removed"][0]["name"], app, "{p}");
    assert_eq!(p["orphan_selectors"], 1, "{p}");
    assert!(!blob.exists());
    assert_eq!(
        json(&cx, &["cache", "ls"])["totals"]["blobs"].as_u64(),
        Some(blobs - 1)
    );

    // the cache's other folders: base facts, push records, Debian indexes, .debs and unpacked
    // packages are listed, all go by age, and the large ones by budget
    let set = |p: &std::path::Path, t: SystemTime| {
        filetime::set_file_mtime(p, filetime::FileTime::from_system_time(t)).expect("mtime")
    };
    let plant = |rel: &str, len: usize, t: SystemTime| {
        let p = cx.cache.join(rel);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(&p, vec![b'x'; len]).expect("write");
        set(&p, t);
    };
    let a = "a".repeat(64);
    plant(&format!("facts/base-facts-{a}.json"), 10, old);
    plant(&format!("pushed/{a}"), 12, old);
    plant(&format!("debian/index/{a}"), 300, SystemTime::now());
    plant(&format!("debian/debs/{a}.deb"), 200, old);
    plant(&format!("debian/unpacked/{a}/root/usr/bin/x"), 100, old);
    plant(&format!("debian/unpacked/{a}/entries.json"), 2, old);
    let unpacked = cx.cache.join(format!("debian/unpacked/{a}"));
    set(&unpacked.join("root/usr/bin"), old);
    set(&unpacked.join("root/usr"), old);
    set(&unpacked.join("root"), old);
    set(&unpacked, old);
    let l = json(&cx, &["cache", "ls"]);
    let t = &l["totals"];
    assert_eq!(
        (
            &t["deb_index_bytes"],
            &t["deb_bytes"],
            &t["deb_unpacked"],
            &t["deb_unpacked_bytes"],
            &t["pushed"]
        ),
        (&300.into(), &200.into(), &1.into(), &102.into(), &1.into()),
        "{l}"
    );
    assert!(t["facts"].as_u64().expect("facts") >= 1, "{l}");
    let text = stdout(&run_ok(cx.mlimg().args(["cache", "ls"])));
    assert!(
        text.contains("deb unpacked") && text.contains("deb-unpacked"),
        "{text}"
    );
    let p = json(&cx, &["cache", "prune", "--older-than", "2d"]);
    let mut kinds: Vec<&str> = p["removed"]
        .as_array()
        .expect("removed")
        .iter()
        .filter_map(|e| e["kind"].as_str())
        .collect();
    kinds.sort();
    assert_eq!(kinds, ["deb", "deb-unpacked", "fact", "pushed"], "{p}");
    assert!(!unpacked.exists() && cx.cache.join(format!("debian/index/{a}")).exists());
    // a budget of 0 bytes empties the blobs; the next build rebuilds and gives the same image
    let p = json(&cx, &["cache", "prune", "--keep-bytes", "0"]);
    assert!(p["freed_bytes"].as_u64().expect("freed") > 0, "{p}");
    let t = &json(&cx, &["cache", "ls"])["totals"];
    assert_eq!(
        (t["blobs"].as_u64(), t["deb_indexes"].as_u64()),
        (Some(0), Some(0)),
        "{t}"
    );
    let again = cx.build_json(
        &spec,
        &["-o", &format!("oci:{}", cx.path().join("again").display())],
    );
    assert_eq!(again["manifest_digest"], report["manifest_digest"]);
    // sizes are checked
    let bad = cx
        .mlimg()
        .args(["cache", "prune", "--keep-bytes", "lots"])
        .output()
        .expect("run");
    assert_eq!(bad.status.code(), Some(2), "{}", render(&bad));
}

#[test]
fn registry_prune_keeps_records_of_layers_in_use() {
    let reg = TestRegistry::start();
    let cx = TestContext::new();
    let client = RegistryClient::new(ClientOptions {
        docker_config_dir: Some(cx.path().to_path_buf()),
        ..ClientOptions::default()
    })
    .expect("client");
    let repo = reg.reference("acme/app");
    let blob = |l: &crate::common::image::Layer| LayerBlob {
        media_type: l.media_type.clone(),
        digest: l.digest.clone(),
        diff_id: l.diff_id.clone(),
        size: l.size,
    };
    // v1 stays tagged; "old" is pushed and then its manifest deleted (its tag goes with it)
    let v1 = make_image(cx.path(), "v1", "amd64", &[4096], false);
    client
        .push(&v1.request(&reg.reference("acme/app:v1"), &["v1"]), &|_| {})
        .expect("push v1");
    let old = make_image(cx.path(), "old", "amd64", &[2048], false);
    client
        .push(
            &old.request(&reg.reference("acme/app:old"), &["old"]),
            &|_| {},
        )
        .expect("push old");
    let key = CacheKey::new("test-key-0123456789abcdef").expect("key");
    let (s1, s2) = ("a1".repeat(32), "b2".repeat(32));
    shared_cache::publish(
        &client,
        &repo,
        &[
            (s1.clone(), blob(&v1.layers[0])),
            (s2.clone(), blob(&old.layers[0])),
        ],
        Some(&key),
    )
    .expect("publish");
    let old_manifest = client
        .fetch_manifest(&reg.reference("acme/app:old"))
        .expect("old")
        .digest;
    client
        .delete_manifest(&repo, &old_manifest)
        .expect("delete old");
    let tags = client.list_tags(&repo).expect("tags");
    assert!(tags.contains(&shared_cache::tag(&s2)) && !tags.contains(&"old".to_string()));

    let name = format!("{}/acme/app", reg.host());
    let dry = json(&cx, &["cache", "prune", "--registry", &name, "--dry-run"]);
    assert_eq!(dry["deleted"][0]["tag"], shared_cache::tag(&s2), "{dry}");
    assert_eq!(dry["kept"][0]["tag"], shared_cache::tag(&s1), "{dry}");
    assert!(
        client
            .list_tags(&repo)
            .expect("tags")
            .contains(&shared_cache::tag(&s2))
    );

    let out = run_ok(cx.mlimg().args(["cache", "prune", "--registry", &name]));
    crate::common::snapshot::assert_cli_snapshot!("cache_prune_registry", &cx, &out);
    let text = stdout(&out);
    assert!(
        text.contains("1 selector record(s) kept") && text.contains("deleted 1"),
        "{text}"
    );
    let tags = client.list_tags(&repo).expect("tags");
    assert!(!tags.contains(&shared_cache::tag(&s2)), "{tags:?}");
    assert!(
        tags.contains(&shared_cache::tag(&s1)),
        "in use: kept {tags:?}"
    );
    assert!(tags.contains(&"v1".to_string()));
    // a tag is refused
    let bad = cx
        .mlimg()
        .args(["cache", "prune", "--registry", &format!("{name}:v1")])
        .output()
        .expect("run");
    assert_eq!(bad.status.code(), Some(1), "{}", render(&bad));
}
