//! What the lints need from the base image, streamed from its layers' tar entries (as Python
//! detection does): nothing is unpacked or stored, later layers win, whiteouts delete.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::Path;

use crate::registry::RegistryClient;
use crate::resolve::ResolvedBase;
use crate::sources::python::detect::{tar_stream, walk_tar};

/// Most bytes read of `/etc/passwd` or `/etc/group` (real ones are a few KiB).
const MAX_ACCOUNT_FILE: u64 = 1 << 20;
/// Most model paths looked for in the base.
const MAX_WANTED_PATHS: usize = 64;

/// What the checks ask of the base.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Wants {
    /// `/etc/passwd` and `/etc/group` (the configured user is a name).
    pub accounts: bool,
    /// Whether CUDA libraries are present.
    pub cuda: bool,
    /// Image paths (relative to `/`) whose presence, or anything under them, matters.
    pub paths: Vec<String>,
}

impl Wants {
    pub fn any(&self) -> bool {
        self.accounts || self.cuda || !self.paths.is_empty()
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
        "v1\n{}\n{wants:?}\n{}",
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
            facts.present.retain(|p| !hidden(p));
        }
        files.extend(layer.files);
        cuda_libs.extend(layer.cuda_libs);
        facts.present.extend(layer.present);
    }
    facts.complete = complete;
    facts.passwd = files.remove("etc/passwd");
    facts.group = files.remove("etc/group");
    facts.cuda |= !cuda_libs.is_empty();
    facts
}

#[derive(Default)]
struct LayerFacts {
    /// Whiteouts: paths this layer deletes from the layers below (`true`: an opaque folder,
    /// whose contents go).
    removed: Vec<(String, bool)>,
    files: BTreeMap<String, String>,
    cuda_libs: BTreeSet<String>,
    present: BTreeSet<String>,
}

fn read_layer(
    raw: Box<dyn Read + '_>,
    wants: &Wants,
    wanted: &[String],
) -> std::io::Result<LayerFacts> {
    let mut out = LayerFacts::default();
    let mut r = tar_stream(raw)?;
    walk_tar(&mut r, &mut |m| {
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
    }
}
