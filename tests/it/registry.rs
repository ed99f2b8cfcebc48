//! Registry client against a real registry (CNCF distribution 2.8): push, skip, mount,
//! auth (config.json, credential helper, Bearer), fault injection, digest checks, pull.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine as _;
use mlimg::registry::{
    BlobAction, BlobOrigin, ClientOptions, Platform, PushBlob, PushEvent, PushRequest,
    RegistryClient, RegistryError,
};

use crate::common::faultproxy::{FaultConfig, FaultProxy};
use crate::common::image::{self, TestImage, make_image, make_index, noise_file};
use crate::common::registry::TestRegistry;
use mlimg::transport::TransportOptions;

/// Options that never read the user's ~/.docker and retry quickly.
fn opts(config_dir: &Path) -> ClientOptions {
    ClientOptions {
        docker_config_dir: Some(config_dir.to_path_buf()),
        transport: retries(6),
        ..ClientOptions::default()
    }
}

/// Quick retries: `n` of them, 20 ms apart (doubling).
fn retries(n: u32) -> TransportOptions {
    TransportOptions {
        retries: n,
        backoff: Duration::from_millis(20),
        ..TransportOptions::default()
    }
}

fn client(config_dir: &Path) -> RegistryClient {
    RegistryClient::new(opts(config_dir)).expect("client")
}

fn no_progress() -> impl Fn(PushEvent) + Sync {
    |_| {}
}

fn write_config(dir: &Path, json: &serde_json::Value) {
    std::fs::write(dir.join("config.json"), serde_json::to_vec(json).unwrap()).unwrap();
}

fn blob_writes(reg: &TestRegistry, repo: &str) -> Vec<String> {
    let prefix = format!("/v2/{repo}/blobs/uploads");
    reg.requests()
        .into_iter()
        .filter(|l| (l.starts_with("PUT ") || l.starts_with("PATCH ")) && l.contains(&prefix))
        .collect()
}

