//! Debian version numbers (`[epoch:]upstream[-revision]`) and their order, as dpkg has it.
//!
//! Hand-written after looking at the `debversion` crate: it compares correctly but pulls
//! `chrono`, `lazy-regex` and `num-bigint` for what is dpkg's 40-line `verrevcmp`
//! (lib/dpkg/version.c), reproduced here. The tests hold dpkg's own comparison cases
//! (`t/Dpkg_Version.t`), each checked against `dpkg --compare-versions` when written.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

/// Why a version string is not a valid Debian version.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VersionError {
    #[error("version is empty")]
    Empty,
    #[error("version {0:?}: epoch is not a number")]
    BadEpoch(String),
    #[error("version {0:?}: upstream part is empty")]
    EmptyUpstream(String),
    #[error("version {0:?}: revision is empty after `-`")]
    EmptyRevision(String),
    #[error("version {version:?}: invalid character {ch:?}")]
    BadChar { version: String, ch: char },
    #[error("version {0:?} contains white space")]
    Space(String),
}

/// A parsed Debian version. Equality is dpkg's (`1.0` = `0:1.0-0` = `1.00`).
#[derive(Debug, Clone)]
pub struct Version {
    epoch: u32,
    upstream: String,
    revision: String,
    text: String,
}

impl Version {
    /// Parses with dpkg's checks (`parseversion`): numeric epoch, non-empty upstream, the
    /// character sets of policy 5.6.12 (upstream `[A-Za-z0-9.+~-:]`, revision `[A-Za-z0-9.+~]`).
    pub fn parse(text: &str) -> Result<Version, VersionError> {
        let s = text.trim();
        if s.is_empty() {
            return Err(VersionError::Empty);
        }
        if s.contains(char::is_whitespace) {
            return Err(VersionError::Space(text.to_string()));
        }
        let (epoch, rest) = match s.split_once(':') {
            Some((e, rest)) => {
                if e.is_empty() || !e.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(VersionError::BadEpoch(text.to_string()));
                }
                let epoch = e
                    .parse::<u32>()
                    .map_err(|_| VersionError::BadEpoch(text.to_string()))?;
                (epoch, rest)
            }
            None => (0, s),
        };
        let (upstream, revision) = match rest.rsplit_once('-') {
            Some((u, r)) => {
                if r.is_empty() {
                    return Err(VersionError::EmptyRevision(text.to_string()));
                }
                (u, r)
            }
            None => (rest, ""),
        };
        if upstream.is_empty() {
            return Err(VersionError::EmptyUpstream(text.to_string()));
        }
        let bad = |ch: char| VersionError::BadChar {
            version: text.to_string(),
            ch,
        };
        if let Some(ch) = upstream
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || ".+~-:".contains(*c)))
        {
            return Err(bad(ch));
        }
        if let Some(ch) = revision
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || ".+~".contains(*c)))
        {
            return Err(bad(ch));
        }
        Ok(Version {
            epoch,
            upstream: upstream.to_string(),
            revision: revision.to_string(),
            text: s.to_string(),
        })
    }

    pub fn epoch(&self) -> u32 {
        self.epoch
    }
    pub fn upstream(&self) -> &str {
        &self.upstream
    }
    pub fn revision(&self) -> &str {
        &self.revision
    }
    /// The version as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl FromStr for Version {
    type Err = VersionError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Version::parse(s)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        self.epoch
            .cmp(&other.epoch)
            .then_with(|| verrevcmp(&self.upstream, &other.upstream))
            .then_with(|| verrevcmp(&self.revision, &other.revision))
    }
}
impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl PartialEq for Version {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Version {}

/// Splits without validation, the way dpkg reads a version it has already accepted.
fn split(s: &str) -> (u64, &str, &str) {
    let s = s.trim();
    let (epoch, rest) = match s.split_once(':') {
        Some((e, rest)) if !e.is_empty() && e.bytes().all(|b| b.is_ascii_digit()) => {
            (e.parse::<u64>().unwrap_or(u64::MAX), rest)
        }
        _ => (0, s),
    };
    match rest.rsplit_once('-') {
        Some((u, r)) => (epoch, u, r),
        None => (epoch, rest, ""),
    }
}

/// dpkg's order of two version strings. Strings that are not valid versions are still ordered
/// (split as dpkg would), so this never fails; validate with [`Version::parse`] first.
pub fn compare(a: &str, b: &str) -> Ordering {
    let (ea, ua, ra) = split(a);
    let (eb, ub, rb) = split(b);
    ea.cmp(&eb)
        .then_with(|| verrevcmp(ua, ub))
        .then_with(|| verrevcmp(ra, rb))
}

/// dpkg's `order()`: `~` before the end, the end before letters, letters before other symbols.
fn order(c: u8) -> i32 {
    match c {
        0 => 0,
        b'~' => -1,
        c if c.is_ascii_digit() => 0,
        c if c.is_ascii_alphabetic() => c as i32,
        c => c as i32 + 256,
    }
}

/// dpkg's `verrevcmp()`: alternating non-digit runs (by `order`) and numeric runs (by value).
fn verrevcmp(a: &str, b: &str) -> Ordering {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let at = |i: usize| a.get(i).copied().unwrap_or(0);
    let bt = |j: usize| b.get(j).copied().unwrap_or(0);
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        let mut first_diff = 0i32;
        while (i < a.len() && !at(i).is_ascii_digit()) || (j < b.len() && !bt(j).is_ascii_digit()) {
            let (ac, bc) = (order(at(i)), order(bt(j)));
            if ac != bc {
                return ac.cmp(&bc);
            }
            i += 1;
            j += 1;
        }
        while at(i) == b'0' {
            i += 1;
        }
        while bt(j) == b'0' {
            j += 1;
        }
        while at(i).is_ascii_digit() && bt(j).is_ascii_digit() {
            if first_diff == 0 {
                first_diff = at(i) as i32 - bt(j) as i32;
            }
            i += 1;
            j += 1;
        }
        if at(i).is_ascii_digit() {
            return Ordering::Greater;
        }
        if bt(j).is_ascii_digit() {
            return Ordering::Less;
        }
        if first_diff != 0 {
            return first_diff.cmp(&0);
        }
    }
    Ordering::Equal
}

