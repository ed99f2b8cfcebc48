//! Wheel compatibility tags (PEP 425, PEP 600, PEP 656) in the priority order pip uses
//! (`packaging.tags.sys_tags` for CPython on Linux), and wheel filename parsing.

use std::collections::HashMap;

use super::{Libc, MAX_MINOR, PythonTarget, normalize_name};

/// Longest wheel filename accepted: Linux file names are at most 255 bytes, so a longer one
/// cannot sit in a find-links folder or in the wheel cache anyway.
pub const MAX_WHEEL_FILENAME: usize = 255;
/// Most tags in one field of a wheel filename (`cp38.cp39.cp310`); real wheels have up to ~8.
/// Bounds the expanded tag set to 32^3 triples.
pub const MAX_TAGS_PER_FIELD: usize = 32;

/// One `python-abi-platform` triple.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag {
    pub python: String,
    pub abi: String,
    pub platform: String,
}

impl std::fmt::Display for Tag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}-{}", self.python, self.abi, self.platform)
    }
}

fn tag(python: &str, abi: &str, platform: &str) -> Tag {
    Tag {
        python: python.into(),
        abi: abi.into(),
        platform: platform.into(),
    }
}

/// Platform tags, most specific first: `manylinux_2_M` down to the oldest glibc the arch
/// supports with the legacy alias right after its equivalent, or `musllinux_1_M` down to
/// `musllinux_1_0`; then `linux_<arch>`.
pub fn platform_tags(libc: Libc, arch: &str) -> Vec<String> {
    let mut out = Vec::new();
    // Versions are checked where a target is made ([`PythonTarget::check`]); the clamp keeps
    // this function bounded for any input.
    let libc = match libc {
        Libc::Glibc(a, b) => Libc::Glibc(a, b.min(MAX_MINOR)),
        Libc::Musl(a, b) => Libc::Musl(a, b.min(MAX_MINOR)),
    };
    match libc {
        Libc::Glibc(major, minor) => {
            // packaging: x86_64/i686 go back to glibc 2.5 (manylinux1); others start at 2.17.
            let oldest = if matches!(arch, "x86_64" | "i686") {
                5
            } else {
                17
            };
            if major == 2 {
                for m in (oldest..=minor).rev() {
                    out.push(format!("manylinux_2_{m}_{arch}"));
                    let legacy = match m {
                        17 if matches!(
                            arch,
                            "x86_64"
                                | "i686"
                                | "aarch64"
                                | "armv7l"
                                | "ppc64"
                                | "ppc64le"
                                | "s390x"
                        ) =>
                        {
                            Some("manylinux2014")
                        }
                        12 if matches!(arch, "x86_64" | "i686") => Some("manylinux2010"),
                        5 if matches!(arch, "x86_64" | "i686") => Some("manylinux1"),
                        _ => None,
                    };
                    if let Some(l) = legacy {
                        out.push(format!("{l}_{arch}"));
                    }
                }
            }
        }
        Libc::Musl(major, minor) => {
            for m in (0..=minor).rev() {
                out.push(format!("musllinux_{major}_{m}_{arch}"));
            }
        }
    }
    out.push(format!("linux_{arch}"));
    out
}

/// All tags the target accepts, best first (same order as pip's `sys_tags()`).
pub fn supported_tags(target: &PythonTarget) -> Vec<Tag> {
    let (major, minor) = target.version;
    // Bounded for any input; real targets are checked by [`PythonTarget::check`].
    let minor = minor.min(MAX_MINOR);
    let platforms = platform_tags(target.libc, &target.arch);
    let cp = format!("cp{major}{minor}");
    let mut out = Vec::new();
    // cpython_tags(): own ABI, abi3, none; then abi3 of older minors (down to cp32).
    for abi in [cp.as_str(), "abi3", "none"] {
        for p in &platforms {
            out.push(tag(&cp, abi, p));
        }
    }
    for m in (2..minor).rev() {
        for p in &platforms {
            out.push(tag(&format!("cp{major}{m}"), "abi3", p));
        }
    }
    // compatible_tags(): pyXY, py3, pyX(Y-1).. py30 with each platform; cpXY-none-any; the same
    // py versions with `any`.
    let mut pys = vec![format!("py{major}{minor}"), format!("py{major}")];
    pys.extend((0..minor).rev().map(|m| format!("py{major}{m}")));
    for py in &pys {
        for p in &platforms {
            out.push(tag(py, "none", p));
        }
    }
    out.push(tag(&cp, "none", "any"));
    for py in &pys {
        out.push(tag(py, "none", "any"));
    }
    out
}

/// Tag → rank (0 is best) for quick lookup.
#[derive(Debug, Clone)]
pub struct TagPriorities {
    ranks: HashMap<Tag, usize>,
}

impl TagPriorities {
    pub fn for_target(target: &PythonTarget) -> Self {
        let mut ranks = HashMap::new();
        for (i, t) in supported_tags(target).into_iter().enumerate() {
            ranks.entry(t).or_insert(i);
        }
        TagPriorities { ranks }
    }

