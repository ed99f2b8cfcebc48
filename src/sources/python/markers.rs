//! PEP 508 environment markers, evaluated for one fixed target interpreter.
//!
//! Hand-written on purpose: we only evaluate markers against a known, fixed environment
//! (CPython on Linux, one version, one arch), which needs a ~200-line recursive-descent parser
//! and release-number comparisons. `pep508_rs` (the standalone crate) stopped moving when its
//! development went into uv's internal `uv-pep508`, and it brings regex, url, unicode-width,
//! smallvec and friends for the full requirement grammar that a fully pinned lock does not need.
//! Versions here are PEP 440 release numbers plus an opaque suffix, compared as pip does for
//! the `==` pins and `python_version` style markers we meet in locks.

use std::cmp::Ordering;

use super::{PythonTarget, normalize_name};

/// The values of the marker variables for one target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Environment {
    pub python_version: String,
    pub python_full_version: String,
    pub platform_machine: String,
    /// The extras being installed (normalized); `extra == "x"` and PEP 751's
    /// `"x" in extras` test membership.
    pub extras: Vec<String>,
    /// PEP 751 dependency groups being installed (`"dev" in dependency_groups`).
    pub dependency_groups: Vec<String>,
}

impl Environment {
    pub fn for_target(t: &PythonTarget) -> Self {
        Environment {
            python_version: format!("{}.{}", t.version.0, t.version.1),
            // The patch level is unknown from (major, minor); PEP 508 tools use X.Y.0 then.
            python_full_version: format!("{}.{}.0", t.version.0, t.version.1),
            platform_machine: t.arch.clone(),
            extras: Vec::new(),
            dependency_groups: Vec::new(),
        }
    }

    fn var(&self, name: &str) -> Option<String> {
        Some(match name {
            "python_version" => self.python_version.clone(),
            "python_full_version" | "implementation_version" => self.python_full_version.clone(),
            "platform_machine" => self.platform_machine.clone(),
            "sys_platform" => "linux".into(),
            "os_name" => "posix".into(),
            "platform_system" => "Linux".into(),
            "implementation_name" => "cpython".into(),
            "platform_python_implementation" => "CPython".into(),
            // Kernel release/version of the build host would be a lie about the target.
            "platform_release" | "platform_version" => String::new(),
            "extra" => String::new(),
            "extras" => self.extras.join(" "),
            "dependency_groups" => self.dependency_groups.join(" "),
            _ => return None,
        })
    }
}

/// Deepest parenthesis nesting accepted in a marker (real markers use one or two levels; the
/// parser recurses once per level, so an unbounded depth would overflow the stack).
pub const MAX_NESTING: usize = 32;

/// Evaluates a marker expression; `Err` carries a human message (the caller adds file:line).
pub fn evaluate(marker: &str, env: &Environment) -> Result<bool, String> {
    let tokens = tokenize(marker)?;
    let mut p = Parser {
        tokens: &tokens,
        pos: 0,
        depth: 0,
        env,
    };
    let v = p.or_expr()?;
    if p.pos != tokens.len() {
        return Err(format!(
            "unexpected `{}` in marker `{marker}`",
            tokens[p.pos].text()
        ));
    }
    Ok(v)
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Ident(String),
    Str(String),
    Op(String),
    LParen,
    RParen,
}

impl Tok {
    fn text(&self) -> String {
        match self {
            Tok::Ident(s) | Tok::Op(s) => s.clone(),
            Tok::Str(s) => format!("{s:?}"),
            Tok::LParen => "(".into(),
            Tok::RParen => ")".into(),
        }
    }
}

fn tokenize(s: &str) -> Result<Vec<Tok>, String> {
    let mut out = Vec::new();
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '(' {
            out.push(Tok::LParen);
            i += 1;
        } else if c == ')' {
            out.push(Tok::RParen);
            i += 1;
        } else if c == '"' || c == '\'' {
            let end = chars[i + 1..]
                .iter()
                .position(|&d| d == c)
                .ok_or_else(|| format!("unterminated string in marker `{s}`"))?;
            out.push(Tok::Str(chars[i + 1..i + 1 + end].iter().collect()));
            i += end + 2;
        } else if "=!<>~".contains(c) {
            let mut j = i;
            while j < chars.len() && "=!<>~".contains(chars[j]) {
                j += 1;
            }
            let op: String = chars[i..j].iter().collect();
            if !matches!(
                op.as_str(),
                "==" | "!=" | "<=" | ">=" | "<" | ">" | "~=" | "==="
            ) {
                return Err(format!("unknown operator `{op}` in marker `{s}`"));
            }
            out.push(Tok::Op(op));
            i = j;
        } else if c.is_ascii_alphanumeric() || c == '_' || c == '.' {
            let mut j = i;
            while j < chars.len() && (chars[j].is_ascii_alphanumeric() || "_.".contains(chars[j])) {
                j += 1;
            }
            out.push(Tok::Ident(chars[i..j].iter().collect()));
            i = j;
        } else {
            return Err(format!("unexpected character `{c}` in marker `{s}`"));
        }
    }
    Ok(out)
}

