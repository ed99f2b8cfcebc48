//! The dpkg database entries that make installed packages known to `dpkg` and `apt` inside the
//! image, written the way dpkg 1.21 writes them (checked against `dpkg --root ... -i` in the
//! tests): the package's stanza in `var/lib/dpkg/status`, and its `var/lib/dpkg/info/` files.
//!
//! - [`status_stanza`]: the control fields in dpkg's order (`Package`, `Essential`, `Protected`,
//!   `Status`, `Priority`, `Section`, `Installed-Size`, `Origin`, `Maintainer`, `Bugs`,
//!   `Architecture`, `Multi-Arch`, `Source`, `Version`, `Replaces`, `Provides`, `Depends`,
//!   `Pre-Depends`, `Recommends`, `Suggests`, `Breaks`, `Conflicts`, `Enhances`, `Conffiles`,
//!   `Description`, then every other field in the control file's order), relation fields
//!   normalized as dpkg prints them (`a (>= 1), b | c`), `Essential: no`, `Protected: no` and
//!   `Multi-Arch: no` dropped, and `Status: install ok installed`.
//! - [`merge_status`]: the base's status with the new stanzas, sorted by package name and
//!   architecture as dpkg writes the file; the base's own stanzas are kept byte for byte.
//! - [`info_files`]: `<pkg>.list` (`/.` then every archive path, in archive order), and every
//!   control member but `control` verbatim (`md5sums`, `conffiles`, `triggers`, `shlibs`,
//!   `symbols`, `templates`, maintainer scripts with mode 0755); `<pkg>:<arch>.*` for
//!   `Multi-Arch: same` packages.
//! - [`check_overwrites`]: a path shipped by two packages is an error naming both.
//! - Maintainer scripts: see [`scripts`] and [`alternatives`].

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use md5::Digest;

use super::deb::{DataEntry, DataKind, DebControl};

pub mod alternatives;
pub mod scripts;

pub use alternatives::{Alternative, AlternativeLinks, AlternativeSlave, alternative_links};
pub use scripts::{ScriptActions, script_actions};

#[derive(Debug, thiserror::Error)]
pub enum DpkgError {
    #[error("control file line {line}: {reason}")]
    Control { line: usize, reason: String },
    #[error("{}: {source}", path.display())]
    Hash { path: PathBuf, source: io::Error },
    #[error(
        "{path:?} is shipped by both {first} and {second} (a package may not overwrite another's files)"
    )]
    Overwrite {
        path: String,
        first: String,
        second: String,
    },
}

/// One field of a control file: its name as written and its value (the first line without its
/// leading blanks, continuation lines kept verbatim, joined by `\n`, blanks at the very end
/// trimmed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub name: String,
    pub value: String,
}

/// Parses a deb822 control stanza (one paragraph) into its fields, in order.
pub fn parse_control(control: &str) -> Result<Vec<Field>, DpkgError> {
    let mut fields: Vec<Field> = Vec::new();
    for (i, line) in control.lines().enumerate() {
        let line_no = i + 1;
        if line.trim().is_empty() {
            if fields.is_empty() {
                continue;
            }
            // Only one stanza: anything after a blank line must be blank too.
            if control.lines().skip(i).any(|l| !l.trim().is_empty()) {
                return Err(DpkgError::Control {
                    line: line_no,
                    reason: "more than one stanza".to_string(),
                });
            }
            break;
        }
        if line.starts_with(' ') || line.starts_with('\t') {
            let Some(last) = fields.last_mut() else {
                return Err(DpkgError::Control {
                    line: line_no,
                    reason: "continuation line before any field".to_string(),
                });
            };
            last.value.push('\n');
            last.value.push_str(line);
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(DpkgError::Control {
                line: line_no,
                reason: format!("{line:?} is neither a field nor a continuation line"),
            });
        };
        if name.is_empty() || name.contains(char::is_whitespace) {
            return Err(DpkgError::Control {
                line: line_no,
                reason: format!("bad field name {name:?}"),
            });
        }
        fields.push(Field {
            name: name.to_string(),
            value: value.trim_start_matches([' ', '\t']).to_string(),
        });
    }
    // As dpkg: blanks are trimmed at the end of a value, not at the end of its inner lines.
    for f in &mut fields {
        let end = f.value.trim_end().len();
        f.value.truncate(end);
    }
    if !fields
        .iter()
        .any(|f| f.name.eq_ignore_ascii_case("Package"))
    {
        return Err(DpkgError::Control {
            line: 1,
            reason: "no Package field".to_string(),
        });
    }
    Ok(fields)
}

/// The value of field `name` (case-insensitive) in a stanza.
pub fn field<'a>(fields: &'a [Field], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|f| f.name.eq_ignore_ascii_case(name))
        .map(|f| f.value.as_str())
}

