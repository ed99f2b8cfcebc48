//! The standard Hugging Face hub cache layout, shared with `huggingface_hub` (Python) and `hf-hub`:
//!
//! ```text
//! {cache}/models--{org}--{name}/blobs/{etag}                 file bytes; etag = sha256 for LFS files,
//!                                                            git blob sha1 for regular files
//! {cache}/models--{org}--{name}/blobs/{etag}.incomplete      partial download (resumed from its length)
//! {cache}/models--{org}--{name}/snapshots/{commit}/{path}    relative symlink to ../../blobs/{etag}
//! {cache}/models--{org}--{name}/refs/{branch}                commit sha the branch pointed at
//! {cache}/.locks/models--{org}--{name}/{etag}.lock           flock held while writing a blob
//! ```

use std::fs::{self, File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use sha1::Digest as _;

use super::HubError;

pub(crate) struct CacheLayout {
    pub root: PathBuf,
    pub repo_dir: PathBuf,
    pub folder: String,
}

impl CacheLayout {
    pub fn new(cache_dir: &Path, repo: &str) -> Self {
        let folder = format!("models--{}", repo.replace('/', "--"));
        CacheLayout {
            root: cache_dir.to_path_buf(),
            repo_dir: cache_dir.join(&folder),
            folder,
        }
    }

    pub fn blob(&self, etag: &str) -> PathBuf {
        self.repo_dir.join("blobs").join(etag)
    }

    pub fn incomplete(&self, etag: &str) -> PathBuf {
        self.repo_dir
            .join("blobs")
            .join(format!("{etag}.incomplete"))
    }

    pub fn snapshot(&self, commit: &str, path: &str) -> PathBuf {
        let mut p = self.repo_dir.join("snapshots").join(commit);
        for c in path.split('/') {
            p.push(c);
        }
        p
    }

    /// Best effort: record which commit a branch or tag pointed at, like the other hub clients do.
    pub fn write_ref(&self, revision: &str, commit: &str) {
        if !is_safe_rel_path(revision) {
            return;
        }
        let mut p = self.repo_dir.join("refs");
        for c in revision.split('/') {
            p.push(c);
        }
        if let Some(parent) = p.parent()
            && fs::create_dir_all(parent).is_ok()
        {
            let tmp = p.with_file_name(format!(".{}.mlimg-tmp-{}", commit, std::process::id()));
            // create_new: a symlink (or anything) already at the predictable name is not
            // followed or overwritten; the ref is then simply not recorded.
            let written = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp)
                .and_then(|mut f| std::io::Write::write_all(&mut f, commit.as_bytes()));
            if written.is_ok() && fs::rename(&tmp, &p).is_err() {
                let _ = fs::remove_file(&tmp);
            }
        }
    }

    /// Exclusive lock on one blob, compatible with `hf-hub`'s (std `File::lock` = flock).
    ///
    /// The cache may be shared with other accounts: a `.lock` path that is a symlink is
    /// refused (not followed), and the file is never truncated.
    pub fn lock(&self, etag: &str) -> Result<File, HubError> {
        let dir = self.root.join(".locks").join(&self.folder);
        fs::create_dir_all(&dir).map_err(|e| HubError::io(&dir, e))?;
        let path = dir.join(format!("{etag}.lock"));
        let f = open_nofollow(
            &path,
            OpenOptions::new().read(true).write(true).create(true),
        )?;
        f.lock().map_err(|e| HubError::io(&path, e))?;
        Ok(f)
    }

    /// Opens (creating it if needed) `blobs/{etag}.incomplete` for appending, without
    /// following a symlink planted there: another account sharing the cache could otherwise
    /// make the download truncate or append to any file this user can write.
    ///
    /// `transfer()` in `hf/mod.rs` (owned by the HTTP rewrite) should open its file with this
    /// instead of a plain `OpenOptions`; until it does, only the tests call it.
    #[allow(dead_code)]
    pub fn open_incomplete(&self, etag: &str) -> Result<File, HubError> {
        let path = self.incomplete(etag);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(|e| HubError::io(parent, e))?;
        }
        open_nofollow(&path, OpenOptions::new().create(true).append(true))
    }

    /// Point `snapshots/{commit}/{path}` at `blobs/{etag}` (relative symlink, replaced atomically).
    pub fn link(&self, commit: &str, path: &str, etag: &str) -> Result<(), HubError> {
        let pointer = self.snapshot(commit, path);
        let parent = pointer
            .parent()
            .ok_or_else(|| HubError::io(&pointer, std::io::Error::other("no parent directory")))?;
        fs::create_dir_all(parent).map_err(|e| HubError::io(parent, e))?;
        let depth = 2 + path.split('/').count() - 1;
        let target: PathBuf = std::iter::repeat_n("..", depth)
            .collect::<PathBuf>()
            .join("blobs")
            .join(etag);
        if fs::read_link(&pointer).is_ok_and(|t| t == target) {
            return Ok(());
        }
        let tmp = parent.join(format!(".mlimg-link-{}-{}", std::process::id(), etag));
        let _ = fs::remove_file(&tmp);
        #[cfg(unix)]
        std::os::unix::fs::symlink(&target, &tmp).map_err(|e| HubError::io(&tmp, e))?;
        #[cfg(not(unix))]
        fs::copy(self.blob(etag), &tmp).map_err(|e| HubError::io(&tmp, e))?;
        fs::rename(&tmp, &pointer).map_err(|e| {
            let _ = fs::remove_file(&tmp);
            HubError::io(&pointer, e)
        })
    }
}