/// A version relation of a dependency field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Relation {
    /// `<<`
    Lt,
    /// `<=` (and the obsolete `<`)
    Le,
    /// `=`
    Eq,
    /// `>=` (and the obsolete `>`)
    Ge,
    /// `>>`
    Gt,
}

impl Relation {
    /// Parses `<<`, `<=`, `=`, `>=`, `>>`, and the obsolete `<` (= `<=`) and `>` (= `>=`).
    pub fn parse(op: &str) -> Option<Relation> {
        Some(match op {
            "<<" => Relation::Lt,
            "<=" | "<" => Relation::Le,
            "=" => Relation::Eq,
            ">=" | ">" => Relation::Ge,
            ">>" => Relation::Gt,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Relation::Lt => "<<",
            Relation::Le => "<=",
            Relation::Eq => "=",
            Relation::Ge => ">=",
            Relation::Gt => ">>",
        }
    }

    /// Whether `version` stands in this relation to `target` (`version REL target`).
    pub fn holds(self, version: &str, target: &str) -> bool {
        let o = compare(version, target);
        match self {
            Relation::Lt => o == Ordering::Less,
            Relation::Le => o != Ordering::Greater,
            Relation::Eq => o == Ordering::Equal,
            Relation::Ge => o != Ordering::Less,
            Relation::Gt => o == Ordering::Greater,
        }
    }
}

impl fmt::Display for Relation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// dpkg's t/Dpkg_Version.t cases: `a b expected` with expected in {-1, 0, 1}.
    const DPKG_CASES: &str = "\
1.0 1.0 0
1.0 2.0 -1
2.0 1.0 1
2.30 2.4 1
2.2~rc-4 2.2-1 -1
2.2-1 2.2~rc-4 1
1.0000-1 1.0-1 0
1 0:1 0
0 0:0-0 0
2:2.5 1:7.5 1
1:0foo 0foo 1
0:0foo 0foo 0
0foo 0foo 0
0foo-0 0foo 0
0foo 0foo-0 0
0foo 0fo 1
0foo-0 0foo+ -1
0foo~1 0foo -1
0foo~foo+Bar 0foo~foo+bar -1
0foo~~ 0foo~ -1
1~ 1 -1
12345+that-really-is-some-ver-0 12345+that-really-is-some-ver-10 -1
0foo-0 0foo-01 -1
0foo.bar 0foobar 1
0foo.bar 0foo1bar 1
0foo.bar 0foo0bar 1
0foo1bar-1 0foobar-1 -1
0foo2.0 0foo2 1
0foo2.0.0 0foo2.10.0 -1
0foo2.0 0foo2.0.0 -1
0foo2.0 0foo2.10 -1
0foo2.1 0foo2.10 -1
1.09 1.9 0
1.0.8+nmu1 1.0.8 1
3.11 3.10+nmu1 1
0.9j-20080306-4 0.9i-20070324-2 1
1.2.0~b7-1 1.2.0~b6-1 1
1.011-1 1.06-2 1
0.0.9+dfsg1-1 0.0.8+dfsg1-3 1
4.6.99+svn6582-1 4.6.99+svn6496-1 1
53 52 1
0.9.9~pre122-1 0.9.9~pre111-1 1
2:2.3.2-2+lenny2 2:2.3.2-2 1
1:3.8.1-1 3.8.GA-1 1
1.0.1+gpl-1 1.0.1-2 1
1a 1000a -1
1.0~rc1 1.0 -1
1.0~rc1 1.0~~ 1
1.0~ 1.0~~ 1
1.0 1.0+ -1
1.0+ 1.0.1 -1
1.0a 1.0+ -1
2.36-9+deb12u10 2.36-9+deb12u9 1
7.88.1-10+deb12u8 7.88.1-10+deb12u12 -1
";

