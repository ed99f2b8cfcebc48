//! Detecting the target interpreter from a base image, without running or unpacking it.
//!
//! Sources, in order: the `[python]` table (its values always win), the `PYTHON_VERSION`
//! variable of the base config (official `python` images), then the base layers' tar headers,
//! streamed one layer after another (gzip, zstd or plain; later layers win, whiteouts delete):
//! `usr/local/lib/python3.X/os.py` or `usr/lib/python3.X/os.py` locate the interpreter,
//! `usr/lib/python3/dist-packages` (or a dpkg database) marks Debian's layout, the `libc6`
//! entry of `var/lib/dpkg/status` or `libc-2.X.so` names give the glibc version,
//! `lib/ld-musl-*.so.1` marks musl (version from `lib/apk/db/installed`).

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use super::{Libc, PythonError, PythonTarget};
use crate::spec::PythonSpec;

/// glibc assumed when the base has glibc but its version cannot be read (manylinux2014).
const FALLBACK_GLIBC: (u32, u32) = (2, 17);

/// Small files whose contents detection reads (kept per layer, later layers win).
const READ_FILES: [&str; 2] = ["var/lib/dpkg/status", "lib/apk/db/installed"];

// Limits on what a base layer can make detection hold in memory. A base image is not trusted:
// a 3 MB gzip layer can inflate to a dpkg status file or a GNU long name of gigabytes.

/// Most bytes read of one of [`READ_FILES`] (Debian's status file with 2 000 packages is ~3 MiB).
pub const MAX_META_FILE: u64 = 16 << 20;
/// Longest path accepted (GNU long name or pax `path`); Linux's PATH_MAX is 4096.
pub const MAX_PATH: u64 = 4096;
/// Largest pax extended header read (path, size, times, a few xattrs: usually < 1 KiB).
pub const MAX_PAX_HEADER: u64 = 1 << 20;
/// Most bytes of paths kept across all layers. Only the few paths detection looks at are kept
/// (see [`wanted`]), so real images keep a few hundred bytes.
pub const MAX_KEPT_PATH_BYTES: usize = 16 << 20;

/// What the base's file system shows, after applying every layer.
#[derive(Debug, Default)]
struct Scan {
    /// The paths detection looks at ([`wanted`]) that are present (no leading `/`, no
    /// trailing `/`).
    paths: BTreeSet<String>,
    /// Contents of [`READ_FILES`] present in the final file system.
    files: BTreeMap<String, Vec<u8>>,
    /// Tar entries read, for the explanation.
    entries: u64,
    /// Bytes of paths inserted into `paths` (never decreases; bounded by
    /// [`MAX_KEPT_PATH_BYTES`]).
    kept_bytes: usize,
    /// Bytes of dpkg `.list` files read (bounded by [`MAX_DPKG_LISTS`]).
    dpkg_bytes: u64,
}

impl Scan {
    fn remove_tree(&mut self, path: &str) {
        self.paths.remove(path);
        self.files.remove(path);
        let prefix = format!("{path}/");
        let under: Vec<String> = self
            .paths
            .range(prefix.clone()..)
            .take_while(|p| p.starts_with(&prefix))
            .cloned()
            .collect();
        for p in under {
            self.paths.remove(&p);
            self.files.remove(&p);
        }
    }

    fn has(&self, path: &str) -> bool {
        self.paths.contains(path)
    }
}

/// Whether detection looks at this path (normalized): everything [`find_pythons`] and
/// [`find_libc`] test. Other paths are counted, not kept.
/// `var/lib/dpkg/info/PACKAGE[:ARCH].list`: the files a Debian package installed.
fn is_dpkg_list(p: &str) -> bool {
    p.strip_prefix("var/lib/dpkg/info/")
        .is_some_and(|n| n.ends_with(".list") && !n.contains('/'))
}

/// Most bytes of all dpkg `.list` files read (Debian's python3 base: ~2 MiB).
pub const MAX_DPKG_LISTS: u64 = 64 << 20;

fn wanted(p: &str) -> bool {
    if is_dpkg_list(p) {
        return true;
    }
    if READ_FILES.contains(&p)
        || matches!(p, "usr/lib/python3/dist-packages" | "etc/debian_version")
    {
        return true;
    }
    let (dir, name) = p.rsplit_once('/').unwrap_or(("", p));
    if name.starts_with("ld-musl-") && name.ends_with(".so.1") {
        return true;
    }
    if (dir.starts_with("lib") || dir.starts_with("usr/lib"))
        && (name == "libc.so.6" || (name.starts_with("libc-") && name.ends_with(".so")))
    {
        return true;
    }
    name == "os.py"
        && ["usr/local/lib/", "usr/lib/"].iter().any(|lib| {
            dir.strip_prefix(lib)
                .is_some_and(|d| d.starts_with("python3.") && !d.contains('/'))
        })
}

fn normalize(p: &str) -> String {
    let p = p.trim_start_matches("./").trim_start_matches('/');
    p.trim_end_matches('/').to_string()
}

/// One member of a tar stream, as [`walk_tar`] hands it out.
pub(crate) struct TarMember<'a> {
    /// The full path (GNU long name or pax `path` applied), lossily UTF-8.
    pub path: String,
    /// The typeflag byte (`b'0'` regular file, `b'5'` folder, ...).
    pub kind: u8,
    /// A link's target as the header's 100-byte field holds it (GNU long and pax link names
    /// are not read: empty then).
    pub link: String,
    /// The member's data, limited to its size.
    pub data: &'a mut dyn Read,
}

fn bad(msg: impl Into<String>) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg.into())
}

/// The text of a NUL-terminated header field.
fn field(b: &[u8]) -> &[u8] {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    &b[..end]
}