fn skopeo_inspect(host: &str, repo: &str, tag: &str) -> serde_json::Value {
    let out = Command::new("skopeo")
        .args([
            "inspect",
            "--tls-verify=false",
            "--raw",
            &format!("docker://{host}/{repo}:{tag}"),
        ])
        .output()
        .expect("run skopeo");
    assert!(
        out.status.success(),
        "skopeo inspect failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("skopeo output is JSON")
}

fn tag_exists(c: &RegistryClient, reg_ref: &mlimg::registry::Reference, tag: &str) -> bool {
    match c.fetch_manifest(&reg_ref.with_tag(tag)) {
        Ok(_) => true,
        Err(e) if e.status() == Some(404) => false,
        Err(e) => panic!("unexpected error checking tag: {e}"),
    }
}

#[test]
fn push_is_readable_by_skopeo_and_second_push_skips_everything() {
    let reg = TestRegistry::start();
    let work = tempfile::tempdir().unwrap();
    let img = make_image(work.path(), "app", "amd64", &[200_000, 3_000], false);
    let c = client(work.path());
    let target = reg.reference("acme/app");

    let events = Mutex::new(Vec::new());
    let report = c
        .push(&img.request(&target, &["1.0", "latest"]), &|e| {
            events.lock().unwrap().push(e)
        })
        .expect("push");
    assert_eq!(report.manifest_digest, img.manifest_digest);
    assert_eq!(report.blobs.len(), 3);
    assert!(
        report
            .blobs
            .iter()
            .all(|(_, a, _)| *a == BlobAction::Uploaded)
    );
    let layer_sent: u64 = report.blobs.iter().map(|b| b.2).sum();
    let total: u64 = img.layers.iter().map(|l| l.size).sum::<u64>() + img.config.len() as u64;
    assert_eq!(layer_sent, total, "each blob sent exactly once");
    assert_eq!(
        report.pushed,
        vec![
            format!("{}/acme/app:1.0@{}", reg.host(), img.manifest_digest),
            format!("{}/acme/app:latest@{}", reg.host(), img.manifest_digest),
        ]
    );
    let ev = events.lock().unwrap();
    assert_eq!(
        ev.iter()
            .filter(|e| matches!(e, PushEvent::BlobDone { .. }))
            .count(),
        3
    );
    assert!(
        ev.iter()
            .any(|e| matches!(e, PushEvent::TagPushed { tag, .. } if tag == "latest"))
    );

    // An independent client (skopeo) sees exactly our manifest.
    let raw = skopeo_inspect(&reg.host(), "acme/app", "1.0");
    assert_eq!(raw["config"]["digest"], img.config_digest.as_str());
    assert_eq!(image::sha256(&serde_json::to_vec(&raw).unwrap()).len(), 71);
    let fetched = c.fetch_manifest(&target.with_tag("latest")).unwrap();
    assert_eq!(fetched.digest, img.manifest_digest);
    assert_eq!(fetched.bytes, img.manifest);

    // Second push: everything skipped, nothing written to blob uploads.
    let before = blob_writes(&reg, "acme/app").len();
    assert_eq!(
        before,
        6,
        "3 blobs × (PATCH + PUT): {:?}",
        blob_writes(&reg, "acme/app")
    );
    let again = c
        .push(&img.request(&target, &["1.0"]), &no_progress())
        .expect("second push");
    assert!(
        again
            .blobs
            .iter()
            .all(|(_, a, n)| *a == BlobAction::Skipped && *n == 0)
    );
    assert_eq!(blob_writes(&reg, "acme/app").len(), before);
    let posts = reg
        .requests()
        .iter()
        .filter(|l| l.starts_with("POST /v2/acme/app/blobs/uploads/"))
        .count();
    assert_eq!(posts, 3, "no upload sessions opened on the second push");
}

#[test]
fn chunked_upload_and_registry_to_registry_copy_stream() {
    let src_reg = TestRegistry::start();
    let dst_reg = TestRegistry::start();
    let work = tempfile::tempdir().unwrap();
    let img = make_image(work.path(), "chunky", "amd64", &[3_000_000], false);
    let chunked = RegistryClient::new(ClientOptions {
        chunk_size: Some(256 * 1024),
        ..opts(work.path())
    })
    .unwrap();
    let src = src_reg.reference("lib/base");
    chunked
        .push(&img.request(&src, &["v1"]), &no_progress())
        .expect("chunked push");
    let patches = src_reg
        .requests()
        .iter()
        .filter(|l| l.starts_with("PATCH /v2/lib/base/blobs/uploads/"))
        .count() as u64;
    let expected = img.layers[0].size.div_ceil(256 * 1024) + 1; // + config (one chunk)
    assert_eq!(patches, expected);

    // Copy to another registry straight from the source's GET (different host: no mount).
    let c = client(work.path());
    let req = PushRequest {
        target: dst_reg.reference("mirror/base"),
        tags: vec!["v1".into()],
        blobs: img.blobs_from(&src),
        manifests: vec![img.push_manifest()],
    };
    let rep = c.push(&req, &no_progress()).expect("copy");
    assert!(rep.blobs.iter().all(|(_, a, _)| *a == BlobAction::Uploaded));
    let got = skopeo_inspect(&dst_reg.host(), "mirror/base", "v1");
    assert_eq!(got["layers"][0]["digest"], img.layers[0].digest.as_str());
    assert!(
        src_reg
            .requests()
            .iter()
            .any(|l| l.starts_with(&format!("GET /v2/lib/base/blobs/{} ", img.layers[0].digest)))
    );
}

#[test]
fn cross_repo_mount_in_same_registry() {
    let reg = TestRegistry::start();
    let work = tempfile::tempdir().unwrap();
    let img = make_image(work.path(), "base", "amd64", &[100_000], false);
    let c = client(work.path());
    let base = reg.reference("lib/python");
    c.push(&img.request(&base, &["3.11"]), &no_progress())
        .unwrap();

    let req = PushRequest {
        target: reg.reference("acme/svc"),
        tags: vec!["dev".into()],
        blobs: img.blobs_from(&base),
        manifests: vec![img.push_manifest()],
    };
    let rep = c.push(&req, &no_progress()).expect("push with mounts");
    assert!(
        rep.blobs
            .iter()
            .all(|(_, a, n)| *a == BlobAction::Mounted && *n == 0),
        "{:?}",
        rep.blobs
    );
    assert!(blob_writes(&reg, "acme/svc").is_empty());
    assert!(
        reg.requests().iter().any(
            |l| l.starts_with("POST /v2/acme/svc/blobs/uploads/?mount=") && l.ends_with(" 201")
        )
    );
    skopeo_inspect(&reg.host(), "acme/svc", "dev");
}

#[test]
fn mount_refused_with_202_falls_back_to_the_opened_session() {
    let reg = TestRegistry::start();
    let work = tempfile::tempdir().unwrap();
    let img = make_image(work.path(), "fb", "amd64", &[150_000], false);
    let c = client(work.path());
    let base = reg.reference("lib/base");
    c.push(&img.request(&base, &["1"]), &no_progress()).unwrap();

    // Through a proxy that hides the mount parameters, the registry opens a session (202),
    // like registries without cross-repo mounting. Both repos are addressed via the proxy.
    let proxy = FaultProxy::start(
        reg.port(),
        FaultConfig {
            strip_mount: true,
            ..FaultConfig::clean()
        },
    );
    let via = |repo: &str| {
        mlimg::registry::Reference::parse(&format!("{}/{repo}", proxy.host())).unwrap()
    };
    let req = PushRequest {
        target: via("acme/fb"),
        tags: vec!["1".into()],
        blobs: img.blobs_from(&via("lib/base")),
        manifests: vec![img.push_manifest()],
    };
    let rep = c
        .push(&req, &no_progress())
        .expect("push with 202 fallback");
    assert!(
        rep.blobs.iter().all(|(_, a, _)| *a == BlobAction::Uploaded),
        "{:?}",
        rep.blobs
    );
    let lines = reg.requests();
    let posts: Vec<_> = lines
        .iter()
        .filter(|l| l.starts_with("POST /v2/acme/fb/blobs/uploads/"))
        .collect();
    assert_eq!(
        posts.len(),
        2,
        "one session per blob, the mount's own: {posts:?}"
    );
    assert!(
        posts
            .iter()
            .all(|l| l.contains("nomnt=") && l.ends_with(" 202"))
    );
    // No session was left dangling: every session got its final PUT.
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.starts_with("PUT /v2/acme/fb/blobs/uploads/") && l.ends_with(" 201"))
            .count(),
        2
    );
    skopeo_inspect(&reg.host(), "acme/fb", "1");
}

