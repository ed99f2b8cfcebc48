//! One wheel → the tar entries pip would install (PEP 427 / PEP 491), without unpacking it.
//!
//! Mirrors pip's `_install_wheel` (pip 23–25): root files go to site-packages (purelib and
//! platlib are the same folder on CPython images), `<name>.data/<key>/` to the scheme folder
//! for `key`, `#!python` script shebangs become the target interpreter, console/GUI entry
//! points get pip's launcher, and `RECORD` is rewritten with installed paths relative to
//! site-packages (CSV with `\r\n` line ends, rows sorted, as pip's `csv.writer` leaves it).

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine as _;
use sha2::{Digest, Sha256};

use super::index::sha256_reader;
use super::tags::WheelName;
use super::{PythonError, PythonTarget, normalize_name};
use crate::layer::{Content, Entry};

/// Contents of `INSTALLER`.
pub const INSTALLER: &[u8] = b"mlimg\n";

/// distlib's `SCRIPT_TEMPLATE` as pip uses it (posix: no variants, no `.exe`).
const SCRIPT_TEMPLATE: &str = "# -*- coding: utf-8 -*-
import re
import sys
from {module} import {import_name}
if __name__ == '__main__':
    sys.argv[0] = re.sub(r'(-script\\.pyw|\\.exe)?$', '', sys.argv[0])
    sys.exit({func}())
";

/// The launcher pip writes for entry point `module:attr` (without `[extras]`).
pub fn launcher_script(interpreter: &str, module: &str, attr: &str) -> String {
    let import_name = attr.split('.').next().unwrap_or(attr);
    let body = SCRIPT_TEMPLATE
        .replace("{module}", module)
        .replace("{import_name}", import_name)
        .replace("{func}", attr);
    format!("#!{interpreter}\n{body}")
}

/// `sha256=<urlsafe base64, no padding>` as RECORD wants it.
pub fn record_hash(data: &[u8]) -> String {
    let digest = Sha256::digest(data);
    format!(
        "sha256={}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest)
    )
}

fn invalid(wheel: &Path, message: impl Into<String>) -> PythonError {
    PythonError::InvalidWheel {
        wheel: wheel.to_path_buf(),
        message: message.into(),
    }
}

/// Most bytes read of `WHEEL` (a dozen short header lines in practice).
pub const MAX_WHEEL_META: u64 = 64 << 10;
/// Most bytes read of `entry_points.txt` (large plugin hosts list a few hundred KiB).
pub const MAX_ENTRY_POINTS: u64 = 4 << 20;
/// Most bytes read of `RECORD` (torch's, for ~15 000 files, is about 2 MiB).
pub const MAX_RECORD: u64 = 32 << 20;
/// Most bytes read of one `#!python` script from `.data/scripts` (it is rewritten in memory).
pub const MAX_SCRIPT: u64 = 16 << 20;

struct Member {
    name: String,
    size: u64,
    executable: bool,
}

struct Wheel {
    path: PathBuf,
    zip: zip::ZipArchive<File>,
}

impl Wheel {
    fn open(path: &Path) -> Result<Self, PythonError> {
        let f = File::open(path).map_err(|e| PythonError::io(path, e))?;
        let zip = zip::ZipArchive::new(f).map_err(|e| invalid(path, format!("not a zip: {e}")))?;
        Ok(Wheel {
            path: path.to_path_buf(),
            zip,
        })
    }

    fn members(&mut self) -> Result<Vec<Member>, PythonError> {
        let mut out = Vec::with_capacity(self.zip.len());
        for i in 0..self.zip.len() {
            let f = self
                .zip
                .by_index_raw(i)
                .map_err(|e| invalid(&self.path, format!("member {i}: {e}")))?;
            let name = f
                .name()
                .map_err(|e| invalid(&self.path, format!("member {i}: {e}")))?
                .into_owned();
            if name.ends_with('/') {
                continue;
            }
            // pip: executable if the zip's unix mode is a regular file with any x bit.
            let executable = f
                .unix_mode()
                .is_some_and(|m| m & 0o170000 == 0o100000 && m & 0o111 != 0);
            out.push(Member {
                name,
                size: f.size(),
                executable,
            });
        }
        Ok(out)
    }