/// A numeric header field: octal text, or GNU base-256 (high bit of the first byte set).
fn number(b: &[u8]) -> std::io::Result<u64> {
    if b.first().is_some_and(|&c| c & 0x80 != 0) {
        let mut v: u64 = u64::from(b[0] & 0x7f);
        for &c in &b[1..] {
            v = v
                .checked_mul(256)
                .and_then(|v| v.checked_add(u64::from(c)))
                .ok_or_else(|| bad("tar header number overflows 64 bits"))?;
        }
        return Ok(v);
    }
    let t = field(b);
    let t = std::str::from_utf8(t).map_err(|_| bad("tar header number is not text"))?;
    let t = t.trim_matches(|c: char| c == ' ' || c == '\0');
    if t.is_empty() {
        return Ok(0);
    }
    u64::from_str_radix(t, 8).map_err(|_| bad(format!("tar header number {t:?} is not octal")))
}

/// Reads an extension member (long name, pax header) of `size` bytes, at most `cap`.
fn read_small(r: &mut dyn Read, size: u64, cap: u64, what: &str) -> std::io::Result<Vec<u8>> {
    if size > cap {
        return Err(bad(format!(
            "{what} of {size} bytes (the most accepted is {cap})"
        )));
    }
    let mut buf = Vec::with_capacity(size as usize);
    r.take(size).read_to_end(&mut buf)?;
    if buf.len() as u64 != size {
        return Err(bad(format!("{what}: unexpected end of the layer")));
    }
    Ok(buf)
}

/// Pax records `LEN key=value\n`: the `path` and `size` ones.
fn pax_records(data: &[u8]) -> std::io::Result<(Option<String>, Option<u64>)> {
    let (mut path, mut size) = (None, None);
    let mut rest = data;
    while !rest.is_empty() {
        let sp = rest
            .iter()
            .position(|&c| c == b' ')
            .ok_or_else(|| bad("pax header record without a length"))?;
        let len: usize = std::str::from_utf8(&rest[..sp])
            .ok()
            .and_then(|l| l.parse().ok())
            .filter(|&l| l > sp + 1 && l <= rest.len())
            .ok_or_else(|| bad("pax header record with a bad length"))?;
        let rec = &rest[sp + 1..len];
        let rec = rec.strip_suffix(b"\n").unwrap_or(rec);
        if let Some(eq) = rec.iter().position(|&c| c == b'=') {
            let (k, v) = (&rec[..eq], &rec[eq + 1..]);
            match k {
                b"path" => {
                    if v.len() as u64 > MAX_PATH {
                        return Err(bad(format!(
                            "pax path of {} bytes (the most accepted is {MAX_PATH})",
                            v.len()
                        )));
                    }
                    path = Some(String::from_utf8_lossy(v).into_owned());
                }
                b"size" => {
                    size = Some(
                        std::str::from_utf8(v)
                            .ok()
                            .and_then(|s| s.parse().ok())
                            .ok_or_else(|| bad("pax size is not a number"))?,
                    );
                }
                _ => {}
            }
        }
        rest = &rest[len..];
    }
    Ok((path, size))
}

/// Streams a tar archive's members to `visit`, holding at most one header, one long name
/// ([`MAX_PATH`]) and one pax header ([`MAX_PAX_HEADER`]) in memory; member data is skipped
/// unless `visit` reads it. Understands ustar, GNU (long names, base-256 sizes, old sparse
/// headers) and pax (`path`, `size`). Ends at the first zero block or at the end of the stream.
pub(crate) fn walk_tar(
    r: &mut dyn Read,
    visit: &mut dyn FnMut(TarMember) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let mut long_name: Option<String> = None;
    let mut pax: (Option<String>, Option<u64>) = (None, None);
    let mut h = [0u8; 512];
    loop {
        // A header block: 0 bytes is a clean end, a partial block is an error.
        let mut got = 0;
        while got < 512 {
            let n = r.read(&mut h[got..])?;
            if n == 0 {
                break;
            }
            got += n;
        }
        if got == 0 {
            return Ok(());
        }
        if got < 512 {
            return Err(bad("layer ends inside a tar header"));
        }
        if h.iter().all(|&b| b == 0) {
            return Ok(());
        }
        let sum: u64 = h[..148]
            .iter()
            .chain(&h[156..])
            .map(|&b| u64::from(b))
            .sum::<u64>()
            + 8 * 32;
        if number(&h[148..156])? != sum {
            return Err(bad("tar header checksum mismatch"));
        }
        let kind = h[156];
        let header_size = number(&h[124..136])?;
        match kind {
            b'L' => {
                let name = read_small(r, header_size, MAX_PATH, "GNU long name")?;
                long_name = Some(String::from_utf8_lossy(field(&name)).into_owned());
                skip(r, padding(header_size))?;
                continue;
            }
            b'x' => {
                let data = read_small(r, header_size, MAX_PAX_HEADER, "pax header")?;
                pax = pax_records(&data)?;
                skip(r, padding(header_size))?;
                continue;
            }
            b'K' | b'g' => {
                // Long link names and global pax headers: not needed, skipped unread.
                skip(r, header_size)?;
                skip(r, padding(header_size))?;
                continue;
            }
            _ => {}
        }
        // GNU old sparse members may continue their sparse map in extra 512-byte blocks.
        if kind == b'S' && h[482] != 0 {
            let mut ext = [0u8; 512];
            loop {
                r.read_exact(&mut ext)?;
                if ext[504] == 0 {
                    break;
                }
            }
        }
        let size = pax.1.take().unwrap_or(header_size);
        let path = match (pax.0.take(), long_name.take()) {
            (Some(p), _) | (None, Some(p)) => p,
            (None, None) => {
                let name = field(&h[..100]);
                // POSIX ustar (`ustar\0`) has a prefix field; GNU (`ustar `) uses it otherwise.
                let prefix = if &h[257..263] == b"ustar\0" {
                    field(&h[345..500])
                } else {
                    &[]
                };
                let mut p = String::from_utf8_lossy(prefix).into_owned();
                if !p.is_empty() {
                    p.push('/');
                }
                p.push_str(&String::from_utf8_lossy(name));
                p
            }
        };
        let mut data = (&mut *r).take(size);
        visit(TarMember {
            path,
            kind,
            link: String::from_utf8_lossy(field(&h[157..257])).into_owned(),
            data: &mut data,
        })?;
        let left = data.limit();
        skip(r, left)?;
        skip(r, padding(size))?;
    }
}

