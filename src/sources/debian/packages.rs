//! `Packages` indexes and dpkg's `status` file: typed records with parsed dependency fields.
//!
//! Dependency fields follow deb-control(5) / policy 7.1: `,` separates requirements, `|`
//! alternatives, `name[:arch] [(op version)]`. Architecture restrictions (`[amd64 !i386]`) and
//! build profiles (`<!nocheck>`) belong to source packages; they are accepted and dropped here.
//!
//! Decompression ([`decompress_index`]) uses `liblzma` (the maintained fork of `xz2`, the system
//! library's bindings; built without `bindgen`, so no libclang) for `.xz` and `flate2` for `.gz`.

use std::io::{BufRead, BufReader, Read};

use super::control::{ControlError, Paragraph, ParagraphReader};
use super::version::{Relation, Version};

/// Errors from reading `Packages` or `status`; each names the package and field where it can.
#[derive(Debug, thiserror::Error)]
pub enum PackagesError {
    #[error("{0}")]
    Control(#[from] ControlError),
    #[error("line {line}: package {package:?} has no {field} field")]
    Missing {
        package: String,
        field: &'static str,
        line: usize,
    },
    #[error("line {line}: stanza without a Package field")]
    NoName { line: usize },
    #[error("line {line}: package {package:?}, field {field}: {message}")]
    Field {
        package: String,
        field: &'static str,
        line: usize,
        message: String,
    },
    #[error("{name}: unsupported compression (expected .xz, .gz or no suffix)")]
    Compression { name: String },
}

/// `Multi-Arch` of a package.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum MultiArch {
    #[default]
    No,
    Same,
    Foreign,
    Allowed,
}

impl MultiArch {
    pub fn parse(v: &str) -> Option<MultiArch> {
        Some(match v {
            "no" => MultiArch::No,
            "same" => MultiArch::Same,
            "foreign" => MultiArch::Foreign,
            "allowed" => MultiArch::Allowed,
            _ => return None,
        })
    }
}

/// One package relation: `name[:arch] [(op version)]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Dep {
    pub name: String,
    /// `any`, `native` or an architecture name.
    pub arch_qualifier: Option<String>,
    pub relation: Option<(Relation, String)>,
}

impl std::fmt::Display for Dep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name)?;
        if let Some(a) = &self.arch_qualifier {
            write!(f, ":{a}")?;
        }
        if let Some((r, v)) = &self.relation {
            write!(f, " ({r} {v})")?;
        }
        Ok(())
    }
}

/// `a | b | c`: one requirement met by any of its alternatives.
pub type Alternatives = Vec<Dep>;

/// `Provides: name (= version)`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Provide {
    pub name: String,
    pub version: Option<String>,
}

/// One stanza of a `Packages` index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageRecord {
    pub name: String,
    pub version: String,
    pub architecture: String,
    pub multi_arch: MultiArch,
    pub essential: bool,
    pub priority: Option<String>,
    pub depends: Vec<Alternatives>,
    pub pre_depends: Vec<Alternatives>,
    pub provides: Vec<Provide>,
    pub conflicts: Vec<Dep>,
    pub breaks: Vec<Dep>,
    pub replaces: Vec<Dep>,
    /// Path of the `.deb` relative to the mirror's root (`pool/main/c/curl/curl_….deb`).
    pub filename: String,
    pub size: u64,
    pub sha256: String,
    /// `Installed-Size` in KiB.
    pub installed_size: Option<u64>,
    /// 1-based line of the stanza in the index (the stanza's text is not kept: a full
    /// `Packages` index holds ~60 000 of them).
    pub line: usize,
    /// The `Source` field as written (`curl`, `gcc-12 (12.2.0-14)`), when there is one.
    pub source_field: Option<String>,
}

/// One package of dpkg's `status` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstalledPackage {
    pub name: String,
    pub version: String,
    pub architecture: String,
    pub multi_arch: MultiArch,
    pub essential: bool,
    pub provides: Vec<Provide>,
    pub depends: Vec<Alternatives>,
    pub pre_depends: Vec<Alternatives>,
    pub conflicts: Vec<Dep>,
    pub breaks: Vec<Dep>,
    /// `Status` is `install ok installed` or `hold ok installed`: the package's files are there.
    pub status_ok: bool,
    /// The source package's name (`Source`, without its version; else the package's name).
    pub source: String,
}

