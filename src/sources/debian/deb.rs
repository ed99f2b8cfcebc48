//! Reading Debian binary packages (`.deb`) without dpkg: the control members and the data tree.
//!
//! A `.deb` is an `ar` archive of `debian-binary` (`2.0`), `control.tar[.gz|.xz|.zst]` and
//! `data.tar[.gz|.xz|.zst|.bz2|.lzma]` (see deb(5)). The `ar` crate reads the archive (it is the
//! format's reference crate: small, dependency-free and complete for the common `ar` variant that
//! dpkg-deb writes, so it needs no new releases); each member is a `Read` that is chained with a
//! decompressor and the `tar` reader, so no member is ever held in memory whole.
//!
//! [`extract_data`] writes the data tree into a folder of the caller's, refusing what a hostile
//! package could use to write outside it: `..` components, an entry below a symlink (the `a ->
//! /etc` then `a/passwd` trick), a hard link to anything but an earlier regular file of the same
//! archive, and duplicate non-folder entries. Device nodes and fifos are refused with an error
//! (Debian policy leaves them to maintainer scripts, and an image layer built without root could
//! not create them anyway); owners are not applied on disk but returned in the entries, for the
//! layer writer.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::io::{self, BufReader, Read};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The largest control member (control, md5sums, a maintainer script, symbols...) read into
/// memory; real ones are a few megabytes at most (libstdc++'s symbols).
pub const CONTROL_MEMBER_LIMIT: u64 = 32 << 20;

#[derive(Debug, thiserror::Error)]
pub enum DebError {
    #[error("{}: {source}", deb.display())]
    Open { deb: PathBuf, source: io::Error },
    #[error("{}: not a Debian binary package: {reason}", deb.display())]
    Format { deb: PathBuf, reason: String },
    #[error("{}: {member}: {source}", deb.display())]
    Read {
        deb: PathBuf,
        member: String,
        source: io::Error,
    },
    #[error("{}: {member}: {path:?}: {reason}", deb.display())]
    Entry {
        deb: PathBuf,
        member: String,
        path: String,
        reason: String,
    },
    #[error("{}: {path:?}: writing {}: {source}", deb.display(), target.display())]
    Write {
        deb: PathBuf,
        path: String,
        target: PathBuf,
        source: io::Error,
    },
}

/// The control archive of a package.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DebControl {
    /// The `control` file's text.
    pub control: String,
    /// The `md5sums` file's text, verbatim.
    pub md5sums: Option<String>,
    /// The `conffiles` file's text, verbatim.
    pub conffiles: Option<String>,
    /// Every other control member by name: `preinst`, `postinst`, `prerm`, `postrm`, `config`,
    /// `triggers`, `shlibs`, `symbols`, `templates`...
    pub scripts: BTreeMap<String, Vec<u8>>,
}

impl DebControl {
    /// The conffile paths (without the leading `/`), skipping flagged lines such as
    /// `remove-on-upgrade /etc/x` (files the package does not ship).
    pub fn conffile_paths(&self) -> Vec<String> {
        let Some(text) = &self.conffiles else {
            return Vec::new();
        };
        text.lines()
            .map(str::trim)
            .filter(|l| l.starts_with('/'))
            .map(|l| l.trim_start_matches('/').to_string())
            .collect()
    }
}

/// What a data entry is.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum DataKind {
    File {
        size: u64,
    },
    Dir,
    /// A symlink with its target, verbatim.
    Symlink(String),
    /// A hard link to an earlier regular file of the archive (normalized path).
    Hardlink(String),
}

/// One entry of a package's data tree, in archive order.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DataEntry {
    /// Normalized: no leading `./` or `/`, no trailing `/`, never empty.
    pub path: String,
    pub kind: DataKind,
    /// Permission bits, setuid/setgid/sticky included.
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
}

/// How a member is compressed, from its name's extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Compression {
    None,
    Gzip,
    Xz,
    Lzma,
    Zstd,
    Bzip2,
}