#[test]
fn basic_auth_from_config_json_and_wrong_password_is_a_clean_401() {
    let reg = TestRegistry::start_htpasswd("alice", "s3cret-pass");
    let work = tempfile::tempdir().unwrap();
    let img = make_image(work.path(), "auth", "amd64", &[10_000], false);
    let target = reg.reference("acme/auth");

    // No credentials: 401 naming the registry.
    let anon = tempfile::tempdir().unwrap();
    let err = client(anon.path())
        .push(&img.request(&target, &["x"]), &no_progress())
        .unwrap_err();
    assert_eq!(err.status(), Some(401), "{err}");

    let good = tempfile::tempdir().unwrap();
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    write_config(
        good.path(),
        &serde_json::json!({"auths": {reg.host(): {"auth": b64("alice:s3cret-pass")}}}),
    );
    client(good.path())
        .push(&img.request(&target, &["ok"]), &no_progress())
        .expect("push with config.json auths");

    let bad = tempfile::tempdir().unwrap();
    let wrong = "WRONG-pa55word-xyz";
    write_config(
        bad.path(),
        &serde_json::json!({"auths": {format!("http://{}", reg.host()): {"auth": b64(&format!("alice:{wrong}"))}}}),
    );
    let c = client(bad.path());
    let err = c
        .push(&img.request(&target, &["bad"]), &no_progress())
        .unwrap_err();
    let shown = format!("{err} | {err:?} | {err:#}");
    assert_eq!(err.status(), Some(401), "{shown}");
    assert!(shown.contains(&reg.host()), "{shown}");
    assert!(shown.contains("acme/auth"), "{shown}");
    assert!(shown.contains("401"), "{shown}");
    assert!(shown.contains("Unauthorized"), "{shown}");
    assert!(!shown.contains(wrong), "password leaked: {shown}");
    assert!(
        !shown.contains(&b64(&format!("alice:{wrong}"))),
        "auth leaked: {shown}"
    );
    assert!(!format!("{c:?}").contains(wrong));
}