fn padding(size: u64) -> u64 {
    (512 - size % 512) % 512
}

/// Reads and drops `n` bytes; the layer must hold them.
fn skip(r: &mut dyn Read, n: u64) -> std::io::Result<()> {
    let copied = std::io::copy(&mut r.take(n), &mut std::io::sink())?;
    if copied != n {
        return Err(bad("unexpected end of the layer inside a member"));
    }
    Ok(())
}

/// Streams one layer blob's tar headers into `scan`.
/// A base layer's bytes, opened by digest (a local file, or a stream from the registry).
pub type OpenLayer<'a> = dyn Fn(&str) -> Option<std::io::Result<Box<dyn Read + 'a>>> + 'a;

/// A layer blob's tar stream: gzip and zstd are recognized by their magic bytes, anything
/// else is read as a plain tar.
pub(crate) fn tar_stream<'a>(raw: Box<dyn Read + 'a>) -> std::io::Result<Box<dyn Read + 'a>> {
    let mut f = BufReader::new(raw);
    let magic = f.fill_buf()?.to_vec();
    Ok(if magic.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::MultiGzDecoder::new(f))
    } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(zstd::stream::read::Decoder::with_buffer(f)?)
    } else {
        Box::new(f)
    })
}

fn scan_layer(label: &Path, raw: Box<dyn Read + '_>, scan: &mut Scan) -> Result<(), PythonError> {
    let path = label;
    let io = |e| PythonError::io(path, e);
    let mut reader = tar_stream(raw).map_err(io)?;
    // Whiteouts apply to lower layers only: collect this layer's additions separately.
    let mut added: Vec<String> = Vec::new();
    let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    walk_tar(&mut reader, &mut |m| {
        scan.entries += 1;
        let p = normalize(&m.path);
        if p.is_empty() {
            return Ok(());
        }
        let (dir, name) = match p.rsplit_once('/') {
            Some((d, n)) => (d.to_string(), n),
            None => (String::new(), p.as_str()),
        };
        if name == ".wh..wh..opq" {
            if !dir.is_empty() {
                scan.remove_tree(&dir);
                if wanted(&dir) {
                    scan.paths.insert(dir);
                }
            }
            return Ok(());
        }
        if let Some(gone) = name.strip_prefix(".wh.") {
            let gone = if dir.is_empty() {
                gone.to_string()
            } else {
                format!("{dir}/{gone}")
            };
            scan.remove_tree(&gone);
            return Ok(());
        }
        if !wanted(&p) {
            return Ok(());
        }
        // Regular file: `0`, old-style `\0`, contiguous `7`.
        if (READ_FILES.contains(&p.as_str()) || is_dpkg_list(&p))
            && matches!(m.kind, b'0' | 0 | b'7')
        {
            let mut buf = Vec::new();
            m.data.take(MAX_META_FILE + 1).read_to_end(&mut buf)?;
            if is_dpkg_list(&p) {
                scan.dpkg_bytes += buf.len() as u64;
                if scan.dpkg_bytes > MAX_DPKG_LISTS {
                    return Err(bad(format!(
                        "more than {} MiB of var/lib/dpkg/info/*.list files",
                        MAX_DPKG_LISTS >> 20
                    )));
                }
            }
            if buf.len() as u64 > MAX_META_FILE {
                return Err(bad(format!(
                    "/{p} is larger than {} MiB, the most mlimg reads of it",
                    MAX_META_FILE >> 20
                )));
            }
            files.insert(p.clone(), buf);
        }
        scan.kept_bytes += p.len();
        if scan.kept_bytes > MAX_KEPT_PATH_BYTES {
            return Err(bad(format!(
                "more than {} MiB of paths that Python detection looks at",
                MAX_KEPT_PATH_BYTES >> 20
            )));
        }
        added.push(p);
        Ok(())
    })
    .map_err(io)?;
    for p in added {
        // A file replacing a directory (or the reverse) hides what was under it.
        scan.files.remove(&p);
        scan.paths.insert(p);
    }
    scan.files.extend(files);
    Ok(())
}

/// `python3.X` → `(3, X)`.
fn py_dir_version(name: &str) -> Option<(u32, u32)> {
    let rest = name.strip_prefix("python3.")?;
    Some((3, rest.parse().ok()?))
}

/// `3.11.7` → `(3, 11)`.
fn parse_xy(v: &str) -> Option<(u32, u32)> {
    let mut it = v.trim().split(['.', '-', '+', '~']);
    let a = it.next()?.parse().ok()?;
    let b = it.next()?.parse().ok()?;
    Some((a, b))
}

/// The `Version` of one package in a dpkg status / apk installed database.
fn db_version(text: &str, package: &str, pkg_key: &str, ver_key: &str) -> Option<String> {
    for stanza in text.split("\n\n") {
        let mut name = None;
        let mut version = None;
        for line in stanza.lines() {
            if let Some(v) = line.strip_prefix(pkg_key) {
                name = Some(v.trim());
            } else if let Some(v) = line.strip_prefix(ver_key) {
                version = Some(v.trim());
            }
        }
        if name == Some(package) {
            return version.map(str::to_string);
        }
    }
    None
}

/// A Python installation found in the base.
#[derive(Debug, Clone)]
struct Found {
    version: (u32, u32),
    prefix: String,
    site_packages: Option<String>,
}

