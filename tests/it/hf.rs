//! Hugging Face Hub source against the stand-in in `common::hub`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use mlimg::sources::hf::{self, HubError, HubEvent, HubFile, HubOptions, HubSnapshot, HubSource};

use crate::common::hub::{Hub, tiny_model_files};

const REPO: &str = "acme/tiny";

fn opts(hub: &Hub, cache: &Path, token: Option<&str>) -> HubOptions {
    HubOptions {
        endpoint: hub.endpoint(),
        token: token.map(str::to_string),
        cache_dir: cache.to_path_buf(),
        // Default retries; short waits.
        transport: mlimg::transport::TransportOptions {
            backoff: std::time::Duration::from_millis(20),
            ..Default::default()
        },
    }
}

fn source(revision: &str) -> HubSource {
    HubSource {
        repo: REPO.to_string(),
        revision: revision.to_string(),
        subfolder: None,
        include: vec![],
        exclude: vec![],
    }
}

fn paths(snap: &HubSnapshot) -> Vec<&str> {
    snap.files.iter().map(|f| f.path.as_str()).collect()
}

type Fetched = Result<Vec<(HubFile, PathBuf)>, HubError>;

/// Fetch, collecting events.
fn fetch(o: &HubOptions, snap: &HubSnapshot) -> (Fetched, Vec<HubEvent>) {
    let events = std::sync::Mutex::new(Vec::new());
    let r = hf::fetch(o, snap, &|e| {
        events.lock().unwrap_or_else(|p| p.into_inner()).push(e)
    });
    (r, events.into_inner().unwrap_or_else(|p| p.into_inner()))
}

fn repo_dir(cache: &Path) -> PathBuf {
    cache.join("models--acme--tiny")
}

fn incomplete_files(cache: &Path) -> Vec<PathBuf> {
    let blobs = repo_dir(cache).join("blobs");
    let Ok(rd) = std::fs::read_dir(&blobs) else {
        return vec![];
    };
    rd.flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "incomplete"))
        .collect()
}

#[test]
fn resolve_branch_to_commit_and_list_files() {
    let hub = Hub::start(REPO);
    let cache = tempfile::tempdir().unwrap();
    let snap = hf::resolve(&opts(&hub, cache.path(), None), &source("main")).unwrap();

    let main = hub.branch("main");
    assert_eq!(snap.commit, main);
    assert_eq!(snap.repo, REPO);
    assert_eq!(
        paths(&snap),
        [
            "README.md",
            "config.json",
            "model.safetensors",
            "text_encoder/config.json",
            "text_encoder/model.safetensors",
            "tokenizer.json",
        ]
    );
    let files = hub.files(&main);
    for f in &snap.files {
        let h = &files[&f.path];
        assert_eq!(f.size, h.bytes.len() as u64, "{}", f.path);
        if h.lfs {
            assert_eq!(f.sha256, h.sha256, "LFS sha256 of {}", f.path);
        } else {
            assert_eq!(
                f.sha256, "",
                "regular file {} has no sha256 before download",
                f.path
            );
        }
    }
    // One repo-info request and one tree request; nothing downloaded; branch recorded in refs/.
    let reqs = hub.requests();
    assert_eq!(reqs.len(), 2, "{reqs:?}");
    assert!(
        reqs[0]
            .target
            .starts_with("/api/models/acme/tiny/revision/main"),
        "{reqs:?}"
    );
    assert!(
        reqs[1]
            .target
            .starts_with(&format!("/api/models/acme/tiny/tree/{main}")),
        "{reqs:?}"
    );
    assert!(hub.downloads().is_empty());
    assert_eq!(
        std::fs::read_to_string(repo_dir(cache.path()).join("refs/main")).unwrap(),
        main
    );
}

#[test]
fn resolve_commit_sha_asks_no_branch() {
    let hub = Hub::start(REPO);
    let cache = tempfile::tempdir().unwrap();
    let main = hub.branch("main");
    let snap = hf::resolve(&opts(&hub, cache.path(), None), &source(&main)).unwrap();
    assert_eq!(snap.commit, main);
    assert_eq!(snap.files.len(), 6);
    let reqs = hub.requests();
    assert!(
        reqs.iter().all(|r| !r.target.contains("/revision/")),
        "{reqs:?}"
    );
    assert_eq!(reqs.len(), 1, "{reqs:?}");
}

