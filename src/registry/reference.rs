//! Image references with docker's normalisation rules.
//!
//! `python:3.11-slim` → `docker.io/library/python:3.11-slim`; the first path component is a
//! registry host when it contains `.` or `:` or is `localhost`.

use super::error::{RegistryError, Result};

pub const DOCKER_HUB: &str = "docker.io";
pub const DOCKER_HUB_API: &str = "registry-1.docker.io";

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    /// Registry host as written by users: "docker.io", "127.0.0.1:5000", "gcr.io".
    pub registry: String,
    /// Repository path: "library/python", "acme/app".
    pub repository: String,
    /// Tag; `None` when none was written (callers that need one use [`Reference::tag_or_latest`]).
    pub tag: Option<String>,
    /// `sha256:<hex>` digest, when pinned.
    pub digest: Option<String>,
}

fn invalid(input: &str, reason: impl Into<String>) -> RegistryError {
    RegistryError::InvalidReference {
        input: input.to_string(),
        reason: reason.into(),
    }
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn valid_path_component(c: &str) -> bool {
    let b = c.as_bytes();
    if b.is_empty() {
        return false;
    }
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        // a separator run
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

fn valid_tag(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|&x| x.is_ascii_alphanumeric() || x == b'_' || x == b'.' || x == b'-')
}

/// Validate a `sha256:<64 lowercase hex>` digest (the only algorithm we verify).
pub fn validate_digest(d: &str) -> Result<()> {
    crate::digest::Digest::parse(d)
        .map(|_| ())
        .map_err(|_| RegistryError::UnsupportedDigest {
            digest: d.to_string(),
        })
}

fn valid_host(h: &str) -> bool {
    // host[:port] or [ipv6]:port; keep it permissive but reject obvious junk.
    !h.is_empty()
        && h.bytes()
            .all(|x| x.is_ascii_alphanumeric() || b".-:[]_".contains(&x))
}

impl Reference {
    pub fn parse(s: &str) -> Result<Reference> {
        if s.is_empty() {
            return Err(invalid(s, "empty"));
        }
        if s.len() > 4096 {
            return Err(invalid(s, "too long"));
        }
        let (name_tag, digest) = match s.split_once('@') {
            Some((n, d)) => {
                validate_digest(d).map_err(|_| invalid(s, format!("bad digest {d:?}")))?;
                (n, Some(d.to_string()))
            }
            None => (s, None),
        };
        // A tag is after the last ':' that comes after the last '/'.
        let last_slash = name_tag.rfind('/');
        let (name, tag) = match name_tag.rfind(':') {
            Some(c) if last_slash.is_none_or(|sl| c > sl) => {
                (&name_tag[..c], Some(name_tag[c + 1..].to_string()))
            }
            _ => (name_tag, None),
        };
        if let Some(t) = &tag
            && !valid_tag(t)
        {
            return Err(invalid(s, format!("bad tag {t:?}")));
        }
        let (registry, repository) = match name.split_once('/') {
            Some((first, rest))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                if !valid_host(first) {
                    return Err(invalid(s, format!("bad registry host {first:?}")));
                }
                let host = if first == "index.docker.io" || first == DOCKER_HUB_API {
                    DOCKER_HUB.to_string()
                } else {
                    first.to_string()
                };
                (host, rest.to_string())
            }
            _ => (DOCKER_HUB.to_string(), name.to_string()),
        };
        let repository = if registry == DOCKER_HUB && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };
        if repository.is_empty() {
            return Err(invalid(s, "empty repository"));
        }
        for c in repository.split('/') {
            if !valid_path_component(c) {
                return Err(invalid(
                    s,
                    format!(
                        "bad repository component {c:?} (lowercase letters, digits and . _ - separators)"
                    ),
                ));
            }
        }
        if repository.len() > 255 {
            return Err(invalid(s, "repository name longer than 255 characters"));
        }
        Ok(Reference {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// Host the HTTP API lives on: `docker.io` → `registry-1.docker.io`.
    pub fn api_host(&self) -> &str {
        if self.registry == DOCKER_HUB {
            DOCKER_HUB_API
        } else {
            &self.registry
        }
    }

    /// Same repository, this tag, no digest.
    pub fn with_tag(&self, tag: &str) -> Reference {
        Reference {
            registry: self.registry.clone(),
            repository: self.repository.clone(),
            tag: Some(tag.to_string()),
            digest: None,
        }
    }

    /// Same repository, pinned to this digest (tag dropped).
    pub fn with_digest(&self, digest: &str) -> Reference {
        Reference {
            registry: self.registry.clone(),
            repository: self.repository.clone(),
            tag: None,
            digest: Some(digest.to_string()),
        }
    }

    pub fn tag_or_latest(&self) -> &str {
        self.tag.as_deref().unwrap_or("latest")
    }

    /// What to put after `/manifests/`: the digest if pinned, else the tag (default `latest`).
    pub fn manifest_ref(&self) -> &str {
        self.digest
            .as_deref()
            .unwrap_or_else(|| self.tag_or_latest())
    }

    /// `registry/repository` without tag or digest.
    pub fn repo_name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }
}

impl std::fmt::Display for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for Reference {
    type Err = RegistryError;
    fn from_str(s: &str) -> Result<Self> {
        Reference::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn parse_table() {
        let d = D;
        type Case<'a> = (String, &'a str, &'a str, Option<&'a str>, Option<&'a str>);
        let cases: Vec<Case> = vec![
            ("python".into(), "docker.io", "library/python", None, None),
            (
                "python:3.11-slim".into(),
                "docker.io",
                "library/python",
                Some("3.11-slim"),
                None,
            ),
            (
                "acme/app:1.0".into(),
                "docker.io",
                "acme/app",
                Some("1.0"),
                None,
            ),
            (
                "docker.io/python".into(),
                "docker.io",
                "library/python",
                None,
                None,
            ),
            (
                "index.docker.io/library/python:3".into(),
                "docker.io",
                "library/python",
                Some("3"),
                None,
            ),
            (
                "registry-1.docker.io/acme/x".into(),
                "docker.io",
                "acme/x",
                None,
                None,
            ),
            (
                "127.0.0.1:5000/acme/app:dev".into(),
                "127.0.0.1:5000",
                "acme/app",
                Some("dev"),
                None,
            ),
            ("localhost/app".into(), "localhost", "app", None, None),
            (
                "localhost:5000/app".into(),
                "localhost:5000",
                "app",
                None,
                None,
            ),
            (
                "gcr.io/proj/sub/img:v1".into(),
                "gcr.io",
                "proj/sub/img",
                Some("v1"),
                None,
            ),
            (
                "123456789012.dkr.ecr.us-east-1.amazonaws.com/team/model".into(),
                "123456789012.dkr.ecr.us-east-1.amazonaws.com",
                "team/model",
                None,
                None,
            ),
            (
                format!("python@{d}"),
                "docker.io",
                "library/python",
                None,
                Some(d),
            ),
            (
                format!("python:3.11@{d}"),
                "docker.io",
                "library/python",
                Some("3.11"),
                Some(d),
            ),
            (
                format!("host:5000/a/b:t@{d}"),
                "host:5000",
                "a/b",
                Some("t"),
                Some(d),
            ),
            (
                format!("host:5000/a/b@{d}"),
                "host:5000",
                "a/b",
                None,
                Some(d),
            ),
            (
                "a__b/c-d/e.f_g:T_1.x-y".into(),
                "docker.io",
                "a__b/c-d/e.f_g",
                Some("T_1.x-y"),
                None,
            ),
        ];
        for (input, reg, repo, tag, digest) in cases {
            let r = Reference::parse(&input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(r.registry, reg, "{input}");
            assert_eq!(r.repository, repo, "{input}");
            assert_eq!(r.tag.as_deref(), tag, "{input}");
            assert_eq!(r.digest.as_deref(), digest, "{input}");
            // Display is canonical and round-trips.
            let again = Reference::parse(&r.to_string()).unwrap();
            assert_eq!(again, r, "{input}");
        }
    }

    #[test]
    fn rejects_bad_references() {
        for bad in [
            "",
            "Python",
            "acme/App",
            "python:",
            "python:-x",
            "python@sha256:abc",
            "python@md5:0123",
            "a//b",
            "a/b/",
            "/a",
            "a-/b",
            "a..b",
            "host:5000/",
            "python:3.11:x",
        ] {
            assert!(Reference::parse(bad).is_err(), "{bad:?} should be rejected");
        }
        let long_tag = format!("a:{}", "x".repeat(129));
        assert!(Reference::parse(&long_tag).is_err());
    }

    #[test]
    fn api_host_and_helpers() {
        let r = Reference::parse("python:3.11").unwrap();
        assert_eq!(r.api_host(), "registry-1.docker.io");
        assert_eq!(r.to_string(), "docker.io/library/python:3.11");
        let r2 = Reference::parse(&format!("127.0.0.1:5000/a@{D}")).unwrap();
        assert_eq!(r2.api_host(), "127.0.0.1:5000");
        assert_eq!(r2.manifest_ref(), D);
        let t = r2.with_tag("v2");
        assert_eq!(t.to_string(), "127.0.0.1:5000/a:v2");
        assert_eq!(Reference::parse("x").unwrap().manifest_ref(), "latest");
    }
}
