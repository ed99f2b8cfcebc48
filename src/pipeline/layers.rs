//! The layer stages of the pipeline: look each planned layer up in the caches, write the
//! ones no cache has (in parallel, one pass each), and assemble the image set from the base's
//! layers and these.

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use super::{BuildError, shared_cache};
use crate::cache::{Cache, SelectorRecord};
use crate::digest::Digest;
use crate::fetch::Fetched;
use crate::image::{self, BlobSource, Descriptor, Document, Generator, ImageSet, Layer};
use crate::layer::{self, LayerBlob};
use crate::plan::{BuildPlan, LayerPlan};
use crate::progress::{Progress, Warning};
use crate::registry::{Reference, RegistryClient};
use crate::resolve::{Resolved, ResolvedBase};
use crate::spec::{BaseSpec, Spec};

/// A layer some cache already has.
pub(super) struct KnownLayer {
    pub blob: LayerBlob,
    /// Its bytes are in the local cache.
    pub stored: bool,
    /// Found only in the push target's shared records: `(registry, repository)`.
    pub remote: Option<(String, String)>,
}

pub(super) type Known = BTreeMap<String, KnownLayer>;

/// A layer this build wrote.
pub(super) struct WrittenLayer {
    pub blob: LayerBlob,
    /// A file holding its bytes (the cache, or an output's own blob folder), if any.
    pub path: Option<PathBuf>,
    /// Uploaded to the push target while it was written.
    pub streamed: bool,
}

/// Where the layers go besides the cache: an output's own blob folder, or (pushing with no
/// file output) the push target, streamed.
#[derive(Clone, Copy)]
pub(super) struct Destination<'a> {
    pub spool: Option<&'a Path>,
    pub stream: Option<(&'a RegistryClient, &'a Reference)>,
}

pub(super) type Written = BTreeMap<String, WrittenLayer>;

/// The push target's selector records, and the key they must verify under (`None`: believed
/// as they are, `--shared-cache=unsigned`).
#[derive(Clone, Copy)]
pub(super) struct Shared<'a> {
    pub client: &'a RegistryClient,
    pub target: &'a Reference,
    pub key: Option<&'a shared_cache::CacheKey>,
}

/// Stored blobs up to this size are hashed before every reuse; larger ones one time in
/// [`VERIFY_ONE_IN`] (a corrupt one that slips through fails the output that copies it, which
/// then drops it from the cache: see [`drop_if_corrupt`]).
const VERIFY_ALWAYS_UP_TO: u64 = 64 << 20;
const VERIFY_ONE_IN: u64 = 16;

/// Whether this reuse of a stored blob of `size` bytes hashes it.
fn verify_this_time(size: u64) -> bool {
    use std::hash::{BuildHasher as _, Hasher as _};
    if size <= VERIFY_ALWAYS_UP_TO {
        return true;
    }
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(size);
    h.finish().is_multiple_of(VERIFY_ONE_IN)
}

/// Why the stored blob for `rec` cannot be reused, if it cannot: missing, another size, or
/// (when checked this time) another sha256.
fn stored_blob_problem(cache: &Cache, rec: &SelectorRecord) -> Option<&'static str> {
    let path = cache.blob_path(&rec.blob.digest);
    match std::fs::symlink_metadata(&path) {
        Ok(m) if m.is_file() && m.len() == rec.blob.size => {}
        Ok(_) => return Some("has the wrong size"),
        Err(_) => return Some("is missing"),
    }
    if verify_this_time(rec.blob.size)
        && !layer::sha256_file(&path).is_ok_and(|(d, _)| d == rec.blob.digest)
    {
        return Some("does not hash to its digest");
    }
    None
}