/// dpkg's field order for the status file (lib/dpkg/parse.c `fieldinfos`).
const DPKG_ORDER: &[&str] = &[
    "Package",
    "Essential",
    "Protected",
    "Status",
    "Priority",
    "Section",
    "Installed-Size",
    "Origin",
    "Maintainer",
    "Bugs",
    "Architecture",
    "Multi-Arch",
    "Source",
    "Version",
    "Config-Version",
    "Replaces",
    "Provides",
    "Depends",
    "Pre-Depends",
    "Recommends",
    "Suggests",
    "Breaks",
    "Conflicts",
    "Enhances",
    "Conffiles",
    "Filename",
    "Size",
    "MD5sum",
    "MSDOS-Filename",
    "Description",
    "Triggers-Pending",
    "Triggers-Awaited",
];

const RELATION_FIELDS: &[&str] = &[
    "Replaces",
    "Provides",
    "Depends",
    "Pre-Depends",
    "Recommends",
    "Suggests",
    "Breaks",
    "Conflicts",
    "Enhances",
];

/// A relation field as dpkg prints it: `a (>= 1), b | c:any`. `<` and `>` become `<=` and `>=`
/// as dpkg reads them. `None` when the value does not parse (it is then kept verbatim).
fn normalize_relations(value: &str) -> Option<String> {
    let mut groups = Vec::new();
    for group in value.split(',') {
        let mut alts = Vec::new();
        for alt in group.split('|') {
            let alt = alt.trim();
            let (name, rest) = match alt.find(|c: char| c.is_whitespace() || c == '(') {
                Some(i) => (&alt[..i], alt[i..].trim()),
                None => (alt, ""),
            };
            if name.is_empty() {
                return None;
            }
            if rest.is_empty() {
                alts.push(name.to_string());
                continue;
            }
            let inner = rest.strip_prefix('(')?.strip_suffix(')')?.trim();
            let op_end = inner
                .find(|c: char| !matches!(c, '<' | '>' | '='))
                .unwrap_or(inner.len());
            let op = match &inner[..op_end] {
                "<<" => "<<",
                "<=" | "<" => "<=",
                "=" => "=",
                ">=" | ">" => ">=",
                ">>" => ">>",
                _ => return None,
            };
            let version = inner[op_end..].trim();
            if version.is_empty() || version.contains(char::is_whitespace) {
                return None;
            }
            alts.push(format!("{name} ({op} {version})"));
        }
        groups.push(alts.join(" | "));
    }
    Some(groups.join(", "))
}

/// The md5 of every conffile of a package, read from its extracted tree at `root`: dpkg records
/// the shipped file's hash (conffiles are left out of `md5sums` by debhelper).
pub fn conffile_md5s(
    control: &DebControl,
    root: &Path,
) -> Result<Vec<(String, String)>, DpkgError> {
    let mut out = Vec::new();
    for path in control.conffile_paths() {
        let md5 = md5_file(&root.join(&path))?;
        out.push((format!("/{path}"), md5));
    }
    Ok(out)
}

/// The `md5sums` dpkg writes for a package that ships none: `<md5>  <path>` for every regular
/// file and hard link, in archive order, from the tree extracted at `root`. Set it as
/// [`DebControl::md5sums`] before [`info_files`].
pub fn generate_md5sums(entries: &[DataEntry], root: &Path) -> Result<String, DpkgError> {
    let mut out = String::new();
    for e in entries {
        if matches!(e.kind, DataKind::File { .. } | DataKind::Hardlink(_)) {
            let md5 = md5_file(&root.join(&e.path))?;
            out.push_str(&format!("{md5}  {}\n", e.path));
        }
    }
    Ok(out)
}