    /// Reads a small member (metadata, scripts) whole, refusing more than `cap` bytes: the
    /// size in the zip's directory is the writer's claim, so the inflated bytes are counted.
    fn read(&mut self, name: &str, cap: u64) -> Result<Vec<u8>, PythonError> {
        let path = self.path.clone();
        let f = self
            .zip
            .by_name(name)
            .map_err(|e| invalid(&path, format!("{name}: {e}")))?;
        let too_big = || {
            invalid(
                &path,
                format!(
                    "member {name} is larger than {} KiB, the most mlimg reads of it",
                    cap >> 10
                ),
            )
        };
        if f.size() > cap {
            return Err(too_big());
        }
        let mut buf = Vec::with_capacity(f.size().min(1 << 20) as usize);
        f.take(cap + 1)
            .read_to_end(&mut buf)
            .map_err(|e| invalid(&path, format!("{name}: {e}")))?;
        if buf.len() as u64 > cap {
            return Err(too_big());
        }
        Ok(buf)
    }

    /// The first `cap` bytes of a member (lossy UTF-8): enough for METADATA's headers, which
    /// come before a description of any length.
    fn read_head(&mut self, name: &str, cap: u64) -> Result<String, PythonError> {
        let path = self.path.clone();
        let f = self
            .zip
            .by_name(name)
            .map_err(|e| invalid(&path, format!("{name}: {e}")))?;
        let mut buf = Vec::new();
        f.take(cap)
            .read_to_end(&mut buf)
            .map_err(|e| invalid(&path, format!("{name}: {e}")))?;
        Ok(String::from_utf8_lossy(&buf).into_owned())
    }

    fn read_text(&mut self, name: &str, cap: u64) -> Result<String, PythonError> {
        let b = self.read(name, cap)?;
        String::from_utf8(b).map_err(|_| invalid(&self.path, format!("{name} is not UTF-8")))
    }

    fn starts_with(&mut self, name: &str, prefix: &[u8]) -> Result<bool, PythonError> {
        let path = self.path.clone();
        let f = self
            .zip
            .by_name(name)
            .map_err(|e| invalid(&path, format!("{name}: {e}")))?;
        let mut head = Vec::with_capacity(prefix.len());
        f.take(prefix.len() as u64)
            .read_to_end(&mut head)
            .map_err(|e| invalid(&path, format!("{name}: {e}")))?;
        Ok(head == prefix)
    }
}

/// Checks a member path (or the part after a `.data/<key>/` prefix): relative, `/`-separated,
/// no `..`, no empty or `.` components. Returns the cleaned components.
fn safe_components<'a>(
    wheel: &Path,
    member: &'a str,
    rel: &'a str,
) -> Result<Vec<&'a str>, PythonError> {
    let unsafe_member = || PythonError::UnsafeMember {
        wheel: wheel.to_path_buf(),
        member: member.to_string(),
    };
    if rel.starts_with('/') || rel.contains('\\') || rel.contains('\0') {
        return Err(unsafe_member());
    }
    let parts: Vec<&str> = rel
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    if parts.is_empty() || parts.iter().any(|p| *p == ".." || p.contains(':')) {
        return Err(unsafe_member());
    }
    Ok(parts)
}

/// `to` relative to folder `from` (both absolute, `/`-separated, no trailing slash).
fn relative(from: &str, to: &str) -> String {
    let f: Vec<&str> = from.split('/').filter(|s| !s.is_empty()).collect();
    let t: Vec<&str> = to.split('/').filter(|s| !s.is_empty()).collect();
    let common = f.iter().zip(&t).take_while(|(a, b)| a == b).count();
    let mut parts: Vec<&str> = vec![".."; f.len() - common];
    parts.extend(&t[common..]);
    parts.join("/")
}