/// After an output found that the bytes behind `digest` do not match it: if the cache holds
/// that blob and it is indeed corrupt, drop it (with a `cache-corrupt` warning), so the next
/// build fetches or rebuilds it instead of failing again.
pub(super) fn drop_if_corrupt(cache: &Cache, digest: &str, progress: &dyn Progress) {
    let path = cache.blob_path(digest);
    if !path.is_file() || layer::sha256_file(&path).is_ok_and(|(d, _)| d == digest) {
        return;
    }
    cache.evict_blob(digest);
    progress.warning(&Warning::new(
        "cache-corrupt",
        format!(
            "cached blob {digest} does not hash to its digest; dropped it from the cache: the \
             next build fetches or rebuilds it"
        ),
    ));
}

/// Checks the cached copies of registry bases' layers before they are reused (size; sha256
/// when small or now and then, as for stored layers): a bad copy is dropped with a
/// `cache-corrupt` warning, so the fetch that follows downloads it again.
pub(super) fn check_base_blobs(bases: &[&ResolvedBase], cache: &Cache, progress: &dyn Progress) {
    for l in bases.iter().flat_map(|b| &b.layers) {
        if !matches!(l.source, BlobSource::Remote { .. }) {
            continue;
        }
        let d = &l.descriptor.digest;
        let path = cache.blob_path(d);
        let Ok(m) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        let problem = if !m.is_file() || m.len() != l.descriptor.size {
            "has the wrong size"
        } else if verify_this_time(m.len())
            && !layer::sha256_file(&path).is_ok_and(|(got, _)| got == d.as_str())
        {
            "does not hash to its digest"
        } else {
            continue;
        };
        cache.evict_blob(d);
        progress.warning(&Warning::new(
            "cache-corrupt",
            format!("base: cached layer {d} {problem}; dropped it and fetching it again"),
        ));
    }
}

/// Looks every layer up by selector: the local cache first (a stored blob is checked for its
/// size, and hashed when small or now and then; a bad entry is dropped with a warning and
/// rebuilt), then, for downloaded sources with `--push` and no other output, the push
/// target's shared records (`shared`).
pub(super) fn lookup(
    unique: &[Arc<LayerPlan>],
    cache: &Cache,
    shared: Option<Shared<'_>>,
    progress: &dyn Progress,
) -> Known {
    let mut known = Known::new();
    for l in unique {
        if let Some(rec) = cache.get_selector(&l.selector) {
            let problem = if rec.stored {
                stored_blob_problem(cache, &rec)
            } else {
                None
            };
            let Some(problem) = problem else {
                progress.layer_done(l.id(), &l.label(), true);
                known.insert(
                    l.selector.clone(),
                    KnownLayer {
                        blob: rec.blob,
                        stored: rec.stored,
                        remote: None,
                    },
                );
                continue;
            };
            progress.warning(&Warning::new(
                "cache-corrupt",
                format!(
                    "{}: cached blob {} {problem}; dropping it and building the layer again",
                    l.role, rec.blob.digest
                ),
            ));
            cache.evict_blob(&rec.blob.digest);
        }
        if let Some(Shared {
            client,
            target,
            key,
        }) = shared
            && l.store_bytes
            && let Some(blob) = shared_cache::lookup_or_miss(
                client,
                target,
                &l.selector,
                key,
                &l.role.to_string(),
                progress,
            )
        {
            progress.message(&format!(
                "{}: layer {} found in the push target; not downloading",
                l.role, blob.digest
            ));
            known.insert(
                l.selector.clone(),
                KnownLayer {
                    blob,
                    stored: false,
                    remote: Some((target.registry.clone(), target.repository.clone())),
                },
            );
        }
    }
    known
}

type Slot = Mutex<Option<Result<WrittenLayer, BuildError>>>;