/// Parses a dependency field (`Depends`, `Pre-Depends`, …) into requirements of alternatives.
pub fn parse_dependencies(value: &str) -> Result<Vec<Alternatives>, String> {
    let mut out = Vec::new();
    for req in value.split(',') {
        if req.trim().is_empty() {
            // A trailing comma; dpkg accepts it in practice.
            continue;
        }
        let mut alts = Vec::new();
        for alt in req.split('|') {
            alts.push(parse_dep(alt)?);
        }
        out.push(alts);
    }
    Ok(out)
}

/// Parses a field of single relations without alternatives (`Conflicts`, `Breaks`, `Replaces`).
pub fn parse_relations(value: &str) -> Result<Vec<Dep>, String> {
    let mut out = Vec::new();
    for alts in parse_dependencies(value)? {
        if alts.len() > 1 {
            return Err("alternatives (`|`) are not allowed in this field".to_string());
        }
        out.extend(alts);
    }
    Ok(out)
}

/// Parses `Provides` (only `=` versions are allowed).
pub fn parse_provides(value: &str) -> Result<Vec<Provide>, String> {
    parse_relations(value)?
        .into_iter()
        .map(|d| match d.relation {
            None => Ok(Provide {
                name: d.name,
                version: None,
            }),
            Some((Relation::Eq, v)) => Ok(Provide {
                name: d.name,
                version: Some(v),
            }),
            Some((r, _)) => Err(format!(
                "provided {:?} has relation {r}; only `=` is allowed",
                d.name
            )),
        })
        .collect()
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
}

/// One relation; `[arch list]` and `<profiles>` after it are skipped.
fn parse_dep(text: &str) -> Result<Dep, String> {
    let s = text.trim();
    let end = s
        .find(|c: char| c.is_whitespace() || "([<".contains(c))
        .unwrap_or(s.len());
    let (name_arch, mut rest) = (&s[..end], s[end..].trim_start());
    let (name, arch) = match name_arch.split_once(':') {
        Some((n, a)) => (n, Some(a)),
        None => (name_arch, None),
    };
    if !valid_name(name) {
        return Err(format!("bad package name {name:?} in {s:?}"));
    }
    if let Some(a) = arch
        && !valid_name(a)
    {
        return Err(format!("bad architecture qualifier {a:?} in {s:?}"));
    }
    let mut relation = None;
    if let Some(r) = rest.strip_prefix('(') {
        let Some(close) = r.find(')') else {
            return Err(format!("unclosed `(` in {s:?}"));
        };
        let inner = r[..close].trim();
        let op_len = inner
            .find(|c: char| !"<>=".contains(c))
            .unwrap_or(inner.len());
        let (op, ver) = (&inner[..op_len], inner[op_len..].trim());
        let rel = Relation::parse(op).ok_or_else(|| format!("bad relation {op:?} in {s:?}"))?;
        Version::parse(ver).map_err(|e| format!("{e} in {s:?}"))?;
        relation = Some((rel, ver.to_string()));
        rest = r[close + 1..].trim_start();
    }
    // Source-only restrictions: `[amd64 !i386]`, `<!nocheck> <stage1>`.
    while let Some(open) = rest.chars().next().filter(|c| *c == '[' || *c == '<') {
        let close = if open == '[' { ']' } else { '>' };
        let Some(i) = rest.find(close) else {
            return Err(format!("unclosed `{open}` in {s:?}"));
        };
        rest = rest[i + 1..].trim_start();
    }
    if !rest.is_empty() {
        return Err(format!("unexpected {rest:?} in {s:?}"));
    }
    Ok(Dep {
        name: name.to_string(),
        arch_qualifier: arch.map(str::to_string),
        relation,
    })
}

/// Field accessors that name the package and field in errors.
struct Fields<'a> {
    p: &'a Paragraph,
    name: &'a str,
}

