//! Installing Debian packages into a layer without dpkg: each verified `.deb`'s `data.tar` is
//! unpacked once into the cache (by sha256), and the layer lists its entries — paths moved
//! through the base's merged-/usr links, as dpkg would follow them — plus what dpkg's database
//! needs to know them: the base's `status` with the new stanzas, `info/<pkg>.list`,
//! `.md5sums`, `.conffiles` and the maintainer scripts. Maintainer scripts are never run;
//! [`dpkg::script_actions`] says which common cases are done for them (alternatives) and which
//! are not (a warning lists them).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::DebLock;
use super::base::DebianBase;
use super::deb::{self, DataEntry, DataKind, DebControl};
use super::dpkg;
use crate::layer::{Content, Entry};

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("{}: {source}", deb.display())]
    Deb { deb: PathBuf, source: deb::DebError },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{package} {version} would overwrite /{path}, which {owner} owns\n  hint: the two packages conflict; drop one of them from [system]"
    )]
    Overwrite {
        package: String,
        version: String,
        path: String,
        owner: String,
    },
    #[error("{0}")]
    Other(String),
}

/// One package unpacked in the cache.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Unpacked {
    /// The folder holding the package's files.
    pub root: PathBuf,
    pub entries: Vec<DataEntry>,
    pub control: DebControl,
}

/// The package in `deb` (verified by the caller) unpacked under `dir/<sha256>/`: reused when a
/// complete earlier unpacking is there. A folder there is complete when its `entries.json`
/// reads: it is written last, in a temp folder that is then renamed into place whole, and
/// `mlimg cache prune` renames a folder out of place before removing it, so no build finds a
/// half-made or half-removed folder with one. A hit sets the folder's mtime to now (its last
/// use, for `mlimg cache prune`).
pub fn unpack_cached(
    deb_path: &Path,
    sha256: &str,
    dir: &Path,
) -> Result<Arc<Unpacked>, InstallError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| InstallError::Io { path, source }
    };
    let done = dir.join(sha256);
    let complete = || -> Option<Arc<Unpacked>> {
        let bytes = std::fs::read(done.join("entries.json")).ok()?;
        let u = serde_json::from_slice::<Unpacked>(&bytes).ok()?;
        Some(Arc::new(Unpacked {
            root: done.join("root"),
            ..u
        }))
    };
    if let Some(u) = complete() {
        if let Ok(f) = std::fs::File::open(&done) {
            let _ = f.set_modified(std::time::SystemTime::now()); // best effort
        }
        return Ok(u);
    }
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let tmp = tempfile::Builder::new()
        .prefix(".unpack-")
        .tempdir_in(dir)
        .map_err(io(dir))?;
    let root = tmp.path().join("root");
    std::fs::create_dir(&root).map_err(io(&root))?;
    let deb_err = |source| InstallError::Deb {
        deb: deb_path.to_path_buf(),
        source,
    };
    let control = deb::read_control(deb_path).map_err(deb_err)?;
    let entries = deb::extract_data(deb_path, &root).map_err(deb_err)?;
    let u = Unpacked {
        root: done.join("root"),
        entries,
        control,
    };
    let json = serde_json::to_vec(&u).map_err(|e| InstallError::Other(e.to_string()))?;
    std::fs::write(tmp.path().join("entries.json"), json).map_err(io(tmp.path()))?;
    if done.exists() {
        // a concurrent build finished first: use its folder (ours is dropped)
        if let Some(theirs) = complete() {
            return Ok(theirs);
        }
        // an incomplete folder (no entries.json), which no build trusts: replace it
        std::fs::remove_dir_all(&done).map_err(io(&done))?;
    }
    let kept = tmp.keep();
    if let Err(e) = std::fs::rename(&kept, &done) {
        let _ = std::fs::remove_dir_all(&kept);
        // a concurrent build renamed its complete folder into place meanwhile
        return complete().ok_or_else(|| io(&done)(e));
    }
    Ok(Arc::new(u))
}

/// What installing the packages adds besides their files.
#[derive(Debug, Default)]
pub struct Installed {
    pub entries: Vec<Entry>,
    /// Maintainer-script work that was not done, one line per package.
    pub unhandled: Vec<String>,
}

fn multi_arch_same(control: &str) -> bool {
    control.lines().any(|l| {
        l.split_once(':')
            .is_some_and(|(k, v)| k.eq_ignore_ascii_case("Multi-Arch") && v.trim() == "same")
    })
}

