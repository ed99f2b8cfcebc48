//! The reproducible layer writer: one streaming pass tar → sha256 (diff_id) → compressor →
//! sha256 (digest) + size. Memory does not grow with file size.
//!
//! Reproducibility contract: entries sorted bytewise by path, parent directories emitted before
//! their children, one mtime for every entry, owner 0:0 with no user/group names, modes as the
//! plan gives them (normalized by the sources), deterministic gzip header (no name, mtime 0).

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

mod entry;
pub mod parallel;
pub mod pargz;
pub mod parzstd;
pub use entry::{Compression, Content, DEFAULT_WEIGHTS_COMPRESSION, Entry};

/// Bumped whenever the bytes the writer produces for the same entries change; part of every
/// cache selector so an upgrade never reuses a layer written differently.
pub const FORMAT_VERSION: u32 = 3;

/// Threads a compressed layer may use (0 = one per core). The output is the same bytes for
/// every value: both are cut into fixed blocks compressed on their own ([`parallel`]): deflate
/// blocks joined into one gzip member ([`pargz`]), zstd frames back to back ([`parzstd`]).
static COMPRESSION_THREADS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Caps the threads one layer's compression uses (`mlimg build -j`); 0 = one per core.
pub fn set_compression_threads(n: usize) {
    COMPRESSION_THREADS.store(n, std::sync::atomic::Ordering::Relaxed);
}

fn compression_threads() -> usize {
    match COMPRESSION_THREADS.load(std::sync::atomic::Ordering::Relaxed) {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    }
}

const BUF: usize = 1 << 20;
/// Reads of a file's bytes, and the buffer of an uncompressed layer's output (which those
/// reads bypass): small enough that the chunk read, hashed and written stays in the L2 cache.
const CHUNK: usize = 256 << 10;

#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error("{path}: appears twice in one layer (from {first} and {second})")]
    Duplicate {
        path: String,
        first: String,
        second: String,
    },
    #[error("{path}: invalid image path")]
    BadPath { path: String },
    #[error("{path}: is a directory in one source and a file in another")]
    DirConflict { path: String },
    #[error("reading {}: {source}", file.display())]
    Read { file: PathBuf, source: io::Error },
    #[error("{}: the file changed size while it was being read (expected {expected} bytes, read {got})", file.display())]
    Changed {
        file: PathBuf,
        expected: u64,
        got: u64,
    },
    #[error("reading {name} from {}: {source}", archive.display())]
    Zip {
        archive: PathBuf,
        name: String,
        source: zip::result::ZipError,
    },
    #[error("writing layer: {0}")]
    Write(io::Error),
    #[error("/{path}: the download sha256:{sha256} was not fetched")]
    NotFetched { path: String, sha256: String },
}

/// What writing a layer produced.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LayerBlob {
    pub media_type: String,
    /// `sha256:<hex>` of the compressed blob.
    pub digest: String,
    /// `sha256:<hex>` of the uncompressed tar.
    pub diff_id: String,
    /// Size of the compressed blob.
    pub size: u64,
}

