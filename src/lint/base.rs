//! What the lints need from the base image, streamed from its layers' tar entries (as Python
//! detection does): nothing is unpacked or stored, later layers win, whiteouts delete.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::Path;

use crate::registry::RegistryClient;
use crate::resolve::ResolvedBase;
use crate::sources::python::detect::{TarMember, tar_stream, walk_tar};

/// Most bytes read of `/etc/passwd` or `/etc/group` (real ones are a few KiB).
const MAX_ACCOUNT_FILE: u64 = 1 << 20;
/// Most model paths looked for in the base.
const MAX_WANTED_PATHS: usize = 64;
/// Most shared-library files and folder symlinks recorded of a base (a CUDA base has a few
/// thousand); beyond, the library facts are marked truncated and not used.
const MAX_LIB_FILES: usize = 100_000;
/// Most bytes read of one `/etc/ld.so.conf(.d)` file.
const MAX_LD_CONF: u64 = 64 << 10;
/// The loader's default folders (the triplet folders under `lib` and `usr/lib` are added).
const DEFAULT_LIB_DIRS: [&str; 5] = ["lib", "usr/lib", "lib64", "usr/lib64", "usr/local/lib"];

/// What the checks ask of the base.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Wants {
    /// `/etc/passwd` and `/etc/group` (the configured user is a name).
    pub accounts: bool,
    /// Whether CUDA libraries are present.
    pub cuda: bool,
    /// Image paths (relative to `/`) whose presence, or anything under them, matters.
    pub paths: Vec<String>,
    /// The shared libraries of the base and where the loader looks for them.
    pub libs: bool,
}

impl Wants {
    pub fn any(&self) -> bool {
        self.accounts || self.cuda || !self.paths.is_empty() || self.libs
    }
}

/// What was read of one platform's base.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct BaseFacts {
    /// Every layer was read: absent files are absent (else checks that need the base skip).
    pub complete: bool,
    /// `etc/passwd` and `etc/group` contents, when present (lossy UTF-8).
    pub passwd: Option<String>,
    pub group: Option<String>,
    /// The base config's environment sets `CUDA_VERSION` (NVIDIA's images), or a layer holds
    /// `libcudart.so*`, `libcuda.so*` or `libcublas.so*`.
    pub cuda: bool,
    /// The wanted paths that exist (or have something under them).
    pub present: BTreeSet<String>,
    /// When asked for: the base's shared libraries and where the loader looks for them.
    #[serde(default)]
    pub libs: Option<BaseLibs>,
}

/// The shared libraries of a base: every file or symlink named `*.so` or `*.so.*`, by folder
/// (relative to `/`, as the layers spell them), the folder symlinks that lead to them, and the
/// folders the dynamic loader searches by default.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BaseLibs {
    pub dirs: BTreeMap<String, BTreeSet<String>>,
    /// Symlinks that are not libraries themselves (`lib` -> `usr/lib`), by path; targets made
    /// relative to `/`.
    pub links: BTreeMap<String, String>,
    /// `lib`, `usr/lib`, `lib64`, `usr/lib64`, `usr/local/lib`, the `*-linux-*` triplet
    /// folders under `lib` and `usr/lib`, and the folders `/etc/ld.so.conf` and
    /// `/etc/ld.so.conf.d/*.conf` name.
    pub search: Vec<String>,
    /// More than the recorded maximum of files: the facts are incomplete.
    pub truncated: bool,
}

/// Whether a file name is a shared library's (`libfoo.so`, `libfoo.so.1.2`).
pub fn is_lib_name(name: &str) -> bool {
    name.ends_with(".so") || name.contains(".so.")
}

/// `path` (relative to `/`) with `.` and `..` resolved.
pub fn clean(path: &str) -> String {
    crate::sources::local::clean_path(path)
}