fn member_compression(name: &str, stem: &str) -> Option<Compression> {
    let ext = name.strip_prefix(stem)?;
    Some(match ext {
        "" => Compression::None,
        ".gz" => Compression::Gzip,
        ".xz" => Compression::Xz,
        ".lzma" => Compression::Lzma,
        ".zst" => Compression::Zstd,
        ".bz2" => Compression::Bzip2,
        _ => return None,
    })
}

fn decoder<'a, R: Read + 'a>(r: R, c: Compression) -> io::Result<Box<dyn Read + 'a>> {
    Ok(match c {
        Compression::None => Box::new(r),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(r)),
        Compression::Xz => Box::new(liblzma::read::XzDecoder::new_multi_decoder(r)),
        Compression::Lzma => {
            let stream =
                liblzma::stream::Stream::new_lzma_decoder(u64::MAX).map_err(io::Error::other)?;
            Box::new(liblzma::read::XzDecoder::new_stream(r, stream))
        }
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(r)?),
        Compression::Bzip2 => Box::new(bzip2::read::MultiBzDecoder::new(r)),
    })
}

/// Normalizes an archive path: `./usr/bin/` → `usr/bin`; `..` is refused; the root gives "".
pub fn normalize_path(raw: &[u8]) -> Result<String, String> {
    let s = std::str::from_utf8(raw)
        .map_err(|_| "path is not valid UTF-8 (image paths must be UTF-8)".to_string())?;
    let mut parts = Vec::new();
    for part in s.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err("path contains a `..` component".to_string()),
            p => parts.push(p),
        }
    }
    Ok(parts.join("/"))
}

/// The package's `ar` archive, checked up to its `debian-binary` member.
struct DebArchive<'p> {
    deb: &'p Path,
    ar: ar::Archive<BufReader<fs::File>>,
}

impl<'p> DebArchive<'p> {
    fn open(deb: &'p Path) -> Result<Self, DebError> {
        let file = fs::File::open(deb).map_err(|source| DebError::Open {
            deb: deb.to_path_buf(),
            source,
        })?;
        let mut this = DebArchive {
            deb,
            ar: ar::Archive::new(BufReader::new(file)),
        };
        let format = |reason: String| DebError::Format {
            deb: deb.to_path_buf(),
            reason,
        };
        {
            let mut first = match this.ar.next_entry() {
                None => return Err(format("empty archive".to_string())),
                Some(Err(e)) => return Err(format(format!("not an ar archive ({e})"))),
                Some(Ok(entry)) => entry,
            };
            let name = String::from_utf8_lossy(first.header().identifier()).into_owned();
            if name.trim_end_matches('/') != "debian-binary" {
                return Err(format(format!(
                    "first member is {name:?}, expected \"debian-binary\""
                )));
            }
            let mut version = String::new();
            (&mut first)
                .take(64)
                .read_to_string(&mut version)
                .map_err(|e| format(format!("debian-binary: {e}")))?;
            if !version.starts_with("2.") {
                return Err(format(format!(
                    "debian-binary says {:?}, only format 2.x is supported",
                    version.trim()
                )));
            }
        }
        Ok(this)
    }