/// Prepares entries for writing: checks paths, adds missing parent directories (mode 0755),
/// sorts bytewise by path and rejects duplicates.
pub fn finalize(mut entries: Vec<Entry>) -> Result<Vec<Entry>, LayerError> {
    // In place: a tree of 100k files is held once, not again as a map's keys.
    let mut parents: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
    let mut last_parent: Option<&str> = None;
    for e in &entries {
        if e.path.is_empty()
            || e.path.starts_with('/')
            || e.path.ends_with('/')
            || e.path
                .split('/')
                .any(|c| c.is_empty() || c == "." || c == "..")
        {
            return Err(LayerError::BadPath {
                path: e.path.clone(),
            });
        }
        // every ancestor once; entries of one folder (walks come sorted) share them
        let parent = e.path.rfind('/').map(|i| &e.path[..i]);
        if parent.is_none() || parent == last_parent {
            continue;
        }
        last_parent = parent;
        let mut p = parent;
        while let Some(dir) = p {
            if !parents.insert(dir.to_string()) {
                break; // its ancestors are in already
            }
            p = dir.rfind('/').map(|i| &dir[..i]);
        }
    }
    // bytewise by path; stable, so of two entries with one path the later one comes second
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    for w in entries.windows(2) {
        let (prev, e) = (&w[0], &w[1]);
        if prev.path != e.path {
            continue;
        }
        match (&prev.content, &e.content) {
            (Content::Dir, Content::Dir) => {} // the later one is kept (it may carry a mode)
            (Content::Dir, _) | (_, Content::Dir) => {
                return Err(LayerError::DirConflict {
                    path: e.path.clone(),
                });
            }
            _ => {
                return Err(LayerError::Duplicate {
                    path: e.path.clone(),
                    first: describe(&prev.content),
                    second: describe(&e.content),
                });
            }
        }
    }
    entries.dedup_by(|later, kept| {
        let same = later.path == kept.path;
        if same {
            std::mem::swap(later, kept);
        }
        same
    });
    let mut implied = Vec::new();
    for dir in parents {
        match entries.binary_search_by(|e| e.path.as_str().cmp(dir.as_str())) {
            Ok(i) if entries[i].content != Content::Dir => {
                return Err(LayerError::DirConflict { path: dir });
            }
            Ok(_) => {} // an explicit folder entry wins over an implied one
            Err(_) => implied.push(Entry {
                path: dir,
                mode: 0o755,
                content: Content::Dir,
            }),
        }
    }
    if !implied.is_empty() {
        entries.reserve_exact(implied.len());
        entries.extend(implied);
        entries.sort_by(|a, b| a.path.cmp(&b.path));
    }
    Ok(entries)
}

fn describe(c: &Content) -> String {
    match c {
        Content::Dir => "a directory".into(),
        Content::File { path, .. } => path.display().to_string(),
        Content::Symlink(t) => format!("a symlink to {t}"),
        Content::Inline(_) => "generated content".into(),
        Content::ZipMember { archive, name, .. } => format!("{name} in {}", archive.display()),
        Content::Fetched { sha256, .. } => format!("download sha256:{sha256}"),
    }
}

/// A writer that hashes and counts what passes through it.
pub struct HashWriter<W> {
    inner: W,
    hasher: Sha256,
    count: u64,
}

impl<W: Write> HashWriter<W> {
    pub fn new(inner: W) -> Self {
        HashWriter {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }
    /// `sha256:<hex>`, the byte count and the inner writer.
    pub fn finish(self) -> (String, u64, W) {
        (
            format!("sha256:{}", hex::encode(self.hasher.finalize())),
            self.count,
            self.inner,
        )
    }
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// The compressed side: hashes what goes to the output.
type Out<W> = HashWriter<BufWriter<W>>;

enum Sink<W: Write> {
    Gzip(pargz::ParGzEncoder<Out<W>>),
    Zstd(parallel::ParEncoder<Out<W>, parzstd::Frames>),
    /// Uncompressed: the digest is the diff_id, so the bytes are hashed once.
    Plain(BufWriter<W>),
}

impl<W: Write> Write for Sink<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Sink::Gzip(w) => w.write(buf),
            Sink::Zstd(w) => w.write(buf),
            Sink::Plain(w) => w.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Sink::Gzip(w) => w.flush(),
            Sink::Zstd(w) => w.flush(),
            Sink::Plain(w) => w.flush(),
        }
    }
}

/// Who owns a layer's entries: 0:0 unless a rule says otherwise (`[app] owner`, a weights
/// entry's `owner`, `[config] writable`). Numeric ids only, no names; the rule with the longest
/// path at or above an entry decides.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Owners(pub Vec<OwnerRule>);

/// Entries at or under `path` (relative to `/`; empty: every entry) belong to `uid:gid`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OwnerRule {
    pub path: String,
    pub uid: u64,
    pub gid: u64,
}

impl Owners {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The owner of the entry at `path`.
    pub fn of(&self, path: &str) -> (u64, u64) {
        self.0
            .iter()
            .filter(|r| {
                r.path.is_empty()
                    || path == r.path
                    || path
                        .strip_prefix(r.path.as_str())
                        .is_some_and(|rest| rest.starts_with('/'))
            })
            .max_by_key(|r| r.path.len())
            .map_or((0, 0), |r| (r.uid, r.gid))
    }

