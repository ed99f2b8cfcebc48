//! Hugging Face Hub weights: `[[weights]] source = "hf://org/repo"`.
//!
//! [`resolve`] turns a revision (branch, tag or commit sha) into a commit sha and the selected
//! file list (path, size, sha256); [`fetch`] puts those files into the user's standard hub cache
//! (shared with `huggingface_hub` / `hf-hub`), verified, resuming broken downloads.
//!
//! Requests go through the shared [`crate::transport`] (blocking, one client per process and
//! settings, one retry policy): repo info, the tree listing (`hf-hub` 1.0.0 drops the LFS
//! sha256, see `docs/hf-design.md`) and file bytes (`GET {endpoint}/{repo}/resolve/{commit}/{path}`
//! with a `Range`, following the Hub's redirect to its CDN, which also serves Xet-backed files
//! over plain HTTP).

mod cache;
mod error;
mod tree;

use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::Read;
use std::io::{BufWriter, Write};
use std::path::PathBuf;

use globset::{Glob, GlobSet, GlobSetBuilder};
use reqwest::header::{AUTHORIZATION, HeaderValue, RANGE};

pub use error::HubError;

use crate::transport::{
    MAX_LISTING_BYTES, Retry, RetryEvent, Transport, TransportOptions, error_chain, redact_url,
};
use cache::{CacheLayout, Digests, digest_file, is_hex, is_safe_rel_path};
use error::Ctx;

/// The public Hub.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// Hard cap on attempts for one file, even when every attempt makes some progress. (Attempts
/// in a row without progress are limited by the transport's `retries`.)
const MAX_ATTEMPTS: u32 = 50;
/// Progress events are sent every this many bytes (and at the end of each file).
const PROGRESS_EVERY: u64 = 4 << 20;

/// Where the Hub is, how to authenticate, and where the hub cache lives.
#[derive(Clone, PartialEq, Eq)]
pub struct HubOptions {
    /// Base URL without trailing slash, e.g. `https://huggingface.co`.
    pub endpoint: String,
    pub token: Option<String>,
    /// The hub cache (`.../huggingface/hub`), laid out like `huggingface_hub`'s.
    pub cache_dir: PathBuf,
    /// Retries, timeouts, retry reporting.
    pub transport: TransportOptions,
}

impl fmt::Debug for HubOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HubOptions")
            .field("endpoint", &self.endpoint)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("cache_dir", &self.cache_dir)
            .field("transport", &self.transport)
            .finish()
    }
}

impl HubOptions {
    /// Read the settings the other Hugging Face clients read, through `get` (normally
    /// `|k| std::env::var(k).ok()`):
    ///
    /// - endpoint: `HF_ENDPOINT`, default `https://huggingface.co`
    /// - home: `HF_HOME`, else `$XDG_CACHE_HOME/huggingface`, else `~/.cache/huggingface`
    /// - token: `HF_TOKEN`, else the file named by `HF_TOKEN_PATH`, else `{home}/token`;
    ///   none at all when `HF_HUB_DISABLE_IMPLICIT_TOKEN` is true
    /// - cache: `HF_HUB_CACHE`, else `HUGGINGFACE_HUB_CACHE`, else `{home}/hub`
    ///
    /// The transport options are [`crate::transport::default_options`].
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Self {
        let var = |k: &str| {
            get(k)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let endpoint = var("HF_ENDPOINT")
            .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string())
            .trim_end_matches('/')
            .to_string();
        let home = var("HF_HOME").map(PathBuf::from).unwrap_or_else(|| {
            let cache = var("XDG_CACHE_HOME").map(PathBuf::from).unwrap_or_else(|| {
                var("HOME")
                    .map(PathBuf::from)
                    .or_else(dirs::home_dir)
                    .unwrap_or_else(|| PathBuf::from("/"))
                    .join(".cache")
            });
            cache.join("huggingface")
        });
        let cache_dir = var("HF_HUB_CACHE")
            .or_else(|| var("HUGGINGFACE_HUB_CACHE"))
            .map(PathBuf::from)
            .unwrap_or_else(|| home.join("hub"));
        let read_token = |p: PathBuf| {
            fs::read_to_string(p)
                .ok()
                .map(|t| t.trim().to_string())
                .filter(|t| !t.is_empty())
        };
        let implicit_disabled = var("HF_HUB_DISABLE_IMPLICIT_TOKEN").is_some_and(|v| {
            matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on")
        });
        let token = if implicit_disabled {
            None
        } else {
            var("HF_TOKEN")
                .or_else(|| var("HF_TOKEN_PATH").and_then(|p| read_token(PathBuf::from(p))))
                .or_else(|| read_token(home.join("token")))
        };
        HubOptions {
            endpoint,
            token,
            cache_dir,
            transport: crate::transport::default_options(),
        }
    }
}