/// The layer's entries for `packages` installed into `base`, given each package unpacked (same
/// order as `packages`): the packages' files at their canonical paths, dpkg's info files, the
/// alternatives' links and records, and the merged status file. A file that a base package or
/// another new package owns is an error naming both (folders are shared, and so is a symlink
/// two new packages ship alike).
pub fn layer_entries(
    packages: &[DebLock],
    base: &DebianBase,
    unpacked: &[Arc<Unpacked>],
) -> Result<Installed, InstallError> {
    let names: BTreeSet<&str> = packages.iter().map(|p| p.name.as_str()).collect();
    let mut out = Installed::default();
    // every non-folder path → (the new package that ships it, a symlink's target)
    let mut shipped: BTreeMap<String, (String, Option<String>)> = BTreeMap::new();
    let mut stanzas: Vec<(String, String, String)> = Vec::new();
    let mut alternatives = Vec::new();
    for (p, u) in packages.iter().zip(unpacked) {
        for e in &u.entries {
            let path = base.canonical(&e.path);
            if path.is_empty() {
                continue;
            }
            let mode = e.mode & 0o7777;
            let content = match &e.kind {
                DataKind::Dir => {
                    out.entries.push(Entry {
                        path,
                        mode,
                        content: Content::Dir,
                    });
                    continue;
                }
                DataKind::Symlink(t) => Content::Symlink(t.clone()),
                DataKind::File { size } => Content::File {
                    path: u.root.join(&e.path),
                    size: *size,
                },
                DataKind::Hardlink(target) => {
                    let src = u.root.join(target);
                    let size = std::fs::metadata(&src)
                        .map_err(|source| InstallError::Io {
                            path: src.clone(),
                            source,
                        })?
                        .len();
                    Content::File { path: src, size }
                }
            };
            if let Some(owner) = base.owned.get(&path)
                && !names.contains(owner.as_str())
            {
                return Err(InstallError::Overwrite {
                    package: p.name.clone(),
                    version: p.version.clone(),
                    path,
                    owner: format!("the base's package {owner}"),
                });
            }
            let link = match &e.kind {
                DataKind::Symlink(t) => Some(t.clone()),
                _ => None,
            };
            if let Some((other, other_link)) = shipped.get(&path)
                && other != &p.name
            {
                if link.is_some() && other_link == &link {
                    continue; // the same symlink from two packages
                }
                return Err(InstallError::Overwrite {
                    package: p.name.clone(),
                    version: p.version.clone(),
                    path,
                    owner: format!("{other} (also installed by [system])"),
                });
            }
            shipped.insert(path.clone(), (p.name.clone(), link));
            out.entries.push(Entry {
                path,
                mode,
                content,
            });
        }
        let mut control = u.control.clone();
        if control.md5sums.is_none() {
            control.md5sums = Some(dpkg::generate_md5sums(&u.entries, &u.root).map_err(other)?);
        }
        let same = multi_arch_same(&control.control) && base.multiarch_db;
        for (path, bytes, mode) in
            dpkg::info_files(&p.name, &p.architecture, same, &control, &u.entries)
        {
            out.entries.push(Entry {
                path,
                mode,
                content: Content::Inline(bytes.into()),
            });
        }
        let actions = dpkg::script_actions(&p.name, &control, &u.entries);
        alternatives.extend(actions.alternatives);
        if !actions.unhandled.is_empty() {
            out.unhandled
                .push(format!("{}: {}", p.name, actions.unhandled.join("; ")));
        }
        let conffiles = dpkg::conffile_md5s(&control, &u.root).map_err(other)?;
        stanzas.push((
            p.name.clone(),
            p.architecture.clone(),
            dpkg::status_stanza(&control.control, &conffiles).map_err(other)?,
        ));
    }
    let exists = |abs: &str| {
        let p = base.canonical(abs.trim_start_matches('/'));
        shipped.contains_key(&p) || base.owned.contains_key(&p)
    };
    let alts = dpkg::alternative_links(&base.alternatives, &alternatives, &exists);
    for (link, target) in alts.symlinks {
        out.entries.push(Entry {
            path: base.canonical(&link),
            mode: 0o777,
            content: Content::Symlink(target),
        });
    }
    for (path, bytes) in alts.files {
        out.entries.push(Entry {
            path,
            mode: 0o644,
            content: Content::Inline(bytes.into()),
        });
    }
    out.unhandled.extend(alts.unhandled);
    // A base package replaced by a newer version: the files only the old version had go, as
    // dpkg removes them on upgrade (whiteouts hide them from the layers below).
    for (path, owner) in &base.owned {
        if names.contains(owner.as_str()) && !shipped.contains_key(path) {
            let (dir, name) = path.rsplit_once('/').unwrap_or(("", path.as_str()));
            out.entries.push(Entry {
                path: if dir.is_empty() {
                    format!(".wh.{name}")
                } else {
                    format!("{dir}/.wh.{name}")
                },
                mode: 0o644,
                content: Content::Inline(Vec::new().into()),
            });
        }
    }
    out.entries.push(Entry {
        path: "var/lib/dpkg/status".into(),
        mode: 0o644,
        content: Content::Inline(
            dpkg::merge_status(&base.status, &stanzas)
                .into_bytes()
                .into(),
        ),
    });
    // Folders shipped by several packages appear once (the first one's mode wins).
    let mut seen = BTreeSet::new();
    out.entries.retain(|e| seen.insert(e.path.clone()));
    Ok(out)
}