    /// One line per rule, for the layer's selector.
    pub fn fingerprint(&self) -> Vec<String> {
        self.0
            .iter()
            .map(|r| format!("owner /{} {}:{}", r.path, r.uid, r.gid))
            .collect()
    }
}

/// Writes `entries` (as returned by [`finalize`]) as one layer blob into `out`.
/// `mtime` is the single modification time every entry carries; every owner is 0:0.
pub fn write<W: Write>(
    entries: &[Entry],
    compression: Compression,
    mtime: u64,
    out: W,
    progress: &dyn Fn(u64),
) -> Result<LayerBlob, LayerError> {
    write_with(
        entries,
        &Owners::default(),
        compression,
        mtime,
        out,
        progress,
        compression_threads(),
    )
}

/// [`write`] with owners other than 0:0 where `owners` says so.
pub fn write_owned<W: Write>(
    entries: &[Entry],
    owners: &Owners,
    compression: Compression,
    mtime: u64,
    out: W,
    progress: &dyn Fn(u64),
) -> Result<LayerBlob, LayerError> {
    write_with(
        entries,
        owners,
        compression,
        mtime,
        out,
        progress,
        compression_threads(),
    )
}

/// The writer itself: `owners` over 0:0, `threads` for the compressor (the bytes do not depend
/// on it).
fn write_with<W: Write>(
    entries: &[Entry],
    owners: &Owners,
    compression: Compression,
    mtime: u64,
    out: W,
    progress: &dyn Fn(u64),
    threads: usize,
) -> Result<LayerBlob, LayerError> {
    let sink = match compression {
        Compression::Gzip => Sink::Gzip(
            pargz::ParGzEncoder::new(
                HashWriter::new(BufWriter::with_capacity(BUF, out)),
                flate2::Compression::default(),
                threads,
            )
            .map_err(LayerError::Write)?,
        ),
        Compression::Zstd => Sink::Zstd(
            parallel::ParEncoder::new(
                HashWriter::new(BufWriter::with_capacity(BUF, out)),
                parzstd::Frames::new().map_err(LayerError::Write)?,
                threads,
            )
            .map_err(LayerError::Write)?,
        ),
        Compression::None => Sink::Plain(BufWriter::with_capacity(CHUNK, out)),
    };
    let mut tar = tar::Builder::new(HashWriter::new(sink));
    let mut zips: HashMap<PathBuf, zip::ZipArchive<BufReader<File>>> = HashMap::new();
    let mut buf = Vec::new();
    // Neither compressor's output depends on how its input is split into writes (both are cut
    // by byte count), so files go on in whole chunks.
    let piece = CHUNK;
    let mut done = 0u64;
    for e in entries {
        append(
            &mut tar,
            e,
            owners.of(&e.path),
            mtime,
            &mut zips,
            &mut buf,
            piece,
        )?;
        done += e.size();
        progress(done);
    }
    let tar_out = tar.into_inner().map_err(LayerError::Write)?;
    let (diff_id, tar_len, sink) = tar_out.finish();
    let (digest, size) = match sink {
        Sink::Gzip(gz) => finish_out(gz.finish().map_err(LayerError::Write)?)?,
        Sink::Zstd(z) => finish_out(z.finish().map_err(LayerError::Write)?)?,
        Sink::Plain(mut w) => {
            w.flush().map_err(LayerError::Write)?;
            // For an uncompressed layer the blob is the tar: same digest and size.
            (diff_id.clone(), tar_len)
        }
    };
    Ok(LayerBlob {
        media_type: compression.media_type().to_string(),
        digest,
        diff_id,
        size,
    })
}

fn finish_out<W: Write>(h: Out<W>) -> Result<(String, u64), LayerError> {
    let (digest, size, mut w) = h.finish();
    w.flush().map_err(LayerError::Write)?;
    Ok((digest, size))
}

fn header(
    kind: tar::EntryType,
    mode: u32,
    size: u64,
    mtime: u64,
    (uid, gid): (u64, u64),
) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_mtime(mtime);
    h.set_uid(uid);
    h.set_gid(gid);
    // new_gnu leaves user/group names empty and device numbers zero.
    h
}