#[test]
fn credential_helper_is_run_with_the_server_on_stdin() {
    let reg = TestRegistry::start_htpasswd("helperuser", "helper-pass");
    let work = tempfile::tempdir().unwrap();
    let img = make_image(work.path(), "helper", "amd64", &[10_000], false);
    let helpers = tempfile::tempdir().unwrap();
    let seen = helpers.path().join("stdin.txt");
    let script = helpers.path().join("docker-credential-test");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n[ \"$1\" = get ] || exit 3\ncat > '{}'\necho '{{\"ServerURL\":\"x\",\"Username\":\"helperuser\",\"Secret\":\"helper-pass\"}}'\n",
            seen.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let cfg = tempfile::tempdir().unwrap();
    write_config(
        cfg.path(),
        &serde_json::json!({"auths": {}, "credHelpers": {reg.host(): "test"}}),
    );
    let c = RegistryClient::new(ClientOptions {
        credential_helper_dir: Some(helpers.path().to_path_buf()),
        ..opts(cfg.path())
    })
    .unwrap();
    c.push(
        &img.request(&reg.reference("acme/helper"), &["1"]),
        &no_progress(),
    )
    .expect("push with credential helper");
    assert_eq!(std::fs::read_to_string(&seen).unwrap(), reg.host());

    // credsStore applies to registries without their own entry.
    write_config(cfg.path(), &serde_json::json!({"credsStore": "test"}));
    let c = RegistryClient::new(ClientOptions {
        credential_helper_dir: Some(helpers.path().to_path_buf()),
        ..opts(cfg.path())
    })
    .unwrap();
    c.push(
        &img.request(&reg.reference("acme/helper2"), &["1"]),
        &no_progress(),
    )
    .expect("push with credsStore");
}

#[test]
fn bearer_token_flow_with_scopes() {
    let reg = TestRegistry::start_token("tokuser", "tokpass");
    let work = tempfile::tempdir().unwrap();
    let img = make_image(work.path(), "tok", "amd64", &[20_000], false);
    let cfg = tempfile::tempdir().unwrap();
    let b64 = base64::engine::general_purpose::STANDARD.encode("tokuser:tokpass");
    write_config(
        cfg.path(),
        &serde_json::json!({"auths": {reg.host(): {"auth": b64}}}),
    );
    let c = client(cfg.path());
    let base = reg.reference("lib/tokbase");
    c.push(&img.request(&base, &["1"]), &no_progress())
        .expect("push via bearer");
    let req = PushRequest {
        target: reg.reference("acme/tok"),
        tags: vec!["1".into()],
        blobs: img.blobs_from(&base),
        manifests: vec![img.push_manifest()],
    };
    let rep = c.push(&req, &no_progress()).expect("mount via bearer");
    assert!(rep.blobs.iter().all(|(_, a, _)| *a == BlobAction::Mounted));
    let pulled = c
        .pull_image(
            &base.with_tag("1"),
            &Platform::parse("linux/amd64").unwrap(),
        )
        .expect("pull via bearer");
    assert_eq!(pulled.manifest_digest, img.manifest_digest);

    let scopes = reg.token_scopes();
    assert!(
        scopes.contains(&"repository:lib/tokbase:pull,push".to_string()),
        "{scopes:?}"
    );
    assert!(
        scopes.contains(&"repository:acme/tok:pull,push".to_string()),
        "{scopes:?}"
    );
    assert!(
        scopes.contains(&"repository:lib/tokbase:pull".to_string()),
        "mount/pull scope: {scopes:?}"
    );
    // Tokens are cached per scope set: a handful, not one per request.
    assert!(
        reg.token_requests() <= 5,
        "{} token requests",
        reg.token_requests()
    );

    // An identity token (config.json `identitytoken`) goes through the OAuth2 refresh flow.
    let idt = tempfile::tempdir().unwrap();
    write_config(
        idt.path(),
        &serde_json::json!({"auths": {reg.host(): {"identitytoken": "tokpass"}}}),
    );
    client(idt.path())
        .push(
            &img.request(&reg.reference("acme/idt"), &["1"]),
            &no_progress(),
        )
        .expect("push with identity token");
    assert!(
        reg.token_scopes()
            .contains(&"repository:acme/idt:pull,push".to_string())
    );

    // Wrong credentials: the token service refuses; the error names the host, no secret.
    let bad = tempfile::tempdir().unwrap();
    let wrong = base64::engine::general_purpose::STANDARD.encode("tokuser:nope-secret");
    write_config(
        bad.path(),
        &serde_json::json!({"auths": {reg.host(): {"auth": wrong}}}),
    );
    let err = client(bad.path())
        .push(
            &img.request(&reg.reference("acme/tok2"), &["1"]),
            &no_progress(),
        )
        .unwrap_err();
    let shown = format!("{err} {err:?}");
    assert!(matches!(err, RegistryError::Auth { .. }), "{shown}");
    assert!(
        shown.contains(&reg.host()) && shown.contains("401"),
        "{shown}"
    );
    assert!(
        !shown.contains("nope-secret") && !shown.contains(&wrong),
        "{shown}"
    );
}

#[test]
fn big_blob_survives_dropped_connections_or_leaves_no_tag() {
    let reg = TestRegistry::start();
    let work = tempfile::tempdir().unwrap();
    let size = 64 << 20;
    let blob = work.path().join("weights.bin");
    let (digest, size) = noise_file(&blob, 42, size);
    let cfg_bytes =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let cfg_path = work.path().join("config.json");
    std::fs::write(&cfg_path, cfg_bytes).unwrap();
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": image::OCI_MANIFEST,
        "config": {"mediaType": image::OCI_CONFIG, "digest": image::sha256(cfg_bytes), "size": cfg_bytes.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest, "size": size}],
    }))
    .unwrap();
    let m_digest = image::sha256(&manifest);
    let direct = client(work.path());

    let mut ok = 0;
    let mut faults = 0;
    let progress_events = Mutex::new(0u32);
    let mut failures = Vec::new();
    for seed in 1..=10u64 {
        let proxy = FaultProxy::start(
            reg.port(),
            FaultConfig {
                seed,
                drop_prob: 0.15,
                max_drop_after: 64 << 20,
                stall_prob: 0.03,
                stall: Duration::from_millis(300),
                error_prob: 0.12,
                clean_first: 0,
                strip_mount: false,
            },
        );
        let c = RegistryClient::new(ClientOptions {
            // Alternate streamed and chunked uploads.
            chunk_size: (seed % 2 == 0).then_some(16 << 20),
            transport: retries(8),
            ..opts(work.path())
        })
        .unwrap();
        let repo = format!("fault/s{seed}");
        let target =
            mlimg::registry::Reference::parse(&format!("{}/{repo}", proxy.host())).unwrap();
        let req = PushRequest {
            target,
            tags: vec!["v1".into()],
            blobs: vec![
                PushBlob {
                    digest: digest.clone(),
                    size,
                    media_type: "application/vnd.oci.image.layer.v1.tar".into(),
                    origin: BlobOrigin::File(blob.clone()),
                },
                PushBlob {
                    digest: image::sha256(cfg_bytes),
                    size: cfg_bytes.len() as u64,
                    media_type: image::OCI_CONFIG.into(),
                    origin: BlobOrigin::File(cfg_path.clone()),
                },
            ],
            manifests: vec![mlimg::registry::PushManifest {
                digest: m_digest.clone(),
                media_type: image::OCI_MANIFEST.into(),
                bytes: manifest.clone(),
            }],
        };
        let t0 = std::time::Instant::now();
        let r = c.push(&req, &|e| {
            if let PushEvent::BlobProgress { sent, size, .. } = e {
                assert!(sent <= size);
                *progress_events.lock().unwrap() += 1;
            }
        });
        eprintln!(
            "seed {seed}: {:?} in {:?}, {} faults",
            r.as_ref().map(|_| ()),
            t0.elapsed(),
            proxy.faults()
        );
        faults += proxy.faults();
        drop(proxy);
        let direct_ref = reg.reference(&repo);
        match r {
            Ok(rep) => {
                ok += 1;
                assert_eq!(rep.manifest_digest, m_digest);
                let pulled = direct
                    .pull_image(
                        &direct_ref.with_tag("v1"),
                        &Platform::parse("linux/amd64").unwrap(),
                    )
                    .unwrap();
                assert_eq!(pulled.layers[0].digest, digest);
            }
            Err(e) => {
                assert!(
                    !tag_exists(&direct, &direct_ref, "v1"),
                    "failed push left a tag: {e}"
                );
                failures.push(format!("seed {seed}: {e}"));
            }
        }
    }
    // Some uploads resumed from the session's reported range instead of restarting.
    let resumed = reg
        .requests()
        .iter()
        .filter(|l| {
            l.starts_with("GET /v2/fault/") && l.contains("/blobs/uploads/") && l.ends_with(" 204")
        })
        .count();
    assert!(resumed >= 1, "no upload was resumed");
    assert!(
        *progress_events.lock().unwrap() > 0,
        "no progress reported for 64 MiB blobs"
    );
    assert!(
        faults >= 10,
        "the proxy injected too few faults ({faults}) to mean anything"
    );
    assert!(ok >= 9, "only {ok}/10 pushes survived: {failures:?}");
}

