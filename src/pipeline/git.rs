//! The source repository and revision the manifest annotations name: `[image].source` /
//! `revision` from the spec, else the git checkout the spec lives in — only when its tree is
//! clean (a dirty tree's HEAD is not what was built). No git, or not a repository: nothing.

use std::path::Path;
use std::process::Command;

/// `org.opencontainers.image.source` and `.revision`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceInfo {
    pub url: Option<String>,
    pub revision: Option<String>,
}

/// The spec's values, filled in from the git checkout of `dir` where the spec has none.
pub fn source_info(dir: &Path, url: Option<&str>, revision: Option<&str>) -> SourceInfo {
    let mut out = SourceInfo {
        url: url.map(str::to_string),
        revision: revision.map(str::to_string),
    };
    if out.url.is_some() && out.revision.is_some() {
        return out;
    }
    let git = |args: &[&str]| -> Option<String> {
        let o = Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_OPTIONAL_LOCKS", "0")
            .stdin(std::process::Stdio::null())
            .output()
            .ok()?;
        o.status
            .success()
            .then(|| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let Some(head) = git(&["rev-parse", "--verify", "HEAD"]) else {
        return out;
    };
    // a clean tree only: `--porcelain` prints nothing (untracked files count)
    if git(&["status", "--porcelain"]).is_none_or(|s| !s.is_empty()) {
        return out;
    }
    if out.revision.is_none() && head.len() >= 40 && head.chars().all(|c| c.is_ascii_hexdigit()) {
        out.revision = Some(head);
    }
    if out.url.is_none() {
        out.url = git(&["remote", "get-url", "origin"])
            .filter(|u| !u.is_empty())
            .map(|u| strip_credentials(&u));
    }
    out
}

/// `https://user:token@host/x` → `https://host/x`; other forms (`git@host:x`) as they are.
pub fn strip_credentials(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let end = rest.find('/').unwrap_or(rest.len());
    match rest[..end].rfind('@') {
        Some(at) => format!("{scheme}://{}", &rest[at + 1..]),
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_stripped() {
        assert_eq!(
            strip_credentials("https://x-access-token:ghp_abc@github.com/acme/app.git"),
            "https://github.com/acme/app.git"
        );
        assert_eq!(
            strip_credentials("https://github.com/acme/app"),
            "https://github.com/acme/app"
        );
        assert_eq!(
            strip_credentials("git@github.com:acme/app.git"),
            "git@github.com:acme/app.git"
        );
        assert_eq!(strip_credentials("ssh://git@host/a@b"), "ssh://host/a@b");
    }

    fn git(dir: &Path, args: &[&str]) {
        let ok = Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@e")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@e")
            .status()
            .expect("git (the tests need it)")
            .success();
        assert!(ok, "git {args:?}");
    }

    #[test]
    fn a_clean_checkout_names_its_origin_and_head() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        assert_eq!(source_info(p, None, None), SourceInfo::default());
        git(p, &["init", "-q"]);
        std::fs::write(p.join("mlimg.toml"), "x").unwrap();
        git(p, &["add", "."]);
        git(p, &["commit", "-qm", "one"]);
        git(
            p,
            &[
                "remote",
                "add",
                "origin",
                "https://u:secret@git.example/acme/app.git",
            ],
        );
        let got = source_info(p, None, None);
        assert_eq!(got.url.as_deref(), Some("https://git.example/acme/app.git"));
        assert_eq!(got.revision.as_ref().map(String::len), Some(40));
        // the spec's values win
        let mine = source_info(p, Some("https://src.example/a"), None);
        assert_eq!(mine.url.as_deref(), Some("https://src.example/a"));
        assert_eq!(mine.revision, got.revision);
        // a dirty tree: nothing from git
        std::fs::write(p.join("new.txt"), "y").unwrap();
        assert_eq!(source_info(p, None, None), SourceInfo::default());
    }
}