/// Minimal CSV (RFC 4180 as Python's csv module reads it) for one RECORD line.
pub(super) fn parse_csv_line(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            '"' if quoted => quoted = false,
            '"' if cur.is_empty() => quoted = true,
            ',' if !quoted => out.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    out.push(cur);
    out
}

/// Python `csv.writer` defaults: minimal quoting, `\r\n` line ends.
pub(super) fn write_csv(rows: &[(String, String, String)]) -> Vec<u8> {
    let field = |s: &str| {
        if s.contains([',', '"', '\r', '\n']) {
            format!("\"{}\"", s.replace('"', "\"\""))
        } else {
            s.to_string()
        }
    };
    let mut out = String::new();
    for (a, b, c) in rows {
        out.push_str(&format!("{},{},{}\r\n", field(a), field(b), field(c)));
    }
    out.into_bytes()
}

/// `[console_scripts]` / `[gui_scripts]` of `entry_points.txt`: (name, module, attr), in file order.
fn script_entry_points(
    wheel: &Path,
    text: &str,
) -> Result<Vec<(String, String, String)>, PythonError> {
    let mut out = Vec::new();
    let mut section = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(s) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = s.trim().to_string();
            continue;
        }
        if section != "console_scripts" && section != "gui_scripts" {
            continue;
        }
        let Some((name, value)) = line.split_once('=') else {
            return Err(invalid(
                wheel,
                format!("entry_points.txt: bad line `{line}`"),
            ));
        };
        let value = value.split('[').next().unwrap_or("").trim();
        let Some((module, attr)) = value.split_once(':') else {
            // pip refuses these too (MissingCallableSuffix).
            return Err(invalid(
                wheel,
                format!("entry point `{}` has no `:callable` suffix", name.trim()),
            ));
        };
        let name = name.trim();
        if name.is_empty() || name.contains('/') || name == "." || name == ".." {
            return Err(invalid(wheel, format!("bad script name `{name}`")));
        }
        out.push((
            name.to_string(),
            module.trim().to_string(),
            attr.trim().to_string(),
        ));
    }
    Ok(out)
}

