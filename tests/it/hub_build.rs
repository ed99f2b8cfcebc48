//! `mlimg build` with `hf://` weights, through the CLI against the stand-in Hub.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use mlimg::registry::RegistryClient;

use crate::common::hub::{Hub, HubFileData, safetensors, tiny_model_files};
use crate::common::*;

pub const REPO: &str = "acme/tiny";
/// The CI runners' shared-cache key in these tests (`MLIMG_CACHE_KEY`).
pub const CACHE_KEY: &str = "ci-runners-secret-0123456789abcdef";

/// A project with one Hub weights entry, its own Hub stand-in and hub cache.
pub struct HubProject {
    pub cx: TestContext,
    pub hub: Hub,
    pub spec: PathBuf,
}

impl HubProject {
    /// `weights` is extra TOML lines for the `[[weights]]` entry.
    pub fn new(weights: &str) -> HubProject {
        let cx = TestContext::new();
        let hub = Hub::start(REPO);
        let spec = cx.path().join("mlimg.toml");
        let p = HubProject { cx, hub, spec };
        p.write_spec(weights);
        p
    }

    pub fn write_spec(&self, weights: &str) {
        self.write_spec_named(weights, None)
    }

    pub fn write_spec_named(&self, weights: &str, name: Option<&str>) {
        // --push needs a tag: the one docker would have used
        let name = name.map_or(String::new(), |n| {
            format!("name = \"{n}\"\ntags = [\"latest\"]\n")
        });
        std::fs::write(
            &self.spec,
            format!(
                "[image]\n{name}base = \"scratch\"\nplatforms = [\"linux/amd64\"]\n\n\
                 [[weights]]\nname = \"tiny\"\nsource = \"hf://{REPO}\"\ndest = \"/models/tiny\"\n{weights}\n\n\
                 [config]\nenv = {{ MODEL_PATH = \"${{weights.tiny.dest}}\" }}\n"
            ),
        )
        .expect("write spec");
    }

    pub fn hf_home(&self) -> PathBuf {
        self.cx.path().join("hfhome")
    }

    /// mlimg with HF_* pointing at the stand-in and a private hub cache (no token).
    pub fn mlimg(&self) -> Command {
        let mut c = self.cx.mlimg();
        c.env("HF_ENDPOINT", self.hub.endpoint())
            .env("HF_HOME", self.hf_home())
            .env("HF_HUB_CACHE", self.hf_home().join("hub"))
            .env_remove("HF_TOKEN")
            .env_remove("HF_TOKEN_PATH")
            .env_remove("HUGGINGFACE_HUB_CACHE")
            .current_dir(self.cx.path());
        c
    }

    pub fn lock(&self) -> Output {
        run_ok(self.mlimg().arg("lock").arg("-f").arg(&self.spec))
    }

    pub fn build_cmd(&self, extra: &[&str]) -> Command {
        let mut c = self.mlimg();
        c.arg("build").arg("-f").arg(&self.spec).arg("--json");
        c.args(extra);
        c
    }

    /// A build that must succeed: the report and stderr.
    pub fn build(&self, extra: &[&str]) -> (serde_json::Value, String) {
        let out = run_ok(&mut self.build_cmd(extra));
        let report = serde_json::from_slice(&out.stdout).expect("--json report");
        (report, String::from_utf8_lossy(&out.stderr).into_owned())
    }