    fn expected(n: &str) -> Ordering {
        match n {
            "-1" => Ordering::Less,
            "0" => Ordering::Equal,
            "1" => Ordering::Greater,
            other => panic!("bad expectation {other}"),
        }
    }

    #[test]
    fn dpkg_cases() {
        for line in DPKG_CASES.lines() {
            let f: Vec<_> = line.split(' ').collect();
            let want = expected(f[2]);
            assert_eq!(compare(f[0], f[1]), want, "{line}");
            assert_eq!(compare(f[1], f[0]), want.reverse(), "{line} reversed");
            let (a, b) = (Version::parse(f[0]).unwrap(), Version::parse(f[1]).unwrap());
            assert_eq!(a.cmp(&b), want, "{line} parsed");
        }
    }

    #[test]
    fn parse_parts_and_errors() {
        let v = Version::parse("1:2.36-9+deb12u10").unwrap();
        assert_eq!(
            (v.epoch(), v.upstream(), v.revision()),
            (1, "2.36", "9+deb12u10")
        );
        let v = Version::parse("1.2-3-4").unwrap();
        assert_eq!((v.upstream(), v.revision()), ("1.2-3", "4"));
        assert_eq!(v.to_string(), "1.2-3-4");
        assert_eq!(Version::parse(""), Err(VersionError::Empty));
        assert!(matches!(
            Version::parse("a:1"),
            Err(VersionError::BadEpoch(_))
        ));
        assert!(matches!(
            Version::parse(":1"),
            Err(VersionError::BadEpoch(_))
        ));
        assert!(matches!(
            Version::parse("1:-1"),
            Err(VersionError::EmptyUpstream(_))
        ));
        assert!(matches!(
            Version::parse("1.0-"),
            Err(VersionError::EmptyRevision(_))
        ));
        assert!(matches!(
            Version::parse("1.0_2"),
            Err(VersionError::BadChar { ch: '_', .. })
        ));
        assert!(matches!(
            Version::parse("1:1.0-a:b"),
            Err(VersionError::BadChar { ch: ':', .. })
        ));
        assert!(matches!(Version::parse("1 0"), Err(VersionError::Space(_))));
        assert!(Version::parse("99999999999:1").is_err());
    }

    #[test]
    fn relations() {
        use Relation::*;
        assert_eq!(Relation::parse("<"), Some(Le));
        assert_eq!(Relation::parse(">"), Some(Ge));
        assert_eq!(Relation::parse("=="), None);
        let table = [
            ("1.0", Lt, "1.1", true),
            ("1.1", Lt, "1.1", false),
            ("1.1", Le, "1.1", true),
            ("1.2", Le, "1.1", false),
            ("0:1.1-0", Eq, "1.1", true),
            ("1.1~rc1", Eq, "1.1", false),
            ("1.1", Ge, "1.1", true),
            ("1.1~rc1", Ge, "1.1", false),
            ("1:0.1", Gt, "9.9", true),
            ("1.1", Gt, "1.1", false),
        ];
        for (v, r, t, want) in table {
            assert_eq!(r.holds(v, t), want, "{v} {r} {t}");
        }
    }

    fn version_strategy() -> impl Strategy<Value = String> {
        (
            prop::option::of(0u32..3),
            "[0-9][0-9a-z.+~]{0,6}",
            prop::option::of("[0-9a-z.+~]{1,4}"),
        )
            .prop_map(|(e, u, r)| {
                let mut s = String::new();
                if let Some(e) = e {
                    s.push_str(&format!("{e}:"));
                }
                s.push_str(&u);
                if let Some(r) = r {
                    s.push('-');
                    s.push_str(&r);
                }
                s
            })
    }

    proptest! {
        #[test]
        fn order_is_total_and_consistent(a in version_strategy(), b in version_strategy(), c in version_strategy()) {
            prop_assert_eq!(compare(&a, &a), Ordering::Equal);
            prop_assert_eq!(compare(&a, &b), compare(&b, &a).reverse());
            if compare(&a, &b) != Ordering::Greater && compare(&b, &c) != Ordering::Greater {
                prop_assert_ne!(compare(&a, &c), Ordering::Greater);
            }
            let (pa, pb) = (Version::parse(&a).unwrap(), Version::parse(&b).unwrap());
            prop_assert_eq!(pa.cmp(&pb), compare(&a, &b));
        }

        #[test]
        fn tilde_sorts_before_everything(a in version_strategy(), s in "[a-z0-9]{0,3}") {
            // Appending `~…` makes a version older, appending `+…` or `.…` newer.
            let base = a.split_once('-').map(|(u, _)| u.to_string()).unwrap_or(a.clone());
            prop_assert_eq!(compare(&format!("{base}~{s}"), &base), Ordering::Less);
            prop_assert_eq!(compare(&format!("{base}+{s}"), &base), Ordering::Greater);
        }
    }
}