/// One `[[weights]]` entry with `source = "hf://org/repo"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubSource {
    /// `org/repo` (without `hf://`).
    pub repo: String,
    /// Branch, tag or 40-hex commit sha.
    pub revision: String,
    /// Only files under this directory. `include`/`exclude` globs are matched against paths
    /// relative to it.
    pub subfolder: Option<String>,
    /// Globs (globset syntax; `*` also matches `/`, like `huggingface_hub`'s `allow_patterns`).
    /// Empty = everything.
    pub include: Vec<String>,
    pub exclude: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct HubFile {
    /// Relative to the repo root, `/`-separated.
    pub path: String,
    pub size: u64,
    /// Lowercase hex. For LFS files the LFS oid (known after [`resolve`]); for regular files
    /// empty after [`resolve`] and computed from the downloaded bytes by [`fetch`].
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HubSnapshot {
    pub repo: String,
    /// 40-hex commit sha.
    pub commit: String,
    /// Sorted by path.
    pub files: Vec<HubFile>,
}

/// Progress of [`fetch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HubEvent {
    /// Already in the cache and verified; nothing downloaded.
    Cached {
        path: String,
        size: u64,
    },
    /// A download starts (`offset` > 0 when a partial download is resumed).
    Start {
        path: String,
        size: u64,
        offset: u64,
    },
    Progress {
        path: String,
        done: u64,
        size: u64,
    },
    /// The connection broke; resuming at `offset` after a pause.
    Retry {
        path: String,
        attempt: u32,
        offset: u64,
        reason: String,
    },
    /// Downloaded and verified.
    Done {
        path: String,
        size: u64,
    },
}

/// Resolve `src.revision` to a commit and list the selected files.
///
/// A 40-hex revision is used as the commit directly (no repo-info request); a branch or tag
/// costs one repo-info request. The listing is one (paginated) tree request at the commit.
pub fn resolve(opts: &HubOptions, src: &HubSource) -> Result<HubSnapshot, HubError> {
    let repo = check_repo(&src.repo)?;
    let invalid = |reason: String| HubError::InvalidSource {
        repo: repo.to_string(),
        reason,
    };
    let revision = src.revision.trim();
    if revision.is_empty() {
        return Err(invalid("empty revision".into()));
    }
    let subfolder = match src.subfolder.as_deref().map(|s| s.trim_matches('/')) {
        None | Some("") => None,
        Some(s) if is_safe_rel_path(s) => Some(s.to_string()),
        Some(s) => return Err(invalid(format!("bad subfolder {s:?}"))),
    };
    let include = globset(&src.include).map_err(&invalid)?;
    let exclude = globset(&src.exclude).map_err(&invalid)?;

    let transport = transport(opts, repo, revision)?;
    let commit = if is_hex(revision, 40) {
        revision.to_ascii_lowercase()
    } else {
        repo_commit(&transport, opts, &ctx(opts, repo, revision, None))?
    };
    let entries = tree::list(
        &transport,
        opts,
        &ctx(opts, repo, &commit, None),
        subfolder.as_deref(),
    )?;

    let mut files: Vec<HubFile> = entries
        .into_iter()
        .filter(|e| {
            let rel = match &subfolder {
                Some(s) => match e
                    .path
                    .strip_prefix(s.as_str())
                    .and_then(|r| r.strip_prefix('/'))
                {
                    Some(r) => r,
                    None => return false,
                },
                None => e.path.as_str(),
            };
            (src.include.is_empty() || include.is_match(rel)) && !exclude.is_match(rel)
        })
        .map(|e| HubFile {
            path: e.path,
            size: e.size,
            sha256: e.lfs_sha256.unwrap_or_default(),
        })
        .collect();
    files.sort_by(|a, b| a.path.cmp(&b.path));
    if files.is_empty() {
        return Err(HubError::NoFiles {
            repo: repo.to_string(),
            revision: revision.to_string(),
            selection: format!(
                "subfolder {subfolder:?}, include {:?}, exclude {:?}",
                src.include, src.exclude
            ),
        });
    }
    if commit != revision.to_ascii_lowercase() {
        CacheLayout::new(&opts.cache_dir, repo).write_ref(revision, &commit);
    }
    Ok(HubSnapshot {
        repo: repo.to_string(),
        commit,
        files,
    })
}