fn md5_file(path: &Path) -> Result<String, DpkgError> {
    let err = |source| DpkgError::Hash {
        path: path.to_path_buf(),
        source,
    };
    let meta = fs::symlink_metadata(path).map_err(err)?;
    if !meta.is_file() {
        return Err(err(io::Error::other("not a regular file")));
    }
    let mut file = fs::File::open(path).map_err(err)?;
    let mut hasher = md5::Md5::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = file.read(&mut buf).map_err(err)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// The status stanza of an installed package (ending in one `\n`, no blank line), from its
/// control file and its conffiles' `(path, md5)` (see [`conffile_md5s`]).
pub fn status_stanza(control: &str, conffiles: &[(String, String)]) -> Result<String, DpkgError> {
    let fields = parse_control(control)?;
    let mut known: Vec<(usize, String)> = Vec::new();
    let mut other: Vec<String> = Vec::new();
    for f in &fields {
        let Some(pos) = DPKG_ORDER
            .iter()
            .position(|k| k.eq_ignore_ascii_case(&f.name))
        else {
            other.push(format!("{}: {}\n", f.name, f.value));
            continue;
        };
        let name = DPKG_ORDER[pos];
        let value = match name {
            // dpkg's own, never taken from a control file.
            "Status" | "Conffiles" | "Config-Version" | "Triggers-Pending" | "Triggers-Awaited" => {
                continue;
            }
            "Essential" | "Protected" if !f.value.eq_ignore_ascii_case("yes") => continue,
            "Essential" | "Protected" => "yes".to_string(),
            "Multi-Arch" if f.value.eq_ignore_ascii_case("no") => continue,
            "Multi-Arch" => f.value.to_ascii_lowercase(),
            n if RELATION_FIELDS.contains(&n) => {
                normalize_relations(&f.value).unwrap_or_else(|| f.value.clone())
            }
            _ => f.value.clone(),
        };
        known.push((pos, format!("{name}: {value}\n")));
    }
    let status = DPKG_ORDER.iter().position(|k| *k == "Status").unwrap_or(0);
    known.push((status, "Status: install ok installed\n".to_string()));
    if !conffiles.is_empty() {
        let pos = DPKG_ORDER
            .iter()
            .position(|k| *k == "Conffiles")
            .unwrap_or(0);
        let mut text = "Conffiles:\n".to_string();
        for (path, md5) in conffiles {
            text.push_str(&format!(" {path} {md5}\n"));
        }
        known.push((pos, text));
    }
    known.sort_by_key(|(pos, _)| *pos);
    let mut out: String = known.into_iter().map(|(_, t)| t).collect();
    out.extend(other);
    Ok(out)
}

/// Splits a status file into its stanzas, each with its own text (ending in `\n`, without the
/// blank line after it).
fn stanzas(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = None;
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let blank = line.trim().is_empty();
        match (start, blank) {
            (None, false) => start = Some(offset),
            (Some(s), true) => {
                out.push(&text[s..offset]);
                start = None;
            }
            _ => {}
        }
        offset += line.len();
    }
    if let Some(s) = start {
        out.push(&text[s..]);
    }
    out
}

/// The (Package, Architecture) of a stanza; "" for a missing field.
fn stanza_key(stanza: &str) -> (String, String) {
    let mut package = String::new();
    let mut arch = String::new();
    for line in stanza.lines() {
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("Package") {
                package = value.trim().to_string();
            } else if name.eq_ignore_ascii_case("Architecture") {
                arch = value.trim().to_string();
            }
        }
    }
    (package, arch)
}

fn multi_arch_same(stanza: &str) -> bool {
    stanza.lines().any(|l| {
        l.split_once(':').is_some_and(|(n, v)| {
            n.eq_ignore_ascii_case("Multi-Arch") && v.trim().eq_ignore_ascii_case("same")
        })
    })
}

/// The base's status text with the stanzas of `new` (package, architecture, stanza) replacing
/// the same package (of the same architecture when both are `Multi-Arch: same`, which dpkg
/// installs once per architecture) and inserted otherwise, sorted by name then architecture as
/// dpkg writes the file. Each stanza is followed by a blank line.
pub fn merge_status(base: &str, new: &[(String, String, String)]) -> String {
    let mut all: Vec<((String, String), String)> = Vec::new();
    for s in stanzas(base) {
        let key = stanza_key(s);
        // A package has one instance per name, except `Multi-Arch: same` ones (one per arch).
        let replaced = new.iter().any(|(p, a, stanza)| {
            *p == key.0 && (*a == key.1 || !(multi_arch_same(s) && multi_arch_same(stanza)))
        });
        if replaced {
            continue;
        }
        let mut text = s.to_string();
        if !text.ends_with('\n') {
            text.push('\n');
        }
        all.push((key, text));
    }
    // One stanza per key among the new ones: the last given wins.
    let mut seen = BTreeMap::new();
    for (package, arch, stanza) in new {
        let mut text = stanza.trim_end_matches('\n').to_string();
        text.push('\n');
        seen.insert((package.clone(), arch.clone()), text);
    }
    all.extend(seen);
    all.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out = String::new();
    for (_, text) in all {
        out.push_str(&text);
        out.push('\n');
    }
    out
}

/// The name dpkg gives a package's info files: `curl`, or `libfoo1:amd64` for `Multi-Arch:
/// same`.
pub fn info_name(package: &str, arch: &str, multi_arch_same: bool) -> String {
    if multi_arch_same {
        format!("{package}:{arch}")
    } else {
        package.to_string()
    }
}

/// The maintainer scripts dpkg keeps executable in its info folder.
const EXECUTABLE_MEMBERS: &[&str] = &["preinst", "postinst", "prerm", "postrm", "config"];