fn find_pythons(scan: &Scan, explain: &mut Vec<String>) -> Vec<Found> {
    let mut out = Vec::new();
    for (prefix, lib) in [("/usr/local", "usr/local/lib"), ("/usr", "usr/lib")] {
        let mut versions: Vec<(u32, u32)> = scan
            .paths
            .range(format!("{lib}/python3.")..)
            .take_while(|p| p.starts_with(&format!("{lib}/python3.")))
            .filter_map(|p| {
                let rest = &p[lib.len() + 1..];
                let (dir, file) = rest.split_once('/')?;
                (file == "os.py").then(|| py_dir_version(dir)).flatten()
            })
            .collect();
        versions.sort();
        versions.dedup();
        for v in versions.into_iter().rev() {
            let debian = prefix == "/usr"
                && (scan.has("usr/lib/python3/dist-packages")
                    || scan.has("var/lib/dpkg/status")
                    || scan.has("etc/debian_version"));
            explain.push(format!(
                "found /{lib}/python{}.{}/os.py: CPython {}.{} under {prefix}",
                v.0, v.1, v.0, v.1
            ));
            let site_packages = if debian {
                // where pip puts them on Debian and Ubuntu; /usr/lib/python3/dist-packages
                // belongs to the Debian packages
                let dir = format!("/usr/local/lib/python{}.{}/dist-packages", v.0, v.1);
                explain.push(format!(
                    "  Debian layout (dist-packages / dpkg database): packages go to {dir}, as pip installs them there"
                ));
                Some(dir)
            } else {
                None
            };
            out.push(Found {
                version: v,
                prefix: prefix.to_string(),
                site_packages,
            });
        }
    }
    out
}

fn find_libc(scan: &Scan, explain: &mut Vec<String>) -> Option<Libc> {
    // musl: the dynamic loader, version from apk's database.
    let musl = scan
        .paths
        .iter()
        .find(|p| {
            let n = p.rsplit('/').next().unwrap_or("");
            n.starts_with("ld-musl-") && n.ends_with(".so.1")
        })
        .cloned();
    if let Some(loader) = musl {
        let apk = scan
            .files
            .get("lib/apk/db/installed")
            .map(|b| String::from_utf8_lossy(b).into_owned());
        let version = apk
            .as_deref()
            .and_then(|t| db_version(t, "musl", "P:", "V:"))
            .and_then(|v| parse_xy(&v).map(|xy| (v, xy)));
        return Some(match version {
            Some((v, (a, b))) => {
                explain.push(format!(
                    "musl {a}.{b}: /{loader}, package musl {v} in /lib/apk/db/installed"
                ));
                Libc::Musl(a, b)
            }
            None => {
                explain.push(format!(
                    "musl: /{loader} (no apk database with a version: assuming musl 1.1)"
                ));
                Libc::Musl(1, 1)
            }
        });
    }
    if let Some(status) = scan.files.get("var/lib/dpkg/status") {
        let text = String::from_utf8_lossy(status);
        if let Some(v) = db_version(&text, "libc6", "Package:", "Version:")
            && let Some((a, b)) = parse_xy(&v)
        {
            explain.push(format!(
                "glibc {a}.{b}: package libc6 {v} in /var/lib/dpkg/status"
            ));
            return Some(Libc::Glibc(a, b));
        }
    }
    let mut libc6 = None;
    for p in &scan.paths {
        let Some((dir, n)) = p.rsplit_once('/') else {
            continue;
        };
        if !(dir.starts_with("lib") || dir.starts_with("usr/lib")) {
            continue;
        }
        if let Some(v) = n.strip_prefix("libc-").and_then(|r| r.strip_suffix(".so"))
            && let Some((a, b)) = parse_xy(v)
        {
            explain.push(format!("glibc {a}.{b}: /{p}"));
            return Some(Libc::Glibc(a, b));
        }
        if n == "libc.so.6" && libc6.is_none() {
            libc6 = Some(p.clone());
        }
    }
    libc6.map(|p| {
        explain.push(format!(
            "glibc: /{p} without a version (no dpkg entry for libc6): assuming glibc {}.{}",
            FALLBACK_GLIBC.0, FALLBACK_GLIBC.1
        ));
        Libc::Glibc(FALLBACK_GLIBC.0, FALLBACK_GLIBC.1)
    })
}

/// `PYTHON_VERSION=3.11.7` in the base config's `Env`.
fn env_python_version(config: &serde_json::Value) -> Option<(String, (u32, u32))> {
    config["config"]["Env"]
        .as_array()?
        .iter()
        .filter_map(|e| e.as_str())
        .find_map(|e| e.strip_prefix("PYTHON_VERSION="))
        .and_then(|v| parse_xy(v).map(|xy| (v.to_string(), xy)))
}

/// Decides the target interpreter for one platform. Returns it with the lines that explain
/// where each value came from (printed by `--dry-run`).
///
/// `layers` are the base's `(digest, media type)` in image order; `locate` finds a layer blob
/// on local disk (an OCI layout's `blobs/sha256/<hex>`, or the cache for registry bases).
pub fn detect_target(
    config: &serde_json::Value,
    layers: &[(String, String)],
    locate: &dyn Fn(&str) -> Option<PathBuf>,
    oci_arch: &str,
    spec: Option<&PythonSpec>,
) -> Result<(PythonTarget, Vec<String>), PythonError> {
    let open = |digest: &str| -> Option<std::io::Result<Box<dyn Read>>> {
        let p = locate(digest)?;
        Some(File::open(p).map(|f| Box::new(f) as Box<dyn Read>))
    };
    detect_target_from(config, layers, &open, oci_arch, spec)
}

/// [`detect_target`] reading each layer through `open` (streamed; nothing is stored).
pub fn detect_target_from(
    config: &serde_json::Value,
    layers: &[(String, String)],
    open: &OpenLayer<'_>,
    oci_arch: &str,
    spec: Option<&PythonSpec>,
) -> Result<(PythonTarget, Vec<String>), PythonError> {
    detect_target_dpkg(config, layers, open, oci_arch, spec).map(|(t, e, _)| (t, e))
}

/// The files the base's Debian packages own (`/`-less image path → package), from
/// `var/lib/dpkg/info/*.list`; folders are left out.
pub type DpkgFiles = BTreeMap<String, String>;