/// Make every file of `snap` present and verified in the hub cache; return each file (with its
/// sha256 filled in) and the path of its blob in the cache (a regular file).
///
/// Files already in the cache are hashed and kept when they match; nothing is requested for
/// them. Otherwise one tree listing at the commit gives the Hub's content ids, and each missing
/// file is streamed to `blobs/{etag}.incomplete`, resumed with a `Range` request after a broken
/// connection (bounded retries with backoff; a leftover `.incomplete` from an earlier run is
/// resumed too), checked for size and sha256 (regular files: the git blob id), and renamed into
/// place. Up to four files download at once.
pub fn fetch(
    opts: &HubOptions,
    snap: &HubSnapshot,
    progress: &(dyn Fn(HubEvent) + Sync),
) -> Result<Vec<(HubFile, PathBuf)>, HubError> {
    let repo = check_repo(&snap.repo)?;
    let commit = snap.commit.as_str();
    if !is_hex(commit, 40) {
        return Err(HubError::InvalidSource {
            repo: repo.to_string(),
            reason: format!("snapshot commit {commit:?} is not a 40-hex commit sha"),
        });
    }
    for f in &snap.files {
        if !is_safe_rel_path(&f.path) {
            return Err(HubError::InvalidSource {
                repo: repo.to_string(),
                reason: format!("bad file path {:?}", f.path),
            });
        }
        if !f.sha256.is_empty() && !is_hex(&f.sha256, 64) {
            return Err(HubError::InvalidSource {
                repo: repo.to_string(),
                reason: format!("{}: sha256 {:?} is not 64 hex digits", f.path, f.sha256),
            });
        }
    }
    let layout = CacheLayout::new(&opts.cache_dir, repo);

    let mut out: Vec<Option<(HubFile, PathBuf)>> = vec![None; snap.files.len()];
    let mut missing = Vec::new();
    for (i, f) in snap.files.iter().enumerate() {
        match cached(&layout, commit, f)? {
            Some((blob, sha256)) => {
                progress(HubEvent::Cached {
                    path: f.path.clone(),
                    size: f.size,
                });
                out[i] = Some((
                    HubFile {
                        sha256,
                        ..f.clone()
                    },
                    blob,
                ));
            }
            None => missing.push(i),
        }
    }

    if !missing.is_empty() {
        let transport = transport(opts, repo, commit)?;
        let listing = tree::list(&transport, opts, &ctx(opts, repo, commit, None), None)?;
        let by_path: std::collections::HashMap<&str, &tree::Entry> =
            listing.iter().map(|e| (e.path.as_str(), e)).collect();
        // Several files at once (each resumable); results stay in snapshot order.
        let next = std::sync::atomic::AtomicUsize::new(0);
        let results: Vec<DownloadSlot> = missing
            .iter()
            .map(|_| std::sync::Mutex::new(None))
            .collect();
        let failed = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|s| {
            for _ in 0..PARALLEL_DOWNLOADS.min(missing.len()) {
                s.spawn(|| {
                    loop {
                        let k = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        if failed.load(std::sync::atomic::Ordering::SeqCst) {
                            break;
                        }
                        let Some(&i) = missing.get(k) else { break };
                        let f = &snap.files[i];
                        let ctx = ctx(opts, repo, commit, Some(&f.path));
                        let r = by_path
                            .get(f.path.as_str())
                            .ok_or_else(|| HubError::FileNotFound {
                                repo: repo.to_string(),
                                revision: commit.to_string(),
                                file: f.path.clone(),
                                status: 404,
                            })
                            .and_then(|entry| {
                                download(&transport, opts, &layout, &ctx, f, entry, progress)
                            });
                        if r.is_err() {
                            failed.store(true, std::sync::atomic::Ordering::SeqCst);
                        }
                        *results[k].lock().unwrap_or_else(|p| p.into_inner()) = Some(r);
                    }
                });
            }
        });
        for (k, slot) in results.into_iter().enumerate() {
            let i = missing[k];
            match slot.into_inner().unwrap_or_else(|p| p.into_inner()) {
                Some(Ok((blob, sha256))) => {
                    out[i] = Some((
                        HubFile {
                            sha256,
                            ..snap.files[i].clone()
                        },
                        blob,
                    ));
                }
                Some(Err(e)) => return Err(e),
                None => {}
            }
        }
        if out.iter().any(Option::is_none) {
            return Err(HubError::InvalidSource {
                repo: repo.to_string(),
                reason: "a download was not attempted after an earlier one failed".into(),
            });
        }
    }
    Ok(out.into_iter().flatten().collect())
}