#[test]
fn tree_listing_follows_pagination() {
    let hub = Hub::start(REPO);
    hub.set_tree_page_size(2);
    let cache = tempfile::tempdir().unwrap();
    let snap = hf::resolve(&opts(&hub, cache.path(), None), &source("main")).unwrap();
    assert_eq!(snap.files.len(), 6);
    let tree_requests = hub
        .requests()
        .iter()
        .filter(|r| r.target.contains("/tree/"))
        .count();
    // 6 files + 1 directory entry, 2 per page.
    assert_eq!(tree_requests, 4);
}

#[test]
fn include_exclude_and_subfolder() {
    let hub = Hub::start(REPO);
    let cache = tempfile::tempdir().unwrap();
    let o = opts(&hub, cache.path(), None);

    let s = HubSource {
        include: vec!["*.safetensors".into()],
        ..source("main")
    };
    let snap = hf::resolve(&o, &s).unwrap();
    assert_eq!(
        paths(&snap),
        ["model.safetensors", "text_encoder/model.safetensors"]
    );

    let s = HubSource {
        include: vec!["*.json".into()],
        exclude: vec!["tokenizer.json".into(), "text_encoder/**".into()],
        ..source("main")
    };
    let snap = hf::resolve(&o, &s).unwrap();
    assert_eq!(paths(&snap), ["config.json"]);

    // Globs are relative to the subfolder; paths stay relative to the repo root.
    let s = HubSource {
        subfolder: Some("text_encoder".into()),
        include: vec!["*.safetensors".into()],
        ..source("main")
    };
    let snap = hf::resolve(&o, &s).unwrap();
    assert_eq!(paths(&snap), ["text_encoder/model.safetensors"]);
    let listing = hub
        .requests()
        .into_iter()
        .rfind(|r| r.target.contains("/tree/"))
        .unwrap();
    assert!(
        listing.target.contains("/text_encoder?"),
        "lists only the subfolder: {listing:?}"
    );

    let s = HubSource {
        subfolder: Some("text_encoder".into()),
        ..source("main")
    };
    let snap = hf::resolve(&o, &s).unwrap();
    assert_eq!(
        paths(&snap),
        ["text_encoder/config.json", "text_encoder/model.safetensors"]
    );

    let s = HubSource {
        include: vec!["*.bin".into()],
        ..source("main")
    };
    let err = hf::resolve(&o, &s).unwrap_err();
    assert!(matches!(err, HubError::NoFiles { .. }), "{err:?}");
    assert!(err.to_string().contains("*.bin"), "{err}");

    let s = HubSource {
        subfolder: Some("vae".into()),
        ..source("main")
    };
    let err = hf::resolve(&o, &s).unwrap_err();
    assert!(
        err.to_string().contains("vae") && err.to_string().contains("404"),
        "{err}"
    );

    let s = HubSource {
        subfolder: Some("../x".into()),
        ..source("main")
    };
    assert!(matches!(
        hf::resolve(&o, &s),
        Err(HubError::InvalidSource { .. })
    ));
}

#[test]
fn unknown_revision_and_repo() {
    let hub = Hub::start(REPO);
    let cache = tempfile::tempdir().unwrap();
    let o = opts(&hub, cache.path(), None);
    let err = hf::resolve(&o, &source("no-such-branch")).unwrap_err();
    assert!(
        matches!(&err, HubError::RevisionNotFound { status: 404, .. }),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("no-such-branch") && err.to_string().contains(REPO),
        "{err}"
    );

    let err = hf::resolve(&o, &source(&"0".repeat(40))).unwrap_err();
    assert!(matches!(&err, HubError::RevisionNotFound { .. }), "{err:?}");

    let s = HubSource {
        repo: "acme/other".into(),
        ..source("main")
    };
    let err = hf::resolve(&o, &s).unwrap_err();
    assert!(
        matches!(&err, HubError::RepoNotFound { status: 401, .. }),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("acme/other") && err.to_string().contains("HF_TOKEN"),
        "{err}"
    );

    let s = HubSource {
        repo: "not-a-repo-id".into(),
        ..source("main")
    };
    assert!(matches!(
        hf::resolve(&o, &s),
        Err(HubError::InvalidSource { .. })
    ));
}