#[test]
fn a_push_that_cannot_finish_leaves_no_manifest_and_no_tag() {
    let reg = TestRegistry::start();
    let work = tempfile::tempdir().unwrap();
    let img = make_image(work.path(), "doomed", "amd64", &[2_000_000], false);
    // Every request is cut after at most 100 kB: small ones get through, the layer never.
    let proxy = FaultProxy::start(
        reg.port(),
        FaultConfig {
            drop_prob: 1.0,
            max_drop_after: 100_000,
            ..FaultConfig::clean()
        },
    );
    let c = RegistryClient::new(ClientOptions {
        max_parallel_uploads: 1,
        transport: retries(3),
        ..opts(work.path())
    })
    .unwrap();
    let target =
        mlimg::registry::Reference::parse(&format!("{}/acme/doomed", proxy.host())).unwrap();
    let events = Mutex::new(0);
    let err = c.push(&img.request(&target, &["v1"]), &|e| {
        if matches!(e, PushEvent::BlobRetry { .. }) {
            *events.lock().unwrap() += 1;
        }
    });
    let err = err.unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert!(err.to_string().contains("acme/doomed"), "{err}");
    assert!(*events.lock().unwrap() >= 3, "retries were reported");
    drop(proxy);
    assert!(!tag_exists(&c, &reg.reference("acme/doomed"), "v1"));
    assert!(
        !reg.requests()
            .iter()
            .any(|l| l.starts_with("PUT /v2/acme/doomed/manifests/")),
        "no manifest may be pushed before every blob is confirmed"
    );
}