/// The entries pip would install for one wheel (files only).
pub fn wheel_entries(wheel_path: &Path, target: &PythonTarget) -> Result<Vec<Entry>, PythonError> {
    let mut wheel = Wheel::open(wheel_path)?;
    let members = wheel.members()?;
    let file_name = wheel_path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let parsed = WheelName::parse(&file_name)
        .ok_or_else(|| invalid(wheel_path, "file name is not a wheel name"))?;

    // The one top-level `*.dist-info` folder, which must belong to this project.
    let info_dirs: BTreeSet<&str> = members
        .iter()
        .filter_map(|m| m.name.split('/').next())
        .filter(|d| d.ends_with(".dist-info"))
        .collect();
    let info_dir = match info_dirs.iter().collect::<Vec<_>>().as_slice() {
        [one] => one.to_string(),
        [] => return Err(invalid(wheel_path, "no .dist-info folder")),
        _ => return Err(invalid(wheel_path, "more than one .dist-info folder")),
    };
    let info_name = info_dir
        .trim_end_matches(".dist-info")
        .split('-')
        .next()
        .unwrap_or("");
    if normalize_name(info_name) != parsed.name {
        return Err(invalid(
            wheel_path,
            format!("{info_dir} does not belong to project {}", parsed.name),
        ));
    }
    let wheel_meta = wheel.read_text(&format!("{info_dir}/WHEEL"), MAX_WHEEL_META)?;
    let wheel_version = header(&wheel_meta, "Wheel-Version").unwrap_or_default();
    if wheel_version.split('.').next() != Some("1") {
        return Err(invalid(
            wheel_path,
            format!("Wheel-Version `{wheel_version}` is not supported (1.x is)"),
        ));
    }
    // METADATA's Requires-Python (the index may not state it): the target must satisfy it.
    let metadata = format!("{info_dir}/METADATA");
    if members.iter().any(|m| m.name == metadata) {
        let meta = wheel.read_head(&metadata, MAX_WHEEL_META)?;
        if let Some(r) = header(&meta, "Requires-Python")
            && super::markers::python_satisfies(&r, target.version) == Some(false)
        {
            return Err(invalid(
                wheel_path,
                format!(
                    "METADATA says Requires-Python: {r}, the target is CPython {}.{}; pin a version that supports it",
                    target.version.0, target.version.1
                ),
            ));
        }
    }
    // pip names the headers folder after the project name as the wheel file spells it.
    let dist_name = file_name.split('-').next().unwrap_or(info_name).to_string();

    let sp = target.site_packages();
    let interpreter = target.interpreter();
    let record_name = format!("{info_dir}/RECORD");
    let entry_points = if members
        .iter()
        .any(|m| m.name == format!("{info_dir}/entry_points.txt"))
    {
        script_entry_points(
            wheel_path,
            &wheel.read_text(&format!("{info_dir}/entry_points.txt"), MAX_ENTRY_POINTS)?,
        )?
    } else {
        Vec::new()
    };
    let ep_names: BTreeSet<&str> = entry_points.iter().map(|(n, _, _)| n.as_str()).collect();

    let mut entries = Vec::new();
    // wheel RECORD path -> installed RECORD path; installed paths whose bytes changed.
    let mut installed: BTreeMap<String, String> = BTreeMap::new();
    let mut changed: BTreeMap<String, (String, String)> = BTreeMap::new();
    let mut generated: Vec<(String, String, String)> = Vec::new();

    for m in &members {
        let top = m.name.split('/').next().unwrap_or("");
        let (dest_dir, rel, script) = if top.ends_with(".data") {
            let rest = &m.name[top.len()..].trim_start_matches('/');
            let Some((key, sub)) = rest.split_once('/') else {
                return Err(invalid(
                    wheel_path,
                    format!(
                        "unexpected file {}: .data contents must be <scheme key>/<path>",
                        m.name
                    ),
                ));
            };
            let dir = match key {
                "purelib" | "platlib" => sp.clone(),
                "scripts" => target.scripts_dir(),
                "headers" => format!("{}/{dist_name}", target.include_dir()),
                "data" => target.prefix.trim_end_matches('/').to_string(),
                other => {
                    return Err(invalid(
                        wheel_path,
                        format!(
                            "unknown scheme key `{other}` in {} (valid: data, headers, platlib, purelib, scripts)",
                            m.name
                        ),
                    ));
                }
            };
            (dir, sub, key == "scripts")
        } else {
            (sp.clone(), m.name.as_str(), false)
        };
        let parts = safe_components(wheel_path, &m.name, rel)?;
        let dest = format!("{dest_dir}/{}", parts.join("/"));
        if script {
            // setuptools' own wrappers for entry points are replaced by pip's launchers.
            let base = parts.last().copied().unwrap_or("");
            let lower = base.to_ascii_lowercase();
            let stem = if lower.ends_with(".exe") || lower.ends_with(".pya") {
                &base[..base.len() - 4]
            } else if lower.ends_with("-script.py") {
                &base[..base.len() - 10]
            } else {
                base
            };
            if ep_names.contains(stem) {
                continue;
            }
        }
        if m.name == record_name {
            installed.insert(m.name.clone(), relative(&sp, &dest));
            continue; // regenerated below
        }
        let record_path = relative(&sp, &dest);
        let image_path = dest.trim_start_matches('/').to_string();
        if script && wheel.starts_with(&m.name, b"#!python")? {
            let data = wheel.read(&m.name, MAX_SCRIPT)?;
            let rest = match data.iter().position(|&b| b == b'\n') {
                Some(i) => &data[i + 1..],
                None => &[][..],
            };
            let mut new = format!("#!{interpreter}\n").into_bytes();
            new.extend_from_slice(rest);
            changed.insert(
                record_path.clone(),
                (record_hash(&new), new.len().to_string()),
            );
            entries.push(Entry {
                path: image_path,
                mode: 0o755,
                content: Content::Inline(Arc::from(new)),
            });
        } else {
            entries.push(Entry {
                path: image_path,
                mode: if script || m.executable { 0o755 } else { 0o644 },
                content: Content::ZipMember {
                    archive: wheel_path.to_path_buf(),
                    name: m.name.clone(),
                    size: m.size,
                },
            });
        }
        installed.insert(m.name.clone(), record_path);
    }

    let mut add_generated = |path: String, mode: u32, data: Vec<u8>| {
        let record_path = relative(&sp, &path);
        generated.push((record_path, record_hash(&data), data.len().to_string()));
        entries.push(Entry {
            path: path.trim_start_matches('/').to_string(),
            mode,
            content: Content::Inline(Arc::from(data)),
        });
    };
    for (name, module, attr) in &entry_points {
        let text = launcher_script(&interpreter, module, attr);
        add_generated(
            format!("{}/{name}", target.scripts_dir()),
            0o755,
            text.into_bytes(),
        );
    }
    add_generated(
        format!("{sp}/{info_dir}/INSTALLER"),
        0o644,
        INSTALLER.to_vec(),
    );
    add_generated(format!("{sp}/{info_dir}/REQUESTED"), 0o644, Vec::new());

    // pip's get_csv_rows_for_installed + _normalized_outrows.
    let record_text = wheel.read_text(&record_name, MAX_RECORD)?;
    let mut rows: Vec<(String, String, String)> = Vec::new();
    for line in record_text.lines() {
        if line.is_empty() {
            continue;
        }
        let mut row = parse_csv_line(line).into_iter();
        let old = row.next().unwrap_or_default();
        let new = installed.remove(&old).unwrap_or_else(|| old.clone());
        let (hash, size) = match changed.get(&new) {
            Some((h, s)) => (h.clone(), s.clone()),
            None => (
                row.next().unwrap_or_default(),
                row.next().unwrap_or_default(),
            ),
        };
        if new == relative(&sp, &format!("{sp}/{record_name}")) {
            rows.push((new, String::new(), String::new()));
        } else {
            rows.push((new, hash, size));
        }
    }
    rows.extend(generated);
    rows.extend(
        installed
            .into_values()
            .map(|p| (p, String::new(), String::new())),
    );
    rows.sort();
    rows.dedup();
    let record = write_csv(&rows);
    entries.push(Entry {
        path: format!("{sp}/{record_name}")
            .trim_start_matches('/')
            .to_string(),
        mode: 0o644,
        content: Content::Inline(Arc::from(record)),
    });
    Ok(entries)
}