impl Fields<'_> {
    fn err(&self, field: &'static str, message: String) -> PackagesError {
        PackagesError::Field {
            package: self.name.to_string(),
            field,
            line: self.p.field_line(field).unwrap_or(self.p.line()),
            message,
        }
    }
    fn required(&self, field: &'static str) -> Result<&str, PackagesError> {
        self.p
            .get(field)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| PackagesError::Missing {
                package: self.name.to_string(),
                field,
                line: self.p.line(),
            })
    }
    fn version(&self) -> Result<String, PackagesError> {
        let v = self.required("Version")?;
        Version::parse(v).map_err(|e| self.err("Version", e.to_string()))?;
        Ok(v.to_string())
    }
    fn multi_arch(&self) -> Result<MultiArch, PackagesError> {
        match self.p.get("Multi-Arch") {
            None => Ok(MultiArch::No),
            Some(v) => MultiArch::parse(v)
                .ok_or_else(|| self.err("Multi-Arch", format!("unknown value {v:?}"))),
        }
    }
    fn essential(&self) -> Result<bool, PackagesError> {
        match self.p.get("Essential") {
            None | Some("no") => Ok(false),
            Some("yes") => Ok(true),
            Some(v) => Err(self.err("Essential", format!("expected yes or no, found {v:?}"))),
        }
    }
    fn deps(&self, field: &'static str) -> Result<Vec<Alternatives>, PackagesError> {
        self.p
            .get(field)
            .map(|v| parse_dependencies(v).map_err(|m| self.err(field, m)))
            .transpose()
            .map(Option::unwrap_or_default)
    }
    fn relations(&self, field: &'static str) -> Result<Vec<Dep>, PackagesError> {
        self.p
            .get(field)
            .map(|v| parse_relations(v).map_err(|m| self.err(field, m)))
            .transpose()
            .map(Option::unwrap_or_default)
    }
    fn provides(&self) -> Result<Vec<Provide>, PackagesError> {
        self.p
            .get("Provides")
            .map(|v| parse_provides(v).map_err(|m| self.err("Provides", m)))
            .transpose()
            .map(Option::unwrap_or_default)
    }
    fn number(&self, field: &'static str) -> Result<Option<u64>, PackagesError> {
        self.p
            .get(field)
            .map(|v| {
                v.parse::<u64>()
                    .map_err(|_| self.err(field, format!("not a number: {v:?}")))
            })
            .transpose()
    }
}

/// The source package's name and version of a binary stanza: `Source: glibc (2.36-9)` →
/// (`glibc`, `2.36-9`); `Source: glibc` → (`glibc`, the binary's version); none → the binary's.
pub fn source_of(source: Option<&str>, name: &str, version: &str) -> (String, String) {
    match source.map(str::trim).filter(|s| !s.is_empty()) {
        None => (name.to_string(), version.to_string()),
        Some(s) => match s.split_once('(') {
            Some((n, v)) => (
                n.trim().to_string(),
                v.trim_end_matches(')').trim().to_string(),
            ),
            None => (s.to_string(), version.to_string()),
        },
    }
}

impl PackageRecord {
    /// The source package's name and version (see [`source_of`]).
    pub fn source(&self) -> (String, String) {
        source_of(self.source_field.as_deref(), &self.name, &self.version)
    }
}

fn package_name(p: &Paragraph) -> Result<&str, PackagesError> {
    let name = p
        .get("Package")
        .filter(|n| !n.is_empty())
        .ok_or(PackagesError::NoName { line: p.line() })?;
    if !valid_name(name) {
        return Err(PackagesError::Field {
            package: name.to_string(),
            field: "Package",
            line: p.line(),
            message: "invalid package name".to_string(),
        });
    }
    Ok(name)
}

impl PackageRecord {
    /// Builds a record from one `Packages` stanza.
    pub fn from_paragraph(p: &Paragraph) -> Result<PackageRecord, PackagesError> {
        let name = package_name(p)?.to_string();
        let f = Fields { p, name: &name };
        let sha256 = f.required("SHA256")?;
        if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(f.err("SHA256", format!("not a sha256: {sha256:?}")));
        }
        let filename = f.required("Filename")?;
        if filename.starts_with('/') || filename.split('/').any(|c| c == "..") {
            return Err(f.err("Filename", format!("unsafe path {filename:?}")));
        }
        Ok(PackageRecord {
            version: f.version()?,
            architecture: f.required("Architecture")?.to_string(),
            multi_arch: f.multi_arch()?,
            essential: f.essential()?,
            priority: p.get("Priority").map(str::to_string),
            depends: f.deps("Depends")?,
            pre_depends: f.deps("Pre-Depends")?,
            provides: f.provides()?,
            conflicts: f.relations("Conflicts")?,
            breaks: f.relations("Breaks")?,
            replaces: f.relations("Replaces")?,
            filename: filename.to_string(),
            size: f.number("Size")?.ok_or_else(|| PackagesError::Missing {
                package: name.clone(),
                field: "Size",
                line: p.line(),
            })?,
            sha256: sha256.to_ascii_lowercase(),
            installed_size: f.number("Installed-Size")?,
            name,
            line: p.line(),
            source_field: p.get("Source").map(str::to_string),
        })
    }
}