/// The `var/lib/dpkg/info/` files of an installed package: (image path, bytes, mode), sorted by
/// path.
pub fn info_files(
    package: &str,
    arch: &str,
    multi_arch_same: bool,
    control: &DebControl,
    entries: &[DataEntry],
) -> Vec<(String, Vec<u8>, u32)> {
    let base = format!(
        "var/lib/dpkg/info/{}",
        info_name(package, arch, multi_arch_same)
    );
    let mut list = String::from("/.\n");
    for e in entries {
        list.push('/');
        list.push_str(&e.path);
        list.push('\n');
    }
    let mut out = vec![(format!("{base}.list"), list.into_bytes(), 0o644)];
    if let Some(m) = &control.md5sums {
        out.push((format!("{base}.md5sums"), m.clone().into_bytes(), 0o644));
    }
    if let Some(c) = &control.conffiles {
        out.push((format!("{base}.conffiles"), c.clone().into_bytes(), 0o644));
    }
    for (name, bytes) in &control.scripts {
        let mode = if EXECUTABLE_MEMBERS.contains(&name.as_str()) {
            0o755
        } else {
            0o644
        };
        out.push((format!("{base}.{name}"), bytes.clone(), mode));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// The paths of a dpkg `.list` file, normalized like [`DataEntry::path`] (no leading `/`, the
/// root `/.` left out): to build the `existing` map of [`check_overwrites`] from a base.
pub fn list_paths(list: &str) -> Vec<String> {
    list.lines()
        .filter_map(|l| super::deb::normalize_path(l.as_bytes()).ok())
        .filter(|p| !p.is_empty())
        .collect()
}

/// A package path as it lands in an image whose base has symlinks to folders (merged `/usr`:
/// `lib -> usr/lib`, `bin -> usr/bin`...): dpkg follows such symlinks when it unpacks, so a
/// layer must too, or its `lib/` folder would hide the base's `lib` symlink. `dir_links` maps
/// each such symlink (normalized path) to its folder (normalized, resolved from the image root:
/// `lib` → `usr/lib`). The last component is followed only for folders (a package's folder
/// `lib` is the base's `usr/lib`); a file or symlink at a linked path keeps its own path, which
/// [`check_overwrites`] or the layer writer then sees. Chains are followed up to 40 links.
pub fn through_dir_links(path: &str, is_dir: bool, dir_links: &HashMap<String, String>) -> String {
    let mut current = path.to_string();
    let mut hops = 0;
    'restart: while hops < 40 {
        let parts: Vec<&str> = current.split('/').collect();
        let last = if is_dir { parts.len() } else { parts.len() - 1 };
        for i in 1..=last {
            let prefix = parts[..i].join("/");
            if let Some(target) = dir_links.get(&prefix) {
                let rest = &parts[i..];
                let mut next = target.clone();
                for r in rest {
                    next.push('/');
                    next.push_str(r);
                }
                current = next.trim_start_matches('/').to_string();
                hops += 1;
                continue 'restart;
            }
        }
        break;
    }
    current
}

/// One package's files for [`check_overwrites`].
#[derive(Debug, Clone, Copy)]
pub struct PackageFiles<'a> {
    pub package: &'a str,
    pub entries: &'a [DataEntry],
}

/// Checks that no two packages ship the same path: `existing` maps the paths already in the
/// image (e.g. the base's, from its `.list` files via [`list_paths`]) to their owner; the new
/// packages are checked against it and against each other. Folders are shared legally, and so
/// is a symlink two new packages ship with the same target. Folders of `existing` are not known
/// as such: a new package's folder never conflicts, a new file or symlink at an existing path
/// does (unless the owner is the same package, being reinstalled).
pub fn check_overwrites(
    existing: &HashMap<String, String>,
    packages: &[PackageFiles<'_>],
) -> Result<(), DpkgError> {
    let mut owners: HashMap<&str, (&str, &DataKind)> = HashMap::new();
    for p in packages {
        for e in p.entries {
            if e.kind == DataKind::Dir {
                continue;
            }
            if let Some(owner) = existing.get(&e.path)
                && owner != p.package
            {
                return Err(DpkgError::Overwrite {
                    path: e.path.clone(),
                    first: owner.clone(),
                    second: p.package.to_string(),
                });
            }
            match owners.get(e.path.as_str()) {
                Some((_, DataKind::Symlink(a))) if e.kind == DataKind::Symlink(a.clone()) => {}
                Some((owner, _)) if *owner != p.package => {
                    return Err(DpkgError::Overwrite {
                        path: e.path.clone(),
                        first: owner.to_string(),
                        second: p.package.to_string(),
                    });
                }
                _ => {
                    owners.insert(&e.path, (p.package, &e.kind));
                }
            }
        }
    }
    Ok(())
}