/// sha256 of an entry's bytes (inline or streamed out of its wheel).
pub(crate) fn entry_sha256(e: &Entry) -> Result<[u8; 32], PythonError> {
    match &e.content {
        Content::Inline(b) => Ok(Sha256::digest(b).into()),
        Content::ZipMember { archive, name, .. } => {
            let mut wheel = Wheel::open(archive)?;
            let mut f = wheel
                .zip
                .by_name(name)
                .map_err(|err| invalid(archive, format!("{name}: {err}")))?;
            sha256_reader(&mut f).map_err(|err| invalid(archive, format!("{name}: {err}")))
        }
        Content::File { path, .. } => {
            let mut file = File::open(path).map_err(|err| PythonError::io(path, err))?;
            sha256_reader(&mut file).map_err(|err| PythonError::io(path, err))
        }
        Content::Fetched { sha256, .. } => {
            let mut out = [0u8; 32];
            hex::decode_to_slice(sha256, &mut out)
                .map_err(|err| invalid(Path::new(sha256), err.to_string()))?;
            Ok(out)
        }
        Content::Dir | Content::Symlink(_) => Ok([0; 32]),
    }
}

/// The license fields of a wheel's `METADATA` (for the SBOM): `License-Expression` (PEP 639),
/// `License` (free text; `None` when it spans several lines) and the `License :: …`
/// classifiers, as written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LicenseMetadata {
    pub expression: Option<String>,
    pub license: Option<String>,
    pub classifiers: Vec<String>,
}