struct Parser<'a> {
    tokens: &'a [Tok],
    pos: usize,
    /// Open parentheses around the current position.
    depth: usize,
    env: &'a Environment,
}

enum Value {
    Var(String, String),
    Lit(String),
}

impl Parser<'_> {
    fn peek_ident(&self, word: &str) -> bool {
        matches!(self.tokens.get(self.pos), Some(Tok::Ident(w)) if w == word)
    }

    fn or_expr(&mut self) -> Result<bool, String> {
        let mut v = self.and_expr()?;
        while self.peek_ident("or") {
            self.pos += 1;
            let r = self.and_expr()?;
            v = v || r;
        }
        Ok(v)
    }

    fn and_expr(&mut self) -> Result<bool, String> {
        let mut v = self.atom()?;
        while self.peek_ident("and") {
            self.pos += 1;
            let r = self.atom()?;
            v = v && r;
        }
        Ok(v)
    }

    fn atom(&mut self) -> Result<bool, String> {
        if self.tokens.get(self.pos) == Some(&Tok::LParen) {
            if self.depth >= MAX_NESTING {
                return Err(format!(
                    "marker nests parentheses more than {MAX_NESTING} deep"
                ));
            }
            self.pos += 1;
            self.depth += 1;
            let v = self.or_expr()?;
            self.depth -= 1;
            if self.tokens.get(self.pos) != Some(&Tok::RParen) {
                return Err("missing `)` in marker".into());
            }
            self.pos += 1;
            return Ok(v);
        }
        let lhs = self.value()?;
        let op = match self.tokens.get(self.pos) {
            Some(Tok::Op(op)) => {
                self.pos += 1;
                op.clone()
            }
            Some(Tok::Ident(w)) if w == "in" => {
                self.pos += 1;
                "in".into()
            }
            Some(Tok::Ident(w)) if w == "not" => {
                self.pos += 1;
                if !self.peek_ident("in") {
                    return Err("expected `in` after `not` in marker".into());
                }
                self.pos += 1;
                "not in".into()
            }
            other => {
                return Err(format!(
                    "expected a comparison operator in marker, found {}",
                    other.map(Tok::text).unwrap_or_else(|| "the end".into())
                ));
            }
        };
        let rhs = self.value()?;
        Ok(compare(&lhs, &op, &rhs, self.env))
    }

    fn value(&mut self) -> Result<Value, String> {
        match self.tokens.get(self.pos) {
            Some(Tok::Str(s)) => {
                self.pos += 1;
                Ok(Value::Lit(s.clone()))
            }
            Some(Tok::Ident(name)) => {
                self.pos += 1;
                let v = self
                    .env
                    .var(name)
                    .ok_or_else(|| format!("unknown marker variable `{name}`"))?;
                Ok(Value::Var(name.clone(), v))
            }
            other => Err(format!(
                "expected a marker variable or a quoted string, found {}",
                other.map(Tok::text).unwrap_or_else(|| "the end".into())
            )),
        }
    }
}