/// `buf`: a read buffer kept between entries (grown to [`CHUNK`] by the first file); a file's
/// bytes go on in writes of `piece` bytes (a divisor of [`CHUNK`]).
fn append<W: Write>(
    tar: &mut tar::Builder<W>,
    e: &Entry,
    owner: (u64, u64),
    mtime: u64,
    zips: &mut HashMap<PathBuf, zip::ZipArchive<BufReader<File>>>,
    buf: &mut Vec<u8>,
    piece: usize,
) -> Result<(), LayerError> {
    match &e.content {
        Content::Dir => {
            let mut h = header(tar::EntryType::Directory, e.mode, 0, mtime, owner);
            tar.append_data(&mut h, format!("{}/", e.path), io::empty())
                .map_err(LayerError::Write)
        }
        Content::Symlink(target) => {
            let mut h = header(tar::EntryType::Symlink, 0o777, 0, mtime, owner);
            tar.append_link(&mut h, &e.path, target)
                .map_err(LayerError::Write)
        }
        Content::Inline(bytes) => {
            let mut h = header(
                tar::EntryType::Regular,
                e.mode,
                bytes.len() as u64,
                mtime,
                owner,
            );
            tar.append_data(&mut h, &e.path, &bytes[..])
                .map_err(LayerError::Write)
        }
        Content::File { path, size } => {
            let mut f = File::open(path).map_err(|source| LayerError::Read {
                file: path.clone(),
                source,
            })?;
            let mut h = header(tar::EntryType::Regular, e.mode, *size, mtime, owner);
            // The header (and a GNU long-name entry before it when the path needs one) goes
            // through tar, given no data; the file's bytes follow in reads of CHUNK bytes straight
            // into the hashing writer and on to the output (tar's own copy would go 8 KiB at a
            // time through two more buffers: this is the hot loop of a weights layer). Same
            // bytes as `append_data`. Each read fills the buffer (short only at the end), so
            // the writes of `piece` bytes fall where tar's did.
            tar.append_data(&mut h, &e.path, io::empty())
                .map_err(LayerError::Write)?;
            let out = tar.get_mut();
            buf.resize(CHUNK, 0);
            let mut got = 0u64;
            while got < *size {
                let want = (*size - got).min(CHUNK as u64) as usize;
                let mut n = 0;
                while n < want {
                    match f.read(&mut buf[n..want]) {
                        Ok(0) => break,
                        Ok(k) => n += k,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(source) => {
                            return Err(LayerError::Read {
                                file: path.clone(),
                                source,
                            });
                        }
                    }
                }
                if n == 0 {
                    break;
                }
                SOURCE_BYTES_READ.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
                for p in buf[..n].chunks(piece) {
                    out.write_all(p).map_err(LayerError::Write)?;
                }
                got += n as u64;
            }
            if got != *size {
                return Err(LayerError::Changed {
                    file: path.clone(),
                    expected: *size,
                    got,
                });
            }
            let pad = (512 - got % 512) % 512;
            out.write_all(&[0u8; 512][..pad as usize])
                .map_err(LayerError::Write)?;
            Ok(())
        }
        Content::Fetched { sha256, .. } => Err(LayerError::NotFetched {
            path: e.path.clone(),
            sha256: sha256.clone(),
        }),
        Content::ZipMember {
            archive,
            name,
            size,
        } => {
            let zip_err = |source| LayerError::Zip {
                archive: archive.clone(),
                name: name.clone(),
                source,
            };
            if !zips.contains_key(archive) {
                let f = File::open(archive).map_err(|source| LayerError::Read {
                    file: archive.clone(),
                    source,
                })?;
                let z = zip::ZipArchive::new(BufReader::new(f)).map_err(zip_err)?;
                zips.insert(archive.clone(), z);
            }
            let Some(z) = zips.get_mut(archive) else {
                unreachable!("inserted above")
            };
            let member = z.by_name(name).map_err(zip_err)?;
            let mut h = header(tar::EntryType::Regular, e.mode, *size, mtime, owner);
            let mut r = Counted {
                inner: member.take(*size),
                n: 0,
                err: None,
            };
            let res = tar.append_data(&mut h, &e.path, &mut r);
            if let Some(source) = r.err.take() {
                return Err(LayerError::Read {
                    file: archive.join(name),
                    source,
                });
            }
            res.map_err(LayerError::Write)?;
            if r.n != *size {
                return Err(LayerError::Changed {
                    file: archive.join(name),
                    expected: *size,
                    got: r.n,
                });
            }
            Ok(())
        }
    }
}

