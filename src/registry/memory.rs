//! Where our blobs already are: a push remembers each (registry, repository) that holds a
//! blob after it, so a later push of the same blob to another repository of that registry
//! mounts it (`POST …/blobs/uploads/?mount=…&from=…`) instead of uploading it again — what
//! skopeo's blob-info cache does. The memory is a hint: a repository that lost the blob (or
//! that the credentials cannot read) answers the mount with 202 and an upload session, which
//! the push then uses.

/// A store of blob locations (the local cache implements it: `cache::Cache`).
pub trait BlobMemory: Send + Sync {
    /// Repositories of `registry` known to hold `digest`, most recent first.
    fn repositories(&self, registry: &str, digest: &str) -> Vec<String>;
    /// `repository` of `registry` holds `digest` now. Failures are ignored (a hint).
    fn remember(&self, registry: &str, repository: &str, digest: &str);
}

/// Immutable small documents by digest (manifests, configs) kept between builds, so a base
/// pinned by digest (or locked) needs no request to resolve. The local cache implements it.
pub trait ContentStore: Send + Sync {
    /// The bytes stored under `digest`, if any (the caller verifies them).
    fn get(&self, digest: &str) -> Option<Vec<u8>>;
    /// Stores `bytes` (under their sha256). Failures are ignored (a cache).
    fn put(&self, bytes: &[u8]);
}