    /// The best rank among a wheel's tags, or `None` if the target accepts none of them.
    pub fn rank(&self, wheel: &WheelName) -> Option<usize> {
        wheel
            .tags()
            .iter()
            .filter_map(|t| self.ranks.get(t).copied())
            .min()
    }
}

/// A parsed wheel filename: `{name}-{version}(-{build})?-{python}-{abi}-{platform}.whl`,
/// each tag part possibly a `.`-separated compressed set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WheelName {
    /// Normalized project name.
    pub name: String,
    pub version: String,
    pub build: Option<String>,
    pub python: Vec<String>,
    pub abi: Vec<String>,
    pub platform: Vec<String>,
}

impl WheelName {
    /// `None` for anything that is not a wheel filename, including names longer than
    /// [`MAX_WHEEL_FILENAME`] or with more than [`MAX_TAGS_PER_FIELD`] tags in a field (a
    /// 40 KB name of compressed tag sets expanded into billions of triples).
    pub fn parse(filename: &str) -> Option<WheelName> {
        if filename.len() > MAX_WHEEL_FILENAME {
            return None;
        }
        let stem = filename.strip_suffix(".whl")?;
        let parts: Vec<&str> = stem.split('-').collect();
        let (name, version, build, py, abi, plat) = match parts.as_slice() {
            [n, v, p, a, pl] => (n, v, None, p, a, pl),
            [n, v, b, p, a, pl] => (n, v, Some(b.to_string()), p, a, pl),
            _ => return None,
        };
        if name.is_empty() || version.is_empty() {
            return None;
        }
        let split = |s: &str| {
            let v: Vec<String> = s.split('.').map(str::to_string).collect();
            (v.len() <= MAX_TAGS_PER_FIELD && v.iter().all(|t| !t.is_empty())).then_some(v)
        };
        Some(WheelName {
            name: normalize_name(name),
            version: version.to_string(),
            build,
            python: split(py)?,
            abi: split(abi)?,
            platform: split(plat)?,
        })
    }

    /// The expanded tag set (`cp311.cp312-abi3-a.b` is four tags).
    pub fn tags(&self) -> Vec<Tag> {
        let mut out = Vec::new();
        for p in &self.python {
            for a in &self.abi {
                for pl in &self.platform {
                    out.push(tag(p, a, pl));
                }
            }
        }
        out
    }