/// Writes `layers` (none of which a cache has), `jobs` at a time (0 = one per core).
/// A layer whose bytes are not kept in the cache (uncompressed local sources) is written
/// straight into `spool` (an output's blob folder) when there is one: one read of its
/// sources makes the tar, its digests and the output's file.
pub(super) fn write(
    layers: &[&LayerPlan],
    fetched: &Fetched,
    cache: &Cache,
    mtime: u64,
    jobs: usize,
    dest: Destination<'_>,
    progress: &dyn Progress,
) -> Result<Written, BuildError> {
    let jobs = if jobs == 0 {
        std::thread::available_parallelism().map_or(2, |n| n.get())
    } else {
        jobs
    };
    let next = AtomicUsize::new(0);
    let results: Vec<Slot> = layers.iter().map(|_| Mutex::new(None)).collect();
    std::thread::scope(|s| {
        for _ in 0..jobs.min(layers.len()) {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(l) = layers.get(i) else { break };
                    let r = write_one(l, fetched, cache, mtime, dest, progress);
                    let failed = r.is_err();
                    if let Ok(mut slot) = results[i].lock() {
                        *slot = Some(r);
                    }
                    if failed {
                        // stop handing out work; the others finish what they hold
                        next.store(layers.len(), Ordering::SeqCst);
                    }
                }
            });
        }
    });
    let mut out = Written::new();
    let mut first_err = None;
    for (slot, l) in results.into_iter().zip(layers) {
        match slot.into_inner().ok().flatten() {
            Some(Ok(w)) => {
                out.insert(l.selector.clone(), w);
            }
            Some(Err(e)) => {
                first_err.get_or_insert(e);
            }
            None => {}
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

fn write_one(
    l: &LayerPlan,
    fetched: &Fetched,
    cache: &Cache,
    mtime: u64,
    dest: Destination<'_>,
    progress: &dyn Progress,
) -> Result<WrittenLayer, BuildError> {
    let entries = fetched.entries(l)?;
    let size: u64 = entries.iter().map(crate::layer::Entry::size).sum();
    progress.layer_start(l.id(), &l.label(), size);
    let on_bytes = |done| progress.layer_bytes(l.id(), done);
    let layer_err = |source| BuildError::Layer {
        role: l.role.to_string(),
        source,
    };
    let io_layer_err = |e: io::Error| layer_err(layer::LayerError::Write(e));
    let mut streamed = false;
    let (blob, stored, path) = if l.stores_bytes() {
        let tmp = cache.temp()?;
        let blob = layer::write_owned(
            &entries,
            &l.owners,
            l.compression,
            mtime,
            tmp.as_file(),
            &on_bytes,
        )
        .map_err(layer_err)?;
        cache.commit(tmp, &blob.digest)?;
        let p = cache.blob_path(&blob.digest);
        (blob, true, Some(p))
    } else if let (None, Some((client, target))) = (dest.spool, dest.stream)
        && let Some(blob) = stream_layer(client, target, l, &entries, mtime, &on_bytes, progress)
    {
        // Pushed while written: one pass over the sources, nothing stored.
        streamed = true;
        (blob, false, None)
    } else if let Some(dir) = dest.spool {
        let tmp = tempfile::Builder::new()
            .prefix(".layer-")
            .tempfile_in(dir)
            .map_err(io_layer_err)?;
        let blob = layer::write_owned(
            &entries,
            &l.owners,
            l.compression,
            mtime,
            tmp.as_file(),
            &on_bytes,
        )
        .map_err(layer_err)?;
        let hex = blob.digest.trim_start_matches("sha256:");
        let dest = dir.join(hex);
        tmp.persist(&dest).map_err(|e| io_layer_err(e.error))?;
        (blob, false, Some(dest))
    } else {
        // Uncompressed: the blob is the tar of the sources, so only its digest and size are
        // recorded; outputs regenerate the bytes (no copy of the weights in the cache).
        let blob = layer::write_owned(
            &entries,
            &l.owners,
            l.compression,
            mtime,
            io::sink(),
            &on_bytes,
        )
        .map_err(layer_err)?;
        (blob, false, None)
    };
    cache.put_selector(
        &l.selector,
        &SelectorRecord {
            blob: blob.clone(),
            stored,
        },
    )?;
    progress.layer_done(l.id(), &l.label(), false);
    Ok(WrittenLayer {
        blob,
        path,
        streamed,
    })
}

/// Writes a layer straight into an upload to `target`. `None` (with a warning) when the
/// registry could not take it that way: the caller then hashes the layer, and the push
/// uploads it with its retries.
fn stream_layer(
    client: &RegistryClient,
    target: &Reference,
    l: &LayerPlan,
    entries: &[layer::Entry],
    mtime: u64,
    on_bytes: &(dyn Fn(u64) + Sync),
    progress: &dyn Progress,
) -> Option<LayerBlob> {
    let r = client.upload_streamed(target, |w| {
        let blob = layer::write_owned(entries, &l.owners, l.compression, mtime, w, on_bytes)
            .map_err(io::Error::other)?;
        Ok(crate::registry::Streamed {
            digest: blob.digest.clone(),
            size: blob.size,
            value: blob,
        })
    });
    match r {
        Ok(s) => Some(s.value),
        Err(e) => {
            progress.warning(&Warning::new(
                "stream-upload",
                format!(
                    "{}: could not stream the layer to {target} ({e}); hashing it first and uploading it after",
                    l.role
                ),
            ));
            None
        }
    }
}

fn digest(role: &str, d: &str) -> Result<Digest, BuildError> {
    Digest::parse(d).map_err(|e| BuildError::BadLayer {
        role: role.to_string(),
        digest: d.to_string(),
        message: e.to_string(),
    })
}

/// The base's layers, with the cached copy of a registry base's blob when file outputs had it
/// fetched.
fn base_layers(base: &ResolvedBase, cache: &Cache) -> Vec<Layer> {
    base.layers
        .iter()
        .map(|l| {
            let mut l = l.clone();
            if let BlobSource::Remote { local, .. } = &mut l.source {
                let p = cache.blob_path(&l.descriptor.digest);
                *local = p.is_file().then_some(p);
            }
            l
        })
        .collect()
}

/// Every platform's image (and the index over several) from the plan and the layers.
#[allow(clippy::too_many_arguments)]
pub(super) fn assemble(
    spec: &Spec,
    resolved: &Resolved,
    plan: &BuildPlan,
    known: &Known,
    written: &Written,
    fetched: &Arc<Fetched>,
    cache: &Cache,
    mtime: u64,
    created: u64,
    source: &super::git::SourceInfo,
) -> Result<ImageSet, BuildError> {
    let created = image::rfc3339(created);
    let mut images = Vec::new();
    for (pp, rp) in plan.platforms.iter().zip(&resolved.platforms) {
        let mut layers = base_layers(&rp.base, cache);
        for l in &pp.layers {
            let role = l.role.to_string();
            let (blob, cached, source) = if let Some(w) = written.get(&l.selector) {
                let source = match &w.path {
                    Some(p) => BlobSource::File(p.clone()),
                    None => BlobSource::Generate(generator(l, fetched, mtime, &w.blob, cache)),
                };
                (&w.blob, false, source)
            } else if let Some(k) = known.get(&l.selector) {
                let source = match (&k.remote, k.stored) {
                    (Some((registry, repository)), _) => BlobSource::Remote {
                        registry: registry.clone(),
                        repository: repository.clone(),
                        local: None,
                    },
                    (None, true) => BlobSource::File(cache.blob_path(&k.blob.digest)),
                    (None, false) => {
                        BlobSource::Generate(generator(l, fetched, mtime, &k.blob, cache))
                    }
                };
                (&k.blob, true, source)
            } else {
                return Err(BuildError::BadLayer {
                    role,
                    digest: String::new(),
                    message: "was neither found nor written".into(),
                });
            };
            layers.push(Layer {
                descriptor: Descriptor {
                    media_type: blob.media_type.clone(),
                    digest: digest(&role, &blob.digest)?,
                    size: blob.size,
                },
                diff_id: digest(&role, &blob.diff_id)?,
                source,
                role,
                created_by: l.created_by.clone(),
                cached,
            });
        }
        let annotations = manifest_annotations(spec, &rp.base, &created, source);
        let first_new = layers.len().saturating_sub(pp.layers.len());
        let layer_annotations: Vec<BTreeMap<String, String>> = (0..first_new)
            .map(|_| BTreeMap::new())
            .chain(
                pp.layers
                    .iter()
                    .map(|l| layer_annotations(spec, resolved, l)),
            )
            .collect();
        images.push(image::assemble(
            &pp.platform,
            &rp.base.config,
            &super::gpu::settings(&crate::plan::run_settings(spec, rp), rp),
            layers,
            pp.layers.len(),
            &created,
            &annotations,
            &layer_annotations,
        )?);
    }
    let index = if images.len() > 1 {
        let mut ann = BTreeMap::new();
        ann.insert("org.opencontainers.image.created".to_string(), created);
        let entries: Vec<_> = images
            .iter()
            .map(|i| (i.manifest.descriptor.clone(), i.platform.clone()))
            .collect();
        Some(Document::new(
            image::INDEX_MEDIA_TYPE,
            image::build_index(&entries, &ann)?,
        ))
    } else {
        None
    };
    ImageSet::new(
        images,
        index,
        spec.image.name.clone(),
        spec.image.tags.clone(),
    )
    .ok_or_else(|| BuildError::BadLayer {
        role: "image".into(),
        digest: String::new(),
        message: "the build has no platform".into(),
    })
}

/// The annotation keys of a weights layer's descriptor (docs/provenance.md).
pub const WEIGHTS_NAME: &str = "dev.mlimg.weights.name";
/// `hf://org/repo` or `local`.
pub const WEIGHTS_SOURCE: &str = "dev.mlimg.weights.source";
/// The Hub commit the layer's files are from (Hub weights only).
pub const WEIGHTS_REVISION: &str = "dev.mlimg.weights.revision";

/// A new layer's descriptor annotations: for weights, which entry, where from and at which
/// commit (all from the spec and the lock, so the same inputs give the same manifest).
fn layer_annotations(
    spec: &Spec,
    resolved: &crate::resolve::Resolved,
    l: &LayerPlan,
) -> BTreeMap<String, String> {
    let mut a = BTreeMap::new();
    let crate::plan::LayerRole::Weights(name) = &l.role else {
        return a;
    };
    let Some(w) = spec.weights.iter().find(|w| &w.name == name) else {
        return a;
    };
    a.insert(WEIGHTS_NAME.to_string(), name.clone());
    match &w.source {
        crate::spec::WeightsSource::Hub { repo, .. } => {
            a.insert(WEIGHTS_SOURCE.to_string(), format!("hf://{repo}"));
            if let Some(lock) = resolved.weights.iter().find(|l| &l.name == name) {
                a.insert(WEIGHTS_REVISION.to_string(), lock.commit.clone());
            }
        }
        crate::spec::WeightsSource::Local(_) => {
            a.insert(WEIGHTS_SOURCE.to_string(), "local".to_string());
        }
    }
    a
}

/// The image manifest's annotations: `created`, the base (`base.name`, `base.digest`), the
/// source repository and revision, the version (the first tag unless it is `latest`), the
/// reference name, then `[config].annotations` (which win).
fn manifest_annotations(
    spec: &Spec,
    base: &ResolvedBase,
    created: &str,
    source: &super::git::SourceInfo,
) -> BTreeMap<String, String> {
    let mut a = BTreeMap::new();
    a.insert(
        "org.opencontainers.image.created".to_string(),
        created.to_string(),
    );
    if let Some(u) = &source.url {
        a.insert("org.opencontainers.image.source".to_string(), u.clone());
    }
    if let Some(r) = &source.revision {
        a.insert("org.opencontainers.image.revision".to_string(), r.clone());
    }
    if let Some(t) = spec.image.tags.first().filter(|t| *t != "latest") {
        a.insert("org.opencontainers.image.version".to_string(), t.clone());
    }
    if spec.image.base != BaseSpec::Scratch {
        a.insert(
            "org.opencontainers.image.base.name".to_string(),
            base.name.clone(),
        );
        if let Some(d) = &base.manifest_digest {
            a.insert(
                "org.opencontainers.image.base.digest".to_string(),
                d.clone(),
            );
        }
    }
    if let (Some(n), Some(t)) = (&spec.image.name, spec.image.tags.first()) {
        a.insert(
            "org.opencontainers.image.ref.name".to_string(),
            format!("{n}:{t}"),
        );
    }
    for (k, v) in &spec.config.annotations {
        a.insert(k.clone(), v.clone());
    }
    a
}

/// Regenerates an unstored layer from its sources on each call, verified against its digest
/// at the end of the stream (a source changed since the build is a read error, never a wrong
/// blob). A layer that no longer regenerates to its digest has its selector record dropped
/// from the cache, so the next build writes it again instead of failing the same way.
fn generator(
    plan: &Arc<LayerPlan>,
    fetched: &Arc<Fetched>,
    mtime: u64,
    blob: &LayerBlob,
    cache: &Cache,
) -> Generator {
    let (plan, fetched, cache) = (plan.clone(), fetched.clone(), cache.clone());
    let digest = blob.digest.clone();
    Arc::new(move || {
        let entries = fetched
            .entries(&plan)
            .map_err(io::Error::other)?
            .into_owned();
        let (cache, selector) = (cache.clone(), plan.selector.clone());
        let stale = move |d: &str| cache.drop_selector(&selector, d);
        let r = regenerate(
            entries,
            plan.owners.clone(),
            plan.compression,
            mtime,
            digest.clone(),
            stale,
        )?;
        Ok(Box::new(r) as Box<dyn Read + Send>)
    })
}

/// Streams a regenerated layer through a pipe; the writer thread's result (and the digest
/// check) surfaces as the reader's final read. On a digest mismatch `stale` is called with
/// the expected digest before the error is returned.
fn regenerate(
    entries: Vec<layer::Entry>,
    owners: layer::Owners,
    compression: layer::Compression,
    mtime: u64,
    digest: String,
    stale: impl FnOnce(&str) + Send + 'static,
) -> io::Result<impl Read + Send> {
    type Stale = Box<dyn FnOnce(&str) + Send>;
    struct Gen {
        pipe: io::PipeReader,
        worker: Option<std::thread::JoinHandle<Result<String, String>>>,
        digest: String,
        stale: Option<Stale>,
    }
    impl Read for Gen {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.pipe.read(buf)?;
            if n == 0
                && !buf.is_empty()
                && let Some(w) = self.worker.take()
            {
                let got = w
                    .join()
                    .map_err(|_| io::Error::other("layer writer panicked"))?
                    .map_err(io::Error::other)?;
                if got != self.digest {
                    if let Some(f) = self.stale.take() {
                        f(&self.digest);
                    }
                    return Err(io::Error::other(format!(
                        "layer {} regenerated as {got}: a source changed since the layer was \
                         recorded; dropped the record from the cache: build again",
                        self.digest
                    )));
                }
            }
            Ok(n)
        }
    }
    let (reader, writer) = io::pipe()?;
    let worker = std::thread::spawn(move || {
        layer::write_owned(&entries, &owners, compression, mtime, writer, &|_| {})
            .map(|b| b.digest)
            .map_err(|e| e.to_string())
    });
    Ok(Gen {
        pipe: reader,
        worker: Some(worker),
        digest,
        stale: Some(Box::new(stale)),
    })
}
