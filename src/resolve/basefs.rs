//! A few files and links of the base image's file system, read by streaming its layers' tar
//! headers once (gzip, zstd or plain; later layers win, whiteouts delete what lies below).
//! Nothing is unpacked or stored: the caller names the paths it wants and gets their final
//! contents and link targets, with bounded memory whatever the layers hold.

use std::collections::BTreeMap;
use std::io::Read;

use crate::sources::python::detect::{tar_stream, walk_tar};

/// Most bytes of one file read ([`MAX_TOTAL`] bounds them all).
pub const MAX_FILE: u64 = 16 << 20;
/// Most bytes of all files read across all layers (a Debian base's dpkg lists: a few MiB).
pub const MAX_TOTAL: u64 = 128 << 20;

/// What the caller wants of one path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    Nothing,
    /// Its contents when it is a regular file, its target when it is a symbolic link.
    Read,
    /// Only its target when it is a symbolic link.
    Link,
}

/// The wanted files and links of the final file system (paths without a leading `/`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BaseFiles {
    pub files: BTreeMap<String, Vec<u8>>,
    pub links: BTreeMap<String, String>,
    /// Tar entries read.
    pub entries: u64,
}

impl BaseFiles {
    /// The contents at `path`, following symbolic links (relative or absolute, a few hops).
    pub fn read(&self, path: &str) -> Option<&[u8]> {
        let mut p = path.trim_start_matches('/').to_string();
        for _ in 0..8 {
            if let Some(b) = self.files.get(&p) {
                return Some(b);
            }
            let t = self.links.get(&p)?;
            p = join_link(&p, t);
        }
        None
    }

    fn remove_tree(&mut self, path: &str) {
        let under =
            |p: &String| p == path || p.strip_prefix(path).is_some_and(|r| r.starts_with('/'));
        self.files.retain(|p, _| !under(p));
        self.links.retain(|p, _| !under(p));
    }
}

pub use crate::sources::debian::base::join_link;

fn normalize(p: &str) -> String {
    p.trim_start_matches("./")
        .trim_start_matches('/')
        .trim_end_matches('/')
        .to_string()
}

/// One layer's bytes by digest (`None`: not available here).
pub type Open<'a> = dyn Fn(&str) -> Option<std::io::Result<Box<dyn Read + 'a>>> + 'a;