/// One download's result, filled by a worker of [`fetch`].
type DownloadSlot = std::sync::Mutex<Option<Result<(PathBuf, String), HubError>>>;

/// Files downloaded at once by [`fetch`].
const PARALLEL_DOWNLOADS: usize = 4;

/// Where `path` of `commit` appears in the hub cache once fetched (`snapshots/{commit}/{path}`,
/// a symlink to the blob). Nothing is checked or created.
pub fn snapshot_path(opts: &HubOptions, repo: &str, commit: &str, path: &str) -> PathBuf {
    let repo = repo.strip_prefix("hf://").unwrap_or(repo).trim_matches('/');
    CacheLayout::new(&opts.cache_dir, repo).snapshot(commit, path)
}

fn ctx<'a>(
    opts: &'a HubOptions,
    repo: &'a str,
    revision: &'a str,
    file: Option<&'a str>,
) -> Ctx<'a> {
    Ctx {
        repo,
        endpoint: &opts.endpoint,
        revision,
        file,
        has_token: opts.token.is_some(),
    }
}

fn check_repo(repo: &str) -> Result<&str, HubError> {
    let repo = repo.strip_prefix("hf://").unwrap_or(repo).trim_matches('/');
    let part_ok = |p: &str| {
        !p.is_empty()
            && p != "."
            && p != ".."
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    };
    let ok = matches!(repo.split_once('/'), Some((org, name)) if part_ok(org) && part_ok(name));
    if ok {
        Ok(repo)
    } else {
        Err(HubError::InvalidSource {
            repo: repo.to_string(),
            reason: "expected a model repo id of the form org/name".into(),
        })
    }
}

fn globset(globs: &[String]) -> Result<GlobSet, String> {
    let mut b = GlobSetBuilder::new();
    for g in globs {
        b.add(Glob::new(g).map_err(|e| format!("bad glob {g:?}: {e}"))?);
    }
    b.build().map_err(|e| e.to_string())
}

/// The shared transport with the options' settings.
fn transport(opts: &HubOptions, repo: &str, revision: &str) -> Result<Transport, HubError> {
    Transport::new(opts.transport.clone()).map_err(|e| HubError::Transport {
        repo: repo.to_string(),
        revision: revision.to_string(),
        what: "starting the HTTP client".into(),
        message: error_chain(&e),
    })
}

/// `Authorization: Bearer <token>`, marked sensitive (never printed).
pub(crate) fn auth_header(opts: &HubOptions) -> Result<Option<HeaderValue>, String> {
    match &opts.token {
        Some(t) => {
            let mut v = HeaderValue::from_str(&format!("Bearer {t}"))
                .map_err(|_| "the token contains characters not allowed in a header".to_string())?;
            v.set_sensitive(true);
            Ok(Some(v))
        }
        None => Ok(None),
    }
}

pub(crate) fn with_auth(
    rb: reqwest::blocking::RequestBuilder,
    auth: Option<&HeaderValue>,
) -> reqwest::blocking::RequestBuilder {
    match auth {
        Some(a) => rb.header(AUTHORIZATION, a.clone()),
        None => rb,
    }
}