fn compare(lhs: &Value, op: &str, rhs: &Value, env: &Environment) -> bool {
    let (lname, l) = match lhs {
        Value::Var(n, v) => (Some(n.as_str()), v.as_str()),
        Value::Lit(v) => (None, v.as_str()),
    };
    let (rname, r) = match rhs {
        Value::Var(n, v) => (Some(n.as_str()), v.as_str()),
        Value::Lit(v) => (None, v.as_str()),
    };
    // `extra == "gpu"`: true when that extra is requested (none is, for a plain set).
    if lname == Some("extra") || rname == Some("extra") {
        let other = if lname == Some("extra") { r } else { l };
        let requested = contains(&env.extras, &normalize_name(other));
        return match op {
            "==" | "===" => requested,
            "!=" => !requested,
            _ => false,
        };
    }
    // PEP 751 sets: `"gpu" in extras`, `"dev" not in dependency_groups`.
    let set = match rname {
        Some("extras") => Some(&env.extras),
        Some("dependency_groups") => Some(&env.dependency_groups),
        _ => None,
    };
    if let Some(set) = set {
        let hit = contains(set, &normalize_name(l));
        return match op {
            "in" => hit,
            "not in" => !hit,
            _ => false,
        };
    }
    let is_version = |n: Option<&str>| {
        matches!(
            n,
            Some("python_version" | "python_full_version" | "implementation_version")
        )
    };
    match op {
        "in" => r.contains(l),
        "not in" => !r.contains(l),
        "===" => l == r,
        _ if is_version(lname) || is_version(rname) => {
            match (Version::parse(l), Version::parse_spec(r)) {
                (Some(lv), Some((rv, wildcard))) => version_cmp(&lv, op, &rv, wildcard),
                _ => string_cmp(l, op, r),
            }
        }
        _ => string_cmp(l, op, r),
    }
}

fn contains(set: &[String], e: &str) -> bool {
    set.iter().any(|x| x == e)
}

fn string_cmp(l: &str, op: &str, r: &str) -> bool {
    match op {
        "==" => l == r,
        "!=" => l != r,
        // PEP 508: ordering on non-versions is an error in strict tools; pip's `packaging`
        // falls back to string comparison. Do that.
        "<" => l < r,
        "<=" => l <= r,
        ">" => l > r,
        ">=" => l >= r,
        _ => false,
    }
}

/// A PEP 440 version reduced to what locks and markers need: release numbers, an opaque
/// canonicalized pre/post/dev suffix and an optional local label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    pub release: Vec<u64>,
    pub suffix: String,
    pub local: Option<String>,
}

impl Version {
    pub fn parse(s: &str) -> Option<Version> {
        let s = s.trim().to_ascii_lowercase();
        let s = s.strip_prefix('v').unwrap_or(&s);
        let (public, local) = match s.split_once('+') {
            Some((p, l)) => (p, Some(l.replace(['-', '_'], "."))),
            None => (s, None),
        };
        if public.contains('!') {
            return None; // epochs: never seen in Python versions; let callers fall back.
        }
        let split = public
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(public.len());
        let (rel, rest) = public.split_at(split);
        let rel = rel.trim_end_matches('.');
        if rel.is_empty() {
            return None;
        }
        let release = rel
            .split('.')
            .map(|p| p.parse::<u64>().ok())
            .collect::<Option<Vec<_>>>()?;
        // `1.0-rc.1`, `1.0.rc1`, `1.0rc1` are the same version.
        let suffix: String = rest
            .chars()
            .filter(|c| !matches!(c, '.' | '-' | '_'))
            .collect();
        Some(Version {
            release,
            suffix,
            local,
        })
    }

    /// Parses the right-hand side of a comparison: a version, optionally ending in `.*`.
    fn parse_spec(s: &str) -> Option<(Version, bool)> {
        let s = s.trim();
        match s.strip_suffix(".*") {
            Some(p) => Version::parse(p).map(|v| (v, true)),
            None => Version::parse(s).map(|v| (v, false)),
        }
    }

    fn release_cmp(&self, other: &Version) -> Ordering {
        let n = self.release.len().max(other.release.len());
        for i in 0..n {
            let a = self.release.get(i).copied().unwrap_or(0);
            let b = other.release.get(i).copied().unwrap_or(0);
            match a.cmp(&b) {
                Ordering::Equal => {}
                o => return o,
            }
        }
        Ordering::Equal
    }

    /// `==` as a pin: equal releases (zero-padded) and suffixes; a pin without a local label
    /// matches any local label (`torch==2.1.0` matches `2.1.0+cpu`), as PEP 440 says.
    pub fn matches_pin(&self, pin: &Version) -> bool {
        self.release_cmp(pin) == Ordering::Equal
            && self.suffix == pin.suffix
            && (pin.local.is_none() || self.local == pin.local)
    }
}