impl BaseLibs {
    /// `dir` (relative to `/`) with the symlinked folders on its way followed, as the kernel
    /// would (at most 16 hops).
    pub fn resolve(&self, dir: &str) -> String {
        let mut p = clean(dir);
        for _ in 0..16 {
            let parts: Vec<&str> = p.split('/').collect();
            let hop = (1..=parts.len()).find_map(|i| {
                let prefix = parts[..i].join("/");
                self.links
                    .get(&prefix)
                    .map(|t| clean(&format!("{t}/{}", parts[i..].join("/"))))
            });
            match hop {
                Some(next) => p = next,
                None => break,
            }
        }
        p
    }

    /// Whether the base has a library `name` in `dir` (relative to `/`).
    pub fn has(&self, dir: &str, name: &str) -> bool {
        let d = self.resolve(dir);
        self.dirs.get(&d).is_some_and(|n| n.contains(name))
            || self.dirs.get(&clean(dir)).is_some_and(|n| n.contains(name))
    }
}

fn normalize(p: &str) -> String {
    p.trim_start_matches("./")
        .trim_start_matches('/')
        .trim_end_matches('/')
        .to_string()
}

fn is_cuda_lib(name: &str) -> bool {
    ["libcudart.so", "libcuda.so", "libcublas.so"]
        .iter()
        .any(|l| name.starts_with(l))
}

/// Whether `p` is `want` or lies under it.
fn at_or_under(p: &str, want: &str) -> bool {
    want.is_empty() || p == want || p.strip_prefix(want).is_some_and(|r| r.starts_with('/'))
}