#[test]
fn fetch_verifies_and_lands_in_hub_cache_layout() {
    let hub = Hub::start(REPO);
    let cache = tempfile::tempdir().unwrap();
    let o = opts(&hub, cache.path(), None);
    let snap = hf::resolve(&o, &source("main")).unwrap();
    hub.clear_requests();
    let (r, events) = fetch(&o, &snap);
    let got = r.unwrap();

    let files = hub.files(&snap.commit);
    assert_eq!(got.len(), snap.files.len());
    for ((f, blob), want) in got.iter().zip(&snap.files) {
        let h = &files[&f.path];
        assert_eq!(f.path, want.path);
        assert_eq!(f.size, want.size);
        // sha256 now known for every file, LFS or not.
        assert_eq!(f.sha256, h.sha256, "{}", f.path);
        // Returned path is the blob, named like huggingface_hub names it.
        let etag = if h.lfs { &h.sha256 } else { &h.git_oid };
        assert_eq!(
            blob,
            &repo_dir(cache.path()).join("blobs").join(etag),
            "{}",
            f.path
        );
        assert_eq!(std::fs::read(blob).unwrap(), *h.bytes, "{}", f.path);
        // snapshots/{commit}/{path} is a relative symlink to the blob.
        let link = repo_dir(cache.path())
            .join("snapshots")
            .join(&snap.commit)
            .join(&f.path);
        let target = std::fs::read_link(&link).unwrap();
        assert!(target.is_relative(), "{target:?}");
        assert_eq!(
            std::fs::canonicalize(&link).unwrap(),
            std::fs::canonicalize(blob).unwrap()
        );
    }
    assert!(incomplete_files(cache.path()).is_empty());
    // One listing, then per file: hf-hub's HEAD and one GET.
    assert_eq!(hub.downloads().len(), 6, "{:?}", hub.requests());
    let done = events
        .iter()
        .filter(|e| matches!(e, HubEvent::Done { .. }))
        .count();
    assert_eq!(done, 6, "{events:?}");
}

#[test]
fn second_fetch_downloads_nothing() {
    let hub = Hub::start(REPO);
    let cache = tempfile::tempdir().unwrap();
    let o = opts(&hub, cache.path(), None);
    let snap = hf::resolve(&o, &source("main")).unwrap();
    let (first, _) = fetch(&o, &snap);
    let first = first.unwrap();

    hub.clear_requests();
    let (second, events) = fetch(&o, &snap);
    assert_eq!(second.unwrap(), first);
    assert!(hub.requests().is_empty(), "{:?}", hub.requests());
    assert!(
        events.iter().all(|e| matches!(e, HubEvent::Cached { .. })),
        "{events:?}"
    );

    // The same with sha256 values from a lock file (all filled in).
    let locked = HubSnapshot {
        repo: snap.repo.clone(),
        commit: snap.commit.clone(),
        files: first.iter().map(|(f, _)| f.clone()).collect(),
    };
    let (third, _) = fetch(&o, &locked);
    assert_eq!(third.unwrap(), first);
    assert!(hub.requests().is_empty(), "{:?}", hub.requests());
}

#[test]
fn damaged_cache_blob_is_downloaded_again() {
    let hub = Hub::start(REPO);
    let cache = tempfile::tempdir().unwrap();
    let o = opts(&hub, cache.path(), None);
    let snap = hf::resolve(&o, &source("main")).unwrap();
    let first = fetch(&o, &snap).0.unwrap();
    let (_, blob) = first
        .iter()
        .find(|(f, _)| f.path == "model.safetensors")
        .unwrap();
    let mut bytes = std::fs::read(blob).unwrap();
    bytes[1000] ^= 1;
    std::fs::write(blob, &bytes).unwrap();

    hub.clear_requests();
    let second = fetch(&o, &snap).0.unwrap();
    assert_eq!(second, first);
    let downloads = hub.downloads();
    assert_eq!(downloads.len(), 1, "{downloads:?}");
    assert!(downloads[0].target.starts_with("/cdn/"));
    assert_eq!(
        std::fs::read(blob).unwrap(),
        *hub.files(&snap.commit)["model.safetensors"].bytes
    );
}