/// Peak resident memory of this process, in MiB.
fn peak_rss_mib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<u64>()
        .unwrap()
        / 1024
}

/// Peak memory is a per-process number and the tests share one process, so this test re-runs
/// itself alone in a child process (same binary, `--exact`) and measures there.
#[test]
fn a_192_mib_blob_streams_through_push_copy_and_pull_with_flat_memory() {
    const NAME: &str =
        "registry::a_192_mib_blob_streams_through_push_copy_and_pull_with_flat_memory";
    if std::env::var_os("MLIMG_MEMORY_CHILD").is_none() {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([NAME, "--exact", "--test-threads=1", "--nocapture"])
            .env("MLIMG_MEMORY_CHILD", "1")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && text.contains("1 passed"),
            "child run failed:\n{text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        return;
    }
    let src_reg = TestRegistry::start();
    let dst_reg = TestRegistry::start();
    let work = tempfile::tempdir().unwrap();
    let path = work.path().join("big.bin");
    let (digest, size) = noise_file(&path, 99, 192 << 20);
    let cfg = br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let cfg_path = work.path().join("cfg.json");
    std::fs::write(&cfg_path, cfg).unwrap();
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": image::OCI_MANIFEST,
        "config": {"mediaType": image::OCI_CONFIG, "digest": image::sha256(cfg), "size": cfg.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest, "size": size}],
    }))
    .unwrap();
    let pm = mlimg::registry::PushManifest {
        digest: image::sha256(&manifest),
        media_type: image::OCI_MANIFEST.into(),
        bytes: manifest,
    };
    let blobs = |origin_layer: BlobOrigin, origin_cfg: BlobOrigin| {
        vec![
            PushBlob {
                digest: digest.clone(),
                size,
                media_type: "application/vnd.oci.image.layer.v1.tar".into(),
                origin: origin_layer,
            },
            PushBlob {
                digest: image::sha256(cfg),
                size: cfg.len() as u64,
                media_type: image::OCI_CONFIG.into(),
                origin: origin_cfg,
            },
        ]
    };
    let c = client(work.path());
    let src = src_reg.reference("big/src");
    c.push(
        &PushRequest {
            target: src.clone(),
            tags: vec!["1".into()],
            blobs: blobs(
                BlobOrigin::File(path.clone()),
                BlobOrigin::File(cfg_path.clone()),
            ),
            manifests: vec![pm.clone()],
        },
        &no_progress(),
    )
    .expect("push from file");
    c.push(
        &PushRequest {
            target: dst_reg.reference("big/dst"),
            tags: vec!["1".into()],
            blobs: blobs(
                BlobOrigin::Registry(src.clone()),
                BlobOrigin::Registry(src.clone()),
            ),
            manifests: vec![pm],
        },
        &no_progress(),
    )
    .expect("registry-to-registry copy");
    std::fs::remove_file(&path).unwrap();
    let dest = work.path().join("pulled.bin");
    c.blob_to_file(&dst_reg.reference("big/dst"), &digest, size, &dest)
        .expect("pull to file");
    assert_eq!(std::fs::metadata(&dest).unwrap().len(), size);
    let peak = peak_rss_mib();
    assert!(
        peak < 150,
        "peak RSS {peak} MiB: a 192 MiB blob was buffered somewhere"
    );
}