/// Streams `layers` (digests, bottom first) and keeps what `want` asks for. Returns the
/// files and the digests that could not be opened.
pub fn scan(
    layers: &[String],
    open: &Open<'_>,
    want: &dyn Fn(&str) -> Want,
) -> std::io::Result<(BaseFiles, Vec<String>)> {
    let mut fs = BaseFiles::default();
    let mut missing = Vec::new();
    let mut total: u64 = 0;
    for digest in layers {
        let Some(raw) = open(digest) else {
            missing.push(digest.clone());
            continue;
        };
        let mut r = tar_stream(raw?)?;
        let mut removed: Vec<String> = Vec::new();
        let mut added = BaseFiles::default();
        walk_tar(&mut r, &mut |m| {
            fs.entries += 1;
            let p = normalize(&m.path);
            if p.is_empty() {
                return Ok(());
            }
            let (dir, name) = p.rsplit_once('/').unwrap_or(("", p.as_str()));
            if name == ".wh..wh..opq" {
                // everything under the folder goes, the folder stays
                removed.push(format!("{dir}/"));
                return Ok(());
            }
            if let Some(gone) = name.strip_prefix(".wh.") {
                removed.push(if dir.is_empty() {
                    gone.to_string()
                } else {
                    format!("{dir}/{gone}")
                });
                return Ok(());
            }
            // whatever was at this path below (a file replacing a link, ...) is replaced; a
            // folder merges with a folder below, so only a file or link there goes
            if m.kind == b'5' {
                removed.push(format!("={p}"));
            } else {
                removed.push(p.clone());
            }
            match (want(&p), m.kind) {
                (Want::Read, b'0' | 0 | b'7') => {
                    let mut buf = Vec::new();
                    m.data.take(MAX_FILE + 1).read_to_end(&mut buf)?;
                    if buf.len() as u64 > MAX_FILE {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            format!(
                                "/{p} is larger than {} MiB, the most mlimg reads of it",
                                MAX_FILE >> 20
                            ),
                        ));
                    }
                    total += buf.len() as u64;
                    if total > MAX_TOTAL {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            format!(
                                "more than {} MiB of files to read in the base image",
                                MAX_TOTAL >> 20
                            ),
                        ));
                    }
                    added.files.insert(p, buf);
                }
                (Want::Read | Want::Link, b'2') => {
                    added.links.insert(p, m.link.clone());
                }
                _ => {}
            }
            Ok(())
        })?;
        for gone in removed {
            if let Some(exact) = gone.strip_prefix('=') {
                fs.files.remove(exact);
                fs.links.remove(exact);
                continue;
            }
            match gone.strip_suffix('/') {
                Some(dir) => {
                    let prefix = format!("{dir}/");
                    fs.files.retain(|p, _| !p.starts_with(&prefix));
                    fs.links.retain(|p, _| !p.starts_with(&prefix));
                }
                None => fs.remove_tree(&gone),
            }
        }
        fs.files.extend(added.files);
        fs.links.extend(added.links);
    }
    Ok((fs, missing))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(entries: &[(&str, Option<&str>, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, link, data) in entries {
            let mut h = tar::Header::new_ustar();
            match link {
                Some("DIR") => {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_size(0);
                }
                Some(t) => {
                    h.set_entry_type(tar::EntryType::Symlink);
                    h.set_size(0);
                    h.set_link_name(t).unwrap();
                }
                None => {
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_size(data.len() as u64);
                }
            }
            h.set_path(path).unwrap();
            h.set_mode(0o644);
            h.set_cksum();
            b.append(&h, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn later_layers_win_and_whiteouts_delete() {
        let l1 = layer(&[
            ("etc/os-release", Some("../usr/lib/os-release"), b""),
            ("usr/lib/os-release", None, b"ID=debian\n"),
            ("etc/apt/sources.list", None, b"deb old\n"),
            ("etc/apt/sources.list.d/a.list", None, b"deb a\n"),
            ("lib", Some("usr/lib"), b""),
        ]);
        let l2 = layer(&[
            ("etc/apt/.wh.sources.list", None, b""),
            ("usr/lib/", Some("DIR"), b""),
            ("etc/apt/sources.list.d/.wh..wh..opq", None, b""),
            ("etc/apt/sources.list.d/b.list", None, b"deb b\n"),
            (
                "usr/lib/os-release",
                None,
                b"ID=debian\nVERSION_CODENAME=bookworm\n",
            ),
        ]);
        let layers = vec!["l1".to_string(), "l2".to_string()];
        let open = |d: &str| -> Option<std::io::Result<Box<dyn Read>>> {
            let bytes = match d {
                "l1" => l1.clone(),
                "l2" => l2.clone(),
                _ => return None,
            };
            Some(Ok(Box::new(std::io::Cursor::new(bytes))))
        };
        let want = |p: &str| {
            if p.starts_with("etc/") || p == "usr/lib/os-release" {
                Want::Read
            } else if !p.contains('/') {
                Want::Link
            } else {
                Want::Nothing
            }
        };
        let (fs, missing) = scan(&layers, &open, &want).unwrap();
        assert!(missing.is_empty());
        assert_eq!(
            fs.read("etc/os-release"),
            Some(&b"ID=debian\nVERSION_CODENAME=bookworm\n"[..])
        );
        assert_eq!(fs.read("etc/apt/sources.list"), None);
        assert_eq!(fs.read("etc/apt/sources.list.d/a.list"), None);
        assert_eq!(
            fs.read("etc/apt/sources.list.d/b.list"),
            Some(&b"deb b\n"[..])
        );
        assert_eq!(fs.links.get("lib").map(String::as_str), Some("usr/lib"));
        assert_eq!(fs.entries, 10);
    }

    #[test]
    fn links_join() {
        assert_eq!(
            join_link("etc/os-release", "../usr/lib/os-release"),
            "usr/lib/os-release"
        );
        assert_eq!(join_link("lib", "usr/lib"), "usr/lib");
        assert_eq!(join_link("a/b", "/x/y"), "x/y");
    }
}