#[test]
fn broken_download_resumes_with_range() {
    let hub = Hub::start(REPO);
    let cache = tempfile::tempdir().unwrap();
    let o = opts(&hub, cache.path(), None);
    let s = HubSource {
        include: vec!["model.safetensors".into()],
        ..source("main")
    };
    let snap = hf::resolve(&o, &s).unwrap();
    let size = snap.files[0].size;
    assert!(size > 200_000);
    hub.cut_once("model.safetensors", 100_000);
    hub.clear_requests();

    let (r, events) = fetch(&o, &snap);
    let got = r.unwrap();
    let h = &hub.files(&snap.commit)["model.safetensors"];
    assert_eq!(std::fs::read(&got[0].1).unwrap(), *h.bytes);

    let gets = hub.downloads();
    assert_eq!(gets.len(), 2, "{gets:?}");
    assert_eq!(
        gets[0].range.as_deref(),
        Some(format!("bytes=0-{}", size - 1).as_str())
    );
    assert_eq!(
        gets[1].range.as_deref(),
        Some(format!("bytes=100000-{}", size - 1).as_str())
    );
    assert_eq!(gets[1].status, 206);
    assert!(
        events.iter().any(|e| matches!(
            e,
            HubEvent::Retry {
                offset: 100_000,
                ..
            }
        )),
        "{events:?}"
    );
    assert!(incomplete_files(cache.path()).is_empty());
}

#[test]
fn every_attempt_cut_still_completes_while_it_progresses() {
    let hub = Hub::start(REPO);
    let cache = tempfile::tempdir().unwrap();
    let o = opts(&hub, cache.path(), None);
    let s = HubSource {
        include: vec!["model.safetensors".into()],
        ..source("main")
    };
    let snap = hf::resolve(&o, &s).unwrap();
    let size = snap.files[0].size as usize;
    hub.cut_always("model.safetensors", 60_000);
    hub.clear_requests();
    let got = fetch(&o, &snap).0.unwrap();
    assert_eq!(
        std::fs::read(&got[0].1).unwrap(),
        *hub.files(&snap.commit)["model.safetensors"].bytes
    );
    let starts: Vec<String> = hub
        .downloads()
        .iter()
        .filter_map(|r| r.range.clone())
        .collect();
    let want: Vec<String> = (0..size.div_ceil(60_000))
        .map(|i| format!("bytes={}-{}", i * 60_000, size - 1))
        .collect();
    assert_eq!(starts, want);
}

#[test]
fn retries_are_bounded() {
    let hub = Hub::start(REPO);
    let cache = tempfile::tempdir().unwrap();
    let o = opts(&hub, cache.path(), None);
    let s = HubSource {
        include: vec!["model.safetensors".into()],
        ..source("main")
    };
    let snap = hf::resolve(&o, &s).unwrap();
    hub.cut_always("model.safetensors", 0);
    hub.clear_requests();
    let (r, events) = fetch(&o, &snap);
    let err = r.unwrap_err();
    assert!(
        matches!(&err, HubError::Network { attempts: 5, offset: 0, file, .. } if file == "model.safetensors"),
        "{err:?}"
    );
    assert!(err.to_string().contains("model.safetensors"), "{err}");
    assert_eq!(hub.downloads().len(), 5);
    let retries = events
        .iter()
        .filter(|e| matches!(e, HubEvent::Retry { .. }))
        .count();
    assert_eq!(retries, 4);
}