    /// A build that must fail: its stderr.
    pub fn build_fails(&self, extra: &[&str]) -> String {
        let out = self.build_cmd(extra).output().expect("run mlimg");
        assert!(
            !out.status.success(),
            "build should fail; stdout: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    pub fn layout(&self, name: &str) -> (PathBuf, String) {
        let d = self.cx.path().join(name);
        (d.clone(), format!("oci:{}", d.display()))
    }
}

/// Digests of the report's layers with this role, in order.
pub fn digests(report: &serde_json::Value, role: &str) -> Vec<String> {
    report["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .filter(|l| l["role"] == role)
        .map(|l| l["digest"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// Regular files (path → bytes) of every layer of the single image in an OCI layout.
pub fn layout_files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let read_json = |p: PathBuf| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(&p).expect("read")).expect("json")
    };
    let blob = |d: &str| {
        dir.join("blobs/sha256")
            .join(d.trim_start_matches("sha256:"))
    };
    let index = read_json(dir.join("index.json"));
    let m = read_json(blob(
        index["manifests"][0]["digest"].as_str().expect("manifest"),
    ));
    let mut out = BTreeMap::new();
    for l in m["layers"].as_array().expect("layers") {
        let mt = l["mediaType"].as_str().unwrap_or_default();
        assert!(
            mt.ends_with(".tar"),
            "weights layers are uncompressed: {mt}"
        );
        let f = std::fs::File::open(blob(l["digest"].as_str().expect("digest"))).expect("blob");
        let mut a = tar::Archive::new(f);
        for e in a.entries().expect("tar") {
            let mut e = e.expect("entry");
            if e.header().entry_type().is_file() {
                let p = e.path().expect("path").to_string_lossy().into_owned();
                let mut b = Vec::new();
                e.read_to_end(&mut b).expect("read entry");
                out.insert(p, b);
            }
        }
    }
    out
}

fn tiny_with(model_seed: u32) -> BTreeMap<String, HubFileData> {
    let mut files = tiny_model_files(1);
    files.insert(
        "model.safetensors".into(),
        HubFileData::new(safetensors(&[("weight", 65_536)], model_seed), true),
    );
    files
}

#[test]
fn hub_weights_land_under_dest_verified_and_env_points_there() {
    let p = HubProject::new(
        "include = [\"*.json\", \"*.safetensors\"]\nexclude = [\"text_encoder/*\"]",
    );
    let (dir, out) = p.layout("out");
    let (report, _) = p.build(&["-o", &out]);
    assert_eq!(digests(&report, "weights tiny").len(), 1);
    let files = layout_files(&dir);
    let want = p.hub.files(&p.hub.branch("main"));
    let names: Vec<&str> = files.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "models/tiny/config.json",
            "models/tiny/model.safetensors",
            "models/tiny/tokenizer.json"
        ]
    );
    for (path, bytes) in &files {
        let rel = path.trim_start_matches("models/tiny/");
        assert_eq!(bytes.as_slice(), want[rel].bytes.as_slice(), "{path}");
    }
    // the user's hub cache holds them, in the standard layout
    assert!(
        p.hf_home()
            .join("hub/models--acme--tiny/snapshots")
            .join(p.hub.branch("main"))
            .join("model.safetensors")
            .exists()
    );
}

#[test]
fn subfolder_strips_the_prefix() {
    let p = HubProject::new("subfolder = \"text_encoder\"");
    let (dir, out) = p.layout("out");
    p.build(&["-o", &out]);
    let names: Vec<String> = layout_files(&dir).into_keys().collect();
    assert_eq!(
        names,
        ["models/tiny/config.json", "models/tiny/model.safetensors"]
    );
}

#[test]
fn locked_rebuild_of_unchanged_revision_neither_downloads_nor_reads_the_weights() {
    let p = HubProject::new("");
    p.lock();
    let (dir, out) = p.layout("out");
    let (first, _) = p.build(&["--locked", "-o", &out]);
    assert!(!layer_cached(&first, "weights tiny"));
    assert!(!p.hub.downloads().is_empty());

    // Take the weights away entirely: a rebuild that needed to read them would fail.
    std::fs::remove_dir_all(p.hf_home()).expect("rm hub cache");
    p.hub.clear_requests();
    let (dir2, out2) = p.layout("out2");
    let (second, _) = p.build(&["--locked", "-o", &out2]);
    assert!(layer_cached(&second, "weights tiny"));
    assert_eq!(first["manifest_digest"], second["manifest_digest"]);
    assert!(
        p.hub.requests().is_empty(),
        "a locked rebuild asks the Hub nothing: {:?}",
        p.hub.requests()
    );
    assert_eq!(layout_files(&dir), layout_files(&dir2));
}

#[test]
fn unlocked_rebuild_downloads_nothing() {
    let p = HubProject::new("");
    let (first, _) = p.build(&[]);
    p.hub.clear_requests();
    let (second, _) = p.build(&[]);
    assert!(layer_cached(&second, "weights tiny"));
    assert_eq!(first["manifest_digest"], second["manifest_digest"]);
    assert!(p.hub.downloads().is_empty(), "{:?}", p.hub.downloads());
}