/// `{endpoint}/{segments…}`, each segment percent-encoded as one path segment.
fn endpoint_url(
    opts: &HubOptions,
    ctx: &Ctx<'_>,
    segments: &[&str],
) -> Result<reqwest::Url, HubError> {
    let protocol = |message: String| HubError::Protocol {
        repo: ctx.repo.to_string(),
        revision: ctx.revision.to_string(),
        message,
    };
    let mut url = reqwest::Url::parse(&format!("{}/", opts.endpoint))
        .map_err(|e| protocol(format!("bad endpoint {:?}: {e}", opts.endpoint)))?;
    {
        let mut segs = url
            .path_segments_mut()
            .map_err(|()| protocol(format!("bad endpoint {:?}", opts.endpoint)))?;
        segs.pop_if_empty();
        for s in segments {
            segs.push(s);
        }
    }
    Ok(url)
}

/// The detail of an HTTP error: the Hub's message (if any) and the request, so the message
/// names the host.
pub(crate) fn status_detail(message: Option<String>, url: &str) -> String {
    match message {
        Some(m) => format!("{m} (GET {})", redact_url(url)),
        None => format!("GET {}", redact_url(url)),
    }
}

/// The commit a branch or tag points at: `GET /api/models/{repo}/revision/{rev}`.
fn repo_commit(
    transport: &Transport,
    opts: &HubOptions,
    ctx: &Ctx<'_>,
) -> Result<String, HubError> {
    let (owner, name) = ctx.repo.split_once('/').unwrap_or((ctx.repo, ""));
    let url = endpoint_url(
        opts,
        ctx,
        &["api", "models", owner, name, "revision", ctx.revision],
    )?;
    let err = |what: &str, message: String| HubError::Transport {
        repo: ctx.repo.to_string(),
        revision: ctx.revision.to_string(),
        what: what.to_string(),
        message,
    };
    let auth = auth_header(opts).map_err(|m| err("repo info", m))?;
    let info = transport
        .get_capped(
            || with_auth(transport.client().get(url.clone()), auth.as_ref()),
            MAX_LISTING_BYTES,
        )
        .map_err(|e| err("repo info", error_chain(&e)))?;
    if !info.status.is_success() {
        let header = |n: &str| {
            info.headers
                .get(n)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        return Err(ctx.status(
            info.status.as_u16(),
            header("x-error-code").as_deref(),
            Some(status_detail(header("x-error-message"), info.url.as_str())),
        ));
    }
    #[derive(serde::Deserialize)]
    struct Info {
        #[serde(default)]
        sha: Option<String>,
    }
    let parsed: Info = serde_json::from_slice(&info.body).map_err(|e| HubError::Protocol {
        repo: ctx.repo.to_string(),
        revision: ctx.revision.to_string(),
        message: format!("repo info: {e}"),
    })?;
    match parsed.sha {
        Some(sha) if is_hex(&sha, 40) => Ok(sha.to_ascii_lowercase()),
        other => Err(HubError::Protocol {
            repo: ctx.repo.to_string(),
            revision: ctx.revision.to_string(),
            message: format!("repo info has no commit sha (got {other:?})"),
        }),
    }
}

/// The cached blob of `f` at `commit`, if its snapshot link exists and the bytes verify.
fn cached(
    layout: &CacheLayout,
    commit: &str,
    f: &HubFile,
) -> Result<Option<(PathBuf, String)>, HubError> {
    let Ok(blob) = fs::canonicalize(layout.snapshot(commit, &f.path)) else {
        return Ok(None);
    };
    let Ok(meta) = fs::metadata(&blob) else {
        return Ok(None);
    };
    if !meta.is_file() || meta.len() != f.size {
        return Ok(None);
    }
    let name = blob
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("")
        .to_string();
    let d = digest_file(&blob, f.size, f.sha256.is_empty() && is_hex(&name, 40))?;
    let ok = if f.sha256.is_empty() {
        // Blobs are named by content: sha256 (LFS) or git blob id (regular files).
        name == d.sha256 || name == d.git
    } else {
        d.sha256 == f.sha256.to_ascii_lowercase()
    };
    Ok(ok.then_some((blob, d.sha256)))
}

/// What the downloaded bytes must hash to.
struct Expect {
    size: u64,
    sha256: Option<String>,
    git: Option<String>,
}

impl Expect {
    fn check(&self, ctx: &Ctx<'_>, size: u64, d: &cache::DigestHex) -> Result<(), HubError> {
        let file = ctx.file.unwrap_or("").to_string();
        if size != self.size {
            return Err(HubError::SizeMismatch {
                repo: ctx.repo.to_string(),
                revision: ctx.revision.to_string(),
                file,
                expected: self.size,
                actual: size,
            });
        }
        if let Some(e) = &self.sha256
            && *e != d.sha256
        {
            return Err(HubError::Sha256Mismatch {
                repo: ctx.repo.to_string(),
                revision: ctx.revision.to_string(),
                file,
                expected: e.clone(),
                actual: d.sha256.clone(),
            });
        }
        if let Some(e) = &self.git
            && *e != d.git
        {
            return Err(HubError::GitOidMismatch {
                repo: ctx.repo.to_string(),
                revision: ctx.revision.to_string(),
                file,
                expected: e.clone(),
                actual: d.git.clone(),
            });
        }
        Ok(())
    }
}

fn download(
    transport: &Transport,
    opts: &HubOptions,
    layout: &CacheLayout,
    ctx: &Ctx<'_>,
    f: &HubFile,
    entry: &tree::Entry,
    progress: &dyn Fn(HubEvent),
) -> Result<(PathBuf, String), HubError> {
    let protocol = |message: String| HubError::Protocol {
        repo: ctx.repo.to_string(),
        revision: ctx.revision.to_string(),
        message,
    };
    if entry.size != f.size {
        return Err(HubError::SizeMismatch {
            repo: ctx.repo.to_string(),
            revision: ctx.revision.to_string(),
            file: f.path.clone(),
            expected: f.size,
            actual: entry.size,
        });
    }
    let want_sha = (!f.sha256.is_empty()).then(|| f.sha256.to_ascii_lowercase());
    if let (Some(want), Some(lfs)) = (&want_sha, &entry.lfs_sha256)
        && want != lfs
    {
        return Err(HubError::Sha256Mismatch {
            repo: ctx.repo.to_string(),
            revision: ctx.revision.to_string(),
            file: f.path.clone(),
            expected: want.clone(),
            actual: format!("{lfs} (the Hub's LFS oid)"),
        });
    }
    let expect = Expect {
        size: f.size,
        sha256: want_sha.or_else(|| entry.lfs_sha256.clone()),
        git: entry.lfs_sha256.is_none().then(|| entry.oid.clone()),
    };
    let etag = entry.lfs_sha256.as_deref().unwrap_or(&entry.oid);
    if !(is_hex(etag, 64) || is_hex(etag, 40)) {
        return Err(protocol(format!(
            "{}: content id {etag:?} is not hex",
            f.path
        )));
    }

    let _lock = layout.lock(etag)?;
    let blob = layout.blob(etag);
    if blob.is_file() {
        let d = digest_file(&blob, f.size, expect.git.is_some())?;
        let size = fs::metadata(&blob)
            .map_err(|e| HubError::io(&blob, e))?
            .len();
        if expect.check(ctx, size, &d).is_ok() {
            layout.link(ctx.revision, &f.path, etag)?;
            progress(HubEvent::Cached {
                path: f.path.clone(),
                size: f.size,
            });
            return Ok((blob, d.sha256));
        }
        // A damaged blob: replace it.
        fs::remove_file(&blob).map_err(|e| HubError::io(&blob, e))?;
    }

    let tmp = layout.incomplete(etag);
    let mut started_over = false;
    let d = loop {
        let (d, size, resumed) = transfer(
            transport,
            opts,
            ctx,
            f,
            expect.git.is_some(),
            &tmp,
            progress,
        )?;
        match expect.check(ctx, size, &d) {
            Ok(()) => break d,
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                // A partial file left by an earlier run may not be from this content: once,
                // start over from byte 0 before calling the download corrupt.
                if resumed && !started_over {
                    started_over = true;
                    progress(HubEvent::Retry {
                        path: f.path.clone(),
                        attempt: 0,
                        offset: 0,
                        reason: format!("{e}; discarded the partial file from an earlier run"),
                    });
                    continue;
                }
                return Err(e);
            }
        }
    };
    fs::rename(&tmp, &blob).map_err(|e| HubError::io(&blob, e))?;
    layout.link(ctx.revision, &f.path, etag)?;
    progress(HubEvent::Done {
        path: f.path.clone(),
        size: f.size,
    });
    Ok((blob, d.sha256))
}

