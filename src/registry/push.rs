//! Push side: blobs (skip / mount / streamed upload with retry and resume), then manifests
//! by digest, then tags.

use std::collections::HashSet;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::Method;
use reqwest::blocking::Body;
use sha2::{Digest as _, Sha256};

use super::client::{Ctx, RegistryClient};
use super::error::{Direction, RegistryError, Result};
use super::limits::Limits;
use super::reference::{Reference, validate_digest};
use crate::digest::sha256_digest;

/// Produces a blob's bytes from the start, each time it is called (an upload retry calls it
/// again). Used for layers that are regenerated from their sources instead of stored.
pub type BlobGenerator = Arc<dyn Fn() -> std::io::Result<Box<dyn Read + Send>> + Send + Sync>;

/// Where a blob's bytes come from.
#[derive(Clone)]
pub enum BlobOrigin {
    /// A local file holding exactly the blob.
    File(PathBuf),
    /// A repository (any registry) that has the blob; the digest is the blob's.
    Registry(Reference),
    /// Generated on demand (verified against the digest while it is uploaded).
    Generated(BlobGenerator),
}

impl std::fmt::Debug for BlobOrigin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BlobOrigin::File(p) => f.debug_tuple("File").field(p).finish(),
            BlobOrigin::Registry(r) => f.debug_tuple("Registry").field(r).finish(),
            BlobOrigin::Generated(_) => f.write_str("Generated"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct PushBlob {
    pub digest: String,
    pub size: u64,
    pub media_type: String,
    pub origin: BlobOrigin,
}

#[derive(Debug, Clone)]
pub struct PushManifest {
    pub digest: String,
    pub media_type: String,
    pub bytes: Vec<u8>,
}

#[derive(Debug, Clone)]
pub struct PushRequest {
    /// Target repository (tag/digest, if any, are ignored: see `tags`).
    pub target: Reference,
    pub tags: Vec<String>,
    pub blobs: Vec<PushBlob>,
    /// Children first; the LAST one is what the tags point at.
    pub manifests: Vec<PushManifest>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobAction {
    /// The target repository already had it.
    Skipped,
    /// Cross-repository mount in the same registry.
    Mounted,
    Uploaded,
}

#[derive(Debug, Clone)]
pub struct PushReport {
    /// Per blob: digest, what happened, bytes sent over the wire (including retries).
    pub blobs: Vec<(String, BlobAction, u64)>,
    /// The digest the tags point at (the last manifest).
    pub manifest_digest: String,
    /// `host/repo:tag@sha256:…` per tag (or `host/repo@sha256:…` with no tags).
    pub pushed: Vec<String>,
}

/// Progress notifications; emitted from worker threads.
#[derive(Debug, Clone)]
pub enum PushEvent {
    BlobStarted {
        digest: String,
        size: u64,
    },
    /// `sent` = bytes of this blob the registry has or is receiving (resets on restart).
    BlobProgress {
        digest: String,
        sent: u64,
        size: u64,
    },
    BlobRetry {
        digest: String,
        attempt: u32,
        error: String,
    },
    BlobDone {
        digest: String,
        action: BlobAction,
        bytes_sent: u64,
    },
    ManifestPushed {
        digest: String,
    },
    TagPushed {
        tag: String,
        digest: String,
    },
}

type BlobResult = Result<(BlobAction, u64)>;

/// Per-blob counters the progress monitor polls.
#[derive(Default)]
struct Meter {
    position: AtomicU64,
    sent: AtomicU64,
    active: AtomicBool,
}

/// The source reader for one upload attempt: hashes and counts what it yields.
struct Source {
    inner: Box<dyn Read + Send>,
    hasher: Sha256,
    read: u64,
    meter: Arc<Meter>,
}

impl Read for Source {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.read += n as u64;
        self.meter.position.fetch_add(n as u64, Ordering::Relaxed);
        self.meter.sent.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// A `'static` view of the next `left` bytes of a shared source, for one request body.
struct Chunk {
    src: Arc<Mutex<Source>>,
    left: u64,
    short: Arc<AtomicBool>,
}

impl Read for Chunk {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let max = buf.len().min(self.left.min(usize::MAX as u64) as usize);
        let mut src = self.src.lock().unwrap_or_else(|p| p.into_inner());
        let n = src.read(&mut buf[..max])?;
        if n == 0 {
            self.short.store(true, Ordering::Relaxed);
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "blob source ended before its declared size",
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

struct HashWriter<'a>(&'a mut Sha256);

impl std::io::Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Failures after which asking the session for its range (or restarting) may help:
/// transient ones anywhere, and the target's own session/auth troubles (an expired token, a
/// lost or confused upload session). A source registry's 404 is final.
fn upload_retryable(e: &RegistryError) -> bool {
    if e.is_transient() {
        return true;
    }
    match e {
        RegistryError::Http(h) if h.direction == Direction::Push => {
            matches!(h.status_code, 401 | 404 | 416)
                || matches!(
                    h.code.as_ref().map(|c| c.code.as_str()),
                    Some("BLOB_UPLOAD_UNKNOWN" | "BLOB_UPLOAD_INVALID")
                )
        }
        _ => false,
    }
}

/// The bytes a blob's source yielded hash to the blob's digest (else nothing is committed).
fn check_sent_digest(ctx: &Ctx, b: &PushBlob, src: &Source) -> Result<()> {
    let actual = format!("sha256:{}", hex::encode(src.hasher.clone().finalize()));
    if actual != b.digest {
        return Err(RegistryError::DigestMismatch {
            direction: Direction::Push,
            host: ctx.reference.registry.clone(),
            repository: ctx.reference.repository.clone(),
            digest: b.digest.clone(),
            actual,
        });
    }
    Ok(())
}

impl RegistryClient {
    /// Push blobs, then manifests by digest, then tags. See the module docs for the rules.
    pub fn push(
        &self,
        req: &PushRequest,
        progress: &(dyn Fn(PushEvent) + Sync),
    ) -> Result<PushReport> {
        let target = Reference {
            tag: None,
            digest: None,
            ..req.target.clone()
        };
        let bad = |reason: String| RegistryError::InvalidPushRequest {
            target: target.to_string(),
            reason,
        };
        let Some(top) = req.manifests.last() else {
            return Err(bad("no manifests".into()));
        };
        for t in &req.tags {
            Reference::parse(&format!("{}:{t}", target.repo_name()))
                .map_err(|_| bad(format!("invalid tag {t:?}")))?;
        }
        for m in &req.manifests {
            validate_digest(&m.digest)?;
            let actual = sha256_digest(&m.bytes);
            if actual != m.digest {
                return Err(bad(format!(
                    "manifest bytes hash to {actual}, not the declared {}",
                    m.digest
                )));
            }
        }
        let mut seen = HashSet::new();
        let blobs: Vec<&PushBlob> = req
            .blobs
            .iter()
            .filter(|b| seen.insert(b.digest.clone()))
            .collect();
        for b in &blobs {
            validate_digest(&b.digest)?;
        }
        // the registry's per-layer limit, before any byte goes out
        let limits = self.limits(&target.registry);
        if let Some(max) = limits.max_blob
            && let Some(b) = blobs.iter().find(|b| b.size > max)
        {
            return Err(RegistryError::OverLimit {
                host: target.registry.clone(),
                repository: target.repository.clone(),
                registry: limits.name.to_string(),
                what: format!("blob {}", b.digest),
                size: b.size,
                limit: max,
            });
        }

        // An image the target already has (a no-op rebuild): a registry stores a manifest only
        // once everything it references is there, so one HEAD stands for every blob and child.
        let ctx = Ctx::push(&target);
        let present = self.manifest_digest(&ctx, &top.digest)?.is_some();
        let results = if present {
            blobs
                .iter()
                .map(|b| {
                    self.remember_blob(&target, &b.digest);
                    progress(PushEvent::BlobDone {
                        digest: b.digest.clone(),
                        action: BlobAction::Skipped,
                        bytes_sent: 0,
                    });
                    (b.digest.clone(), BlobAction::Skipped, 0)
                })
                .collect()
        } else {
            self.push_blobs(&target, &blobs, progress)?
        };

        // Every blob is confirmed: manifests by digest (children first), then tags.
        if !present {
            for m in &req.manifests {
                self.put_manifest(&ctx, &m.digest, m)?;
                progress(PushEvent::ManifestPushed {
                    digest: m.digest.clone(),
                });
            }
        }
        let mut pushed = Vec::new();
        for t in &req.tags {
            // a tag already on this image is left alone
            let in_place =
                present && self.manifest_digest(&ctx, t)?.as_deref() == Some(top.digest.as_str());
            if !in_place {
                self.put_manifest(&ctx, t, top)?;
            }
            progress(PushEvent::TagPushed {
                tag: t.clone(),
                digest: top.digest.clone(),
            });
            pushed.push(format!("{}:{t}@{}", target.repo_name(), top.digest));
        }
        if req.tags.is_empty() {
            pushed.push(format!("{}@{}", target.repo_name(), top.digest));
        }
        Ok(PushReport {
            blobs: results,
            manifest_digest: top.digest.clone(),
            pushed,
        })
    }

    fn push_blobs(
        &self,
        target: &Reference,
        blobs: &[&PushBlob],
        progress: &(dyn Fn(PushEvent) + Sync),
    ) -> Result<Vec<(String, BlobAction, u64)>> {
        let meters: Vec<Arc<Meter>> = blobs.iter().map(|_| Arc::default()).collect();
        let results: Vec<Mutex<Option<BlobResult>>> =
            blobs.iter().map(|_| Mutex::new(None)).collect();
        let next = AtomicUsize::new(0);
        let failed = AtomicBool::new(false);
        let done = AtomicBool::new(false);
        let workers = self
            .opts
            .max_parallel_uploads
            .max(1)
            .min(blobs.len().max(1));

        std::thread::scope(|s| {
            let monitor = s.spawn(|| {
                let mut last = vec![u64::MAX; blobs.len()];
                while !done.load(Ordering::Relaxed) {
                    std::thread::park_timeout(Duration::from_millis(200));
                    for (i, m) in meters.iter().enumerate() {
                        let pos = m.position.load(Ordering::Relaxed);
                        if m.active.load(Ordering::Relaxed) && pos != last[i] {
                            last[i] = pos;
                            progress(PushEvent::BlobProgress {
                                digest: blobs[i].digest.clone(),
                                sent: pos,
                                size: blobs[i].size,
                            });
                        }
                    }
                }
            });
            let handles: Vec<_> = (0..workers)
                .map(|_| {
                    s.spawn(|| {
                        loop {
                            if failed.load(Ordering::Relaxed) {
                                break;
                            }
                            let i = next.fetch_add(1, Ordering::Relaxed);
                            let Some(b) = blobs.get(i) else { break };
                            progress(PushEvent::BlobStarted {
                                digest: b.digest.clone(),
                                size: b.size,
                            });
                            meters[i].active.store(true, Ordering::Relaxed);
                            let r = self.push_blob(target, b, &meters[i], progress);
                            meters[i].active.store(false, Ordering::Relaxed);
                            match &r {
                                Ok((action, sent)) => progress(PushEvent::BlobDone {
                                    digest: b.digest.clone(),
                                    action: *action,
                                    bytes_sent: *sent,
                                }),
                                Err(_) => failed.store(true, Ordering::Relaxed),
                            }
                            *results[i].lock().unwrap_or_else(|p| p.into_inner()) = Some(r);
                        }
                    })
                })
                .collect();
            for h in handles {
                // A panicking worker leaves its slot empty; reported below.
                let _ = h.join();
            }
            done.store(true, Ordering::Relaxed);
            monitor.thread().unpark();
            let _ = monitor.join();
        });

        let mut out = Vec::with_capacity(blobs.len());
        let mut first_err = None;
        for (b, slot) in blobs.iter().zip(results) {
            match slot.into_inner().unwrap_or_else(|p| p.into_inner()) {
                Some(Ok((a, n))) => out.push((b.digest.clone(), a, n)),
                Some(Err(e)) => {
                    first_err.get_or_insert(e);
                }
                None => {} // not started because another blob failed
            }
        }
        if let Some(e) = first_err {
            return Err(e);
        }
        if out.len() != blobs.len() {
            return Err(RegistryError::InvalidPushRequest {
                target: target.to_string(),
                reason: "an upload worker stopped unexpectedly".into(),
            });
        }
        Ok(out)
    }

    /// `HEAD manifests/<reference>`: the digest it names (from `Docker-Content-Digest`; for a
    /// digest reference, the digest itself), or `None` when the registry has no such manifest
    /// (or does not say which digest a tag names).
    fn manifest_digest(&self, ctx: &Ctx, reference: &str) -> Result<Option<String>> {
        let url = self.url(ctx.reference, &format!("manifests/{reference}"))?;
        let resp = self.simple(
            ctx,
            Method::HEAD,
            &url,
            &format!("manifest {reference}"),
            &[("Accept", super::pull::MANIFEST_ACCEPT)],
            &[200, 404],
        )?;
        if resp.status().as_u16() != 200 {
            return Ok(None);
        }
        if reference.starts_with("sha256:") {
            return Ok(Some(reference.to_string()));
        }
        Ok(resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .filter(|d| d.starts_with("sha256:"))
            .map(str::to_string))
    }

    fn blob_exists(&self, ctx: &Ctx, digest: &str) -> Result<bool> {
        let url = self.url(ctx.reference, &format!("blobs/{digest}"))?;
        let resp = self.simple(
            ctx,
            Method::HEAD,
            &url,
            &format!("blob {digest}"),
            &[],
            &[200, 404],
        )?;
        Ok(resp.status().as_u16() == 200)
    }

    fn push_blob(
        &self,
        target: &Reference,
        b: &PushBlob,
        meter: &Arc<Meter>,
        progress: &(dyn Fn(PushEvent) + Sync),
    ) -> Result<(BlobAction, u64)> {
        let r = self.place_blob(target, b, meter, progress)?;
        self.remember_blob(target, &b.digest);
        Ok(r)
    }

    /// Skip (the target has it), mount (from the blob's source repository, else from one we
    /// pushed it to before), or upload.
    fn place_blob(
        &self,
        target: &Reference,
        b: &PushBlob,
        meter: &Arc<Meter>,
        progress: &(dyn Fn(PushEvent) + Sync),
    ) -> Result<(BlobAction, u64)> {
        let ctx = Ctx::push(target);
        if self.blob_exists(&ctx, &b.digest)? {
            return Ok((BlobAction::Skipped, 0));
        }
        let from = match &b.origin {
            BlobOrigin::Registry(src)
                if src.registry == target.registry && src.repository != target.repository =>
            {
                Some(src.repository.clone())
            }
            _ => self.memory.get().and_then(|m| {
                m.repositories(&target.registry, &b.digest)
                    .into_iter()
                    .find(|r| *r != target.repository)
            }),
        };
        let mut session = None;
        if let Some(from) = from {
            let mut mctx = Ctx::push(target);
            mctx.scopes.push(format!("repository:{from}:pull"));
            let mut url = self.url(target, "blobs/uploads/")?;
            url.query_pairs_mut()
                .append_pair("mount", &b.digest)
                .append_pair("from", &from);
            let what = format!("mount {} from {from}", b.digest);
            let resp = self.simple(&mctx, Method::POST, &url, &what, &[], &[201, 202])?;
            if resp.status().as_u16() == 201 {
                return Ok((BlobAction::Mounted, 0));
            }
            // 202: the source lacks it; the registry opened an upload session — use it.
            let limits = self
                .limits(&target.registry)
                .with_session_headers(resp.headers());
            session = Some((self.resolve_location(&mctx, &what, &resp)?, limits));
        }
        let sent = self.upload_blob(&ctx, b, session, meter, progress)?;
        Ok((BlobAction::Uploaded, sent))
    }

    /// Opens an upload session: its URL, and the upload rules (mlimg's table for the host,
    /// tightened by the `OCI-Chunk-Min-Length` / `OCI-Chunk-Max-Length` the answer carries).
    pub(super) fn start_upload(&self, ctx: &Ctx) -> Result<(reqwest::Url, Limits)> {
        let url = self.url(ctx.reference, "blobs/uploads/")?;
        let resp = self.simple(ctx, Method::POST, &url, "upload", &[], &[202])?;
        let limits = self
            .limits(&ctx.reference.registry)
            .with_session_headers(resp.headers());
        Ok((self.resolve_location(ctx, "upload", &resp)?, limits))
    }

    /// `GET <location>`: bytes the session holds, or `None` if the session is gone.
    fn upload_offset(&self, ctx: &Ctx, location: &reqwest::Url) -> Result<Option<u64>> {
        let resp = self.send(ctx, "GET", "upload status", &mut || {
            Ok(self.transport.metadata(self.http.get(location.clone())))
        })?;
        if !resp.status().is_success() {
            return Ok(None);
        }
        let range = resp
            .headers()
            .get("range")
            .and_then(|v| v.to_str().ok())
            .and_then(|r| r.trim().rsplit_once('-'))
            .and_then(|(_, end)| end.trim().parse::<u64>().ok());
        // "0-0" is ambiguous (0 or 1 byte); treating it as 0 costs at most one restart.
        Ok(Some(match range {
            Some(0) | None => 0,
            Some(end) => end + 1,
        }))
    }

    pub(super) fn cancel_upload(&self, ctx: &Ctx, location: &reqwest::Url) {
        let _ = self.send(ctx, "DELETE", "upload", &mut || {
            Ok(self.transport.metadata(self.http.delete(location.clone())))
        });
    }

    /// Upload one blob into a session (opening one if needed), retrying and resuming.
    /// Returns the bytes sent over all attempts.
    fn upload_blob(
        &self,
        ctx: &Ctx,
        b: &PushBlob,
        session: Option<(reqwest::Url, Limits)>,
        meter: &Arc<Meter>,
        progress: &(dyn Fn(PushEvent) + Sync),
    ) -> Result<u64> {
        if let BlobOrigin::File(p) = &b.origin {
            let len = std::fs::metadata(p)
                .map_err(|e| RegistryError::Io {
                    path: p.clone(),
                    source: e,
                })?
                .len();
            if len != b.size {
                return Err(RegistryError::SizeMismatch {
                    direction: Direction::Push,
                    host: ctx.reference.registry.clone(),
                    repository: ctx.reference.repository.clone(),
                    digest: b.digest.clone(),
                    expected: b.size,
                    actual: len,
                });
            }
        }
        let (mut location, mut limits) = match session {
            Some(l) => l,
            None => self.start_upload(ctx)?,
        };
        let mut offset = 0u64;
        let mut failures = 0u32;
        let mut resumed_failed = false;
        loop {
            let resuming = offset > 0;
            match self.upload_attempt(ctx, b, &mut location, offset, meter, &limits) {
                Ok(()) => return Ok(meter.sent.load(Ordering::Relaxed)),
                Err(e) if upload_retryable(&e) && failures < self.transport.policy().retries => {
                    failures += 1;
                    progress(PushEvent::BlobRetry {
                        digest: b.digest.clone(),
                        attempt: failures,
                        error: e.to_string(),
                    });
                    // The shared policy decides the wait (and honours Retry-After); the resume
                    // below is this loop's own.
                    let what = format!(
                        "upload of blob {} to {}",
                        b.digest,
                        crate::transport::redact_url(location.as_str())
                    );
                    std::thread::sleep(self.report_retry(&what, failures, &e));
                    // A resume that failed on a non-transient status: start over.
                    let restart = resuming && !e.is_transient() && resumed_failed;
                    resumed_failed = resuming && !e.is_transient();
                    let known = if restart {
                        None
                    } else {
                        self.upload_offset(ctx, &location).ok().flatten()
                    };
                    match known {
                        Some(n) if n <= b.size => offset = n,
                        _ => {
                            // Session gone. Maybe the final PUT landed before the failure.
                            if self.blob_exists(ctx, &b.digest).unwrap_or(false) {
                                return Ok(meter.sent.load(Ordering::Relaxed));
                            }
                            self.cancel_upload(ctx, &location);
                            (location, limits) = self.start_upload(ctx)?;
                            offset = 0;
                        }
                    }
                }
                Err(e) => {
                    self.cancel_upload(ctx, &location);
                    return Err(e);
                }
            }
        }
    }

    /// Open the blob's source positioned at `offset`. Returns the reader, and a hasher that
    /// already covers `[0, offset)` when we can verify the whole blob locally (`None` when
    /// resuming from a registry that honoured the range: the target verifies the digest).
    fn open_source(
        &self,
        b: &PushBlob,
        offset: u64,
    ) -> Result<(Box<dyn Read + Send>, Option<Sha256>)> {
        let mut prefix = Sha256::new();
        match &b.origin {
            BlobOrigin::File(p) => {
                let io = |e| RegistryError::Io {
                    path: p.clone(),
                    source: e,
                };
                let mut f = File::open(p).map_err(io)?;
                if offset > 0 {
                    let mut head = (&mut f).take(offset);
                    std::io::copy(&mut head, &mut HashWriter(&mut prefix)).map_err(io)?;
                    f.seek(SeekFrom::Start(offset)).map_err(io)?;
                }
                Ok((
                    Box::new(std::io::BufReader::with_capacity(1 << 20, f)),
                    Some(prefix),
                ))
            }
            BlobOrigin::Generated(make) => {
                let io = |e| RegistryError::Io {
                    path: PathBuf::from(format!("(generated {})", b.digest)),
                    source: e,
                };
                let mut r = make().map_err(io)?;
                if offset > 0 {
                    let mut head = (&mut r).take(offset);
                    std::io::copy(&mut head, &mut HashWriter(&mut prefix)).map_err(io)?;
                }
                Ok((r, Some(prefix)))
            }
            BlobOrigin::Registry(src) => {
                let sctx = Ctx::pull(src);
                let mut resp = self.open_blob(&sctx, &b.digest, offset)?;
                if offset > 0 && resp.status().as_u16() == 206 {
                    return Ok((Box::new(resp), None));
                }
                if offset > 0 {
                    // Range ignored: hash and skip the prefix.
                    let mut head = (&mut resp).take(offset);
                    std::io::copy(&mut head, &mut HashWriter(&mut prefix)).map_err(|e| {
                        RegistryError::Stream {
                            direction: Direction::Pull,
                            host: src.registry.clone(),
                            repository: src.repository.clone(),
                            what: format!("blob {}", b.digest),
                            source: e,
                        }
                    })?;
                }
                Ok((Box::new(resp), Some(prefix)))
            }
        }
    }

    /// One pass: PATCH the rest of the blob from `offset` (one streamed PATCH or chunks),
    /// check the digest, PUT `?digest=`.
    fn upload_attempt(
        &self,
        ctx: &Ctx,
        b: &PushBlob,
        location: &mut reqwest::Url,
        offset: u64,
        meter: &Arc<Meter>,
        limits: &Limits,
    ) -> Result<()> {
        let chunk = limits
            .chunk_for(b.size, self.opts.chunk_size)
            .map_err(|reason| RegistryError::UploadRules {
                host: ctx.reference.registry.clone(),
                repository: ctx.reference.repository.clone(),
                reason,
            })?;
        // a monolithic upload sends the whole blob with the closing PUT: nothing to resume
        let offset = if limits.monolithic { 0 } else { offset };
        meter.position.store(offset, Ordering::Relaxed);
        let (reader, hasher) = self.open_source(b, offset)?;
        let verify = hasher.is_some();
        let src = Arc::new(Mutex::new(Source {
            inner: reader,
            hasher: hasher.unwrap_or_default(),
            read: 0,
            meter: meter.clone(),
        }));
        let short = Arc::new(AtomicBool::new(false));
        let what = format!("blob {}", b.digest);
        let mut pos = offset;
        if limits.monolithic {
            return self.put_monolithic(ctx, b, location, &src, &short, verify);
        }
        while pos < b.size {
            let len = match chunk {
                Some(c) => c.min(b.size - pos),
                None => b.size - pos,
            };
            let body = Body::sized(
                Chunk {
                    src: src.clone(),
                    left: len,
                    short: short.clone(),
                },
                len,
            );
            // A streamed body cannot be replayed: one attempt (the loop in `upload_blob`
            // resumes), with no whole-request limit (the idle timeout still applies).
            let mut rb = self
                .http
                .patch(location.clone())
                .timeout(crate::transport::UPLOAD_TIMEOUT)
                .header("Content-Type", "application/octet-stream")
                .header("Content-Length", len.to_string())
                .body(body);
            if chunk.is_some() || pos > 0 {
                rb = rb.header("Content-Range", format!("{}-{}", pos, pos + len - 1));
            }
            let resp = self.send_once(ctx, "PATCH", &what, rb);
            if short.load(Ordering::Relaxed) {
                let read = src.lock().unwrap_or_else(|p| p.into_inner()).read;
                return Err(RegistryError::SizeMismatch {
                    direction: Direction::Push,
                    host: ctx.reference.registry.clone(),
                    repository: ctx.reference.repository.clone(),
                    digest: b.digest.clone(),
                    expected: b.size,
                    actual: offset + read,
                });
            }
            let resp = self.expect(ctx, "PATCH", &what, resp?, &[202, 204])?;
            if resp.headers().contains_key(reqwest::header::LOCATION) {
                *location = self.resolve_location(ctx, &what, &resp)?;
            }
            pos += len;
        }
        let src = src.lock().unwrap_or_else(|p| p.into_inner());
        if verify {
            check_sent_digest(ctx, b, &src)?;
        }
        drop(src);
        let mut put = location.clone();
        put.query_pairs_mut().append_pair("digest", &b.digest);
        let resp = self.send(ctx, "PUT", &what, &mut || {
            Ok(self
                .transport
                .metadata(self.http.put(put.clone()).header("Content-Length", "0")))
        })?;
        self.expect(ctx, "PUT", &what, resp, &[201, 204])?;
        Ok(())
    }

    /// The whole blob in the closing `PUT ?digest=` (registries without chunked uploads).
    fn put_monolithic(
        &self,
        ctx: &Ctx,
        b: &PushBlob,
        location: &reqwest::Url,
        src: &Arc<Mutex<Source>>,
        short: &Arc<AtomicBool>,
        verify: bool,
    ) -> Result<()> {
        let what = format!("blob {}", b.digest);
        let body = Body::sized(
            Chunk {
                src: src.clone(),
                left: b.size,
                short: short.clone(),
            },
            b.size,
        );
        let mut put = location.clone();
        put.query_pairs_mut().append_pair("digest", &b.digest);
        let rb = self
            .http
            .put(put)
            .timeout(crate::transport::UPLOAD_TIMEOUT)
            .header("Content-Type", "application/octet-stream")
            .header("Content-Length", b.size.to_string())
            .body(body);
        let resp = self.send_once(ctx, "PUT", &what, rb);
        let src = src.lock().unwrap_or_else(|p| p.into_inner());
        if short.load(Ordering::Relaxed) {
            return Err(RegistryError::SizeMismatch {
                direction: Direction::Push,
                host: ctx.reference.registry.clone(),
                repository: ctx.reference.repository.clone(),
                digest: b.digest.clone(),
                expected: b.size,
                actual: src.read,
            });
        }
        if verify {
            check_sent_digest(ctx, b, &src)?;
        }
        drop(src);
        self.expect(ctx, "PUT", &what, resp?, &[201, 204])?;
        Ok(())
    }

    fn put_manifest(&self, ctx: &Ctx, reference: &str, m: &PushManifest) -> Result<()> {
        let url = self.url(ctx.reference, &format!("manifests/{reference}"))?;
        let what = if reference == m.digest {
            format!("manifest {reference}")
        } else {
            format!("manifest (tag {reference})")
        };
        self.retrying(&crate::transport::describe("PUT", url.as_str()), || {
            let resp = self.send(ctx, "PUT", &what, &mut || {
                Ok(self.transport.metadata(
                    self.http
                        .put(url.clone())
                        .header("Content-Type", m.media_type.as_str())
                        .body(m.bytes.clone()),
                ))
            })?;
            let resp = self.expect(ctx, "PUT", &what, resp, &[200, 201, 202])?;
            if let Some(d) = resp
                .headers()
                .get("docker-content-digest")
                .and_then(|v| v.to_str().ok())
                && d.starts_with("sha256:")
                && d != m.digest
            {
                return Err(RegistryError::DigestMismatch {
                    direction: Direction::Push,
                    host: ctx.reference.registry.clone(),
                    repository: ctx.reference.repository.clone(),
                    digest: m.digest.clone(),
                    actual: d.to_string(),
                });
            }
            Ok(())
        })
    }
}