/// Reads the license fields from the `*.dist-info/METADATA` of a wheel (the headers only).
pub fn wheel_license(wheel_path: &Path) -> Result<LicenseMetadata, PythonError> {
    let mut wheel = Wheel::open(wheel_path)?;
    let name = wheel
        .members()?
        .into_iter()
        .map(|m| m.name)
        .find(|n| {
            n.strip_suffix("/METADATA")
                .is_some_and(|d| d.ends_with(".dist-info") && !d.contains('/'))
        })
        .ok_or_else(|| invalid(wheel_path, "no .dist-info/METADATA"))?;
    let text = wheel.read(&name, MAX_RECORD)?;
    let text = String::from_utf8_lossy(&text);
    let mut out = LicenseMetadata::default();
    let mut last: Option<String> = None;
    for line in text.lines() {
        if line.is_empty() {
            break;
        }
        if line.starts_with([' ', '\t']) {
            // a continuation: a multi-line License is free text, not an identifier
            if last.as_deref() == Some("license") {
                out.license = None;
            }
            continue;
        }
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_string());
        match k.as_str() {
            "license-expression" if !v.is_empty() => out.expression = Some(v),
            "license" if !v.is_empty() => out.license = Some(v),
            "classifier" if v.starts_with("License ::") => out.classifiers.push(v),
            _ => {}
        }
        last = Some(k);
    }
    Ok(out)
}