/// Whether CPython `X.Y` satisfies a `Requires-Python` specifier set (`>=3.8, !=3.9.*, <4`),
/// as PEP 440 compares them. A clause about a patch release of `X.Y` itself (`>=3.11.2` for
/// 3.11) cannot be decided from `X.Y` and counts as met. `None`: a clause does not parse.
pub fn python_satisfies(spec: &str, xy: (u32, u32)) -> Option<bool> {
    let have = Version {
        release: vec![u64::from(xy.0), u64::from(xy.1)],
        suffix: String::new(),
        local: None,
    };
    for clause in spec.split(',').map(str::trim).filter(|c| !c.is_empty()) {
        let op = ["===", "~=", "==", "!=", "<=", ">=", "<", ">"]
            .into_iter()
            .find(|op| clause.starts_with(op))?;
        let rhs = clause[op.len()..].trim();
        if op == "===" {
            if rhs != format!("{}.{}", xy.0, xy.1) {
                return Some(false);
            }
            continue;
        }
        let (v, wildcard) = Version::parse_spec(rhs)?;
        if !wildcard && v.release.len() > 2 && v.release[..2] == have.release[..] {
            continue;
        }
        if !version_cmp(&have, op, &v, wildcard) {
            return Some(false);
        }
    }
    Some(true)
}

