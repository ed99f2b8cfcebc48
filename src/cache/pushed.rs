//! What the cache remembers for the registry client: where blobs were pushed (`pushed/<hex>`:
//! one `registry repository` line per place, most recent first, at most [`KEEP`]), for
//! cross-repository mounts; and manifests and configs fetched by digest (in the blob store), so
//! a pinned or locked base resolves without a request.

use std::fs;
use std::io::Write;

use super::Cache;
use crate::registry::{BlobMemory, ContentStore};

/// Places remembered per blob.
const KEEP: usize = 16;

/// The hex of a well-formed `sha256:<64 hex>` digest (names from a registry never become paths
/// otherwise).
fn sha256_hex(digest: &str) -> Option<&str> {
    let hex = digest.strip_prefix("sha256:")?;
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit())).then_some(hex)
}

impl Cache {
    fn pushed_path(&self, digest: &str) -> Option<std::path::PathBuf> {
        sha256_hex(digest).map(|hex| self.root.join("pushed").join(hex))
    }

    fn pushed_lines(&self, digest: &str) -> Vec<(String, String)> {
        let Some(p) = self.pushed_path(digest) else {
            return Vec::new();
        };
        let Ok(text) = fs::read_to_string(p) else {
            return Vec::new();
        };
        text.lines()
            .filter_map(|l| {
                let (reg, repo) = l.split_once(' ')?;
                Some((reg.to_string(), repo.to_string()))
            })
            .collect()
    }
}

impl BlobMemory for Cache {
    fn repositories(&self, registry: &str, digest: &str) -> Vec<String> {
        let repos: Vec<String> = self
            .pushed_lines(digest)
            .into_iter()
            .filter(|(reg, _)| reg == registry)
            .map(|(_, repo)| repo)
            .collect();
        if !repos.is_empty()
            && let Some(p) = self.pushed_path(digest)
        {
            super::housekeeping::touch(&p); // its last use, for `mlimg cache prune`
        }
        repos
    }

    fn remember(&self, registry: &str, repository: &str, digest: &str) {
        let Some(dest) = self.pushed_path(digest) else {
            return;
        };
        // names with whitespace cannot be valid references; never write them
        if registry.contains(char::is_whitespace) || repository.contains(char::is_whitespace) {
            return;
        }
        let mut lines = self.pushed_lines(digest);
        if lines
            .first()
            .is_some_and(|(g, r)| g == registry && r == repository)
        {
            // already the most recent: no write, but used now (for `mlimg cache prune`)
            super::housekeeping::touch(&dest);
            return;
        }
        lines.retain(|(g, r)| !(g == registry && r == repository));
        lines.insert(0, (registry.to_string(), repository.to_string()));
        lines.truncate(KEEP);
        let text: String = lines.iter().map(|(g, r)| format!("{g} {r}\n")).collect();
        let Ok(mut t) = self.temp() else { return };
        if let Some(dir) = dest.parent()
            && fs::create_dir_all(dir).is_err()
        {
            return;
        }
        if t.write_all(text.as_bytes()).is_ok() {
            let _ = t.persist(&dest);
        }
    }
}

/// Manifests and configs by digest, in the blob store (`blobs/sha256/<hex>`).
impl ContentStore for Cache {
    fn get(&self, digest: &str) -> Option<Vec<u8>> {
        sha256_hex(digest)?;
        let bytes = self.read_bytes(digest).ok()?;
        self.touch_blob(digest); // its last use, for `mlimg cache prune`
        Some(bytes)
    }

    fn put(&self, bytes: &[u8]) {
        let _ = self.put_bytes(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_places_most_recent_first_per_registry() {
        let d = tempfile::tempdir().unwrap();
        let c = Cache::open(d.path()).unwrap();
        let dg = format!("sha256:{}", "ab".repeat(32));
        assert!(c.repositories("r1", &dg).is_empty());
        c.remember("r1", "team/a", &dg);
        c.remember("r2", "team/x", &dg);
        c.remember("r1", "team/b", &dg);
        assert_eq!(c.repositories("r1", &dg), ["team/b", "team/a"]);
        assert_eq!(c.repositories("r2", &dg), ["team/x"]);
        c.remember("r1", "team/a", &dg);
        assert_eq!(c.repositories("r1", &dg), ["team/a", "team/b"]);
        for i in 0..40 {
            c.remember("r1", &format!("many/{i}"), &dg);
        }
        assert_eq!(
            c.repositories("r1", &dg).len() + c.repositories("r2", &dg).len(),
            KEEP
        );
        // not a digest: nothing stored, nothing found
        c.remember("r1", "team/a", "sha256:../../etc");
        assert!(c.repositories("r1", "sha256:../../etc").is_empty());
    }
}