/// Download `f` into `tmp`, resuming from what `tmp` already holds. Returns the digests, the
/// number of bytes in `tmp`, and whether bytes from an earlier run were reused.
fn transfer(
    transport: &Transport,
    opts: &HubOptions,
    ctx: &Ctx<'_>,
    f: &HubFile,
    git: bool,
    tmp: &std::path::Path,
    progress: &dyn Fn(HubEvent),
) -> Result<(cache::DigestHex, u64, bool), HubError> {
    if let Some(parent) = tmp.parent() {
        fs::create_dir_all(parent).map_err(|e| HubError::io(parent, e))?;
    }
    // Another account sharing the hub cache must not be able to plant a symlink here.
    let file = cache::open_nofollow(tmp, OpenOptions::new().create(true).append(true))?;
    let mut offset = file.metadata().map_err(|e| HubError::io(tmp, e))?.len();
    if offset > f.size {
        file.set_len(0).map_err(|e| HubError::io(tmp, e))?;
        offset = 0;
    }
    let resumed = offset > 0;
    let mut digests = Digests::new(f.size, git);
    if offset > 0 {
        offset = digests.update_from_file(tmp, offset)?;
    }
    let mut sink = Sink {
        tmp: tmp.to_path_buf(),
        out: BufWriter::with_capacity(1 << 20, file),
        digests,
        offset,
    };
    progress(HubEvent::Start {
        path: f.path.clone(),
        size: f.size,
        offset,
    });

    let policy = transport.policy();
    let url = endpoint_url(opts, ctx, &resolve_segments(ctx, &f.path))?;
    let auth = auth_header(opts).map_err(|message| HubError::Transport {
        repo: ctx.repo.to_string(),
        revision: ctx.revision.to_string(),
        what: ctx.what(),
        message,
    })?;
    let mut failures = 0u32;
    let mut attempts = 0u32;
    let mut last_reported = offset;
    while sink.offset < f.size {
        attempts += 1;
        let before = sink.offset;
        let get = || with_auth(transport.client().get(url.clone()), auth.as_ref());
        let result = stream_range(transport, get, ctx, f, &mut sink, &mut |done| {
            if done - last_reported >= PROGRESS_EVERY || done == f.size {
                last_reported = done;
                progress(HubEvent::Progress {
                    path: f.path.clone(),
                    done,
                    size: f.size,
                });
            }
        });
        sink.out.flush().map_err(|e| HubError::io(tmp, e))?;
        let retry = match result {
            Ok(()) if sink.offset == f.size => break,
            Ok(()) => Retry::new(format!("body ended at byte {} of {}", sink.offset, f.size)),
            Err(Attempt::Fatal(e)) => return Err(*e),
            Err(Attempt::Restart(why)) => {
                // The server ignored the Range or sent too much: start over from byte 0.
                sink.out
                    .get_ref()
                    .set_len(0)
                    .map_err(|e| HubError::io(tmp, e))?;
                sink.offset = 0;
                sink.digests = Digests::new(f.size, git);
                last_reported = 0;
                Retry::new(why)
            }
            Err(Attempt::Transient(retry)) => retry,
        };
        let reason = retry.cause.clone();
        failures = if sink.offset > before {
            0
        } else {
            failures + 1
        };
        // The policy's retries bound the attempts in a row that gained nothing.
        if failures > policy.retries || attempts >= MAX_ATTEMPTS {
            return Err(HubError::Network {
                repo: ctx.repo.to_string(),
                revision: ctx.revision.to_string(),
                file: f.path.clone(),
                attempts,
                offset: sink.offset,
                size: f.size,
                message: reason,
            });
        }
        let wait = policy.wait(failures.max(1), retry.after);
        transport.options().report(&RetryEvent {
            what: format!("GET {} from byte {}", redact_url(url.as_str()), sink.offset),
            attempt: failures + 1,
            max_attempts: policy.max_attempts(),
            cause: reason.clone(),
            wait,
        });
        progress(HubEvent::Retry {
            path: f.path.clone(),
            attempt: attempts,
            offset: sink.offset,
            reason,
        });
        std::thread::sleep(wait);
    }
    let Sink {
        out,
        digests,
        offset,
        ..
    } = sink;
    let file = out
        .into_inner()
        .map_err(|e| HubError::io(tmp, e.into_error()))?;
    file.sync_all().map_err(|e| HubError::io(tmp, e))?;
    drop(file);

    Ok((digests.finish(), offset, resumed))
}