#[test]
fn locked_build_keeps_the_old_commit_after_the_branch_moves() {
    let p = HubProject::new("");
    let old = p.hub.branch("main");
    p.lock();
    let lock = std::fs::read_to_string(p.cx.path().join("mlimg.lock")).expect("lock");
    assert!(lock.contains(&old), "{lock}");

    let new = p.hub.add_commit(tiny_with(7));
    p.hub.set_branch("main", &new);
    p.hub.clear_requests();

    let (dir, out) = p.layout("locked");
    let (locked, _) = p.build(&["--locked", "-o", &out]);
    for r in p.hub.requests() {
        assert!(
            !r.target.starts_with("/api/models/acme/tiny/revision/")
                && r.target != "/api/models/acme/tiny",
            "--locked asked the Hub to resolve a branch: {r:?}"
        );
        assert!(!r.target.contains("/main"), "{r:?}");
    }
    let files = layout_files(&dir);
    assert_eq!(
        files["models/tiny/model.safetensors"],
        *p.hub.files(&old)["model.safetensors"].bytes
    );

    // A plain build says the lock is stale and still builds the locked commit.
    let (plain, stderr) = p.build(&[]);
    assert!(
        stderr.contains("stale") && stderr.contains(&new) && stderr.contains(&old),
        "{stderr}"
    );
    assert_eq!(plain["manifest_digest"], locked["manifest_digest"]);

    // Re-locking moves to the new commit.
    p.lock();
    let lock = std::fs::read_to_string(p.cx.path().join("mlimg.lock")).expect("lock");
    assert!(lock.contains(&new) && !lock.contains(&old), "{lock}");
    let (dir, out) = p.layout("relocked");
    p.build(&["--locked", "-o", &out]);
    assert_eq!(
        layout_files(&dir)["models/tiny/model.safetensors"],
        *p.hub.files(&new)["model.safetensors"].bytes
    );
}

#[test]
fn spec_change_makes_the_lock_stale() {
    let p = HubProject::new("revision = \"main\"");
    p.lock();
    let v2 = p.hub.add_commit(tiny_with(9));
    p.hub.set_branch("v2", &v2);
    p.write_spec("revision = \"v2\"");
    let err = p.build_fails(&["--locked"]);
    assert!(
        err.contains("--locked")
            && err.contains("weights \"tiny\"")
            && err.contains("revision changed")
            && err.contains("mlimg lock"),
        "{err}"
    );
    // a plain build reports it and builds what the spec asks for now
    let (dir, out) = p.layout("out");
    let (_, stderr) = p.build(&["-o", &out]);
    assert!(
        stderr.contains("stale") && stderr.contains("revision changed"),
        "{stderr}"
    );
    assert_eq!(
        layout_files(&dir)["models/tiny/model.safetensors"],
        *p.hub.files(&v2)["model.safetensors"].bytes
    );
}

#[test]
fn locked_without_a_lock_fails_with_a_hint() {
    let p = HubProject::new("");
    let err = p.build_fails(&["--locked"]);
    assert!(
        err.contains("mlimg.lock") && err.contains("mlimg lock"),
        "{err}"
    );
}

#[test]
fn per_file_layers_change_exactly_one_layer_per_changed_file() {
    let p = HubProject::new("layers = \"per-file\"");
    p.lock();
    let (first, _) = p.build(&["--locked"]);
    let a = digests(&first, "weights tiny");
    assert_eq!(a.len(), 6, "one layer per file: {first}");

    let new = p.hub.add_commit(tiny_with(42));
    p.hub.set_branch("main", &new);
    p.lock();
    p.hub.clear_requests();
    let (second, _) = p.build(&["--locked"]);
    let b = digests(&second, "weights tiny");
    assert_eq!(a.len(), b.len());
    let changed: Vec<usize> = (0..a.len()).filter(|&i| a[i] != b[i]).collect();
    assert_eq!(changed.len(), 1, "{a:?}\n{b:?}");
    // only the changed file was downloaded
    let dl = p.hub.downloads();
    let new_sha = &p.hub.files(&new)["model.safetensors"].sha256;
    assert!(
        !dl.is_empty() && dl.iter().all(|r| r.target.contains(new_sha.as_str())),
        "{dl:?}"
    );
    let layers = second["layers"].as_array().expect("layers");
    let cached = layers.iter().filter(|l| l["cached"] == true).count();
    assert_eq!(cached, 5, "{second}");
}

#[test]
fn broken_download_resumes_and_the_build_succeeds() {
    let p = HubProject::new("");
    p.hub.cut_once("model.safetensors", 100_000);
    let (dir, out) = p.layout("out");
    let (_, stderr) = p.build(&["-o", &out]);
    let ranged = p.hub.requests().into_iter().any(|r| {
        r.range
            .as_deref()
            .is_some_and(|r| r.starts_with("bytes=100000-"))
    });
    assert!(ranged, "{:?}", p.hub.requests());
    assert!(stderr.contains("model.safetensors"), "{stderr}");
    assert_eq!(
        layout_files(&dir)["models/tiny/model.safetensors"],
        *p.hub.files(&p.hub.branch("main"))["model.safetensors"].bytes
    );
}

