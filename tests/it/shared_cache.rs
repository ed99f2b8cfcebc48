//! The registry-shared selector records (library level) against a real registry.

use std::time::Duration;

use mlimg::layer::LayerBlob;
use mlimg::pipeline::shared_cache::{self, ARTIFACT_TYPE, CacheKey, Lookup};
use mlimg::registry::{ClientOptions, RegistryClient};

use crate::common::image::make_image;
use crate::common::registry::TestRegistry;

fn key() -> CacheKey {
    CacheKey::new("test-key-0123456789abcdef").expect("key")
}

fn client(dir: &std::path::Path) -> RegistryClient {
    RegistryClient::new(ClientOptions {
        docker_config_dir: Some(dir.to_path_buf()),
        transport: mlimg::transport::TransportOptions {
            backoff: Duration::from_millis(20),
            ..Default::default()
        },
        ..ClientOptions::default()
    })
    .expect("client")
}

#[test]
fn publish_then_lookup_finds_the_layer_only_for_its_selector_and_repo() {
    let reg = TestRegistry::start();
    let work = tempfile::tempdir().expect("tmp");
    let c = client(work.path());
    let target = reg.reference("acme/app:v1");
    let img = make_image(work.path(), "v1", "amd64", &[4096], false);
    c.push(&img.request(&target, &["v1"]), &|_| {})
        .expect("push image");
    let l = &img.layers[0];
    let blob = LayerBlob {
        media_type: l.media_type.clone(),
        digest: l.digest.clone(),
        diff_id: l.diff_id.clone(),
        size: l.size,
    };
    let sel = "ab".repeat(32);
    let k = key();
    assert_eq!(
        shared_cache::lookup(&c, &target, &sel, Some(&k)).expect("lookup"),
        Lookup::Miss
    );
    let n = shared_cache::publish(&c, &target, &[(sel.clone(), blob.clone())], Some(&k))
        .expect("publish");
    assert_eq!(n, 1);
    assert_eq!(
        shared_cache::lookup(&c, &target, &sel, Some(&k)).expect("lookup"),
        Lookup::Hit(blob.clone())
    );
    // another key: the record is not trusted
    let other_key = CacheKey::new("another-key-0123456789").expect("key");
    assert!(matches!(
        shared_cache::lookup(&c, &target, &sel, Some(&other_key)).expect("lookup"),
        Lookup::Untrusted(_)
    ));
    // another selector, another repository: misses
    let other = "cd".repeat(32);
    assert_eq!(
        shared_cache::lookup(&c, &target, &other, Some(&k)).expect("lookup"),
        Lookup::Miss
    );
    let elsewhere = reg.reference("acme/other");
    assert_eq!(
        shared_cache::lookup(&c, &elsewhere, &sel, Some(&k)).expect("lookup"),
        Lookup::Miss
    );
    // the record is an artifact manifest under its tag, and the image tag is untouched
    let rec = c
        .fetch_manifest(&reg.reference(&format!("acme/app:{}", shared_cache::tag(&sel))))
        .expect("record");
    let v: serde_json::Value = serde_json::from_slice(&rec.bytes).expect("json");
    assert_eq!(v["artifactType"], ARTIFACT_TYPE);
    assert_eq!(
        v["annotations"][shared_cache::ANN_MAC],
        shared_cache::mac(&k, &sel, &blob).as_str()
    );
    let tagged = c.fetch_manifest(&target).expect("image");
    assert_eq!(tagged.digest, img.manifest_digest);
}

#[test]
fn publish_refuses_a_layer_the_repository_does_not_have() {
    let reg = TestRegistry::start();
    let work = tempfile::tempdir().expect("tmp");
    let c = client(work.path());
    let target = reg.reference("acme/app");
    let missing = LayerBlob {
        media_type: "application/vnd.oci.image.layer.v1.tar".into(),
        digest: format!("sha256:{}", "1".repeat(64)),
        diff_id: format!("sha256:{}", "1".repeat(64)),
        size: 10,
    };
    let sel = "ef".repeat(32);
    assert!(shared_cache::publish(&c, &target, &[(sel.clone(), missing)], Some(&key())).is_err());
    assert_eq!(
        shared_cache::lookup(&c, &target, &sel, Some(&key())).expect("lookup"),
        Lookup::Miss
    );
}

#[test]
fn an_unsigned_record_is_untrusted_under_a_key_and_believed_without_one() {
    let reg = TestRegistry::start();
    let work = tempfile::tempdir().expect("tmp");
    let c = client(work.path());
    let target = reg.reference("acme/app:v1");
    let img = make_image(work.path(), "v1", "amd64", &[1024], false);
    c.push(&img.request(&target, &["v1"]), &|_| {})
        .expect("push image");
    let l = &img.layers[0];
    let blob = LayerBlob {
        media_type: l.media_type.clone(),
        digest: l.digest.clone(),
        diff_id: l.diff_id.clone(),
        size: l.size,
    };
    let sel = "12".repeat(32);
    shared_cache::publish(&c, &target, &[(sel.clone(), blob.clone())], None).expect("publish");
    assert_eq!(
        shared_cache::lookup(&c, &target, &sel, Some(&key())).expect("lookup"),
        Lookup::Untrusted("it carries no MAC")
    );
    assert_eq!(
        shared_cache::lookup(&c, &target, &sel, None).expect("lookup"),
        Lookup::Hit(blob)
    );
}
