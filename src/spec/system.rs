//! `[system]`: Debian packages installed into a layer of their own, without running apt or
//! dpkg (resolved against the base's archive and dpkg database, locked, verified).
//!
//! ```toml
//! [system]
//! packages = ["libgomp1", "curl", "tini=0.19.0-1"]
//! # suite = "bookworm"                      # default: the base's sources list
//! # mirror = "http://deb.debian.org/debian" # default: the base's sources list
//! # components = ["main"]
//! ```

use std::ops::Range;

use serde::Deserialize;

use super::SpecError;
use super::raw::S;

/// `[system]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSystem {
    pub packages: S<Vec<S<String>>>,
    #[serde(default)]
    pub suite: Option<S<String>>,
    #[serde(default)]
    pub mirror: Option<S<String>>,
    #[serde(default)]
    pub components: Option<S<Vec<String>>>,
    #[serde(default)]
    pub compression: Option<S<String>>,
}

/// One requested package: `name` or `name=version`, with the spec line it is on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SystemPackage {
    pub name: String,
    pub version: Option<String>,
    /// 1-based line in the spec file.
    pub line: usize,
}

impl std::fmt::Display for SystemPackage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.version {
            Some(v) => write!(f, "{}={v}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// `[system]`, validated.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SystemSpec {
    /// In spec order, no duplicates.
    pub packages: Vec<SystemPackage>,
    /// The suite (`bookworm`); `None`: every suite of the base's sources list.
    pub suite: Option<String>,
    /// The archive URL (`http://deb.debian.org/debian`); `None`: the base's sources list.
    pub mirror: Option<String>,
    /// `None`: the base's sources list (else `main`).
    pub components: Option<Vec<String>>,
    pub compression: crate::layer::Compression,
}

/// A Debian package name (policy 5.6.1): lowercase letters, digits, `+`, `-`, `.`; at least
/// two characters, starting with a letter or digit.
pub fn valid_name(n: &str) -> bool {
    n.len() >= 2
        && n.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && n.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.".contains(c))
}

fn valid_version(v: &str) -> bool {
    !v.is_empty()
        && v.starts_with(|c: char| c.is_ascii_digit())
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || ".+-~:".contains(c))
}

/// Validates `[system]`; `err` makes a positioned error, `line` turns a span into its line.
pub fn validate(
    table: Option<&S<RawSystem>>,
    err: &dyn Fn(Range<usize>, &str, String) -> SpecError,
    line: &dyn Fn(usize) -> usize,
) -> Result<Option<SystemSpec>, SpecError> {
    let Some(t) = table else { return Ok(None) };
    let t = t.get_ref();
    if t.packages.get_ref().is_empty() {
        return Err(err(
            t.packages.span(),
            "system.packages",
            "empty list: name the Debian packages to install (e.g. [\"libgomp1\"]) or remove [system]"
                .into(),
        ));
    }
    let mut packages: Vec<SystemPackage> = Vec::new();
    for (i, p) in t.packages.get_ref().iter().enumerate() {
        let field = format!("system.packages[{i}]");
        let s = p.get_ref().trim();
        let (name, version) = match s.split_once('=') {
            Some((n, v)) => (n.trim(), Some(v.trim())),
            None => (s, None),
        };
        if !valid_name(name) {
            return Err(err(
                p.span(),
                &field,
                format!(
                    "{s:?}: not a Debian package name (lowercase letters, digits, '+', '-', '.'; \
                     a version goes after '=', e.g. \"tini=0.19.0-1\")"
                ),
            ));
        }
        if let Some(v) = version
            && !valid_version(v)
        {
            return Err(err(
                p.span(),
                &field,
                format!("{s:?}: {v:?} is not a Debian version (e.g. \"0.19.0-1\")"),
            ));
        }
        if packages.iter().any(|q| q.name == name) {
            return Err(err(p.span(), &field, format!("{name} is listed twice")));
        }
        packages.push(SystemPackage {
            name: name.to_string(),
            version: version.map(str::to_string),
            line: line(p.span().start),
        });
    }
    let suite = match &t.suite {
        Some(s) if s.get_ref().trim().is_empty() || s.get_ref().contains(char::is_whitespace) => {
            return Err(err(
                s.span(),
                "system.suite",
                format!(
                    "{:?}: expected a suite or codename like \"bookworm\"",
                    s.get_ref()
                ),
            ));
        }
        s => s.as_ref().map(|s| s.get_ref().clone()),
    };
    let mirror = match &t.mirror {
        Some(m) => {
            let u = m.get_ref().trim().trim_end_matches('/');
            if !(u.starts_with("http://") || u.starts_with("https://")) {
                return Err(err(
                    m.span(),
                    "system.mirror",
                    format!("{u:?}: expected an http(s) URL like \"http://deb.debian.org/debian\""),
                ));
            }
            Some(u.to_string())
        }
        None => None,
    };
    let components = match &t.components {
        Some(c) if c.get_ref().is_empty() || c.get_ref().iter().any(|x| !valid_component(x)) => {
            return Err(err(
                c.span(),
                "system.components",
                "expected archive components like [\"main\", \"contrib\"]".into(),
            ));
        }
        c => c.as_ref().map(|c| c.get_ref().clone()),
    };
    let compression = match &t.compression {
        None => crate::layer::Compression::Gzip,
        Some(c) => match c.get_ref().as_str() {
            "gzip" => crate::layer::Compression::Gzip,
            "zstd" => crate::layer::Compression::Zstd,
            "none" => crate::layer::Compression::None,
            other => {
                return Err(err(
                    c.span(),
                    "system.compression",
                    format!("{other:?}: expected \"gzip\", \"zstd\" or \"none\""),
                ));
            }
        },
    };
    Ok(Some(SystemSpec {
        packages,
        suite,
        mirror,
        components,
        compression,
    }))
}

fn valid_component(c: &str) -> bool {
    !c.is_empty()
        && c.chars()
            .all(|x| x.is_ascii_alphanumeric() || "-_/".contains(x))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_versions() {
        assert!(valid_name("libgomp1"));
        assert!(valid_name("libstdc++6"));
        assert!(valid_name("libglib2.0-0"));
        assert!(!valid_name("Curl"));
        assert!(!valid_name("c"));
        assert!(!valid_name("-x"));
        assert!(valid_version("0.19.0-1"));
        assert!(valid_version("1:2.3~rc1+deb12u1"));
        assert!(!valid_version("latest"));
        assert!(!valid_version(""));
    }
}