#[test]
fn empty_file() {
    let hub = Hub::start(REPO);
    let mut files = tiny_model_files(1);
    files.insert(
        "added_tokens.json".into(),
        crate::common::hub::HubFileData::new(Vec::new(), false),
    );
    let commit = hub.add_commit(files);
    let cache = tempfile::tempdir().unwrap();
    let o = opts(&hub, cache.path(), None);
    let s = HubSource {
        include: vec!["added_tokens.json".into()],
        ..source(&commit)
    };
    let snap = hf::resolve(&o, &s).unwrap();
    assert_eq!(snap.files[0].size, 0);
    let got = fetch(&o, &snap).0.unwrap();
    assert_eq!(
        got[0].0.sha256,
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    assert_eq!(std::fs::metadata(&got[0].1).unwrap().len(), 0);
    assert!(
        hub.downloads().is_empty(),
        "nothing to transfer for an empty file"
    );
}

#[test]
fn concurrent_fetches_share_the_cache() {
    let hub = Hub::start(REPO);
    let cache = tempfile::tempdir().unwrap();
    let o = opts(&hub, cache.path(), None);
    let snap = hf::resolve(&o, &source("main")).unwrap();
    hub.clear_requests();
    let (a, b) = std::thread::scope(|sc| {
        let run = || hf::fetch(&o, &snap, &|_| {}).map_err(|e| e.to_string());
        let a = sc.spawn(run);
        let b = sc.spawn(run);
        (a.join().unwrap(), b.join().unwrap())
    });
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a, b);
    // The blob lock makes the second fetch wait and reuse the first one's blobs.
    assert_eq!(hub.downloads().len(), 6, "{:?}", hub.downloads());
}

#[test]
fn leftover_incomplete_file_is_resumed() {
    let hub = Hub::start(REPO);
    let cache = tempfile::tempdir().unwrap();
    let o = opts(&hub, cache.path(), None);
    let s = HubSource {
        include: vec!["model.safetensors".into()],
        ..source("main")
    };
    let snap = hf::resolve(&o, &s).unwrap();
    let h = hub.files(&snap.commit)["model.safetensors"].clone();
    // What an interrupted hf-hub / huggingface_hub download leaves behind.
    let blobs = repo_dir(cache.path()).join("blobs");
    std::fs::create_dir_all(&blobs).unwrap();
    std::fs::write(
        blobs.join(format!("{}.incomplete", h.sha256)),
        &h.bytes[..50_000],
    )
    .unwrap();
    hub.clear_requests();

    let (r, events) = fetch(&o, &snap);
    let got = r.unwrap();
    assert_eq!(std::fs::read(&got[0].1).unwrap(), *h.bytes);
    let gets = hub.downloads();
    assert_eq!(gets.len(), 1, "{gets:?}");
    assert_eq!(
        gets[0].range.as_deref(),
        Some(format!("bytes=50000-{}", h.bytes.len() - 1).as_str())
    );
    assert!(events.contains(&HubEvent::Start {
        path: "model.safetensors".into(),
        size: h.bytes.len() as u64,
        offset: 50_000
    }));
}

#[test]
fn foreign_incomplete_file_is_discarded_once() {
    let hub = Hub::start(REPO);
    let cache = tempfile::tempdir().unwrap();
    let o = opts(&hub, cache.path(), None);
    let s = HubSource {
        include: vec!["model.safetensors".into()],
        ..source("main")
    };
    let snap = hf::resolve(&o, &s).unwrap();
    let h = hub.files(&snap.commit)["model.safetensors"].clone();
    let blobs = repo_dir(cache.path()).join("blobs");
    std::fs::create_dir_all(&blobs).unwrap();
    std::fs::write(
        blobs.join(format!("{}.incomplete", h.sha256)),
        vec![0u8; 50_000],
    )
    .unwrap();
    hub.clear_requests();

    let got = fetch(&o, &snap).0.unwrap();
    assert_eq!(std::fs::read(&got[0].1).unwrap(), *h.bytes);
    let ranges: Vec<_> = hub.downloads().into_iter().map(|r| r.range).collect();
    let last = h.bytes.len() - 1;
    assert_eq!(
        ranges,
        [
            Some(format!("bytes=50000-{last}")),
            Some(format!("bytes=0-{last}"))
        ]
    );
}