/// sha256 and (optionally) git blob sha1 of one file, computed in a single pass.
pub(crate) struct Digests {
    sha256: sha2::Sha256,
    git: Option<sha1::Sha1>,
}

pub(crate) struct DigestHex {
    pub sha256: String,
    /// Empty when not computed.
    pub git: String,
}

impl Digests {
    /// `size` is the full file size (the git blob id hashes a `blob {size}\0` header first).
    /// The git blob id is only computed when `git` is set (regular files; LFS files are large
    /// and identified by their sha256).
    pub fn new(size: u64, git: bool) -> Self {
        let git = git.then(|| {
            let mut h = sha1::Sha1::new();
            h.update(format!("blob {size}\0").as_bytes());
            h
        });
        Digests {
            sha256: sha2::Sha256::new(),
            git,
        }
    }

    pub fn update(&mut self, b: &[u8]) {
        self.sha256.update(b);
        if let Some(g) = &mut self.git {
            g.update(b);
        }
    }

    pub fn finish(self) -> DigestHex {
        DigestHex {
            sha256: hex::encode(self.sha256.finalize()),
            git: self
                .git
                .map(|g| hex::encode(g.finalize()))
                .unwrap_or_default(),
        }
    }

    /// Feed up to `limit` bytes of `path` (streamed, constant memory). Returns bytes read.
    pub fn update_from_file(&mut self, path: &Path, limit: u64) -> Result<u64, HubError> {
        let f = open_nofollow(path, OpenOptions::new().read(true))?;
        let mut r = f.take(limit);
        let mut buf = vec![0u8; 1 << 20];
        let mut total = 0u64;
        loop {
            let n = r.read(&mut buf).map_err(|e| HubError::io(path, e))?;
            if n == 0 {
                return Ok(total);
            }
            self.update(&buf[..n]);
            total += n as u64;
        }
    }
}

/// Hash a whole file.
pub(crate) fn digest_file(path: &Path, size: u64, git: bool) -> Result<DigestHex, HubError> {
    let mut d = Digests::new(size, git);
    d.update_from_file(path, u64::MAX)?;
    Ok(d.finish())
}