    /// Walks to the member named `stem[.ext]` and hands its decompressed stream to `f`. Members
    /// starting with `_` (dpkg's extension point) are skipped, as dpkg does.
    fn with_member<T>(
        &mut self,
        stem: &str,
        f: impl FnOnce(&str, Box<dyn Read + '_>) -> Result<T, DebError>,
    ) -> Result<T, DebError> {
        loop {
            let entry = match self.ar.next_entry() {
                None => {
                    return Err(DebError::Format {
                        deb: self.deb.to_path_buf(),
                        reason: format!("no {stem} member"),
                    });
                }
                Some(Err(source)) => {
                    return Err(DebError::Read {
                        deb: self.deb.to_path_buf(),
                        member: format!("ar archive (looking for {stem})"),
                        source,
                    });
                }
                Some(Ok(entry)) => entry,
            };
            let name = String::from_utf8_lossy(entry.header().identifier())
                .trim_end_matches('/')
                .to_string();
            if name.starts_with('_') || (stem == "data.tar" && name.starts_with("control.tar")) {
                continue;
            }
            if !name.starts_with(stem) {
                return Err(DebError::Format {
                    deb: self.deb.to_path_buf(),
                    reason: format!("unexpected member {name:?} where {stem}.* was expected"),
                });
            }
            let Some(compression) = member_compression(&name, stem) else {
                return Err(DebError::Format {
                    deb: self.deb.to_path_buf(),
                    reason: format!("member {name:?}: unknown compression"),
                });
            };
            let reader = decoder(entry, compression).map_err(|source| DebError::Read {
                deb: self.deb.to_path_buf(),
                member: name.clone(),
                source,
            })?;
            return f(&name, reader);
        }
    }
}

/// Reads the control archive: `control`, `md5sums`, `conffiles` and every other member.
pub fn read_control(deb: &Path) -> Result<DebControl, DebError> {
    let mut archive = DebArchive::open(deb)?;
    archive.with_member("control.tar", |member, reader| {
        let read_err = |source| DebError::Read {
            deb: deb.to_path_buf(),
            member: member.to_string(),
            source,
        };
        let entry_err = |path: &str, reason: String| DebError::Entry {
            deb: deb.to_path_buf(),
            member: member.to_string(),
            path: path.to_string(),
            reason,
        };
        let mut out = DebControl::default();
        let mut control = None;
        let mut tar = tar::Archive::new(reader);
        for entry in tar.entries().map_err(read_err)? {
            let entry = entry.map_err(read_err)?;
            let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            let name = normalize_path(&entry.path_bytes()).map_err(|r| entry_err(&raw, r))?;
            let kind = entry.header().entry_type();
            if kind.is_dir() || kind.is_pax_global_extensions() {
                continue;
            }
            if !(kind.is_file() || kind.is_contiguous()) {
                return Err(entry_err(
                    &raw,
                    "control members must be regular files".to_string(),
                ));
            }
            if name.is_empty() || name.contains('/') {
                return Err(entry_err(
                    &raw,
                    "control members must sit at the top of control.tar".to_string(),
                ));
            }
            let mut bytes = Vec::new();
            entry
                .take(CONTROL_MEMBER_LIMIT + 1)
                .read_to_end(&mut bytes)
                .map_err(read_err)?;
            if bytes.len() as u64 > CONTROL_MEMBER_LIMIT {
                return Err(entry_err(
                    &raw,
                    format!("larger than {CONTROL_MEMBER_LIMIT} bytes"),
                ));
            }
            let text = |bytes: Vec<u8>| {
                String::from_utf8(bytes).map_err(|_| entry_err(&raw, "not valid UTF-8".to_string()))
            };
            match name.as_str() {
                "control" => control = Some(text(bytes)?),
                "md5sums" => out.md5sums = Some(text(bytes)?),
                "conffiles" => out.conffiles = Some(text(bytes)?),
                _ => {
                    out.scripts.insert(name, bytes);
                }
            }
        }
        out.control = control.ok_or_else(|| DebError::Format {
            deb: deb.to_path_buf(),
            reason: format!("{member} has no control file"),
        })?;
        Ok(out)
    })
}

/// Streams the data archive into `dest` (an existing, empty folder) and returns its entries in
/// archive order. See the module documentation for what is refused.
pub fn extract_data(deb: &Path, dest: &Path) -> Result<Vec<DataEntry>, DebError> {
    match fs::symlink_metadata(dest) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(DebError::Write {
                deb: deb.to_path_buf(),
                path: String::new(),
                target: dest.to_path_buf(),
                source: io::Error::other("the destination is not a folder"),
            });
        }
        Err(source) => {
            return Err(DebError::Write {
                deb: deb.to_path_buf(),
                path: String::new(),
                target: dest.to_path_buf(),
                source,
            });
        }
    }
    let mut archive = DebArchive::open(deb)?;
    archive.with_member("data.tar", |member, reader| {
        let mut x = Extractor {
            deb,
            member,
            dest,
            dirs: HashSet::new(),
            kinds: HashMap::new(),
            listed_dirs: HashMap::new(),
            dir_modes: Vec::new(),
            entries: Vec::new(),
        };
        let mut tar = tar::Archive::new(reader);
        let read_err = |source| DebError::Read {
            deb: deb.to_path_buf(),
            member: member.to_string(),
            source,
        };
        for entry in tar.entries().map_err(read_err)? {
            let entry = entry.map_err(read_err)?;
            x.entry(entry)?;
        }
        // Folder modes last, deepest first, so a read-only folder does not block its contents.
        for (path, target, mode) in x.dir_modes.iter().rev() {
            fs::set_permissions(target, fs::Permissions::from_mode(*mode))
                .map_err(|source| x.write_err(path, target, source))?;
        }
        Ok(x.entries)
    })
}