#[test]
fn corrupted_bytes_fail_naming_the_file() {
    let hub = Hub::start(REPO);
    let cache = tempfile::tempdir().unwrap();
    let o = opts(&hub, cache.path(), None);
    let snap = hf::resolve(&o, &source("main")).unwrap();
    let files = hub.files(&snap.commit);
    hub.corrupt("model.safetensors");

    let err = fetch(&o, &snap).0.unwrap_err();
    let msg = err.to_string();
    match &err {
        HubError::Sha256Mismatch {
            file,
            expected,
            actual,
            ..
        } => {
            assert_eq!(file, "model.safetensors");
            assert_eq!(expected, &files["model.safetensors"].sha256);
            assert_ne!(actual, expected);
            assert_eq!(actual.len(), 64);
            assert!(
                msg.contains("model.safetensors")
                    && msg.contains(expected.as_str())
                    && msg.contains(actual.as_str())
            );
        }
        other => panic!("expected a sha256 mismatch, got {other:?}"),
    }
    // Nothing unverified is left in the cache.
    assert!(
        !repo_dir(cache.path())
            .join("blobs")
            .join(&files["model.safetensors"].sha256)
            .exists()
    );
    assert!(
        !repo_dir(cache.path())
            .join("snapshots")
            .join(&snap.commit)
            .join("model.safetensors")
            .exists()
    );
    assert!(incomplete_files(cache.path()).is_empty());
}

#[test]
fn corrupted_regular_file_fails_on_git_blob_id() {
    let hub = Hub::start(REPO);
    let cache = tempfile::tempdir().unwrap();
    let o = opts(&hub, cache.path(), None);
    let s = HubSource {
        include: vec!["config.json".into()],
        ..source("main")
    };
    let snap = hf::resolve(&o, &s).unwrap();
    hub.corrupt("config.json");
    let err = fetch(&o, &snap).0.unwrap_err();
    assert!(
        matches!(&err, HubError::GitOidMismatch { file, .. } if file == "config.json"),
        "{err:?}"
    );

    // With a sha256 from a lock file, that is what is checked.
    let mut locked = snap.clone();
    locked.files[0].sha256 = hub.files(&snap.commit)["config.json"].sha256.clone();
    let err = fetch(&o, &locked).0.unwrap_err();
    assert!(
        matches!(&err, HubError::Sha256Mismatch { file, .. } if file == "config.json"),
        "{err:?}"
    );
}

#[test]
fn lock_sha256_that_disagrees_with_the_hub_fails_before_downloading() {
    let hub = Hub::start(REPO);
    let cache = tempfile::tempdir().unwrap();
    let o = opts(&hub, cache.path(), None);
    let s = HubSource {
        include: vec!["model.safetensors".into()],
        ..source("main")
    };
    let mut snap = hf::resolve(&o, &s).unwrap();
    snap.files[0].sha256 = "ab".repeat(32);
    hub.clear_requests();
    let err = fetch(&o, &snap).0.unwrap_err();
    assert!(
        matches!(&err, HubError::Sha256Mismatch { file, .. } if file == "model.safetensors"),
        "{err:?}"
    );
    assert!(hub.downloads().is_empty());
}