/// Opens `path` with `opts` plus `O_NOFOLLOW` (a symlink in the last component fails with
/// ELOOP) and `O_NONBLOCK` (a planted FIFO cannot block the open), then insists on a regular
/// file.
pub(crate) fn open_nofollow(path: &Path, opts: &mut OpenOptions) -> Result<File, HubError> {
    let f = opts
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| {
            let e = if e.raw_os_error() == Some(libc::ELOOP) {
                std::io::Error::other(
                    "is a symlink; refusing to follow it in the hub cache (remove it)",
                )
            } else {
                e
            };
            HubError::io(path, e)
        })?;
    let meta = f.metadata().map_err(|e| HubError::io(path, e))?;
    if !meta.is_file() {
        return Err(HubError::io(
            path,
            std::io::Error::other("not a regular file; refusing to use it in the hub cache"),
        ));
    }
    Ok(f)
}

pub(crate) fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A `/`-separated relative path with no empty, `.` or `..` components and no backslashes.
pub(crate) fn is_safe_rel_path(p: &str) -> bool {
    !p.is_empty()
        && !p.contains('\\')
        && !p.contains('\0')
        && p.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
}

#[cfg(test)]
mod tests {
    use super::*;

    const ETAG: &str = "0123456789abcdef0123456789abcdef01234567";

    /// Another account sharing the cache plants symlinks at the names mlimg opens; the files
    /// they point at must stay untouched.
    #[test]
    fn planted_symlinks_are_not_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let victim = tmp.path().join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        let layout = CacheLayout::new(&tmp.path().join("cache"), "org/repo");

        let locks = layout.root.join(".locks").join(&layout.folder);
        std::fs::create_dir_all(&locks).unwrap();
        std::os::unix::fs::symlink(&victim, locks.join(format!("{ETAG}.lock"))).unwrap();
        let e = layout.lock(ETAG).unwrap_err().to_string();
        assert!(e.contains(".lock") && e.contains("symlink"), "{e}");

        std::fs::create_dir_all(layout.repo_dir.join("blobs")).unwrap();
        std::os::unix::fs::symlink(&victim, layout.incomplete(ETAG)).unwrap();
        let e = layout.open_incomplete(ETAG).unwrap_err().to_string();
        assert!(e.contains(".incomplete") && e.contains("symlink"), "{e}");
        let mut d = Digests::new(8, false);
        assert!(d.update_from_file(&layout.incomplete(ETAG), 8).is_err());

        // refs: the temporary name is predictable.
        let refs = layout.repo_dir.join("refs");
        std::fs::create_dir_all(&refs).unwrap();
        let commit = "c".repeat(40);
        std::os::unix::fs::symlink(
            &victim,
            refs.join(format!(".{commit}.mlimg-tmp-{}", std::process::id())),
        )
        .unwrap();
        layout.write_ref("main", &commit);

        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    }

    #[test]
    fn lock_and_incomplete_work_on_plain_files() {
        let tmp = tempfile::tempdir().unwrap();
        let layout = CacheLayout::new(tmp.path(), "org/repo");
        let l = layout.lock(ETAG).unwrap();
        drop(l);
        // Re-locking an existing lock file works and does not truncate it.
        let p = layout
            .root
            .join(".locks")
            .join(&layout.folder)
            .join(format!("{ETAG}.lock"));
        std::fs::write(&p, b"x").unwrap();
        drop(layout.lock(ETAG).unwrap());
        assert_eq!(std::fs::read(&p).unwrap(), b"x");
        use std::io::Write;
        layout
            .open_incomplete(ETAG)
            .unwrap()
            .write_all(b"ab")
            .unwrap();
        layout
            .open_incomplete(ETAG)
            .unwrap()
            .write_all(b"cd")
            .unwrap();
        assert_eq!(std::fs::read(layout.incomplete(ETAG)).unwrap(), b"abcd");
        let mut d = Digests::new(4, false);
        assert_eq!(d.update_from_file(&layout.incomplete(ETAG), 4).unwrap(), 4);
        layout.write_ref("main", &"c".repeat(40));
        assert_eq!(
            std::fs::read_to_string(layout.repo_dir.join("refs/main")).unwrap(),
            "c".repeat(40)
        );
    }
}