fn other(e: impl std::fmt::Display) -> InstallError {
    InstallError::Other(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_complete_unpacked_folder_is_reused_and_marked_used() {
        let d = tempfile::tempdir().unwrap();
        let sha = "a".repeat(64);
        let done = d.path().join(&sha);
        std::fs::create_dir_all(done.join("root")).unwrap();
        let u = Unpacked {
            root: PathBuf::from("/elsewhere"),
            entries: Vec::new(),
            control: DebControl::default(),
        };
        std::fs::write(done.join("entries.json"), serde_json::to_vec(&u).unwrap()).unwrap();
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(30 * 86400);
        std::fs::File::open(&done)
            .unwrap()
            .set_modified(old)
            .unwrap();
        // a hit reads no .deb
        let missing = d.path().join("missing.deb");
        let got = unpack_cached(&missing, &sha, d.path()).expect("a hit");
        assert_eq!(got.root, done.join("root"));
        let m = std::fs::metadata(&done).unwrap().modified().unwrap();
        assert!(
            m > old + std::time::Duration::from_secs(29 * 86400),
            "touched"
        );
        // without its entries.json a folder is not complete: the .deb is read again
        std::fs::remove_file(done.join("entries.json")).unwrap();
        assert!(matches!(
            unpack_cached(&missing, &sha, d.path()),
            Err(InstallError::Deb { .. })
        ));
    }

    fn deb(name: &str) -> DebLock {
        DebLock {
            name: name.into(),
            version: "1.0-1".into(),
            architecture: "amd64".into(),
            size: 1,
            sha256: "0".repeat(64),
            url: format!("http://mirror/pool/{name}.deb"),
        }
    }

    fn unpacked(root: &Path, name: &str, files: &[(&str, DataKind)]) -> Arc<Unpacked> {
        let mut entries = Vec::new();
        for (p, k) in files {
            if let DataKind::File { size } = k {
                let f = root.join(p);
                std::fs::create_dir_all(f.parent().unwrap()).unwrap();
                std::fs::write(&f, vec![b'x'; *size as usize]).unwrap();
            }
            entries.push(DataEntry {
                path: p.to_string(),
                kind: k.clone(),
                mode: if matches!(k, DataKind::Dir) {
                    0o755
                } else {
                    0o644
                },
                uid: 0,
                gid: 0,
            });
        }
        Arc::new(Unpacked {
            root: root.to_path_buf(),
            entries,
            control: DebControl {
                control: format!(
                    "Package: {name}\nVersion: 1.0-1\nArchitecture: amd64\nMaintainer: t <t@example.invalid>\nDescription: test\n"
                ),
                ..Default::default()
            },
        })
    }

    fn install(
        base: DebianBase,
        names: &[&str],
        unpacked: &[Arc<Unpacked>],
    ) -> Result<Installed, InstallError> {
        let packages: Vec<DebLock> = names.iter().map(|n| deb(n)).collect();
        layer_entries(&packages, &base, unpacked)
    }

    fn base() -> DebianBase {
        let mut b = DebianBase {
            status: "Package: libc6\nStatus: install ok installed\nVersion: 2.36-9\nArchitecture: amd64\n\n"
                .into(),
            multiarch_db: true,
            ..Default::default()
        };
        b.links.insert("lib".into(), "usr/lib".into());
        b.owned
            .insert("usr/lib/x86_64-linux-gnu/libc.so.6".into(), "libc6".into());
        b.owned
            .insert("usr/share/libc6/old-only".into(), "libc6".into());
        b
    }

    #[test]
    fn paths_follow_the_bases_merged_usr_and_dpkg_learns_the_package() {
        let d = tempfile::tempdir().unwrap();
        let u = unpacked(
            d.path(),
            "libfoo1",
            &[
                ("lib", DataKind::Dir),
                ("lib/x86_64-linux-gnu", DataKind::Dir),
                (
                    "lib/x86_64-linux-gnu/libfoo.so.1",
                    DataKind::File { size: 3 },
                ),
            ],
        );
        let out = install(base(), &["libfoo1"], &[u]).unwrap();
        let paths: Vec<&str> = out.entries.iter().map(|e| e.path.as_str()).collect();
        assert!(
            paths.contains(&"usr/lib/x86_64-linux-gnu/libfoo.so.1"),
            "{paths:?}"
        );
        // never a folder where the base has its lib -> usr/lib link
        assert!(
            !paths.contains(&"lib") && !paths.iter().any(|p| p.starts_with("lib/")),
            "{paths:?}"
        );
        let status = out
            .entries
            .iter()
            .find(|e| e.path == "var/lib/dpkg/status")
            .unwrap();
        let Content::Inline(text) = &status.content else {
            panic!("inline status")
        };
        let text = String::from_utf8_lossy(text);
        assert!(
            text.contains("Package: libc6\n")
                && text.contains("Package: libfoo1\nStatus: install ok installed\n"),
            "{text}"
        );
        // dpkg's list keeps the path as the package ships it
        let list = out
            .entries
            .iter()
            .find(|e| e.path == "var/lib/dpkg/info/libfoo1.list")
            .unwrap();
        let Content::Inline(list) = &list.content else {
            panic!("inline list")
        };
        assert!(String::from_utf8_lossy(list).contains("/lib/x86_64-linux-gnu/libfoo.so.1\n"));
    }

    #[test]
    fn overwriting_a_base_file_or_another_packages_file_names_both() {
        let d = tempfile::tempdir().unwrap();
        let evil = unpacked(
            d.path(),
            "evil",
            &[("lib/x86_64-linux-gnu/libc.so.6", DataKind::File { size: 1 })],
        );
        let err = install(base(), &["evil"], &[evil]).unwrap_err().to_string();
        assert!(
            err.contains("evil")
                && err.contains("libc6")
                && err.contains("/usr/lib/x86_64-linux-gnu/libc.so.6"),
            "{err}"
        );

        let a = unpacked(
            &d.path().join("a"),
            "a",
            &[("usr/bin/tool", DataKind::File { size: 1 })],
        );
        let b = unpacked(
            &d.path().join("b"),
            "b",
            &[("usr/bin/tool", DataKind::File { size: 2 })],
        );
        let err = install(base(), &["a", "b"], &[a, b])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("b 1.0-1") && err.contains("a (also installed by [system])"),
            "{err}"
        );

        // the same symlink from two packages is fine
        let link = DataKind::Symlink("tool".into());
        let a = unpacked(&d.path().join("c"), "a", &[("usr/bin/t", link.clone())]);
        let b = unpacked(&d.path().join("e"), "b", &[("usr/bin/t", link)]);
        assert!(install(base(), &["a", "b"], &[a, b]).is_ok());
    }

    #[test]
    fn an_upgraded_base_package_may_replace_its_own_files() {
        let d = tempfile::tempdir().unwrap();
        let libc = unpacked(
            d.path(),
            "libc6",
            &[("lib/x86_64-linux-gnu/libc.so.6", DataKind::File { size: 1 })],
        );
        let out = install(base(), &["libc6"], &[libc]).unwrap();
        let status = out
            .entries
            .iter()
            .find(|e| e.path == "var/lib/dpkg/status")
            .unwrap();
        let Content::Inline(text) = &status.content else {
            panic!("inline")
        };
        let text = String::from_utf8_lossy(text);
        assert_eq!(text.matches("Package: libc6\n").count(), 1, "{text}");
        assert!(text.contains("Version: 1.0-1"), "{text}");
        // the old version's file the new one lacks is whited out; the shipped one is not
        let paths: Vec<&str> = out.entries.iter().map(|e| e.path.as_str()).collect();
        assert!(paths.contains(&"usr/share/libc6/.wh.old-only"), "{paths:?}");
        assert!(
            !paths.iter().any(|p| p.ends_with(".wh.libc.so.6")),
            "{paths:?}"
        );
    }
}