/// Parses a whole `Packages` text.
pub fn parse_packages(text: &str) -> Result<Vec<PackageRecord>, PackagesError> {
    read_packages(text.as_bytes())
}

/// Parses a `Packages` index from a stream (e.g. [`decompress_index`]'s reader), stanza by stanza.
pub fn read_packages(reader: impl BufRead) -> Result<Vec<PackageRecord>, PackagesError> {
    ParagraphReader::new(reader)
        .map(|p| PackageRecord::from_paragraph(&p?))
        .collect()
}

impl InstalledPackage {
    /// Builds an entry from one dpkg `status` stanza.
    pub fn from_paragraph(p: &Paragraph) -> Result<InstalledPackage, PackagesError> {
        let name = package_name(p)?.to_string();
        let f = Fields { p, name: &name };
        let status = f.required("Status")?;
        let words: Vec<&str> = status.split_whitespace().collect();
        let status_ok = matches!(words.as_slice(), ["install" | "hold", "ok", "installed"]);
        // Removed packages keep a stanza (`deinstall ok config-files`) without a version.
        let version = match p.get("Version") {
            None if !status_ok => String::new(),
            _ => f.version()?,
        };
        Ok(InstalledPackage {
            version,
            architecture: p.get("Architecture").unwrap_or_default().to_string(),
            multi_arch: f.multi_arch()?,
            essential: f.essential()?,
            provides: f.provides()?,
            depends: f.deps("Depends")?,
            pre_depends: f.deps("Pre-Depends")?,
            conflicts: f.relations("Conflicts")?,
            breaks: f.relations("Breaks")?,
            status_ok,
            source: source_of(p.get("Source"), &name, "").0,
            name,
        })
    }
}

/// Parses dpkg's `status` file (every stanza; see [`InstalledPackage::status_ok`]).
pub fn parse_status(text: &str) -> Result<Vec<InstalledPackage>, PackagesError> {
    ParagraphReader::new(text.as_bytes())
        .map(|p| InstalledPackage::from_paragraph(&p?))
        .collect()
}