struct Extractor<'a> {
    deb: &'a Path,
    member: &'a str,
    dest: &'a Path,
    /// Folders (relative paths) known to be real folders inside `dest`.
    dirs: HashSet<String>,
    /// What each extracted path is: true for regular files (hard link targets).
    kinds: HashMap<String, bool>,
    /// Folders listed by the archive: their index in `dir_modes` and in `entries` (a repeated
    /// folder is one entry, with the last mode).
    listed_dirs: HashMap<String, (usize, usize)>,
    dir_modes: Vec<(String, PathBuf, u32)>,
    entries: Vec<DataEntry>,
}

impl Extractor<'_> {
    fn entry_err(&self, path: &str, reason: impl Into<String>) -> DebError {
        DebError::Entry {
            deb: self.deb.to_path_buf(),
            member: self.member.to_string(),
            path: path.to_string(),
            reason: reason.into(),
        }
    }

    fn write_err(&self, path: &str, target: &Path, source: io::Error) -> DebError {
        DebError::Write {
            deb: self.deb.to_path_buf(),
            path: path.to_string(),
            target: target.to_path_buf(),
            source,
        }
    }

    /// Makes sure every parent of `path` is a real folder inside `dest` (creating missing ones),
    /// never passing through a symlink.
    fn parents(&mut self, path: &str) -> Result<(), DebError> {
        let mut prefix_end = 0;
        while let Some(i) = path[prefix_end..].find('/') {
            let prefix = &path[..prefix_end + i];
            prefix_end += i + 1;
            if self.dirs.contains(prefix) {
                continue;
            }
            let target = self.dest.join(prefix);
            match fs::symlink_metadata(&target) {
                Ok(m) if m.file_type().is_dir() => {}
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(self.entry_err(
                        path,
                        format!("its parent {prefix:?} is a symlink; refusing to write through it"),
                    ));
                }
                Ok(_) => {
                    return Err(
                        self.entry_err(path, format!("its parent {prefix:?} is not a folder"))
                    );
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    fs::create_dir(&target).map_err(|e| self.write_err(path, &target, e))?;
                }
                Err(e) => return Err(self.write_err(path, &target, e)),
            }
            self.dirs.insert(prefix.to_string());
        }
        Ok(())
    }

    fn entry<R: Read>(&mut self, mut entry: tar::Entry<'_, R>) -> Result<(), DebError> {
        let raw_bytes = entry.path_bytes().into_owned();
        let raw = String::from_utf8_lossy(&raw_bytes).into_owned();
        let header = entry.header();
        let kind = header.entry_type();
        if kind.is_pax_global_extensions() {
            return Ok(());
        }
        let path = normalize_path(&raw_bytes).map_err(|r| self.entry_err(&raw, r))?;
        let mode = header
            .mode()
            .map_err(|e| self.entry_err(&raw, e.to_string()))?
            & 0o7777;
        let uid = header
            .uid()
            .map_err(|e| self.entry_err(&raw, e.to_string()))?;
        let gid = header
            .gid()
            .map_err(|e| self.entry_err(&raw, e.to_string()))?;
        if path.is_empty() {
            if kind.is_dir() {
                return Ok(());
            }
            return Err(self.entry_err(&raw, "only a folder may stand for the root"));
        }
        self.parents(&path)?;
        let target = self.dest.join(&path);
        let existing = match fs::symlink_metadata(&target) {
            Ok(m) => Some(m),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(self.write_err(&path, &target, e)),
        };
        if kind.is_dir() {
            match existing {
                Some(m) if m.is_dir() => {
                    // A repeated folder: its last mode wins, as with tar. A folder made earlier
                    // as a parent is listed now.
                    if let Some(&(i, j)) = self.listed_dirs.get(&path) {
                        self.dir_modes[i].2 = mode;
                        self.entries[j].mode = mode;
                        return Ok(());
                    }
                }
                Some(_) => {
                    return Err(self.entry_err(&path, "a folder replaces an earlier entry"));
                }
                None => fs::create_dir(&target).map_err(|e| self.write_err(&path, &target, e))?,
            }
            self.dirs.insert(path.clone());
            self.listed_dirs
                .insert(path.clone(), (self.dir_modes.len(), self.entries.len()));
            self.dir_modes.push((path.clone(), target, mode));
            self.push(path, DataKind::Dir, mode, uid, gid, false);
            return Ok(());
        }
        if existing.is_some() {
            return Err(self.entry_err(&path, "the archive holds this path twice"));
        }
        if kind.is_file() || kind.is_contiguous() {
            let size = entry.size();
            let mut out = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&target)
                .map_err(|e| self.write_err(&path, &target, e))?;
            let copied = io::copy(&mut entry, &mut out).map_err(|source| DebError::Read {
                deb: self.deb.to_path_buf(),
                member: format!("{}: {path}", self.member),
                source,
            })?;
            if copied != size {
                return Err(self.entry_err(&path, format!("{copied} bytes read, {size} declared")));
            }
            drop(out);
            fs::set_permissions(&target, fs::Permissions::from_mode(mode))
                .map_err(|e| self.write_err(&path, &target, e))?;
            self.push(path, DataKind::File { size }, mode, uid, gid, true);
        } else if kind.is_symlink() {
            let link = entry
                .link_name_bytes()
                .ok_or_else(|| self.entry_err(&path, "symlink without a target"))?;
            let link = std::str::from_utf8(&link)
                .map_err(|_| self.entry_err(&path, "symlink target is not valid UTF-8"))?
                .to_string();
            if link.is_empty() {
                return Err(self.entry_err(&path, "symlink with an empty target"));
            }
            std::os::unix::fs::symlink(&link, &target)
                .map_err(|e| self.write_err(&path, &target, e))?;
            self.push(path, DataKind::Symlink(link), mode, uid, gid, false);
        } else if kind.is_hard_link() {
            let link = entry
                .link_name_bytes()
                .ok_or_else(|| self.entry_err(&path, "hard link without a target"))?;
            let link = normalize_path(&link)
                .map_err(|r| self.entry_err(&path, format!("hard link target: {r}")))?;
            if self.kinds.get(&link) != Some(&true) {
                return Err(self.entry_err(
                    &path,
                    format!("hard link to {link:?}, which is not an earlier regular file"),
                ));
            }
            fs::hard_link(self.dest.join(&link), &target)
                .map_err(|e| self.write_err(&path, &target, e))?;
            self.push(path, DataKind::Hardlink(link), mode, uid, gid, false);
        } else {
            let what = if kind.is_character_special() || kind.is_block_special() {
                "device node"
            } else if kind.is_fifo() {
                "fifo"
            } else {
                "unsupported entry type"
            };
            return Err(self.entry_err(
                &path,
                format!(
                    "{what} (tar type {:?}); packages that ship special files are not supported",
                    kind.as_byte() as char
                ),
            ));
        }
        Ok(())
    }

    fn push(&mut self, path: String, kind: DataKind, mode: u32, uid: u64, gid: u64, file: bool) {
        self.kinds.insert(path.clone(), file);
        self.entries.push(DataEntry {
            path,
            kind,
            mode,
            uid,
            gid,
        });
    }
}