fn dpkg_files(scan: &Scan) -> DpkgFiles {
    let mut dirs: BTreeSet<&str> = BTreeSet::new();
    let mut out = DpkgFiles::new();
    for (p, data) in &scan.files {
        let Some(name) = p.strip_prefix("var/lib/dpkg/info/") else {
            continue;
        };
        if !is_dpkg_list(p) {
            continue;
        }
        let package = name.trim_end_matches(".list");
        let package = package.split(':').next().unwrap_or(package);
        for line in String::from_utf8_lossy(data).lines() {
            let f = line.trim().trim_start_matches('/');
            if !f.is_empty() && f != "." {
                out.insert(f.to_string(), package.to_string());
            }
        }
    }
    // a path some package lists and another path lies under is a folder
    let keys: Vec<&String> = out.keys().collect();
    for w in keys.windows(2) {
        if w[1]
            .strip_prefix(w[0].as_str())
            .is_some_and(|r| r.starts_with('/'))
        {
            dirs.insert(w[0]);
        }
    }
    let dirs: BTreeSet<String> = dirs.into_iter().map(str::to_string).collect();
    out.retain(|p, _| !dirs.contains(p));
    out
}

/// [`detect_target_from`], also returning the files the base's Debian packages own (empty
/// when the layers were not read).
pub fn detect_target_dpkg(
    config: &serde_json::Value,
    layers: &[(String, String)],
    open: &OpenLayer<'_>,
    oci_arch: &str,
    spec: Option<&PythonSpec>,
) -> Result<(PythonTarget, Vec<String>, DpkgFiles), PythonError> {
    let arch = PythonTarget::arch_from_oci(oci_arch);
    let mut explain = Vec::new();
    let spec_libc = spec.and_then(|s| s.libc.as_ref()).map(|(k, a, b)| {
        if k == "musl" {
            Libc::Musl(*a, *b)
        } else {
            Libc::Glibc(*a, *b)
        }
    });
    // A complete [python] table needs no look at the base.
    if let Some(s) = spec
        && let (Some(prefix), Some(libc)) = (&s.prefix, spec_libc)
    {
        explain.push("python: all from [python] in the spec".into());
        let t = PythonTarget {
            version: s.version,
            prefix: prefix.clone(),
            libc,
            arch,
            site_packages_dir: s.site_packages.clone(),
        };
        check_versions(&t, &explain)?;
        explain.push(format!("target: {t}, site-packages {}", t.site_packages()));
        return Ok((t, explain, DpkgFiles::new()));
    }

    let env_version = env_python_version(config);
    if let Some((v, _)) = &env_version {
        explain.push(format!("base config sets PYTHON_VERSION={v}"));
    }
    let mut scan = Scan::default();
    let mut missing = Vec::new();
    for (digest, _media_type) in layers {
        match open(digest) {
            Some(r) => {
                let label = PathBuf::from(format!("base layer {digest}"));
                let r = r.map_err(|e| PythonError::io(&label, e))?;
                scan_layer(&label, r, &mut scan)?
            }
            None => missing.push(digest.clone()),
        }
    }
    if !layers.is_empty() {
        explain.push(format!(
            "read the tar headers of {} base layer(s) ({} entries)",
            layers.len() - missing.len(),
            scan.entries
        ));
    }
    if !missing.is_empty() {
        explain.push(format!(
            "base layers not available locally, not read: {}",
            missing.join(", ")
        ));
    }
    let found = find_pythons(&scan, &mut explain);
    let detected_libc = find_libc(&scan, &mut explain);

    let no_python = |why: &str| PythonError::Detect {
        message: format!(
            "cannot detect the target Python from the base image: {why}; add a [python] table to the spec, e.g. [python] version = \"3.11\", prefix = \"/usr/local\", libc = \"glibc 2.36\""
        ),
    };

    // Version and prefix: the spec, else PYTHON_VERSION (+ /usr/local), else the layers.
    let (version, prefix, site_packages) = match spec {
        Some(s) => {
            explain.push(format!(
                "python {}.{}: from [python].version",
                s.version.0, s.version.1
            ));
            let same = found.iter().find(|f| f.version == s.version);
            let (prefix, sp) = match (&s.prefix, same) {
                (Some(p), _) => {
                    explain.push(format!("prefix {p}: from [python].prefix"));
                    (p.clone(), s.site_packages.clone())
                }
                (None, Some(f)) => {
                    explain.push(format!("prefix {}: detected", f.prefix));
                    (
                        f.prefix.clone(),
                        s.site_packages.clone().or(f.site_packages.clone()),
                    )
                }
                (None, None) => {
                    explain.push("prefix /usr/local: default".into());
                    ("/usr/local".to_string(), s.site_packages.clone())
                }
            };
            (s.version, prefix, sp)
        }
        None => {
            let pick = match &env_version {
                Some((_, v)) => found
                    .iter()
                    .find(|f| f.version == *v && f.prefix == "/usr/local")
                    .or_else(|| found.iter().find(|f| f.version == *v))
                    .cloned()
                    .or_else(|| {
                        explain.push(format!(
                            "no python{}.{} stdlib found in the layers: assuming prefix /usr/local",
                            v.0, v.1
                        ));
                        Some(Found {
                            version: *v,
                            prefix: "/usr/local".into(),
                            site_packages: None,
                        })
                    }),
                None => found.first().cloned(),
            };
            let Some(f) = pick else {
                return Err(no_python(if layers.is_empty() {
                    "it has no layers and its config sets no PYTHON_VERSION"
                } else {
                    "no PYTHON_VERSION in its config and no usr/local/lib/python3.X/os.py or usr/lib/python3.X/os.py in its layers"
                }));
            };
            if found.len() > 1 {
                explain.push(format!(
                    "several interpreters: using CPython {}.{} under {}",
                    f.version.0, f.version.1, f.prefix
                ));
            }
            (f.version, f.prefix, f.site_packages)
        }
    };

    let libc = match (spec_libc, detected_libc) {
        (Some(l), _) => {
            explain.push("libc: from [python].libc".into());
            l
        }
        (None, Some(l)) => l,
        (None, None) if spec.is_some() => {
            explain.push(format!(
                "libc not found in the base: assuming glibc {}.{}",
                FALLBACK_GLIBC.0, FALLBACK_GLIBC.1
            ));
            Libc::Glibc(FALLBACK_GLIBC.0, FALLBACK_GLIBC.1)
        }
        (None, None) => {
            return Err(no_python(
                "no C library found (no libc6 in var/lib/dpkg/status, no libc.so.6, no ld-musl-*.so.1)",
            ));
        }
    };
    let t = PythonTarget {
        version,
        prefix,
        libc,
        arch,
        site_packages_dir: site_packages,
    };
    check_versions(&t, &explain)?;
    explain.push(format!(
        "target: {t}, site-packages {}, scripts {}",
        t.site_packages(),
        t.scripts_dir()
    ));
    let dpkg = dpkg_files(&scan);
    Ok((t, explain, dpkg))
}