/// `{repo}/resolve/{commit}/{path…}` as path segments.
fn resolve_segments<'a>(ctx: &Ctx<'a>, path: &'a str) -> Vec<&'a str> {
    let (owner, name) = ctx.repo.split_once('/').unwrap_or((ctx.repo, ""));
    let mut v = vec![owner, name, "resolve", ctx.revision];
    v.extend(path.split('/'));
    v
}

/// Where the bytes of one download go.
struct Sink {
    tmp: PathBuf,
    out: BufWriter<fs::File>,
    digests: Digests,
    /// Bytes in `tmp` (and hashed) so far.
    offset: u64,
}

enum Attempt {
    Fatal(Box<HubError>),
    /// Worth resuming: the cause, and the server's `Retry-After`.
    Transient(Retry),
    Restart(String),
}

/// One request for bytes `offset..size`; appends to `out` and advances `offset`. One attempt:
/// the loop in [`transfer`] resumes from what arrived. A stalled body ends at the transport's
/// idle timeout.
fn stream_range(
    transport: &Transport,
    get: impl Fn() -> reqwest::blocking::RequestBuilder,
    ctx: &Ctx<'_>,
    f: &HubFile,
    sink: &mut Sink,
    on_progress: &mut dyn FnMut(u64),
) -> Result<(), Attempt> {
    let transport_err = |message: String| HubError::Transport {
        repo: ctx.repo.to_string(),
        revision: ctx.revision.to_string(),
        what: ctx.what(),
        message,
    };
    let start = sink.offset;
    let req = get()
        .header(RANGE, format!("bytes={start}-{}", f.size.saturating_sub(1)))
        .build()
        .map_err(|e| Attempt::Fatal(Box::new(transport_err(error_chain(&e.without_url())))))?;
    let mut resp = match transport.send_once(req) {
        Ok(r) => r,
        Err(e) => {
            return Err(match e.retry() {
                Some(r) => Attempt::Transient(r),
                None => Attempt::Fatal(Box::new(transport_err(error_chain(&e)))),
            });
        }
    };
    let status = resp.status();
    if !status.is_success() {
        if let Some(r) = Retry::for_status(status, resp.headers()) {
            return Err(Attempt::Transient(r));
        }
        let header = |n: &str| {
            resp.headers()
                .get(n)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        return Err(Attempt::Fatal(Box::new(ctx.status(
            status.as_u16(),
            header("x-error-code").as_deref(),
            Some(status_detail(
                header("x-error-message"),
                resp.url().as_str(),
            )),
        ))));
    }
    if start > 0 && status.as_u16() != 206 {
        return Err(Attempt::Restart(format!(
            "server ignored the range request at byte {start}"
        )));
    }
    let url = resp.url().to_string();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = match resp.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                let e = crate::transport::TransportError::body(&url, &e);
                return Err(Attempt::Transient(Retry::new(error_chain(&e))));
            }
        };
        if sink.offset + n as u64 > f.size {
            return Err(Attempt::Restart(format!(
                "server sent more than the {} bytes expected",
                f.size
            )));
        }
        sink.out
            .write_all(&buf[..n])
            .map_err(|e| Attempt::Fatal(Box::new(HubError::io(&sink.tmp, e))))?;
        sink.digests.update(&buf[..n]);
        sink.offset += n as u64;
        on_progress(sink.offset);
    }
}
