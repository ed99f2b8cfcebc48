//! Facts read from base images, kept by what decides them (`facts/<kind>-<sha256 of the key>.json`):
//! the Python target detected in a base, what the lints read of it. Reading them streams the
//! base's layers — from the registry, tens of MB — so a rebuild on the same base takes the
//! answer from here instead (the key holds every layer digest, so a new base is read again).
//! A missing or unreadable record is a miss; writes are atomic (temp file + rename).

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::Digest as _;

fn path(root: &Path, kind: &str, key: &str) -> PathBuf {
    let h = hex::encode(sha2::Sha256::digest(key.as_bytes()));
    root.join("facts").join(format!("{kind}-{h}.json"))
}

/// The recorded value for `key`, if any. A hit marks the record used now (its mtime, for
/// `mlimg cache prune`).
pub fn get<T: DeserializeOwned>(root: &Path, kind: &str, key: &str) -> Option<T> {
    let p = path(root, kind, key);
    let bytes = std::fs::read(&p).ok()?;
    let value = serde_json::from_slice(&bytes).ok()?;
    super::housekeeping::touch(&p);
    Some(value)
}

/// Records `value` for `key` (best effort: a cache).
pub fn put<T: Serialize>(root: &Path, kind: &str, key: &str, value: &T) {
    let dest = path(root, kind, key);
    let Some(dir) = dest.parent() else { return };
    if std::fs::create_dir_all(dir).is_err() {
        return;
    }
    let Ok(bytes) = serde_json::to_vec(value) else {
        return;
    };
    let Ok(mut t) = tempfile::NamedTempFile::new_in(dir) else {
        return;
    };
    if t.write_all(&bytes).is_ok() {
        let _ = t.persist(&dest);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn round_trip_by_key() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(super::get::<Vec<u32>>(d.path(), "k", "a"), None);
        super::put(d.path(), "k", "a", &vec![1u32, 2]);
        assert_eq!(super::get::<Vec<u32>>(d.path(), "k", "a"), Some(vec![1, 2]));
        assert_eq!(super::get::<Vec<u32>>(d.path(), "k", "b"), None);
        assert_eq!(super::get::<Vec<u32>>(d.path(), "other", "a"), None);
    }
}
