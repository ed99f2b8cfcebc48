//! The source repository and revision the manifest annotations name: `[image].source` /
//! `revision` from the spec, else the git checkout the spec lives in — only when its tree is
//! clean (a dirty tree's HEAD is not what was built). No git, or not a repository: nothing.

use crate::sources::git::GitInfo;

/// `org.opencontainers.image.source` and `.revision`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceInfo {
    pub url: Option<String>,
    pub revision: Option<String>,
}

/// The spec's values, filled in from the git checkout the spec lives in (`sources::git::read`,
/// the one git reader) where the spec has none.
pub fn source_info(
    checkout: Option<&GitInfo>,
    url: Option<&str>,
    revision: Option<&str>,
) -> SourceInfo {
    let mut out = SourceInfo {
        url: url.map(str::to_string),
        revision: revision.map(str::to_string),
    };
    if out.url.is_some() && out.revision.is_some() {
        return out;
    }
    // a clean tree only: `git status --porcelain` prints nothing (untracked files count)
    let Some(g) = checkout.filter(|g| g.clean) else {
        return out;
    };
    if out.revision.is_none() && g.commit.len() >= 40 {
        out.revision = Some(g.commit.clone());
    }
    if out.url.is_none() {
        out.url = g.remote_url.clone();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn source_info(p: &Path, url: Option<&str>, revision: Option<&str>) -> SourceInfo {
        super::source_info(crate::sources::git::read(p).as_ref(), url, revision)
    }

    fn git(dir: &Path, args: &[&str]) {
        let ok = std::process::Command::new("git")
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