/// A reader of the uncompressed index, chosen by `name`'s suffix: `.xz`, `.gz`, or none.
pub fn decompress_index<'a>(
    name: &str,
    bytes: impl Read + Send + 'a,
) -> Result<Box<dyn BufRead + Send + 'a>, PackagesError> {
    let base = name.rsplit('/').next().unwrap_or(name);
    Ok(if base.ends_with(".xz") {
        Box::new(BufReader::new(liblzma::read::XzDecoder::new(bytes)))
    } else if base.ends_with(".gz") {
        Box::new(BufReader::new(flate2::read::MultiGzDecoder::new(bytes)))
    } else if [".bz2", ".lzma", ".zst", ".lz4", ".lz"]
        .iter()
        .any(|s| base.ends_with(s))
    {
        return Err(PackagesError::Compression {
            name: name.to_string(),
        });
    } else {
        Box::new(BufReader::new(bytes))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const SHA: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn stanza(extra: &str) -> String {
        format!(
            "Package: foo\nVersion: 1.0-1\nArchitecture: amd64\n{extra}Filename: pool/main/f/foo/foo_1.0-1_amd64.deb\nSize: 1234\nSHA256: {SHA}\n"
        )
    }

    #[test]
    fn dependency_syntax() {
        let d = parse_dependencies(
            "libc6 (>= 2.34), libssl3 (>=3.0.0) | libssl1.1, python3:any (<< 3.12~), perl:native, debhelper-compat (= 13) [amd64 !i386] <!nocheck> <stage1>,",
        )
        .unwrap();
        assert_eq!(d.len(), 5);
        assert_eq!(
            d[0],
            vec![Dep {
                name: "libc6".into(),
                arch_qualifier: None,
                relation: Some((Relation::Ge, "2.34".into()))
            }]
        );
        assert_eq!(d[1].len(), 2);
        assert_eq!(d[1][0].relation, Some((Relation::Ge, "3.0.0".into())));
        assert_eq!(d[1][1].name, "libssl1.1");
        assert_eq!(d[1][1].relation, None);
        assert_eq!(d[2][0].arch_qualifier.as_deref(), Some("any"));
        assert_eq!(d[2][0].relation, Some((Relation::Lt, "3.12~".into())));
        assert_eq!(d[3][0].to_string(), "perl:native");
        assert_eq!(d[4][0].to_string(), "debhelper-compat (= 13)");
        // Obsolete `<` means `<=`; folded lines are fine.
        let d = parse_dependencies("a (< 2),\n b (> 1)").unwrap();
        assert_eq!(d[0][0].relation, Some((Relation::Le, "2".into())));
        assert_eq!(d[1][0].relation, Some((Relation::Ge, "1".into())));
        for bad in [
            "a (>= 1", "a (~ 1)", "a (>= )", "A_b", "a b", "a [amd64", "a:",
        ] {
            assert!(parse_dependencies(bad).is_err(), "{bad}");
        }
        assert!(parse_relations("a | b").is_err());
        assert!(parse_provides("a (>= 1)").is_err());
        assert_eq!(
            parse_provides("libfoo (= 1.2), bar").unwrap(),
            vec![
                Provide {
                    name: "libfoo".into(),
                    version: Some("1.2".into())
                },
                Provide {
                    name: "bar".into(),
                    version: None
                }
            ]
        );
    }

    #[test]
    fn record_fields() {
        let text = stanza(
            "Multi-Arch: same\nEssential: yes\nPriority: optional\nInstalled-Size: 99\nPre-Depends: libc6 (>= 2.34)\nDepends: a | b, c:any\nProvides: virt (= 2)\nConflicts: old\nBreaks: older (<< 2)\nReplaces: older (<< 2)\n",
        );
        let r = parse_packages(&format!("{text}\n{}", stanza(""))).unwrap();
        assert_eq!(r.len(), 2);
        let p = &r[0];
        assert_eq!((p.name.as_str(), p.version.as_str()), ("foo", "1.0-1"));
        assert_eq!(p.architecture, "amd64");
        assert_eq!(p.multi_arch, MultiArch::Same);
        assert!(p.essential);
        assert_eq!(p.priority.as_deref(), Some("optional"));
        assert_eq!(p.installed_size, Some(99));
        assert_eq!(p.size, 1234);
        assert_eq!(p.sha256, SHA);
        assert_eq!(p.filename, "pool/main/f/foo/foo_1.0-1_amd64.deb");
        assert_eq!(p.pre_depends[0][0].name, "libc6");
        assert_eq!(p.depends.len(), 2);
        assert_eq!(p.provides[0].version.as_deref(), Some("2"));
        assert_eq!(p.conflicts[0].name, "old");
        assert_eq!(p.breaks[0].relation, Some((Relation::Lt, "2".into())));
        assert_eq!(p.replaces.len(), 1);
        assert_eq!(p.line, 1);
        assert_eq!(r[1].multi_arch, MultiArch::No);
        assert!(!r[1].essential);
        assert_eq!(r[0].source(), ("foo".to_string(), "1.0-1".to_string()));
        let r = parse_packages(&stanza("Source: bar (1:2.0-1)\n")).unwrap();
        assert_eq!(r[0].source(), ("bar".to_string(), "1:2.0-1".to_string()));
        let r = parse_packages(&stanza("Source: bar\n")).unwrap();
        assert_eq!(r[0].source(), ("bar".to_string(), "1.0-1".to_string()));
    }

    #[test]
    fn errors_name_package_field_and_line() {
        let e = parse_packages(&format!("{}\n{}", stanza(""), stanza("Depends: a (>= 1\n")))
            .unwrap_err();
        let msg = e.to_string();
        assert!(
            matches!(e, PackagesError::Field { ref package, field: "Depends", line: 11, .. } if package == "foo"),
            "{msg}"
        );
        assert!(msg.contains("foo") && msg.contains("Depends"), "{msg}");
        let e = parse_packages("Package: bar\nVersion: 1\nArchitecture: all\n").unwrap_err();
        assert!(
            matches!(e, PackagesError::Missing { ref package, field: "SHA256", .. } if package == "bar"),
            "{e}"
        );
        let e = parse_packages(&stanza("Multi-Arch: maybe\n")).unwrap_err();
        assert!(
            matches!(
                e,
                PackagesError::Field {
                    field: "Multi-Arch",
                    ..
                }
            ),
            "{e}"
        );
        let e = parse_packages(&stanza("").replace("1.0-1\n", "1.0 beta\n")).unwrap_err();
        assert!(
            matches!(
                e,
                PackagesError::Field {
                    field: "Version",
                    line: 2,
                    ..
                }
            ),
            "{e}"
        );
        let e = parse_packages(&stanza("").replace("Size: 1234", "Size: big")).unwrap_err();
        assert!(
            matches!(e, PackagesError::Field { field: "Size", .. }),
            "{e}"
        );
        let e = parse_packages(&stanza("").replace("pool/main", "../../etc")).unwrap_err();
        assert!(
            matches!(
                e,
                PackagesError::Field {
                    field: "Filename",
                    ..
                }
            ),
            "{e}"
        );
        let e = parse_packages("Version: 1\n").unwrap_err();
        assert!(matches!(e, PackagesError::NoName { line: 1 }), "{e}");
    }

    #[test]
    fn status_file() {
        let text = "Package: libc6\nStatus: install ok installed\nArchitecture: amd64\nMulti-Arch: same\nSource: glibc (2.36-9+deb12u9)\nVersion: 2.36-9+deb12u9\nDepends: libgcc-s1\n\nPackage: gone\nStatus: deinstall ok config-files\nArchitecture: amd64\n\nPackage: held\nStatus: hold ok installed\nArchitecture: all\nVersion: 1\nProvides: x\n\nPackage: half\nStatus: install ok half-configured\nArchitecture: amd64\nVersion: 1\n";
        let s = parse_status(text).unwrap();
        assert_eq!(s.len(), 4);
        assert!(s[0].status_ok);
        assert_eq!(s[0].version, "2.36-9+deb12u9");
        assert_eq!(s[0].multi_arch, MultiArch::Same);
        assert_eq!(s[0].depends[0][0].name, "libgcc-s1");
        assert!(!s[1].status_ok);
        assert_eq!(s[1].version, "");
        assert!(s[2].status_ok);
        assert_eq!(s[2].provides[0].name, "x");
        assert_eq!(s[0].source, "glibc");
        assert_eq!(s[2].source, "held");
        assert!(!s[3].status_ok);
        let e = parse_status("Package: x\nVersion: 1\n").unwrap_err();
        assert!(
            matches!(
                e,
                PackagesError::Missing {
                    field: "Status",
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn decompression_by_suffix() {
        let text = stanza("");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(text.as_bytes()).unwrap();
        let gz = gz.finish().unwrap();
        let mut xz = liblzma::write::XzEncoder::new(Vec::new(), 6);
        xz.write_all(text.as_bytes()).unwrap();
        let xz = xz.finish().unwrap();
        for (name, bytes) in [
            ("main/binary-amd64/Packages.gz", gz.clone()),
            ("main/binary-amd64/Packages.xz", xz.clone()),
            ("main/binary-amd64/Packages", text.as_bytes().to_vec()),
        ] {
            let r = read_packages(decompress_index(name, &bytes[..]).unwrap()).unwrap();
            assert_eq!(r[0].name, "foo", "{name}");
        }
        // A truncated or wrong stream is an error, not an empty index.
        let cut = &xz[..xz.len() / 2];
        assert!(read_packages(decompress_index("Packages.xz", cut).unwrap()).is_err());
        assert!(read_packages(decompress_index("Packages.xz", &gz[..]).unwrap()).is_err());
        assert!(matches!(
            decompress_index("Packages.bz2", &b""[..]),
            Err(PackagesError::Compression { .. })
        ));
    }
}