#[test]
fn gated_repo_needs_token() {
    let hub = Hub::start(REPO);
    hub.set_gated("hf_secret_token");
    let cache = tempfile::tempdir().unwrap();

    // Info and listing are public.
    let o = opts(&hub, cache.path(), None);
    let snap = hf::resolve(&o, &source("main")).unwrap();

    let err = fetch(&o, &snap).0.unwrap_err();
    assert!(
        matches!(&err, HubError::AuthRequired { status: 401, .. }),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(msg.contains("HF_TOKEN") && msg.contains(REPO), "{msg}");
    assert!(hub.downloads().is_empty());

    let wrong = opts(&hub, cache.path(), Some("hf_wrong_token"));
    let err = fetch(&wrong, &snap).0.unwrap_err();
    assert!(
        matches!(&err, HubError::AccessDenied { status: 403, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("HF_TOKEN"));
    assert!(!err.to_string().contains("hf_wrong_token"));
    assert!(!format!("{err:?}").contains("hf_wrong_token"));
    assert!(!format!("{wrong:?}").contains("hf_wrong_token"));

    let good = opts(&hub, cache.path(), Some("hf_secret_token"));
    hub.clear_requests();
    let got = fetch(&good, &snap).0.unwrap();
    assert_eq!(got.len(), 6);
    let files = hub.files(&snap.commit);
    for (f, blob) in &got {
        assert_eq!(std::fs::read(blob).unwrap(), *files[&f.path].bytes);
    }
    assert!(
        hub.requests()
            .iter()
            .filter(|r| r.target.contains("/resolve/"))
            .all(|r| r.authorization.is_some())
    );
}

#[test]
fn old_commit_still_resolves_and_fetches_after_branch_moves() {
    let hub = Hub::start(REPO);
    let cache = tempfile::tempdir().unwrap();
    let o = opts(&hub, cache.path(), None);
    let old = hf::resolve(&o, &source("main")).unwrap();
    let old_fetched = fetch(&o, &old).0.unwrap();

    let new_commit = hub.add_commit(tiny_model_files(2));
    hub.set_branch("main", &new_commit);

    // The old sha still resolves to the same snapshot, without asking for a branch.
    hub.clear_requests();
    let again = hf::resolve(&o, &source(&old.commit)).unwrap();
    assert_eq!(again, old);
    assert!(
        hub.requests()
            .iter()
            .all(|r| !r.target.contains("/revision/"))
    );

    // main now resolves to the new commit; only changed files are downloaded.
    let new = hf::resolve(&o, &source("main")).unwrap();
    assert_eq!(new.commit, new_commit);
    assert_eq!(
        std::fs::read_to_string(repo_dir(cache.path()).join("refs/main")).unwrap(),
        new_commit
    );
    hub.clear_requests();
    let new_fetched = fetch(&o, &new).0.unwrap();
    let mut downloaded: Vec<String> = hub.downloads().iter().map(|r| r.target.clone()).collect();
    downloaded.sort();
    let new_files = hub.files(&new_commit);
    let old_files = hub.files(&old.commit);
    let mut expected: Vec<String> = new_files
        .iter()
        .filter(|(p, f)| old_files[*p].sha256 != f.sha256)
        .map(|(p, f)| {
            if f.lfs {
                format!("/cdn/{}", f.sha256)
            } else {
                format!("/acme/tiny/resolve/{new_commit}/{p}")
            }
        })
        .collect();
    expected.sort();
    assert_eq!(downloaded, expected);
    assert_eq!(
        expected.len(),
        3,
        "config.json and both safetensors changed"
    );
    for (f, blob) in &new_fetched {
        assert_eq!(std::fs::read(blob).unwrap(), *new_files[&f.path].bytes);
    }

    // A fresh cache can still download the old commit by sha.
    let cache2 = tempfile::tempdir().unwrap();
    let o2 = opts(&hub, cache2.path(), None);
    let old_again = fetch(&o2, &old).0.unwrap();
    let by_path: HashMap<_, _> = old_fetched
        .iter()
        .map(|(f, _)| (f.path.clone(), f.sha256.clone()))
        .collect();
    for (f, blob) in &old_again {
        assert_eq!(std::fs::read(blob).unwrap(), *old_files[&f.path].bytes);
        assert_eq!(by_path[&f.path], f.sha256);
    }
}

#[test]
fn options_from_env() {
    let home = tempfile::tempdir().unwrap();
    let env = |pairs: Vec<(&'static str, String)>| {
        let map: HashMap<&str, String> = pairs.into_iter().collect();
        move |k: &str| map.get(k).cloned()
    };
    let h = home.path().display().to_string();

    let o = HubOptions::from_env(env(vec![("HOME", h.clone())]));
    assert_eq!(o.endpoint, "https://huggingface.co");
    assert_eq!(o.cache_dir, home.path().join(".cache/huggingface/hub"));
    assert_eq!(o.token, None);

    std::fs::create_dir_all(home.path().join("hfhome")).unwrap();
    std::fs::write(home.path().join("hfhome/token"), "hf_from_file\n").unwrap();
    let o = HubOptions::from_env(env(vec![
        ("HOME", h.clone()),
        ("HF_HOME", format!("{h}/hfhome")),
        ("HF_ENDPOINT", "http://mirror.local/".into()),
    ]));
    assert_eq!(o.endpoint, "http://mirror.local");
    assert_eq!(o.cache_dir, home.path().join("hfhome/hub"));
    assert_eq!(o.token.as_deref(), Some("hf_from_file"));
    assert!(!format!("{o:?}").contains("hf_from_file"));

    let o = HubOptions::from_env(env(vec![
        ("HF_HOME", format!("{h}/hfhome")),
        ("HF_TOKEN", "hf_env".into()),
        ("HF_HUB_CACHE", format!("{h}/cache")),
    ]));
    assert_eq!(o.token.as_deref(), Some("hf_env"));
    assert_eq!(o.cache_dir, home.path().join("cache"));

    let o = HubOptions::from_env(env(vec![
        ("HF_HOME", format!("{h}/hfhome")),
        ("HF_HUB_DISABLE_IMPLICIT_TOKEN", "1".into()),
    ]));
    assert_eq!(o.token, None);
}

/// What `hf-hub` 1.0.0 itself does against the stand-in: the reasons mlimg lists the tree with
/// reqwest, verifies every file and resumes downloads itself (docs/hf-design.md). If one of these
/// starts failing after an `hf-hub` upgrade, the workaround may no longer be needed.
mod hf_hub_1_0_0 {
    use super::*;
    use futures_util::StreamExt;

    fn client(hub: &Hub, cache: &Path) -> hf_hub::HFClient {
        hf_hub::HFClient::builder()
            .endpoint(hub.endpoint())
            .token("unused")
            .cache_dir(cache)
            .retry_max_attempts(0)
            .build()
            .unwrap()
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn list_tree_drops_the_lfs_sha256() {
        let hub = Hub::start(REPO);
        let cache = tempfile::tempdir().unwrap();
        let c = client(&hub, cache.path());
        let entries: Vec<_> = block_on(async {
            let repo = c.model("acme", "tiny");
            let stream = repo.list_tree().recursive(true).send().unwrap();
            stream.collect::<Vec<_>>().await
        });
        let lfs: Vec<_> = entries
            .into_iter()
            .filter_map(|e| match e.unwrap() {
                hf_hub::repository::RepoTreeEntry::File { path, lfs, .. } => lfs.map(|l| (path, l)),
                _ => None,
            })
            .collect();
        assert_eq!(lfs.len(), 2);
        // The Hub sends `lfs.oid`; hf-hub reads `lfs.sha256`.
        assert!(lfs.iter().all(|(_, l)| l.sha256.is_none()), "{lfs:?}");
    }

    #[test]
    fn file_metadata_fails_on_lfs_files() {
        let hub = Hub::start(REPO);
        let cache = tempfile::tempdir().unwrap();
        let c = client(&hub, cache.path());
        let r = block_on(async {
            c.model("acme", "tiny")
                .get_file_metadata()
                .filepath("model.safetensors")
                .send()
                .await
        });
        // It follows the redirect to the CDN, whose answer has no X-Repo-Commit.
        let err = r.unwrap_err();
        assert!(err.to_string().contains("X-Repo-Commit"), "{err}");
    }

    #[test]
    fn download_file_stores_corrupted_bytes() {
        let hub = Hub::start(REPO);
        let cache = tempfile::tempdir().unwrap();
        let c = client(&hub, cache.path());
        hub.corrupt("model.safetensors");
        let path = block_on(async {
            c.model("acme", "tiny")
                .download_file()
                .filename("model.safetensors")
                .send()
                .await
        })
        .unwrap();
        let want = &hub.files(&hub.branch("main"))["model.safetensors"];
        let got = std::fs::read(path).unwrap();
        assert_eq!(got.len(), want.bytes.len());
        assert_ne!(got, *want.bytes, "hf-hub did not verify the sha256");
    }

    #[test]
    fn download_file_does_not_resume() {
        let hub = Hub::start(REPO);
        let cache = tempfile::tempdir().unwrap();
        let c = client(&hub, cache.path());
        hub.cut_once("model.safetensors", 100_000);
        let dl = || {
            block_on(async {
                c.model("acme", "tiny")
                    .download_file()
                    .filename("model.safetensors")
                    .send()
                    .await
            })
        };
        let err = dl().unwrap_err();
        assert!(
            err.to_string().contains("error decoding response body"),
            "{err}"
        );
        let sha = &hub.files(&hub.branch("main"))["model.safetensors"].sha256;
        let partial = repo_dir(cache.path())
            .join("blobs")
            .join(format!("{sha}.incomplete"));
        assert_eq!(std::fs::metadata(&partial).unwrap().len(), 100_000);
        hub.clear_requests();
        dl().unwrap();
        // The second call starts again from byte 0.
        let gets = hub.downloads();
        assert_eq!(gets.len(), 1, "{gets:?}");
        assert_eq!(gets[0].range, None);
    }
}