/// Reads what `wants` asks of `base` (nothing when it asks nothing), or takes it from the
/// cache's record of an earlier read of the same layers (`record`: keep a complete read).
pub fn read(
    base: &ResolvedBase,
    client: Option<&RegistryClient>,
    cache_dir: &Path,
    wants: &Wants,
    record: bool,
) -> BaseFacts {
    let key = format!(
        "v2\n{}\n{wants:?}\n{}",
        serde_json::to_string(&base.config).unwrap_or_default(),
        base.layers
            .iter()
            .map(|l| l.descriptor.digest.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    );
    if wants.any()
        && let Some(hit) = crate::cache::facts::get::<BaseFacts>(cache_dir, "base-facts", &key)
    {
        return hit;
    }
    let facts = read_layers(base, client, cache_dir, wants);
    if record && wants.any() && facts.complete {
        crate::cache::facts::put(cache_dir, "base-facts", &key, &facts);
    }
    facts
}

fn read_layers(
    base: &ResolvedBase,
    client: Option<&RegistryClient>,
    cache_dir: &Path,
    wants: &Wants,
) -> BaseFacts {
    let env_cuda = base.config["config"]["Env"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e.as_str())
        .any(|e| e.starts_with("CUDA_VERSION=") || e.starts_with("NV_CUDA_LIB_VERSION="));
    let mut facts = BaseFacts {
        cuda: env_cuda,
        ..BaseFacts::default()
    };
    if !wants.any() {
        return facts;
    }
    let wanted: Vec<String> = wants
        .paths
        .iter()
        .take(MAX_WANTED_PATHS)
        .map(|p| normalize(p))
        .collect();
    let mut files: BTreeMap<String, String> = BTreeMap::new();
    let mut cuda_libs: BTreeSet<String> = BTreeSet::new();
    let mut libs = LibScan::default();
    let mut complete = true;
    for l in &base.layers {
        let digest = l.descriptor.digest.to_string();
        let Some(Ok(raw)) = crate::resolve::open_base_layer(base, client, cache_dir, &digest)
        else {
            complete = false;
            continue;
        };
        let layer = read_layer(raw, wants, &wanted);
        let Ok(layer) = layer else {
            complete = false;
            continue;
        };
        for (gone, opaque) in &layer.removed {
            // a whiteout deletes the path and what is under it; an opaque folder only what is
            // under it
            let hidden = |p: &String| {
                if *opaque {
                    p.strip_prefix(gone.as_str())
                        .is_some_and(|r| r.starts_with('/'))
                } else {
                    at_or_under(p, gone)
                }
            };
            files.retain(|p, _| !hidden(p));
            cuda_libs.retain(|p| !hidden(p));
            libs.files.retain(|p| !hidden(p));
            libs.links.retain(|p, _| !hidden(p));
            libs.conf.retain(|p, _| !hidden(p));
            facts.present.retain(|p| !hidden(p));
        }
        files.extend(layer.files);
        cuda_libs.extend(layer.cuda_libs);
        libs.add(layer.libs);
        facts.present.extend(layer.present);
    }
    facts.complete = complete;
    facts.passwd = files.remove("etc/passwd");
    facts.group = files.remove("etc/group");
    facts.cuda |= !cuda_libs.is_empty();
    if wants.libs {
        facts.libs = Some(libs.finish());
    }
    facts
}

/// What the layers read so far hold of shared libraries.
#[derive(Default)]
struct LibScan {
    files: BTreeSet<String>,
    links: BTreeMap<String, String>,
    conf: BTreeMap<String, String>,
    truncated: bool,
}

impl LibScan {
    /// Adds a later layer's findings (its files replace the ones below).
    fn add(&mut self, layer: LibScan) {
        for f in layer.files {
            self.links.remove(&f);
            self.files.insert(f);
        }
        for (p, t) in layer.links {
            self.files.remove(&p);
            self.links.insert(p, t);
        }
        self.conf.extend(layer.conf);
        self.truncated |= layer.truncated || self.files.len() + self.links.len() > MAX_LIB_FILES;
    }

    fn finish(self) -> BaseLibs {
        let mut out = BaseLibs {
            links: self.links,
            truncated: self.truncated,
            ..BaseLibs::default()
        };
        for f in self.files {
            let (dir, name) = f.rsplit_once('/').unwrap_or(("", f.as_str()));
            out.dirs
                .entry(dir.to_string())
                .or_default()
                .insert(name.to_string());
        }
        let mut search: Vec<String> = DEFAULT_LIB_DIRS.iter().map(|d| d.to_string()).collect();
        for d in out.dirs.keys().chain(out.links.keys()) {
            if let Some((parent, sub)) = d.rsplit_once('/')
                && matches!(parent, "lib" | "usr/lib")
                && sub.contains("-linux-")
            {
                search.push(d.clone());
            }
        }
        // `include` lines name the conf.d files, which are read anyway
        for text in self.conf.values() {
            for line in text.lines() {
                let line = line.split('#').next().unwrap_or("").trim();
                if line.starts_with('/') {
                    search.push(clean(line));
                }
            }
        }
        let mut seen = BTreeSet::new();
        search.retain(|d| seen.insert(d.clone()));
        out.search = search;
        out
    }
}

#[derive(Default)]
struct LayerFacts {
    /// Whiteouts: paths this layer deletes from the layers below (`true`: an opaque folder,
    /// whose contents go).
    removed: Vec<(String, bool)>,
    files: BTreeMap<String, String>,
    cuda_libs: BTreeSet<String>,
    present: BTreeSet<String>,
    libs: LibScan,
}

fn read_layer(
    raw: Box<dyn Read + '_>,
    wants: &Wants,
    wanted: &[String],
) -> std::io::Result<LayerFacts> {
    let mut out = LayerFacts::default();
    let mut r = tar_stream(raw)?;
    walk_tar(&mut r, &mut |mut m| {
        let p = normalize(&m.path);
        let (dir, name) = p.rsplit_once('/').unwrap_or(("", p.as_str()));
        if name == ".wh..wh..opq" {
            out.removed.push((dir.to_string(), true));
            return Ok(());
        }
        if let Some(gone) = name.strip_prefix(".wh.") {
            let gone = if dir.is_empty() {
                gone.to_string()
            } else {
                format!("{dir}/{gone}")
            };
            out.removed.push((gone, false));
            return Ok(());
        }
        if wants.accounts
            && matches!(p.as_str(), "etc/passwd" | "etc/group")
            && matches!(m.kind, b'0' | 0 | b'7')
        {
            let mut buf = Vec::new();
            m.data.take(MAX_ACCOUNT_FILE).read_to_end(&mut buf)?;
            out.files
                .insert(p.clone(), String::from_utf8_lossy(&buf).into_owned());
        }
        if wants.libs {
            scan_lib_entry(&mut out.libs, &p, dir, name, &mut m)?;
        }
        if wants.cuda && is_cuda_lib(name) {
            out.cuda_libs.insert(p.clone());
        }
        for w in wanted {
            if at_or_under(&p, w) {
                out.present.insert(w.clone());
            }
        }
        Ok(())
    })?;
    Ok(out)
}

/// Records a library, a folder symlink or a loader configuration file of a base layer.
fn scan_lib_entry(
    out: &mut LibScan,
    p: &str,
    dir: &str,
    name: &str,
    m: &mut TarMember,
) -> std::io::Result<()> {
    let regular = matches!(m.kind, b'0' | 0 | b'7' | b'1');
    if out.files.len() + out.links.len() >= MAX_LIB_FILES {
        out.truncated = true;
    } else if m.kind == b'2' && !is_lib_name(name) {
        if !m.link.is_empty() {
            let target = if m.link.starts_with('/') {
                clean(&m.link)
            } else {
                clean(&format!("{dir}/{}", m.link))
            };
            out.links.insert(p.to_string(), target);
        }
    } else if (regular || m.kind == b'2') && is_lib_name(name) {
        out.files.insert(p.to_string());
    }
    if regular && (p == "etc/ld.so.conf" || (dir == "etc/ld.so.conf.d" && name.ends_with(".conf")))
    {
        let mut buf = Vec::new();
        (&mut m.data).take(MAX_LD_CONF).read_to_end(&mut buf)?;
        out.conf
            .insert(p.to_string(), String::from_utf8_lossy(&buf).into_owned());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_at_or_under() {
        assert!(at_or_under("models/a", "models/a"));
        assert!(at_or_under("models/a/b.bin", "models/a"));
        assert!(!at_or_under("models/ab", "models/a"));
        assert!(is_cuda_lib("libcudart.so.12"));
        assert!(!is_cuda_lib("libc.so.6"));
        assert!(is_lib_name("libgomp.so.1.0.0") && is_lib_name("_C.so"));
        assert!(!is_lib_name("libfoo.a") && !is_lib_name("notes.sourcemap"));
    }

    #[test]
    fn library_folders_follow_symlinks_and_ld_so_conf() {
        let mut scan = LibScan::default();
        let mut layer = LibScan::default();
        layer.links.insert("lib".into(), "usr/lib".into());
        layer
            .links
            .insert("usr/local/cuda".into(), "usr/local/cuda-12.1".into());
        layer
            .files
            .insert("usr/lib/x86_64-linux-gnu/libc.so.6".into());
        layer
            .files
            .insert("usr/local/cuda-12.1/lib64/libcudart.so.12".into());
        layer.conf.insert(
            "etc/ld.so.conf.d/cuda.conf".into(),
            "# CUDA\n/usr/local/cuda/lib64\ninclude /etc/ld.so.conf.d/*.conf\n".into(),
        );
        scan.add(layer);
        let libs = scan.finish();
        assert!(!libs.truncated);
        assert!(
            libs.search
                .contains(&"usr/lib/x86_64-linux-gnu".to_string())
        );
        assert!(libs.search.contains(&"usr/local/cuda/lib64".to_string()));
        assert!(!libs.search.iter().any(|d| d.contains("include")));
        assert!(libs.has("lib/x86_64-linux-gnu", "libc.so.6"));
        assert!(libs.has("usr/local/cuda/lib64", "libcudart.so.12"));
        assert!(!libs.has("usr/local/cuda/lib64", "libc.so.6"));
        assert_eq!(
            libs.resolve("lib/../lib/x86_64-linux-gnu"),
            "usr/lib/x86_64-linux-gnu"
        );
    }
}