/// Bytes that layer writers in this process read from source files (local files, fetched
/// downloads, wheel members). A build reports the difference over its run, which shows how
/// often each source byte was read (once for a cold build, never for a cached one).
static SOURCE_BYTES_READ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Bytes read from sources so far in this process (see the counter above).
pub fn source_bytes_read() -> u64 {
    SOURCE_BYTES_READ.load(std::sync::atomic::Ordering::Relaxed)
}

/// Counts bytes read and keeps a read error apart from write errors.
struct Counted<R> {
    inner: R,
    n: u64,
    err: Option<io::Error>,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inner.read(buf) {
            Ok(n) => {
                self.n += n as u64;
                SOURCE_BYTES_READ.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
                Ok(n)
            }
            Err(e) => {
                let kind = e.kind();
                self.err = Some(e);
                Err(io::Error::new(kind, "source read failed"))
            }
        }
    }
}

/// The `mtime` for every entry: `SOURCE_DATE_EPOCH` when set, else 0 (1970-01-01).
pub fn source_date_epoch(var: Option<&str>) -> Result<u64, String> {
    match var {
        None => Ok(0),
        Some(v) if v.trim().is_empty() => Ok(0),
        Some(v) => v
            .trim()
            .parse::<u64>()
            .map_err(|_| format!("SOURCE_DATE_EPOCH={v:?} is not a count of seconds since 1970")),
    }
}

