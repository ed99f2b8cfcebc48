//! What a Debian base image says about its system (its apt sources, keyrings, dpkg database and
//! merged-/usr links), as `resolve` reads it from the base's layers and the install step uses it.

use std::collections::BTreeMap;

/// One `deb` line (or deb822 stanza) of the base's apt sources.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AptSource {
    pub uri: String,
    pub suites: Vec<String>,
    pub components: Vec<String>,
    /// `Signed-By` / `[signed-by=…]`: a keyring path in the image (or inline armored key).
    pub signed_by: Option<String>,
    /// Where it was written (`/etc/apt/sources.list.d/debian.sources`).
    pub file: String,
}

/// What the base image says about its Debian system.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DebianBase {
    /// `ID` and `VERSION_CODENAME` of `/etc/os-release`.
    pub os_id: Option<String>,
    pub codename: Option<String>,
    pub sources: Vec<AptSource>,
    /// Keyring files by image path (`usr/share/keyrings/debian-archive-keyring.gpg`).
    pub keyrings: BTreeMap<String, Vec<u8>>,
    /// `var/lib/dpkg/status` as it is (empty: the base has no dpkg database).
    pub status: String,
    /// Files each installed package owns (path without `/`, the merged-/usr links applied).
    pub owned: BTreeMap<String, String>,
    /// Top-level symbolic links (`lib` → `usr/lib`): where a package's paths really land.
    pub links: BTreeMap<String, String>,
    /// Whether `var/lib/dpkg/info/format` says 1: multi-arch names (`libc6:amd64.list`).
    pub multiarch_db: bool,
    /// update-alternatives' records (`var/lib/dpkg/alternatives/NAME`) by name.
    pub alternatives: BTreeMap<String, String>,
}

impl DebianBase {
    /// `path` (no leading `/`) with the base's top-level directory links applied: Debian's
    /// packages still ship `/lib/…` while a merged-/usr base has `lib -> usr/lib`.
    pub fn canonical(&self, path: &str) -> String {
        let mut p = path.to_string();
        for _ in 0..4 {
            let (first, rest) = p.split_once('/').unwrap_or((p.as_str(), ""));
            let Some(t) = self.links.get(first) else {
                break;
            };
            let joined = join_link(first, t);
            p = if rest.is_empty() {
                joined
            } else {
                format!("{joined}/{rest}")
            };
        }
        p
    }
}

/// Where a symbolic link at `path` with target `target` points (normalized, no leading `/`).
pub fn join_link(path: &str, target: &str) -> String {
    if target.starts_with('/') {
        return crate::sources::local::clean_path(target);
    }
    let dir = path.rsplit_once('/').map_or("", |(d, _)| d);
    crate::sources::local::clean_path(&format!("{dir}/{target}"))
}