#[test]
fn corrupted_bytes_fail_the_build_naming_the_file() {
    let p = HubProject::new("");
    p.lock();
    p.hub.corrupt("model.safetensors");
    let (dir, out) = p.layout("out");
    let err = p.build_fails(&["--locked", "-o", &out]);
    assert!(
        err.contains("model.safetensors") && err.contains("weights tiny"),
        "{err}"
    );
    assert!(!dir.exists(), "nothing written");
}

#[test]
fn gated_repo_without_token_says_to_set_hf_token() {
    let p = HubProject::new("");
    p.hub.set_gated("hf_secret");
    let err = p.build_fails(&[]);
    assert!(err.contains("HF_TOKEN") && err.contains(REPO), "{err}");
    assert!(!err.contains("hf_secret"));
    let out = p
        .build_cmd(&[])
        .env("HF_TOKEN", "hf_secret")
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn many_files(n: usize) -> BTreeMap<String, HubFileData> {
    (0..n)
        .map(|i| {
            (
                format!("shards/{i:04}.bin"),
                HubFileData::new(format!("shard {i}\n").into_bytes(), true),
            )
        })
        .collect()
}

#[test]
fn layer_budget_warns_above_100_and_refuses_above_500() {
    let p = HubProject::new("layers = \"per-file\"");
    let c = p.hub.add_commit(many_files(101));
    p.hub.set_branch("main", &c);
    let out = run_ok(&mut p.build_cmd(&["--dry-run"]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("warning") && stderr.contains("101 layers"),
        "{stderr}"
    );

    let c = p.hub.add_commit(many_files(501));
    p.hub.set_branch("main", &c);
    let err = p.build_fails(&["--dry-run"]);
    assert!(
        err.contains("501 layers") && err.contains("500") && err.contains("hint"),
        "{err}"
    );
    let err = p.build_fails(&[]);
    assert!(err.contains("501 layers"), "{err}");
    assert!(
        p.hub.downloads().is_empty(),
        "the budget is checked before downloading: {:?}",
        p.hub.downloads()
    );
}

#[test]
fn fresh_runner_finds_the_weights_layer_in_the_registry_and_moves_no_weight_bytes() {
    let reg = crate::common::registry::TestRegistry::start();
    let p = HubProject::new("layers = \"per-file\"");
    let name = format!("{}/acme/tiny-svc", reg.host());
    p.write_spec_named("layers = \"per-file\"", Some(&name));
    p.lock();

    // Runner A: downloads from the Hub, builds, pushes, publishes the selector records.
    let out = run_ok(
        p.build_cmd(&["--locked", "--push"])
            .env("MLIMG_CACHE_KEY", CACHE_KEY),
    );
    let a: serde_json::Value = serde_json::from_slice(&out.stdout).expect("report");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(a["hub_bytes_downloaded"].as_u64().unwrap_or(0) > 0, "{a}");
    assert!(stderr.contains("shared layer cache"), "{stderr}");
    let weights: Vec<&serde_json::Value> = a["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .filter(|l| l["role"] == "weights tiny")
        .collect();
    assert_eq!(weights.len(), 6);
    assert!(weights.iter().all(|l| l["push"] == "uploaded"), "{a}");
    let tags = reg.requests();
    let records = tags
        .iter()
        .filter(|r| r.starts_with("PUT /v2/acme/tiny-svc/manifests/mlimg-sel-"))
        .count();
    assert_eq!(records, 6, "one record per weights layer: {tags:#?}");

    // Runner B: empty mlimg cache, empty hub cache, no Hub at all.
    let before = reg.requests().len();
    let cache_b = p.cx.path().join("cache-b");
    let out = run_ok(
        p.build_cmd(&["--locked", "--push"])
            .env("MLIMG_CACHE_KEY", CACHE_KEY)
            .env("MLIMG_CACHE_DIR", &cache_b)
            .env("HF_HOME", p.cx.path().join("hfhome-b"))
            .env("HF_HUB_CACHE", p.cx.path().join("hfhome-b/hub"))
            .env("HF_ENDPOINT", "http://127.0.0.1:9"),
    );
    let b: serde_json::Value = serde_json::from_slice(&out.stdout).expect("report");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(b["manifest_digest"], a["manifest_digest"], "{stderr}");
    assert_eq!(b["hub_bytes_downloaded"], 0, "{b}");
    for l in b["layers"].as_array().expect("layers") {
        assert_eq!(l["push"], "skipped", "{b}");
        assert_eq!(l["bytes_sent"], 0, "{b}");
    }
    assert_eq!(b["push"]["bytes_sent"], 0, "{b}");
    // the registry saw no upload and no blob download
    let new: Vec<String> = reg.requests().into_iter().skip(before).collect();
    assert!(
        new.iter().all(
            |r| !r.contains("/blobs/uploads") && !r.starts_with("GET /v2/acme/tiny-svc/blobs/")
        ),
        "{new:#?}"
    );
    // and runner B's cache holds no weight bytes
    for l in b["layers"].as_array().expect("layers") {
        let d = l["digest"].as_str().expect("digest");
        assert!(
            !cache_b
                .join("blobs/sha256")
                .join(d.trim_start_matches("sha256:"))
                .exists(),
            "{d} was stored locally"
        );
    }
    assert!(
        !p.cx
            .path()
            .join("hfhome-b/hub/models--acme--tiny/blobs")
            .exists()
    );
}

#[test]
fn a_file_output_never_uses_a_layer_that_exists_only_in_the_registry() {
    let reg = crate::common::registry::TestRegistry::start();
    let p = HubProject::new("");
    let name = format!("{}/acme/tiny-out", reg.host());
    p.write_spec_named("", Some(&name));
    p.lock();
    run_ok(
        p.build_cmd(&["--locked", "--push"])
            .env("MLIMG_CACHE_KEY", CACHE_KEY),
    );
    // A fresh runner that also wants a layout must have the bytes: it downloads them.
    let (dir, out) = p.layout("out");
    let cache_b = p.cx.path().join("cache-c");
    let o = run_ok(
        p.build_cmd(&["--locked", "--push", "-o", &out])
            .env("MLIMG_CACHE_KEY", CACHE_KEY)
            .env("MLIMG_CACHE_DIR", &cache_b)
            .env("HF_HOME", p.cx.path().join("hfhome-c"))
            .env("HF_HUB_CACHE", p.cx.path().join("hfhome-c/hub")),
    );
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).expect("report");
    assert!(r["hub_bytes_downloaded"].as_u64().unwrap_or(0) > 0, "{r}");
    assert!(layout_files(&dir).contains_key("models/tiny/model.safetensors"));
}

/// Selector → layer digest of every record `mlimg-sel-…` the registry saw published in `repo`.
fn published_records(
    reg: &crate::common::registry::TestRegistry,
    c: &RegistryClient,
    repo: &str,
) -> BTreeMap<String, serde_json::Value> {
    let prefix = format!("PUT /v2/{repo}/manifests/mlimg-sel-");
    let mut out = BTreeMap::new();
    for r in reg.requests() {
        let Some(rest) = r.strip_prefix(&prefix) else {
            continue;
        };
        let sel: String = rest.chars().take(64).collect();
        let m = c
            .fetch_manifest(&reg.reference(&format!("{repo}:mlimg-sel-{sel}")))
            .expect("record");
        out.insert(sel, serde_json::from_slice(&m.bytes).expect("record json"));
    }
    out
}

fn registry_client(dir: &Path) -> RegistryClient {
    RegistryClient::new(mlimg::registry::ClientOptions {
        docker_config_dir: Some(dir.to_path_buf()),
        ..Default::default()
    })
    .expect("client")
}

/// An attacker who can push to the target repository (but has no key) replaces two selector
/// records: one points at their own tar (the weights file plus `etc/ld.so.preload`) with no
/// MAC, the other at the same tar with the honest record's MAC. A fresh runner ignores both
/// with a `shared-cache-untrusted` warning, downloads those files from the Hub and pushes the
/// same image runner A pushed.
#[test]
fn a_forged_shared_cache_record_is_ignored_and_the_layer_is_built_from_the_sources() {
    use mlimg::pipeline::shared_cache::{self, ANN_DIFF_ID, ANN_MAC, CacheKey, Lookup};
    use mlimg::registry::{BlobOrigin, PushBlob, PushManifest, PushRequest, sha256_digest};

    let reg = crate::common::registry::TestRegistry::start();
    let p = HubProject::new("layers = \"per-file\"");
    let name = format!("{}/acme/forged", reg.host());
    p.write_spec_named("layers = \"per-file\"", Some(&name));
    p.lock();
    let out = run_ok(
        p.build_cmd(&["--locked", "--push"])
            .env("MLIMG_CACHE_KEY", CACHE_KEY),
    );
    let a: serde_json::Value = serde_json::from_slice(&out.stdout).expect("report");
    let honest = digests(&a, "weights tiny");

    // The attacker's layer: the weights file they want to replace, and a preload library.
    let work = p.cx.path().join("attacker");
    std::fs::create_dir_all(&work).expect("mkdir");
    let evil = work.join("evil.tar");
    {
        let mut t = tar::Builder::new(std::fs::File::create(&evil).expect("tar"));
        for (path, body) in [
            ("models/tiny/model.safetensors", &b"not the model"[..]),
            ("etc/ld.so.preload", &b"/tmp/evil.so\n"[..]),
        ] {
            let mut h = tar::Header::new_gnu();
            h.set_size(body.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            t.append_data(&mut h, path, body).expect("append");
        }
        t.finish().expect("finish");
    }
    let evil_digest = sha256_digest(&std::fs::read(&evil).expect("read"));
    let evil_size = std::fs::metadata(&evil).expect("stat").len();
    let c = registry_client(&work);
    let repo = reg.reference("acme/forged");
    let records = published_records(&reg, &c, "acme/forged");
    assert_eq!(records.len(), 6, "{records:#?}");
    let mut forged = Vec::new();
    let mut pushed_blob = false;
    for (i, (sel, rec)) in records.iter().take(2).enumerate() {
        let mut rec = rec.clone();
        rec["layers"][0]["digest"] = evil_digest.clone().into();
        rec["layers"][0]["size"] = evil_size.into();
        rec["annotations"][ANN_DIFF_ID] = evil_digest.clone().into();
        if i == 0 {
            // no MAC at all
            rec["annotations"]
                .as_object_mut()
                .expect("annotations")
                .remove(ANN_MAC);
        } // else: the honest record's MAC, now over other bytes
        let bytes = serde_json::to_vec(&rec).expect("json");
        let mut blobs = vec![PushBlob {
            digest: sha256_digest(b"{}"),
            size: 2,
            media_type: shared_cache::EMPTY_MEDIA_TYPE.into(),
            origin: BlobOrigin::File(work.join("empty.json")),
        }];
        std::fs::write(work.join("empty.json"), "{}").expect("write");
        if !pushed_blob {
            blobs.push(PushBlob {
                digest: evil_digest.clone(),
                size: evil_size,
                media_type: "application/vnd.oci.image.layer.v1.tar".into(),
                origin: BlobOrigin::File(evil.clone()),
            });
            pushed_blob = true;
        }
        c.push(
            &PushRequest {
                target: repo.clone(),
                tags: vec![shared_cache::tag(sel)],
                blobs,
                manifests: vec![PushManifest {
                    digest: sha256_digest(&bytes),
                    media_type: crate::common::image::OCI_MANIFEST.into(),
                    bytes,
                }],
            },
            &|_| {},
        )
        .expect("the attacker can push");
        forged.push(sel.clone());
    }

    // Runner B: empty caches, the key, the Hub reachable.
    let out = run_ok(
        p.build_cmd(&["--locked", "--push"])
            .env("MLIMG_CACHE_KEY", CACHE_KEY)
            .env("MLIMG_CACHE_DIR", p.cx.path().join("cache-b"))
            .env("HF_HOME", p.cx.path().join("hfhome-b"))
            .env("HF_HUB_CACHE", p.cx.path().join("hfhome-b/hub")),
    );
    let b: serde_json::Value = serde_json::from_slice(&out.stdout).expect("report");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(digests(&b, "weights tiny"), honest, "{stderr}");
    assert_eq!(b["manifest_digest"], a["manifest_digest"], "{stderr}");
    assert!(
        !b.to_string().contains(&evil_digest),
        "the forged layer is not in the image: {b}"
    );
    let untrusted: Vec<&serde_json::Value> = b["warnings"]
        .as_array()
        .expect("warnings")
        .iter()
        .filter(|w| w["code"] == "shared-cache-untrusted")
        .collect();
    assert_eq!(untrusted.len(), 2, "{b}");
    assert!(
        untrusted.iter().any(|w| w["message"]
            .as_str()
            .is_some_and(|m| m.contains("no MAC") && m.contains(&forged[0]))),
        "{untrusted:?}"
    );
    assert!(
        stderr.contains("warning[shared-cache-untrusted]"),
        "{stderr}"
    );
    // the two forged layers were built from the Hub; the other four came from the records
    let cached = b["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .filter(|l| l["role"] == "weights tiny" && l["cached"] == true)
        .count();
    assert_eq!(cached, 4, "{b}");
    assert!(b["hub_bytes_downloaded"].as_u64().unwrap_or(0) > 0, "{b}");
    // and runner B put honest, signed records back in their place
    let key = CacheKey::new(CACHE_KEY).expect("key");
    for sel in &forged {
        match shared_cache::lookup(&c, &repo, sel, Some(&key)).expect("lookup") {
            Lookup::Hit(l) => assert!(honest.contains(&l.digest), "{l:?}"),
            other => panic!("{sel}: {other:?}"),
        }
    }
}

/// Without `MLIMG_CACHE_KEY` the registry-shared cache is off: no record is looked up or
/// published. `--shared-cache=unsigned` turns it on without authentication (a runner with a
/// key ignores those records); `--shared-cache=signed` without a key is a usage error.
#[test]
fn without_a_key_the_shared_cache_is_off_unless_unsigned_is_asked_for() {
    let reg = crate::common::registry::TestRegistry::start();
    let p = HubProject::new("");
    let name = format!("{}/acme/nokey", reg.host());
    p.write_spec_named("", Some(&name));
    p.lock();
    let (a, stderr) = p.build(&["--locked", "--push"]);
    let sel_requests = |reg: &crate::common::registry::TestRegistry| {
        reg.requests()
            .into_iter()
            .filter(|r| r.contains("mlimg-sel-"))
            .collect::<Vec<_>>()
    };
    assert_eq!(sel_requests(&reg), Vec::<String>::new(), "{stderr}");
    assert!(!stderr.contains("shared layer cache"), "{stderr}");
    let fresh = |dir: &str, extra: &[&str], key: Option<&str>| {
        let mut cmd = p.build_cmd(&[&["--locked", "--push"], extra].concat());
        cmd.env("MLIMG_CACHE_DIR", p.cx.path().join(dir).join("cache"))
            .env("HF_HOME", p.cx.path().join(dir).join("hf"))
            .env("HF_HUB_CACHE", p.cx.path().join(dir).join("hf/hub"));
        if let Some(k) = key {
            cmd.env("MLIMG_CACHE_KEY", k);
        }
        let o = run_ok(&mut cmd);
        serde_json::from_slice::<serde_json::Value>(&o.stdout).expect("report")
    };
    // a fresh runner without a key downloads again and asks for no record either
    let b = fresh("b", &[], None);
    assert_eq!(b["manifest_digest"], a["manifest_digest"]);
    assert!(b["hub_bytes_downloaded"].as_u64().unwrap_or(0) > 0, "{b}");
    assert_eq!(sel_requests(&reg), Vec::<String>::new());

    // unsigned, asked for: published without a MAC, and believed by another unsigned runner
    let (u, stderr) = p.build(&["--locked", "--push", "--shared-cache=unsigned"]);
    assert!(stderr.contains("record(s) published"), "{stderr}");
    let c = registry_client(p.cx.path());
    let records = published_records(&reg, &c, "acme/nokey");
    assert_eq!(records.len(), 1, "{records:#?}");
    assert!(
        records.values().all(|r| r["annotations"]
            .get(mlimg::pipeline::shared_cache::ANN_MAC)
            .is_none()),
        "{records:#?}"
    );
    let r = fresh("u2", &["--shared-cache=unsigned"], None);
    assert_eq!(r["manifest_digest"], u["manifest_digest"]);
    assert_eq!(r["hub_bytes_downloaded"], 0, "{r}");
    // a runner with a key does not believe them
    let k = fresh("k1", &[], Some(CACHE_KEY));
    assert!(k["hub_bytes_downloaded"].as_u64().unwrap_or(0) > 0, "{k}");
    assert!(
        k["warnings"]
            .as_array()
            .expect("warnings")
            .iter()
            .any(|w| w["code"] == "shared-cache-untrusted"),
        "{k}"
    );
    assert_eq!(k["manifest_digest"], u["manifest_digest"]);

    // signed without a key: a usage error
    let o = p
        .build_cmd(&["--locked", "--push", "--shared-cache=signed"])
        .output()
        .expect("run");
    assert_eq!(o.status.code(), Some(2));
    let err: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json error");
    assert_eq!(err["error"]["code"], "usage", "{err}");
    assert!(
        err["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("MLIMG_CACHE_KEY")),
        "{err}"
    );
    // a key too short to be a secret: also a usage error, and the key is not printed
    let o = p
        .build_cmd(&["--locked", "--push"])
        .env("MLIMG_CACHE_KEY", "hunter2")
        .output()
        .expect("run");
    assert_eq!(o.status.code(), Some(2));
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(all.contains("MLIMG_CACHE_KEY"), "{all}");
    assert!(!all.contains("hunter2"), "{all}");
}

/// Benchmark (scripts/bench-hub): a model of `MLIMG_BENCH_HUB_MIB` MiB (default 1024) in 4
/// shards, `layers = "per-file"`, built and pushed with `--locked --push` in these steps. Prints
/// one `BENCH {json}` line per step.
#[test]
#[ignore = "benchmark; run through scripts/bench-hub"]
fn bench_hub_rebuild_and_push() {
    let mib: usize = std::env::var("MLIMG_BENCH_HUB_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    let shard_floats = mib * (1 << 20) / 4 / 4;
    let model = |seeds: [u32; 4]| -> BTreeMap<String, HubFileData> {
        let mut files = BTreeMap::new();
        files.insert(
            "config.json".to_string(),
            HubFileData::new(b"{\"model_type\":\"bench\"}\n".to_vec(), false),
        );
        for (i, s) in seeds.iter().enumerate() {
            files.insert(
                format!("model-{i:05}-of-00004.safetensors"),
                HubFileData::new(safetensors(&[("w", shard_floats)], *s), true),
            );
        }
        files
    };
    let reg = crate::common::registry::TestRegistry::start();
    let p = HubProject::new("layers = \"per-file\"");
    let v1 = p.hub.add_commit(model([1, 2, 3, 4]));
    p.hub.set_branch("main", &v1);
    let name = format!("{}/bench/model", reg.host());
    let app = p.cx.path().join("app");
    std::fs::create_dir_all(&app).expect("mkdir");
    std::fs::write(app.join("serve.py"), "print('v1')\n").expect("write");
    let spec = |p: &HubProject| {
        p.write_spec_named("layers = \"per-file\"", Some(&name));
        let mut text = std::fs::read_to_string(&p.spec).expect("spec");
        text.push_str("\n[app]\nsrc = \"app\"\ndest = \"/app\"\n");
        std::fs::write(&p.spec, text).expect("spec");
    };
    spec(&p);
    let step = |label: &str, env: &[(&str, PathBuf)]| {
        let mut c = p.build_cmd(&["--locked", "--push"]);
        c.env("MLIMG_CACHE_KEY", CACHE_KEY);
        for (k, v) in env {
            c.env(k, v);
        }
        let t = std::time::Instant::now();
        let out = run_ok(&mut c);
        let secs = t.elapsed().as_secs_f64();
        let r: serde_json::Value = serde_json::from_slice(&out.stdout).expect("report");
        let weights_uploaded = r["layers"]
            .as_array()
            .expect("layers")
            .iter()
            .filter(|l| l["role"] == "weights tiny" && l["push"] == "uploaded")
            .count();
        println!(
            "BENCH {}",
            serde_json::json!({
                "step": label,
                "seconds": (secs * 100.0).round() / 100.0,
                "hub_bytes_downloaded": r["hub_bytes_downloaded"],
                "bytes_uploaded": r["push"]["bytes_sent"],
                "weights_layers_uploaded": weights_uploaded,
                "layers": r["layers"].as_array().map_or(0, Vec::len),
            })
        );
    };
    p.lock();
    step("cold: empty caches, build + push", &[]);
    std::fs::write(app.join("serve.py"), "print('v2')\n").expect("write");
    step("unchanged weights (app edited): rebuild + push", &[]);
    let v2 = p.hub.add_commit(model([1, 2, 3, 5]));
    p.hub.set_branch("main", &v2);
    p.lock();
    step("weights-only: 1 of 4 shards changed: rebuild + push", &[]);
    let v3 = p.hub.add_commit(model([6, 7, 8, 9]));
    p.hub.set_branch("main", &v3);
    p.lock();
    step("weights-only: all shards changed: rebuild + push", &[]);
    let fresh = p.cx.path().join("fresh");
    step(
        "fresh runner (empty caches, no Hub), same revision: rebuild + push",
        &[
            ("MLIMG_CACHE_DIR", fresh.join("cache")),
            ("HF_HOME", fresh.join("hf")),
            ("HF_HUB_CACHE", fresh.join("hf/hub")),
            ("HF_ENDPOINT", PathBuf::from("http://127.0.0.1:9")),
        ],
    );
}