    /// `py3-none-any`, `cp311.cp312-abi3-manylinux_2_17_x86_64.manylinux2014_x86_64` style.
    pub fn tag_string(&self) -> String {
        format!(
            "{}-{}-{}",
            self.python.join("."),
            self.abi.join("."),
            self.platform.join(".")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(minor: u32, libc: Libc, arch: &str) -> PythonTarget {
        PythonTarget {
            version: (3, minor),
            prefix: "/usr/local".into(),
            libc,
            arch: arch.into(),
            site_packages_dir: None,
        }
    }

    fn s(tags: &[Tag]) -> Vec<String> {
        tags.iter().map(Tag::to_string).collect()
    }

    #[test]
    fn glibc_platforms_in_order() {
        let p = platform_tags(Libc::Glibc(2, 19), "x86_64");
        assert_eq!(
            &p[..5],
            [
                "manylinux_2_19_x86_64",
                "manylinux_2_18_x86_64",
                "manylinux_2_17_x86_64",
                "manylinux2014_x86_64",
                "manylinux_2_16_x86_64",
            ]
        );
        let i2010 = p.iter().position(|x| x == "manylinux2010_x86_64").unwrap();
        assert_eq!(p[i2010 - 1], "manylinux_2_12_x86_64");
        assert_eq!(
            &p[p.len() - 3..],
            ["manylinux_2_5_x86_64", "manylinux1_x86_64", "linux_x86_64"]
        );
        let a = platform_tags(Libc::Glibc(2, 17), "aarch64");
        assert_eq!(
            a,
            [
                "manylinux_2_17_aarch64",
                "manylinux2014_aarch64",
                "linux_aarch64"
            ]
        );
    }

    #[test]
    fn musl_platforms() {
        let p = platform_tags(Libc::Musl(1, 2), "aarch64");
        assert_eq!(
            p,
            [
                "musllinux_1_2_aarch64",
                "musllinux_1_1_aarch64",
                "musllinux_1_0_aarch64",
                "linux_aarch64"
            ]
        );
    }

    #[test]
    fn cpython_order_matches_pip() {
        let t = s(&supported_tags(&target(11, Libc::Glibc(2, 17), "aarch64")));
        let head = [
            "cp311-cp311-manylinux_2_17_aarch64",
            "cp311-cp311-manylinux2014_aarch64",
            "cp311-cp311-linux_aarch64",
            "cp311-abi3-manylinux_2_17_aarch64",
            "cp311-abi3-manylinux2014_aarch64",
            "cp311-abi3-linux_aarch64",
            "cp311-none-manylinux_2_17_aarch64",
            "cp311-none-manylinux2014_aarch64",
            "cp311-none-linux_aarch64",
            "cp310-abi3-manylinux_2_17_aarch64",
        ];
        assert_eq!(&t[..head.len()], head);
        let pos = |x: &str| {
            t.iter()
                .position(|y| y == x)
                .unwrap_or_else(|| panic!("{x}"))
        };
        assert!(pos("cp32-abi3-linux_aarch64") < pos("py311-none-manylinux_2_17_aarch64"));
        assert!(!t.iter().any(|x| x.starts_with("cp31-abi3")));
        assert!(pos("py311-none-linux_aarch64") < pos("py3-none-manylinux_2_17_aarch64"));
        assert!(pos("py3-none-linux_aarch64") < pos("py310-none-manylinux_2_17_aarch64"));
        let tail = [
            "cp311-none-any",
            "py311-none-any",
            "py3-none-any",
            "py310-none-any",
        ];
        let i = pos("cp311-none-any");
        assert_eq!(&t[i..i + 4], tail);
        assert_eq!(t.last().map(String::as_str), Some("py30-none-any"));
        assert!(!t.iter().any(|x| x.contains("x86_64")));
        assert!(!t.iter().any(|x| x.starts_with("cp312")));
    }

    #[test]
    fn wheel_names_and_ranks() {
        let w = WheelName::parse(
            "MarkupSafe-2.1.5-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
        )
        .unwrap();
        assert_eq!(w.name, "markupsafe");
        assert_eq!(w.version, "2.1.5");
        assert_eq!(w.tags().len(), 2);
        let b = WheelName::parse("foo_bar-1.0-2-py2.py3-none-any.whl").unwrap();
        assert_eq!(b.name, "foo-bar");
        assert_eq!(b.build.as_deref(), Some("2"));
        assert_eq!(s(&b.tags()), ["py2-none-any", "py3-none-any"]);
        assert!(WheelName::parse("foo-1.0.tar.gz").is_none());
        assert!(WheelName::parse("foo-1.0-py3-none.whl").is_none());

        let x86 = TagPriorities::for_target(&target(11, Libc::Glibc(2, 36), "x86_64"));
        let arm = TagPriorities::for_target(&target(11, Libc::Glibc(2, 36), "aarch64"));
        let musl = TagPriorities::for_target(&target(11, Libc::Musl(1, 2), "x86_64"));
        assert!(x86.rank(&w).is_some());
        assert!(arm.rank(&w).is_none());
        assert!(musl.rank(&w).is_none());
        let abi3 = WheelName::parse("pkg-1-cp38-abi3-manylinux_2_28_x86_64.whl").unwrap();
        let pure = WheelName::parse("pkg-1-py3-none-any.whl").unwrap();
        assert!(x86.rank(&w) < x86.rank(&abi3));
        assert!(x86.rank(&abi3) < x86.rank(&pure));
        // Needs glibc 2.39: too new for a 2.36 target.
        let new = WheelName::parse("pkg-1-cp311-cp311-manylinux_2_39_x86_64.whl").unwrap();
        assert!(x86.rank(&new).is_none());
        // Other interpreters' ABIs never match.
        let cp312 = WheelName::parse("pkg-1-cp312-cp312-manylinux_2_17_x86_64.whl").unwrap();
        assert!(x86.rank(&cp312).is_none());
        let abi3_new = WheelName::parse("pkg-1-cp312-abi3-manylinux_2_17_x86_64.whl").unwrap();
        assert!(x86.rank(&abi3_new).is_none());
    }

    /// A 40 KB filename with thousands of tags per field expanded into billions of triples.
    #[test]
    fn hostile_wheel_names_are_not_wheels() {
        let many = |n: usize| {
            (0..n)
                .map(|i| format!("t{i}"))
                .collect::<Vec<_>>()
                .join(".")
        };
        let n = 3000;
        let bomb = format!("x-1-{}-{}-{}.whl", many(n), many(n), many(n));
        assert!(bomb.len() > 40_000);
        assert!(WheelName::parse(&bomb).is_none());
        // Short enough, but too many tags in one field.
        let wide = format!("x-1-{}-none-any.whl", many(40));
        assert!(wide.len() <= MAX_WHEEL_FILENAME);
        assert!(WheelName::parse(&wide).is_none());
        let ok = format!("x-1-{}-none-any.whl", many(MAX_TAGS_PER_FIELD));
        assert_eq!(
            WheelName::parse(&ok).unwrap().tags().len(),
            MAX_TAGS_PER_FIELD
        );
        assert!(WheelName::parse("x-1-py3..py2-none-any.whl").is_none());
        let long = format!("{}-1-py3-none-any.whl", "a".repeat(MAX_WHEEL_FILENAME));
        assert!(WheelName::parse(&long).is_none());
    }

    /// Tag lists are bounded even for a target that skipped [`PythonTarget::check`].
    #[test]
    fn absurd_versions_stay_bounded() {
        let t = target(u32::MAX, Libc::Glibc(2, 3_000_000), "x86_64");
        assert!(t.check().is_err());
        let tags = supported_tags(&t);
        assert!(tags.len() < 100_000, "{}", tags.len());
        let p = platform_tags(Libc::Musl(1, u32::MAX), "x86_64");
        assert!(p.len() <= MAX_MINOR as usize + 2);
    }
}
