//! The git checkout that holds a spec: its last commit, that commit's time, whether the tree
//! is clean, and where it came from. Read with the `git` program (`git -C DIR …`); a folder
//! outside any checkout, or no `git` installed, gives `None`.

use std::path::Path;
use std::process::Command;

/// What the checkout says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitInfo {
    /// The full hex id of `HEAD`.
    pub commit: String,
    /// `HEAD`'s committer time, in seconds since the epoch.
    pub commit_time: u64,
    /// No changes, staged or not, and no untracked files (`git status --porcelain` is empty).
    pub clean: bool,
    /// The `origin` remote's URL, without credentials (`https://user:token@host/…` →
    /// `https://host/…`), if there is one.
    pub remote_url: Option<String>,
}

fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        // the user's pager, editor or locale must not change the output
        .env("GIT_PAGER", "cat")
        .env("LC_ALL", "C")
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE")
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Drops `user[:password]@` from a URL's authority.
fn without_credentials(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
            format!("{scheme}://{host}{path}")
        }
        None => url.to_string(),
    }
}

/// The checkout holding `dir`, if any.
pub fn read(dir: &Path) -> Option<GitInfo> {
    let head = git(dir, &["log", "-1", "--format=%H %ct"])?;
    let (commit, time) = head.trim().split_once(' ')?;
    let commit_time = time.parse().ok()?;
    let clean = git(dir, &["status", "--porcelain"])?.trim().is_empty();
    let remote_url = git(dir, &["remote", "get-url", "origin"])
        .map(|u| u.trim().to_string())
        .filter(|u| !u.is_empty())
        .map(|u| without_credentials(&u));
    Some(GitInfo {
        commit: commit.to_string(),
        commit_time,
        clean,
        remote_url,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_dropped_from_remote_urls() {
        assert_eq!(
            without_credentials("https://bob:tok@github.com/acme/app.git"),
            "https://github.com/acme/app.git"
        );
        assert_eq!(
            without_credentials("https://github.com/acme/app"),
            "https://github.com/acme/app"
        );
        assert_eq!(
            without_credentials("git@github.com:acme/app.git"),
            "git@github.com:acme/app.git"
        );
    }
}