/// Hashes a file with sha256, streaming. Returns `sha256:<hex>` and the size.
pub fn sha256_file(path: &Path) -> io::Result<(String, u64)> {
    let mut f = File::open(path)?;
    let mut h = HashWriter::new(io::sink());
    let n = io::copy(&mut BufReader::with_capacity(BUF, &mut f), &mut h)?;
    let (d, _, _) = h.finish();
    Ok((d, n))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn inline(path: &str, data: &[u8]) -> Entry {
        Entry {
            path: path.into(),
            mode: 0o644,
            content: Content::Inline(Arc::from(data)),
        }
    }

    #[test]
    fn parents_sorted_and_deduplicated() {
        let e = finalize(vec![
            inline("a/b/c", b"x"),
            inline("a-b", b"y"),
            inline("a/b/d", b"z"),
        ])
        .unwrap();
        let paths: Vec<_> = e.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["a", "a-b", "a/b", "a/b/c", "a/b/d"]);
        assert!(matches!(
            finalize(vec![inline("a", b"1"), inline("a", b"2")]),
            Err(LayerError::Duplicate { .. })
        ));
        assert!(matches!(
            finalize(vec![inline("a", b"1"), inline("a/b", b"2")]),
            Err(LayerError::DirConflict { .. })
        ));
        assert!(matches!(
            finalize(vec![inline("a/../b", b"1")]),
            Err(LayerError::BadPath { .. })
        ));
        // a file where another entry needs a folder, in either order
        assert!(matches!(
            finalize(vec![inline("a/b", b"2"), inline("a", b"1")]),
            Err(LayerError::DirConflict { .. })
        ));
        // an explicit folder (with its mode) wins over the implied one, whatever the order; of
        // two explicit ones the later wins
        let dir = |path: &str, mode| Entry {
            path: path.into(),
            mode,
            content: Content::Dir,
        };
        let e = finalize(vec![
            inline("a/b/c", b"x"),
            dir("a/b", 0o700),
            dir("a", 0o711),
            dir("a", 0o750),
        ])
        .unwrap();
        let got: Vec<_> = e.iter().map(|e| (e.path.as_str(), e.mode)).collect();
        assert_eq!(got, [("a", 0o750), ("a/b", 0o700), ("a/b/c", 0o644)]);
    }

    #[test]
    fn same_entries_same_bytes_and_sizes_match() {
        let long = format!("{}/file", "d".repeat(120));
        let entries = finalize(vec![
            inline("x/y", b"hello"),
            inline(&long, &[7u8; 1000]),
            Entry {
                path: "x/link".into(),
                mode: 0o777,
                content: Content::Symlink("y".repeat(150)),
            },
        ])
        .unwrap();
        for c in [Compression::Gzip, Compression::Zstd, Compression::None] {
            let mut a = Vec::new();
            let mut b = Vec::new();
            let la = write(&entries, c, 0, &mut a, &|_| {}).unwrap();
            let lb = write(&entries, c, 0, &mut b, &|_| {}).unwrap();
            assert_eq!(a, b);
            assert_eq!(la, lb);
            assert_eq!(la.size, a.len() as u64, "{c:?}");
            assert_eq!(
                la.digest,
                format!("sha256:{}", hex::encode(Sha256::digest(&a)))
            );
        }
        // The uncompressed tar reads back with the expected names and owner.
        let mut a = Vec::new();
        write(&entries, Compression::None, 42, &mut a, &|_| {}).unwrap();
        let mut ar = tar::Archive::new(&a[..]);
        let names: Vec<String> = ar
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                assert_eq!(e.header().mtime().unwrap(), 42);
                assert_eq!(e.header().uid().unwrap(), 0);
                e.path()
                    .unwrap()
                    .to_string_lossy()
                    .trim_end_matches('/')
                    .to_string()
            })
            .collect();
        assert_eq!(names[0], "d".repeat(120));
        assert!(names.contains(&long));
    }

    /// File contents bypass tar's copy; the bytes must stay exactly what `append_data` makes
    /// (sizes around the 512-byte blocks and the read buffer, a path needing a long-name entry).
    #[test]
    fn file_entries_match_tars_own_append() {
        let d = tempfile::tempdir().unwrap();
        let long = format!("{}/weights.bin", "w".repeat(130));
        let mut raw = Vec::new();
        for (i, size) in [0, 1, 511, 512, 513, CHUNK - 1, CHUNK, 4 * CHUNK + 3]
            .into_iter()
            .enumerate()
        {
            let p = d.path().join(format!("f{i}"));
            let bytes: Vec<u8> = (0..size).map(|j| (j * 7 + i) as u8).collect();
            std::fs::write(&p, &bytes).unwrap();
            let path = if i == 5 {
                long.clone()
            } else {
                format!("m/f{i}")
            };
            raw.push(Entry {
                path,
                mode: 0o644,
                content: Content::File {
                    path: p,
                    size: size as u64,
                },
            });
        }
        let entries = finalize(raw).unwrap();
        // tar's own `append_data` over the same writer stack as before the bypass
        fn reference<W: Write>(entries: &[Entry], w: W) -> W {
            let mut b = tar::Builder::new(w);
            for e in entries {
                match &e.content {
                    Content::Dir => {
                        let mut h = header(tar::EntryType::Directory, e.mode, 0, 5, (0, 0));
                        b.append_data(&mut h, format!("{}/", e.path), io::empty())
                            .unwrap();
                    }
                    Content::File { path, size } => {
                        let mut h = header(tar::EntryType::Regular, e.mode, *size, 5, (0, 0));
                        let f = BufReader::with_capacity(BUF, File::open(path).unwrap());
                        b.append_data(&mut h, &e.path, f.take(*size)).unwrap();
                    }
                    _ => unreachable!(),
                }
            }
            b.into_inner().unwrap()
        }
        let tar_bytes = reference(&entries, Vec::new());
        let gz = reference(
            &entries,
            pargz::ParGzEncoder::new(Vec::new(), flate2::Compression::default(), 1).unwrap(),
        )
        .finish()
        .unwrap();
        let zst = reference(
            &entries,
            parallel::ParEncoder::new(Vec::new(), parzstd::Frames::new().unwrap(), 1).unwrap(),
        )
        .finish()
        .unwrap();
        for (c, want) in [
            (Compression::None, &tar_bytes),
            (Compression::Gzip, &gz),
            (Compression::Zstd, &zst),
        ] {
            let mut ours = Vec::new();
            let blob = write(&entries, c, 5, &mut ours, &|_| {}).unwrap();
            assert!(
                ours == *want,
                "{c:?}: the layer differs from tar's own output"
            );
            assert_eq!(blob.size, ours.len() as u64);
            assert_eq!(
                blob.digest,
                format!("sha256:{}", hex::encode(Sha256::digest(&ours)))
            );
            assert_eq!(
                blob.diff_id,
                format!("sha256:{}", hex::encode(Sha256::digest(&tar_bytes)))
            );
        }

        // a file that shrank after planning is an error naming it
        let mut shrunk = entries.clone();
        let last = shrunk.len() - 1;
        if let Content::File { size, .. } = &mut shrunk[last].content {
            *size += 1;
        }
        let err = write(&shrunk, Compression::None, 5, io::sink(), &|_| {}).unwrap_err();
        assert!(matches!(err, LayerError::Changed { got, expected, .. } if got + 1 == expected));
    }

    /// Files over 8 GiB need a size field beyond the 11 octal digits of a ustar header; the GNU
    /// base-256 encoding holds it. A sparse 8 GiB + 3 bytes file streams through with flat memory.
    #[test]
    fn files_over_8_gib_get_a_large_size_header() {
        struct Head(Vec<u8>, u64);
        impl Write for Head {
            fn write(&mut self, b: &[u8]) -> io::Result<usize> {
                let keep = 1024usize.saturating_sub(self.0.len()).min(b.len());
                self.0.extend_from_slice(&b[..keep]);
                self.1 += b.len() as u64;
                Ok(b.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("big.bin");
        let size = (8u64 << 30) + 3;
        File::create(&p).unwrap().set_len(size).unwrap();
        let entries = vec![Entry {
            path: "big.bin".into(),
            mode: 0o644,
            content: Content::File { path: p, size },
        }];
        let mut out = Head(Vec::new(), 0);
        let blob = write(&entries, Compression::None, 0, &mut out, &|_| {}).unwrap();
        let h = tar::Header::from_byte_slice(&out.0[..512]);
        assert_eq!(h.size().unwrap(), size);
        assert_eq!(h.path().unwrap().to_str(), Some("big.bin"));
        assert_eq!(blob.size, out.1);
        assert_eq!(out.1, 512 + size.div_ceil(512) * 512 + 1024);
    }

    /// A layer's bytes do not depend on the threads its compressor uses: gzip and zstd layers
    /// of several MiB (many gzip blocks, several zstd frames) written with 1, 2 and 3 threads.
    #[test]
    fn compressed_layers_are_the_same_bytes_for_any_thread_count() {
        let d = tempfile::tempdir().unwrap();
        let mut raw = Vec::new();
        for i in 0..4u64 {
            let p = d.path().join(format!("f{i}"));
            let mut bytes = Vec::new();
            let mut x = i + 1;
            while bytes.len() < 3 << 20 {
                // half-compressible: a little LCG noise among repeated text
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                bytes.extend_from_slice(
                    format!("row {} {:x}\n", bytes.len() % 977, x >> 40).as_bytes(),
                );
            }
            std::fs::write(&p, &bytes).unwrap();
            raw.push(Entry {
                path: format!("data/f{i}"),
                mode: 0o644,
                content: Content::File {
                    path: p,
                    size: bytes.len() as u64,
                },
            });
        }
        let entries = finalize(raw).unwrap();
        for c in [Compression::Gzip, Compression::Zstd] {
            let mut one = Vec::new();
            let b1 = write_with(&entries, &Owners::default(), c, 9, &mut one, &|_| {}, 1).unwrap();
            for t in [2, 3] {
                let mut many = Vec::new();
                let bt =
                    write_with(&entries, &Owners::default(), c, 9, &mut many, &|_| {}, t).unwrap();
                assert_eq!(bt, b1, "{c:?} with {t} threads");
                assert!(many == one, "{c:?}: bytes differ with {t} threads");
            }
        }
    }

    #[test]
    fn epoch() {
        assert_eq!(source_date_epoch(None), Ok(0));
        assert_eq!(source_date_epoch(Some("1700000000")), Ok(1_700_000_000));
        assert!(source_date_epoch(Some("yesterday")).is_err());
    }
}
