//! One platform type for the whole build: parsed from `os/arch[/variant]`, printed the same
//! way, and matched against index entries with the defaults runtimes apply (`arm64` is
//! `arm64/v8`), so `linux/arm64` and `linux/arm64/v8` pick the same image in `build`, `lock`
//! and the base resolution.

use std::fmt;

/// An OCI platform: `os/arch[/variant]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{input:?} is not a platform (expected os/arch or os/arch/variant, e.g. linux/arm64)")]
pub struct PlatformError {
    pub input: String,
}

impl Platform {
    /// `linux/amd64`, `linux/arm64/v8`.
    pub fn parse(s: &str) -> Result<Platform, PlatformError> {
        let bad = || PlatformError { input: s.into() };
        let parts: Vec<&str> = s.split('/').collect();
        if parts.iter().any(|p| p.is_empty()) {
            return Err(bad());
        }
        match parts.as_slice() {
            [os, arch] => Ok(Platform::new(os, arch, None)),
            [os, arch, v] => Ok(Platform::new(os, arch, Some(v))),
            _ => Err(bad()),
        }
    }

    pub fn new(os: &str, architecture: &str, variant: Option<&str>) -> Platform {
        Platform {
            os: os.into(),
            architecture: architecture.into(),
            variant: variant.map(str::to_string),
        }
    }

    /// The variant with the default runtimes apply (arm64 → v8).
    pub fn effective_variant(&self) -> Option<&str> {
        match (self.architecture.as_str(), self.variant.as_deref()) {
            ("arm64", None) => Some("v8"),
            (_, v) => v,
        }
    }

    /// Does an index entry's platform satisfy this requested one? A request without a
    /// variant accepts any variant; `arm64` and `arm64/v8` are the same.
    pub fn matches(&self, entry: &Platform) -> bool {
        self.os == entry.os
            && self.architecture == entry.architecture
            && (self.variant.is_none() || self.effective_variant() == entry.effective_variant())
    }

    /// The platform of an index entry's `platform` object.
    pub fn from_json(v: &serde_json::Value) -> Option<Platform> {
        Some(Platform::new(
            v["os"].as_str()?,
            v["architecture"].as_str()?,
            v["variant"].as_str(),
        ))
    }

    /// Picks the entry that matches best: the same variant first, then any match.
    pub fn best_match<'a, T>(
        &self,
        entries: impl IntoIterator<Item = (&'a Platform, T)>,
    ) -> Option<T> {
        let mut loose = None;
        for (p, t) in entries {
            if !self.matches(p) {
                continue;
            }
            if p.effective_variant() == self.effective_variant() {
                return Some(t);
            }
            loose.get_or_insert(t);
        }
        loose
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for Platform {
    type Err = PlatformError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Platform::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_print() {
        let p = Platform::parse("linux/arm64/v8").unwrap();
        assert_eq!(p.to_string(), "linux/arm64/v8");
        assert_eq!(p.variant.as_deref(), Some("v8"));
        for bad in ["linux", "linux//v8", "a/b/c/d", "", "/amd64"] {
            assert!(Platform::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn arm64_and_arm64_v8_match_the_same_entry() {
        let plain = Platform::parse("linux/arm64").unwrap();
        let v8 = Platform::parse("linux/arm64/v8").unwrap();
        for entry in [&plain, &v8] {
            assert!(plain.matches(entry) && v8.matches(entry));
        }
        let v7 = Platform::parse("linux/arm/v7").unwrap();
        let v6 = Platform::parse("linux/arm/v6").unwrap();
        assert!(!v7.matches(&v6));
        assert!(Platform::parse("linux/arm").unwrap().matches(&v6));
        assert!(!Platform::parse("linux/amd64").unwrap().matches(&plain));
        let entries = [(v6.clone(), 1), (v7.clone(), 2)];
        assert_eq!(v7.best_match(entries.iter().map(|(p, i)| (p, *i))), Some(2));
        let entries = [(v8.clone(), "v8")];
        assert_eq!(
            plain.best_match(entries.iter().map(|(p, i)| (p, *i))),
            Some("v8")
        );
    }
}