fn version_cmp(l: &Version, op: &str, r: &Version, wildcard: bool) -> bool {
    if wildcard {
        let prefix =
            l.release.len() >= r.release.len() && l.release[..r.release.len()] == r.release[..];
        return match op {
            "==" => prefix,
            "!=" => !prefix,
            _ => false,
        };
    }
    // Suffixes (pre-releases) are ordered only coarsely: a suffixed version sorts before its
    // release, which is right for `rc`/`a`/`b`/`dev` and the only case CPython versions hit.
    let ord = l
        .release_cmp(r)
        .then_with(|| match (l.suffix.is_empty(), r.suffix.is_empty()) {
            (true, true) => Ordering::Equal,
            (true, false) => Ordering::Greater,
            (false, true) => Ordering::Less,
            (false, false) => l.suffix.cmp(&r.suffix),
        });
    match op {
        "==" => ord == Ordering::Equal,
        "!=" => ord != Ordering::Equal,
        "<" => ord == Ordering::Less,
        "<=" => ord != Ordering::Greater,
        ">" => ord == Ordering::Greater,
        ">=" => ord != Ordering::Less,
        "~=" => {
            // ~=X.Y.Z means >=X.Y.Z, ==X.Y.*
            if r.release.len() < 2 || ord == Ordering::Less {
                return false;
            }
            let keep = r.release.len() - 1;
            l.release.len() >= keep && l.release[..keep] == r.release[..keep]
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::python::Libc;

    #[test]
    fn requires_python() {
        let ok = |s: &str, minor: u32| python_satisfies(s, (3, minor));
        assert_eq!(ok(">=3.8", 11), Some(true));
        assert_eq!(ok(">=3.12", 11), Some(false));
        assert_eq!(ok(">=3.8, !=3.11.*, <4", 11), Some(false));
        assert_eq!(ok(">=3.8, !=3.10.*, <4", 11), Some(true));
        assert_eq!(ok(">=2.7, !=3.0.*, !=3.1.*", 11), Some(true));
        assert_eq!(ok("~=3.9", 11), Some(true));
        assert_eq!(ok("~=3.12", 11), Some(false));
        assert_eq!(ok("<3.11", 11), Some(false));
        // the patch level of 3.11 is unknown: counts as met
        assert_eq!(ok(">=3.11.2", 11), Some(true));
        assert_eq!(ok("==3.*", 11), Some(true));
        assert_eq!(ok("", 11), Some(true));
        assert_eq!(ok(">=three", 11), None);
    }

    fn env(minor: u32, arch: &str) -> Environment {
        Environment::for_target(&PythonTarget {
            version: (3, minor),
            prefix: "/usr/local".into(),
            libc: Libc::Glibc(2, 36),
            arch: arch.into(),
            site_packages_dir: None,
        })
    }

    fn ev(m: &str) -> bool {
        evaluate(m, &env(11, "x86_64")).unwrap()
    }

    #[test]
    fn versions() {
        assert!(ev(r#"python_version >= "3.8""#));
        assert!(ev(r#"python_version > "3.9""#));
        assert!(!ev(r#"python_version < "3.11""#));
        assert!(ev(r#"python_version <= "3.11""#));
        assert!(ev(r#"python_version == "3.11""#));
        assert!(!ev(r#"python_version > "3.11""#));
        // Numeric, not lexical: 3.11 > 3.9.
        assert!(!ev(r#"python_version < "3.9""#));
        assert!(ev(r#"python_version == "3.*""#));
        assert!(ev(r#"python_version != "3.10.*""#));
        assert!(ev(r#"python_full_version >= "3.11.0""#));
        assert!(!ev(r#"python_full_version >= "3.11.1""#));
        assert!(ev(
            r#"python_full_version < "3.11.0rc1" or python_version >= "3.11""#
        ));
        assert!(ev(r#"python_version ~= "3.8""#));
        assert!(!ev(r#"python_version ~= "3.12""#));
        assert!(ev(r#""3.7" < python_version"#));
    }

    #[test]
    fn platform_and_logic() {
        assert!(ev(r#"sys_platform == "linux" and os_name == 'posix'"#));
        assert!(!ev(r#"sys_platform == "win32""#));
        assert!(ev(
            r#"sys_platform == "win32" or platform_system == "Linux""#
        ));
        assert!(!ev(
            r#"sys_platform == "darwin" or (platform_machine == "aarch64" and python_version >= "3.8")"#
        ));
        assert!(evaluate(r#"platform_machine == "aarch64""#, &env(11, "aarch64")).unwrap());
        assert!(ev(
            r#"implementation_name == "cpython" and platform_python_implementation == "CPython""#
        ));
        assert!(ev(r#"platform_machine in "x86_64 amd64""#));
        assert!(ev(r#"platform_machine not in "arm64 aarch64""#));
        // `and` binds tighter than `or`.
        assert!(ev(
            r#"os_name == "nt" and sys_platform == "win32" or os_name == "posix""#
        ));
        assert!(!ev(
            r#"os_name == "nt" and (sys_platform == "win32" or os_name == "posix")"#
        ));
    }

    #[test]
    fn extras_are_not_requested() {
        assert!(!ev(r#"extra == "gpu""#));
        assert!(ev(r#"extra != "gpu""#));
        assert!(ev(r#"extra == "gpu" or python_version >= "3""#));
        assert!(!ev(r#""gpu" in extras"#));
        let mut e = env(11, "x86_64");
        e.dependency_groups = vec!["dev".into()];
        assert!(evaluate(r#""dev" in dependency_groups"#, &e).unwrap());
        assert!(!evaluate(r#""de" in dependency_groups"#, &e).unwrap());
        assert!(evaluate(r#""test" not in dependency_groups"#, &e).unwrap());
    }

    #[test]
    fn errors() {
        assert!(evaluate(r#"python_version >= "3.8" and"#, &env(11, "x86_64")).is_err());
        assert!(evaluate(r#"pyhton_version >= "3.8""#, &env(11, "x86_64")).is_err());
        assert!(evaluate(r#"python_version => "3.8""#, &env(11, "x86_64")).is_err());
        assert!(evaluate(r#"(python_version >= "3.8""#, &env(11, "x86_64")).is_err());
        assert!(evaluate(r#"python_version >= "3.8"#, &env(11, "x86_64")).is_err());
    }

    #[test]
    fn pins() {
        let v = |s| Version::parse(s).unwrap();
        assert!(v("1.0").matches_pin(&v("1.0.0")));
        assert!(v("2.1.0+cpu").matches_pin(&v("2.1.0")));
        assert!(!v("2.1.0").matches_pin(&v("2.1.0+cpu")));
        assert!(v("1.0rc1").matches_pin(&v("1.0-rc.1")));
        assert!(!v("1.0rc1").matches_pin(&v("1.0")));
        assert!(!v("1.16.0").matches_pin(&v("1.16.1")));
    }

    /// `((((…))))` 100 000 deep overflowed the parser's stack (an abort, not an error).
    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let n = 100_000;
        let m = format!("{}python_version >= \"3\"{}", "(".repeat(n), ")".repeat(n));
        let e = evaluate(&m, &env(11, "x86_64")).unwrap_err();
        assert!(e.contains("more than 32 deep"), "{e}");
        let ok = format!(
            "{}python_version >= \"3\"{}",
            "(".repeat(32),
            ")".repeat(32)
        );
        assert!(ev(&ok));
        // Long flat chains are iterative and fine.
        let flat = vec![r#"python_version >= "3""#; 10_000].join(" and ");
        assert!(ev(&flat));
    }
}