#[test]
fn corrupt_source_blob_is_caught_naming_the_digest() {
    let src_reg = TestRegistry::start();
    let dst_reg = TestRegistry::start();
    let work = tempfile::tempdir().unwrap();
    let img = make_image(work.path(), "corrupt", "amd64", &[50_000], false);
    let c = client(work.path());
    let src = src_reg.reference("lib/src");
    c.push(&img.request(&src, &["1"]), &no_progress()).unwrap();

    // Flip one byte of the stored layer (same size): the registry will serve it as is.
    let layer = &img.layers[0];
    let data = src_reg.blob_path(&layer.digest);
    let mut bytes = std::fs::read(&data).unwrap();
    bytes[100] ^= 0xff;
    std::fs::write(&data, &bytes).unwrap();

    let req = PushRequest {
        target: dst_reg.reference("acme/dst"),
        tags: vec!["1".into()],
        blobs: img.blobs_from(&src),
        manifests: vec![img.push_manifest()],
    };
    let err = c.push(&req, &no_progress()).unwrap_err();
    assert!(matches!(err, RegistryError::DigestMismatch { .. }), "{err}");
    assert!(err.to_string().contains(&layer.digest), "{err}");
    assert!(!tag_exists(&c, &dst_reg.reference("acme/dst"), "1"));

    // Pulling it to a file fails the same way and leaves nothing behind.
    let dest = work.path().join("out").join("layer.tar.gz");
    std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
    let err = c
        .blob_to_file(&src, &layer.digest, layer.size, &dest)
        .unwrap_err();
    assert!(err.to_string().contains(&layer.digest), "{err}");
    assert!(!dest.exists());
    assert_eq!(
        std::fs::read_dir(dest.parent().unwrap()).unwrap().count(),
        0,
        "temp file left"
    );

    // A source that lacks the blob: a clean, unretried 404 naming the source repository.
    let missing = src_reg.reference("lib/empty");
    let err = c
        .push(
            &PushRequest {
                target: dst_reg.reference("acme/dst3"),
                tags: vec!["1".into()],
                blobs: img.blobs_from(&missing),
                manifests: vec![img.push_manifest()],
            },
            &no_progress(),
        )
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!(
            "pull from {}/lib/empty: GET blob sha256:",
            src_reg.host()
        )),
        "{msg}"
    );
    assert!(msg.contains("404") && msg.contains("BLOB_UNKNOWN"), "{msg}");
    let gets = src_reg
        .requests()
        .iter()
        .filter(|l| l.starts_with("GET /v2/lib/empty/blobs/"))
        .count();
    assert!(
        gets <= 2,
        "a missing source blob is not retried ({gets} GETs)"
    );

    // A local file that does not match its declared digest is refused before the PUT.
    let mut local = img.blobs();
    let bogus = work.path().join("bogus.bin");
    std::fs::write(&bogus, vec![7u8; layer.size as usize]).unwrap();
    local[0].origin = BlobOrigin::File(bogus);
    let err = c
        .push(
            &PushRequest {
                target: dst_reg.reference("acme/dst2"),
                tags: vec!["1".into()],
                blobs: local,
                manifests: vec![img.push_manifest()],
            },
            &no_progress(),
        )
        .unwrap_err();
    assert!(err.to_string().contains(&layer.digest), "{err}");
    assert!(!tag_exists(&c, &dst_reg.reference("acme/dst2"), "1"));
}