/// Refuses absurd version numbers (a hostile base's `libc6 2.3000000` or `PYTHON_VERSION=3.4000000`
/// would make the tag lists huge), naming where each value came from.
fn check_versions(t: &PythonTarget, explain: &[String]) -> Result<(), PythonError> {
    super::check_python_version(t.version)
        .and_then(|()| super::check_libc(t.libc))
        .map_err(|m| PythonError::Detect {
            message: format!(
                "cannot use the target detected from the base image: {m}; how it was detected: {}",
                explain.join("; ")
            ),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    enum E<'a> {
        F(&'a str, &'a [u8]),
        D(&'a str),
    }

    fn layer(dir: &Path, name: &str, entries: &[E], compress: &str) -> (String, String) {
        let mut b = tar::Builder::new(Vec::new());
        for e in entries {
            let mut h = tar::Header::new_gnu();
            match e {
                E::F(p, data) => {
                    h.set_size(data.len() as u64);
                    h.set_mode(0o644);
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_cksum();
                    b.append_data(&mut h, p, *data).unwrap();
                }
                E::D(p) => {
                    h.set_size(0);
                    h.set_mode(0o755);
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_cksum();
                    b.append_data(&mut h, p, &[][..]).unwrap();
                }
            }
        }
        let tar = b.into_inner().unwrap();
        let bytes = match compress {
            "gzip" => {
                let mut g = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                g.write_all(&tar).unwrap();
                g.finish().unwrap()
            }
            "zstd" => zstd::encode_all(&tar[..], 1).unwrap(),
            _ => tar,
        };
        std::fs::write(dir.join(name), bytes).unwrap();
        (name.to_string(), format!("media/{compress}"))
    }

    fn run(
        dir: &Path,
        config: serde_json::Value,
        layers: &[(String, String)],
        spec: Option<&PythonSpec>,
    ) -> Result<(PythonTarget, Vec<String>), PythonError> {
        let d = dir.to_path_buf();
        let locate = move |digest: &str| {
            let p = d.join(digest);
            p.exists().then_some(p)
        };
        detect_target(&config, layers, &locate, "arm64", spec)
    }

    const STATUS: &[u8] = b"Package: zlib1g\nStatus: install ok installed\nVersion: 1:1.2.13\n\nPackage: libc6\nStatus: install ok installed\nArchitecture: amd64\nVersion: 2.36-9+deb12u4\n\n";

    #[test]
    fn official_python_image() {
        let tmp = tempfile::tempdir().unwrap();
        let l1 = layer(
            tmp.path(),
            "l1",
            &[
                E::D("var/lib/dpkg/"),
                E::F("var/lib/dpkg/status", STATUS),
                E::F("usr/lib/x86_64-linux-gnu/libc.so.6", b"x"),
                E::D("usr/lib/python3/"),
            ],
            "gzip",
        );
        let l2 = layer(
            tmp.path(),
            "l2",
            &[
                E::F("usr/local/lib/python3.11/os.py", b""),
                E::D("usr/local/lib/python3.11/site-packages/"),
                E::F("usr/local/bin/python3.11", b""),
            ],
            "zstd",
        );
        let cfg = serde_json::json!({"config": {"Env": ["PATH=/usr/local/bin", "PYTHON_VERSION=3.11.7"]}});
        let (t, why) = run(tmp.path(), cfg, &[l1, l2], None).unwrap();
        assert_eq!(t.version, (3, 11));
        assert_eq!(t.prefix, "/usr/local");
        assert_eq!(t.libc, Libc::Glibc(2, 36));
        assert_eq!(t.arch, "aarch64");
        assert_eq!(t.site_packages(), "/usr/local/lib/python3.11/site-packages");
        let why = why.join("\n");
        assert!(why.contains("PYTHON_VERSION=3.11.7"), "{why}");
        assert!(why.contains("libc6 2.36-9+deb12u4"), "{why}");
        assert!(
            why.contains("found /usr/local/lib/python3.11/os.py"),
            "{why}"
        );
    }

    #[test]
    fn debian_python_and_whiteouts() {
        let tmp = tempfile::tempdir().unwrap();
        let l1 = layer(
            tmp.path(),
            "l1",
            &[
                E::F("./var/lib/dpkg/status", STATUS),
                E::F("./usr/lib/python3.9/os.py", b""),
                E::F("./usr/lib/python3.11/os.py", b""),
                E::D("./usr/lib/python3/dist-packages/"),
                E::F("./usr/local/lib/python3.12/os.py", b""),
            ],
            "none",
        );
        // The second layer deletes python3.11's stdlib and /usr/local's python.
        let l2 = layer(
            tmp.path(),
            "l2",
            &[
                E::F("usr/lib/.wh.python3.11", b""),
                E::F("usr/local/.wh..wh..opq", b""),
            ],
            "gzip",
        );
        let (t, why) = run(tmp.path(), serde_json::json!({}), &[l1, l2], None).unwrap();
        assert_eq!(t.version, (3, 9), "{why:?}");
        assert_eq!(t.prefix, "/usr");
        assert_eq!(t.site_packages(), "/usr/local/lib/python3.9/dist-packages");
        assert_eq!(t.interpreter(), "/usr/bin/python3.9");
        assert!(why.iter().any(|l| l.contains("Debian layout")), "{why:?}");
    }

    #[test]
    fn musl_and_old_glibc_names() {
        let tmp = tempfile::tempdir().unwrap();
        let l = layer(
            tmp.path(),
            "l",
            &[
                E::F("lib/ld-musl-aarch64.so.1", b""),
                E::F(
                    "lib/apk/db/installed",
                    b"C:Q1x\nP:busybox\nV:1.36.1-r5\n\nC:Q1y\nP:musl\nV:1.2.4-r2\nA:aarch64\n\n",
                ),
                E::F("usr/local/lib/python3.12/os.py", b""),
            ],
            "gzip",
        );
        let (t, _) = run(tmp.path(), serde_json::json!({}), &[l], None).unwrap();
        assert_eq!(t.libc, Libc::Musl(1, 2));
        assert_eq!(t.version, (3, 12));

        let l = layer(
            tmp.path(),
            "old",
            &[
                E::F("lib/x86_64-linux-gnu/libc-2.28.so", b""),
                E::F("usr/lib/python3.7/os.py", b""),
            ],
            "gzip",
        );
        let (t, _) = run(tmp.path(), serde_json::json!({}), &[l], None).unwrap();
        assert_eq!(t.libc, Libc::Glibc(2, 28));
        assert_eq!(t.site_packages(), "/usr/lib/python3.7/site-packages");
    }

    #[test]
    fn spec_values_win_and_missing_python_is_clear() {
        let tmp = tempfile::tempdir().unwrap();
        let l = layer(
            tmp.path(),
            "l",
            &[
                E::F("var/lib/dpkg/status", STATUS),
                E::F("usr/lib/python3.11/os.py", b""),
                E::D("usr/lib/python3/dist-packages"),
            ],
            "gzip",
        );
        let spec = PythonSpec {
            version: (3, 11),
            prefix: None,
            libc: Some(("glibc".into(), 2, 31)),
            site_packages: None,
        };
        let (t, _) = run(
            tmp.path(),
            serde_json::json!({}),
            std::slice::from_ref(&l),
            Some(&spec),
        )
        .unwrap();
        assert_eq!(t.libc, Libc::Glibc(2, 31));
        assert_eq!(t.prefix, "/usr");
        assert_eq!(t.site_packages(), "/usr/local/lib/python3.11/dist-packages");

        let full = PythonSpec {
            version: (3, 10),
            prefix: Some("/opt/py".into()),
            libc: Some(("musl".into(), 1, 2)),
            site_packages: Some("/opt/sp".into()),
        };
        // A complete table does not even read the layers.
        let (t, _) = run(
            tmp.path(),
            serde_json::json!({}),
            &[("absent".into(), "x".into())],
            Some(&full),
        )
        .unwrap();
        assert_eq!(t.site_packages(), "/opt/sp");
        assert_eq!(t.libc, Libc::Musl(1, 2));

        let err = run(tmp.path(), serde_json::json!({}), &[], None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("add a [python] table"), "{err}");
        let l = layer(tmp.path(), "nopy", &[E::F("bin/sh", b"")], "gzip");
        let err = run(tmp.path(), serde_json::json!({}), &[l], None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("no PYTHON_VERSION"), "{err}");
        assert!(err.contains("[python]"), "{err}");
    }

    /// A gzip layer written straight to disk, `entries` appended by the closure.
    fn gz_layer(
        dir: &Path,
        name: &str,
        entries: impl FnOnce(&mut tar::Builder<flate2::write::GzEncoder<File>>),
    ) -> (String, String) {
        let f = File::create(dir.join(name)).unwrap();
        let mut b = tar::Builder::new(flate2::write::GzEncoder::new(
            f,
            flate2::Compression::fast(),
        ));
        entries(&mut b);
        b.into_inner().unwrap().finish().unwrap();
        (name.to_string(), "media/gzip".to_string())
    }

    fn file_header(size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_size(size);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        h
    }

    fn pax_header(records: &[(&str, &str)]) -> (tar::Header, Vec<u8>) {
        let mut data = Vec::new();
        for (k, v) in records {
            let body = format!(" {k}={v}\n");
            // The length counts its own digits.
            let mut len = body.len() + 1;
            while format!("{len}{body}").len() != len {
                len += 1;
            }
            data.extend_from_slice(format!("{len}{body}").as_bytes());
        }
        let mut h = tar::Header::new_ustar();
        h.set_path("PaxHeaders/x").unwrap();
        h.set_size(data.len() as u64);
        h.set_entry_type(tar::EntryType::XHeader);
        h.set_cksum();
        (h, data)
    }

    /// The dpkg status file was read whole: a 3 MB gzip layer took 3.2 GB.
    #[test]
    fn huge_dpkg_status_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let l = gz_layer(tmp.path(), "bomb", |b| {
            let n = MAX_META_FILE + 1;
            b.append_data(
                &mut file_header(n),
                "var/lib/dpkg/status",
                std::io::repeat(b'\n').take(n),
            )
            .unwrap();
            b.append_data(&mut file_header(0), "usr/lib/python3.11/os.py", &[][..])
                .unwrap();
        });
        assert!(std::fs::metadata(tmp.path().join("bomb")).unwrap().len() < 1 << 20);
        let e = run(tmp.path(), serde_json::json!({}), &[l], None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("bomb") && e.contains("/var/lib/dpkg/status is larger than 16 MiB"),
            "{e}"
        );
    }

    /// GNU long names and pax paths were kept whole: a 261 KB layer took 861 MB.
    #[test]
    fn huge_long_names_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let long = format!("usr/{}/x", "a".repeat(1 << 20));
        let l = gz_layer(tmp.path(), "gnu", |b| {
            b.append_data(&mut file_header(0), &long, &[][..]).unwrap();
        });
        let e = run(tmp.path(), serde_json::json!({}), &[l], None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("gnu") && e.contains("GNU long name of"), "{e}");

        let l = gz_layer(tmp.path(), "pax", |b| {
            let (h, data) = pax_header(&[("path", &long)]);
            b.append(&h, &data[..]).unwrap();
            b.append_data(&mut file_header(0), "short", &[][..])
                .unwrap();
        });
        let e = run(tmp.path(), serde_json::json!({}), &[l], None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("pax") && e.contains("pax header of"), "{e}");

        // A pax path over 4 KiB in a small pax header.
        let l = gz_layer(tmp.path(), "pax2", |b| {
            let (h, data) = pax_header(&[("path", &long[..8000])]);
            b.append(&h, &data[..]).unwrap();
            b.append_data(&mut file_header(0), "short", &[][..])
                .unwrap();
        });
        let e = run(tmp.path(), serde_json::json!({}), &[l], None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("pax path of 8000 bytes"), "{e}");
    }

    /// Only the paths detection needs are kept, and not without bound.
    #[test]
    fn kept_paths_are_bounded() {
        let tmp = tempfile::tempdir().unwrap();
        let l = gz_layer(tmp.path(), "many", |b| {
            for i in 0..(MAX_KEPT_PATH_BYTES / 4000 + 2) {
                let p = format!("lib/{i:04000}/libc.so.6");
                b.append_data(&mut file_header(0), &p, &[][..]).unwrap();
            }
        });
        let e = run(tmp.path(), serde_json::json!({}), &[l], None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("more than 16 MiB of paths"), "{e}");
    }

    /// pax `size` (Go's archive/tar writes it for files over 8 GiB, with 0 in the header) and
    /// pax `path` are followed; other members are skipped.
    #[test]
    fn pax_size_and_path_are_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let l = gz_layer(tmp.path(), "pax", |b| {
            let (h, data) = pax_header(&[("size", "1000"), ("mtime", "1.5")]);
            b.append(&h, &data[..]).unwrap();
            let mut big = file_header(0);
            big.set_path("big.bin").unwrap();
            big.set_cksum();
            b.append(&big, &[][..]).unwrap();
            // The 1000 bytes the pax size announced, as a tar would hold them, padded; they
            // look like a header, which a reader ignoring the pax size would take for one.
            let mut fake = file_header(0);
            fake.set_path("usr/lib/python3.7/os.py").unwrap();
            fake.set_cksum();
            let mut raw = fake.as_bytes().to_vec();
            raw.resize(1024, 0);
            b.get_mut().write_all(&raw).unwrap();
            let (h, data) = pax_header(&[("path", "usr/local/lib/python3.12/os.py")]);
            b.append(&h, &data[..]).unwrap();
            b.append_data(&mut file_header(0), "truncated-name", &[][..])
                .unwrap();
            b.append_data(&mut file_header(0), "lib/ld-musl-x86_64.so.1", &[][..])
                .unwrap();
        });
        let (t, why) = run(tmp.path(), serde_json::json!({}), &[l], None).unwrap();
        assert_eq!(
            (t.version, t.prefix.as_str()),
            ((3, 12), "/usr/local"),
            "{why:?}"
        );
        assert!(why.iter().any(|l| l.contains("(3 entries)")), "{why:?}");
    }

    #[test]
    fn truncated_and_corrupt_layers_are_errors() {
        let tmp = tempfile::tempdir().unwrap();
        let mut h = file_header(1 << 40);
        h.set_path("usr/lib/python3.11/os.py").unwrap();
        h.set_cksum();
        std::fs::write(tmp.path().join("short"), h.as_bytes()).unwrap();
        let e = run(
            tmp.path(),
            serde_json::json!({}),
            &[("short".into(), "x".into())],
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("unexpected end"), "{e}");
        let mut raw = h.as_bytes().to_vec();
        raw[0] ^= 1;
        std::fs::write(tmp.path().join("bad"), &raw).unwrap();
        let e = run(
            tmp.path(),
            serde_json::json!({}),
            &[("bad".into(), "x".into())],
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("checksum"), "{e}");
    }

    /// Absurd versions made tag generation allocate gigabytes: refused where they are read.
    #[test]
    fn absurd_versions_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let status = b"Package: libc6\nVersion: 2.3000000-1\n\n";
        let l = layer(
            tmp.path(),
            "l",
            &[
                E::F("var/lib/dpkg/status", status),
                E::F("usr/lib/python3.11/os.py", b""),
            ],
            "gzip",
        );
        let e = run(
            tmp.path(),
            serde_json::json!({}),
            std::slice::from_ref(&l),
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("glibc 2.3000000 is outside") && e.contains("/var/lib/dpkg/status"),
            "{e}"
        );

        let l = layer(
            tmp.path(),
            "ok",
            &[E::F("lib/x86_64-linux-gnu/libc-2.36.so", b"")],
            "gzip",
        );
        let cfg = serde_json::json!({"config": {"Env": ["PYTHON_VERSION=3.4000000.1"]}});
        let e = run(tmp.path(), cfg, std::slice::from_ref(&l), None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("Python 3.4000000 is outside") && e.contains("PYTHON_VERSION"),
            "{e}"
        );

        let l = layer(
            tmp.path(),
            "py",
            &[
                E::F("usr/lib/python3.1000/os.py", b""),
                E::F("lib/libc.so.6", b""),
            ],
            "gzip",
        );
        let e = run(tmp.path(), serde_json::json!({}), &[l], None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("Python 3.1000 is outside"), "{e}");

        let spec = PythonSpec {
            version: (3, 11),
            prefix: Some("/usr".into()),
            libc: Some(("musl".into(), 1, 5_000_000)),
            site_packages: None,
        };
        let e = run(tmp.path(), serde_json::json!({}), &[], Some(&spec))
            .unwrap_err()
            .to_string();
        assert!(e.contains("musl 1.5000000 is outside"), "{e}");
    }
}