/// The value of an RFC 822 style header (`Name: value`) in METADATA / WHEEL.
fn header(text: &str, key: &str) -> Option<String> {
    text.lines().take_while(|l| !l.is_empty()).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case(key)
            .then(|| v.trim().to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths() {
        let sp = "/usr/local/lib/python3.11/site-packages";
        assert_eq!(
            relative(sp, "/usr/local/lib/python3.11/site-packages/six.py"),
            "six.py"
        );
        assert_eq!(relative(sp, "/usr/local/bin/tool"), "../../../bin/tool");
        assert_eq!(
            relative(sp, "/usr/local/include/python3.11/Pkg/a.h"),
            "../../../include/python3.11/Pkg/a.h"
        );
    }

    #[test]
    fn csv_round_trip() {
        assert_eq!(parse_csv_line("a,b,c"), ["a", "b", "c"]);
        assert_eq!(parse_csv_line("\"a,b\",\"x\"\"y\",3"), ["a,b", "x\"y", "3"]);
        assert_eq!(parse_csv_line("a,,"), ["a", "", ""]);
        let rows = vec![
            ("a,b".to_string(), "x\"y".to_string(), "3".to_string()),
            ("c".to_string(), String::new(), String::new()),
        ];
        assert_eq!(write_csv(&rows), b"\"a,b\",\"x\"\"y\",3\r\nc,,\r\n");
    }

    #[test]
    fn launcher_matches_pip() {
        let s = launcher_script("/usr/local/bin/python3.11", "six", "main");
        assert_eq!(
            s,
            "#!/usr/local/bin/python3.11\n# -*- coding: utf-8 -*-\nimport re\nimport sys\nfrom six import main\nif __name__ == '__main__':\n    sys.argv[0] = re.sub(r'(-script\\.pyw|\\.exe)?$', '', sys.argv[0])\n    sys.exit(main())\n"
        );
        let s = launcher_script("/p", "pkg.cli", "App.run");
        assert!(s.contains("from pkg.cli import App\n"));
        assert!(s.contains("sys.exit(App.run())"));
    }

    #[test]
    fn record_hash_format() {
        // sha256 of "" in urlsafe base64 without padding.
        assert_eq!(
            record_hash(b""),
            "sha256=47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU"
        );
    }

    #[test]
    fn entry_points_parse() {
        let t = "[console_scripts]\nfoo = pkg.cli:main [extra]\nbar=pkg:App.run\n\n[other]\nx = y:z\n[gui_scripts]\ng = pkg.gui:start\n";
        let eps = script_entry_points(Path::new("w.whl"), t).unwrap();
        assert_eq!(
            eps,
            [
                ("foo".into(), "pkg.cli".into(), "main".into()),
                ("bar".into(), "pkg".into(), "App.run".into()),
                ("g".into(), "pkg.gui".into(), "start".into()),
            ]
        );
        assert!(script_entry_points(Path::new("w.whl"), "[console_scripts]\nfoo = pkg\n").is_err());
        assert!(
            script_entry_points(Path::new("w.whl"), "[console_scripts]\n../x = a:b\n").is_err()
        );
    }

    #[test]
    fn unsafe_members() {
        let w = Path::new("w.whl");
        assert!(safe_components(w, "a/../../x", "a/../../x").is_err());
        assert!(safe_components(w, "/etc/passwd", "/etc/passwd").is_err());
        assert!(safe_components(w, "a\\b", "a\\b").is_err());
        assert!(safe_components(w, "C:/x", "C:/x").is_err());
        assert_eq!(safe_components(w, "a/./b", "a/./b").unwrap(), ["a", "b"]);
    }

    /// A wheel whose one metadata member is `big` bytes of repeated `line` (deflated: a few
    /// hundred KiB on disk), the rest minimal and valid.
    fn wheel_with(dir: &Path, member: &str, line: &str, big: u64) -> PathBuf {
        use std::io::Write;
        let path = dir.join("bomb-1.0-py3-none-any.whl");
        let mut zw = zip::ZipWriter::new(File::create(&path).unwrap());
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .compression_level(Some(1))
            .large_file(true);
        let small = [
            ("bomb/__init__.py", "".to_string()),
            (
                "bomb-1.0.dist-info/WHEEL",
                "Wheel-Version: 1.0\n".to_string(),
            ),
            (
                "bomb-1.0.dist-info/entry_points.txt",
                "[console_scripts]\nb = bomb:main\n".to_string(),
            ),
            (
                "bomb-1.0.dist-info/RECORD",
                "bomb/__init__.py,,\n".to_string(),
            ),
        ];
        for (name, text) in small {
            zw.start_file(name, opts).unwrap();
            if name.ends_with(member) {
                let chunk = line.repeat((1 << 20) / line.len() + 1);
                let mut left = big;
                while left > 0 {
                    let n = left.min(chunk.len() as u64) as usize;
                    zw.write_all(&chunk.as_bytes()[..n]).unwrap();
                    left -= n as u64;
                }
            } else {
                zw.write_all(text.as_bytes()).unwrap();
            }
        }
        zw.finish().unwrap();
        path
    }

    fn target() -> PythonTarget {
        PythonTarget {
            version: (3, 11),
            prefix: "/usr/local".into(),
            libc: super::super::Libc::Glibc(2, 36),
            arch: "x86_64".into(),
            site_packages_dir: None,
        }
    }

    /// Metadata members are inflated and parsed whole: a 5 MB wheel with a RECORD of
    /// gigabytes took 10.7 GB of memory. Each is capped, and the error names wheel and member.
    #[test]
    fn metadata_bombs_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            ("RECORD", "a/b.py,sha256=x,1\n", MAX_RECORD),
            ("WHEEL", "Tag: py3-none-any\n", MAX_WHEEL_META),
            ("entry_points.txt", "# padding\n", MAX_ENTRY_POINTS),
        ];
        for (member, line, cap) in cases {
            let w = wheel_with(dir.path(), member, line, cap + 1);
            assert!(std::fs::metadata(&w).unwrap().len() < cap / 20, "{member}");
            let e = match wheel_entries(&w, &target()) {
                Ok(_) => panic!("{member} of {} bytes was read", cap + 1),
                Err(e) => e.to_string(),
            };
            assert!(
                e.contains("bomb-1.0-py3-none-any.whl")
                    && e.contains(&format!("bomb-1.0.dist-info/{member}"))
                    && e.contains("larger than"),
                "{e}"
            );
            if member == "entry_points.txt" {
                // At the cap it is read (and parsed) as usual.
                let w = wheel_with(dir.path(), member, line, cap - (cap % line.len() as u64));
                wheel_entries(&w, &target()).unwrap();
            }
        }
    }
}