#[test]
fn pull_picks_the_platform_from_an_index_and_keeps_docker_media_types() {
    let reg = TestRegistry::start();
    let work = tempfile::tempdir().unwrap();
    let amd = make_image(work.path(), "multi", "amd64", &[30_000], false);
    let arm = make_image(work.path(), "multi", "arm64", &[40_000], true);
    let index = make_index(&[&amd, &arm]);
    let mut blobs = amd.blobs();
    blobs.extend(arm.blobs());
    let c = client(work.path());
    let target = reg.reference("acme/multi");
    let rep = c
        .push(
            &PushRequest {
                target: target.clone(),
                tags: vec!["1".into()],
                blobs,
                manifests: vec![amd.push_manifest(), arm.push_manifest(), index.clone()],
            },
            &no_progress(),
        )
        .expect("push index");
    assert_eq!(rep.manifest_digest, index.digest);

    let r = target.with_tag("1");
    let p = c
        .pull_image(&r, &Platform::parse("linux/arm64/v8").unwrap())
        .unwrap();
    assert_eq!(p.index_digest.as_deref(), Some(index.digest.as_str()));
    assert_eq!(p.manifest_digest, arm.manifest_digest);
    assert_eq!(p.manifest_media_type, image::DOCKER_MANIFEST);
    assert_eq!(p.config_bytes, arm.config);
    assert_eq!(p.layers[0].media_type, image::DOCKER_LAYER_GZIP);
    assert_eq!(p.layers[0].digest, arm.layers[0].digest);

    let p = c
        .pull_image(&r, &Platform::parse("linux/amd64").unwrap())
        .unwrap();
    assert_eq!(p.manifest_digest, amd.manifest_digest);
    assert_eq!(p.layers[0].media_type, image::OCI_LAYER_GZIP);

    let err = c
        .pull_image(&r, &Platform::parse("linux/s390x").unwrap())
        .unwrap_err();
    assert!(
        matches!(err, RegistryError::PlatformNotFound { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("linux/amd64"), "{err}");

    // A single-platform manifest pulled for another platform is refused too.
    let single = target.with_digest(&amd.manifest_digest);
    assert!(
        c.pull_image(&single, &Platform::parse("linux/arm64").unwrap())
            .is_err()
    );

    let (top, per) = c.resolve_digests(&r).unwrap();
    assert_eq!(top, index.digest);
    assert_eq!(per.len(), 2);
    assert!(per.contains(&(
        Platform::parse("linux/arm64").unwrap(),
        arm.manifest_digest.clone()
    )));
    let (top, per) = c.resolve_digests(&single).unwrap();
    assert_eq!(top, amd.manifest_digest);
    assert_eq!(
        per,
        vec![(
            Platform::parse("linux/amd64").unwrap(),
            amd.manifest_digest.clone()
        )]
    );

    // Blobs download verified into place.
    let dest: PathBuf = work.path().join("dl").join("layer");
    std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
    c.blob_to_file(&r, &arm.layers[0].digest, arm.layers[0].size, &dest)
        .unwrap();
    assert_eq!(image::sha256_file(&dest), arm.layers[0].digest);
    let _: &TestImage = &amd;
}
