//! Detecting the target interpreter from a base image, without running or unpacking it.
//!
//! Sources, in order: the `[python]` table (its values always win), the `PYTHON_VERSION`
//! variable of the base config (official `python` images), then the base layers' tar headers,
//! streamed one layer after another (gzip, zstd or plain; later layers win, whiteouts delete):
//! `usr/local/lib/python3.X/os.py` or `usr/lib/python3.X/os.py` locate the interpreter,
//! `usr/lib/python3/dist-packages` (or a dpkg database) marks Debian's layout, the `libc6`
//! entry of `var/lib/dpkg/status` or `libc-2.X.so` names give the glibc version,
//! `lib/ld-musl-*.so.1` marks musl (version from `lib/apk/db/installed`).

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use super::{Libc, PythonError, PythonTarget};
use crate::spec::PythonSpec;

/// glibc assumed when the base has glibc but its version cannot be read (manylinux2014).
const FALLBACK_GLIBC: (u32, u32) = (2, 17);

/// Small files whose contents detection reads (kept per layer, later layers win).
const READ_FILES: [&str; 2] = ["var/lib/dpkg/status", "lib/apk/db/installed"];

/// What the base's file system shows, after applying every layer.
#[derive(Debug, Default)]
struct Scan {
    /// Every path present (no leading `/`, no trailing `/`).
    paths: BTreeSet<String>,
    /// Contents of [`READ_FILES`] present in the final file system.
    files: BTreeMap<String, Vec<u8>>,
}

impl Scan {
    fn remove_tree(&mut self, path: &str) {
        self.paths.remove(path);
        self.files.remove(path);
        let prefix = format!("{path}/");
        let under: Vec<String> = self
            .paths
            .range(prefix.clone()..)
            .take_while(|p| p.starts_with(&prefix))
            .cloned()
            .collect();
        for p in under {
            self.paths.remove(&p);
            self.files.remove(&p);
        }
    }

    fn has(&self, path: &str) -> bool {
        self.paths.contains(path)
    }
}

fn normalize(p: &str) -> String {
    let p = p.trim_start_matches("./").trim_start_matches('/');
    p.trim_end_matches('/').to_string()
}

/// Streams one layer blob's tar headers into `scan`.
/// A base layer's bytes, opened by digest (a local file, or a stream from the registry).
pub type OpenLayer<'a> = dyn Fn(&str) -> Option<std::io::Result<Box<dyn Read + 'a>>> + 'a;

fn scan_layer(label: &Path, raw: Box<dyn Read + '_>, scan: &mut Scan) -> Result<(), PythonError> {
    let path = label;
    let io = |e| PythonError::io(path, e);
    let mut f = BufReader::new(raw);
    let magic = f.fill_buf().map_err(io)?.to_vec();
    let reader: Box<dyn Read> = if magic.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::MultiGzDecoder::new(f))
    } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(zstd::stream::read::Decoder::with_buffer(f).map_err(io)?)
    } else {
        Box::new(f)
    };
    let mut ar = tar::Archive::new(reader);
    // Whiteouts apply to lower layers only: collect this layer's additions separately.
    let mut added: Vec<String> = Vec::new();
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    for entry in ar.entries().map_err(io)? {
        let mut entry = entry.map_err(io)?;
        let raw = entry.path().map_err(io)?.to_string_lossy().into_owned();
        let p = normalize(&raw);
        if p.is_empty() {
            continue;
        }
        let (dir, name) = match p.rsplit_once('/') {
            Some((d, n)) => (d.to_string(), n),
            None => (String::new(), p.as_str()),
        };
        if name == ".wh..wh..opq" {
            if !dir.is_empty() {
                scan.remove_tree(&dir);
                scan.paths.insert(dir);
            }
            continue;
        }
        if let Some(gone) = name.strip_prefix(".wh.") {
            let gone = if dir.is_empty() {
                gone.to_string()
            } else {
                format!("{dir}/{gone}")
            };
            scan.remove_tree(&gone);
            continue;
        }
        if READ_FILES.contains(&p.as_str()) && entry.header().entry_type().is_file() {
            let mut buf = Vec::new();
            entry.read_to_end(&mut buf).map_err(io)?;
            files.push((p.clone(), buf));
        }
        added.push(p);
    }
    for p in added {
        // A file replacing a directory (or the reverse) hides what was under it.
        scan.files.remove(&p);
        scan.paths.insert(p);
    }
    scan.files.extend(files);
    Ok(())
}

/// `python3.X` → `(3, X)`.
fn py_dir_version(name: &str) -> Option<(u32, u32)> {
    let rest = name.strip_prefix("python3.")?;
    Some((3, rest.parse().ok()?))
}

/// `3.11.7` → `(3, 11)`.
fn parse_xy(v: &str) -> Option<(u32, u32)> {
    let mut it = v.trim().split(['.', '-', '+', '~']);
    let a = it.next()?.parse().ok()?;
    let b = it.next()?.parse().ok()?;
    Some((a, b))
}

/// The `Version` of one package in a dpkg status / apk installed database.
fn db_version(text: &str, package: &str, pkg_key: &str, ver_key: &str) -> Option<String> {
    for stanza in text.split("\n\n") {
        let mut name = None;
        let mut version = None;
        for line in stanza.lines() {
            if let Some(v) = line.strip_prefix(pkg_key) {
                name = Some(v.trim());
            } else if let Some(v) = line.strip_prefix(ver_key) {
                version = Some(v.trim());
            }
        }
        if name == Some(package) {
            return version.map(str::to_string);
        }
    }
    None
}

/// A Python installation found in the base.
#[derive(Debug, Clone)]
struct Found {
    version: (u32, u32),
    prefix: String,
    site_packages: Option<String>,
}

fn find_pythons(scan: &Scan, explain: &mut Vec<String>) -> Vec<Found> {
    let mut out = Vec::new();
    for (prefix, lib) in [("/usr/local", "usr/local/lib"), ("/usr", "usr/lib")] {
        let mut versions: Vec<(u32, u32)> = scan
            .paths
            .range(format!("{lib}/python3.")..)
            .take_while(|p| p.starts_with(&format!("{lib}/python3.")))
            .filter_map(|p| {
                let rest = &p[lib.len() + 1..];
                let (dir, file) = rest.split_once('/')?;
                (file == "os.py").then(|| py_dir_version(dir)).flatten()
            })
            .collect();
        versions.sort();
        versions.dedup();
        for v in versions.into_iter().rev() {
            let debian = prefix == "/usr"
                && (scan.has("usr/lib/python3/dist-packages")
                    || scan.has("var/lib/dpkg/status")
                    || scan.has("etc/debian_version"));
            explain.push(format!(
                "found /{lib}/python{}.{}/os.py: CPython {}.{} under {prefix}",
                v.0, v.1, v.0, v.1
            ));
            let site_packages = if debian {
                explain.push(
                    "  Debian layout (dist-packages / dpkg database): packages go to /usr/lib/python3/dist-packages"
                        .into(),
                );
                Some("/usr/lib/python3/dist-packages".to_string())
            } else {
                None
            };
            out.push(Found {
                version: v,
                prefix: prefix.to_string(),
                site_packages,
            });
        }
    }
    out
}

fn find_libc(scan: &Scan, explain: &mut Vec<String>) -> Option<Libc> {
    // musl: the dynamic loader, version from apk's database.
    let musl = scan
        .paths
        .iter()
        .find(|p| {
            let n = p.rsplit('/').next().unwrap_or("");
            n.starts_with("ld-musl-") && n.ends_with(".so.1")
        })
        .cloned();
    if let Some(loader) = musl {
        let apk = scan
            .files
            .get("lib/apk/db/installed")
            .map(|b| String::from_utf8_lossy(b).into_owned());
        let version = apk
            .as_deref()
            .and_then(|t| db_version(t, "musl", "P:", "V:"))
            .and_then(|v| parse_xy(&v).map(|xy| (v, xy)));
        return Some(match version {
            Some((v, (a, b))) => {
                explain.push(format!(
                    "musl {a}.{b}: /{loader}, package musl {v} in /lib/apk/db/installed"
                ));
                Libc::Musl(a, b)
            }
            None => {
                explain.push(format!(
                    "musl: /{loader} (no apk database with a version: assuming musl 1.1)"
                ));
                Libc::Musl(1, 1)
            }
        });
    }
    if let Some(status) = scan.files.get("var/lib/dpkg/status") {
        let text = String::from_utf8_lossy(status);
        if let Some(v) = db_version(&text, "libc6", "Package:", "Version:")
            && let Some((a, b)) = parse_xy(&v)
        {
            explain.push(format!(
                "glibc {a}.{b}: package libc6 {v} in /var/lib/dpkg/status"
            ));
            return Some(Libc::Glibc(a, b));
        }
    }
    let mut libc6 = None;
    for p in &scan.paths {
        let Some((dir, n)) = p.rsplit_once('/') else {
            continue;
        };
        if !(dir.starts_with("lib") || dir.starts_with("usr/lib")) {
            continue;
        }
        if let Some(v) = n.strip_prefix("libc-").and_then(|r| r.strip_suffix(".so"))
            && let Some((a, b)) = parse_xy(v)
        {
            explain.push(format!("glibc {a}.{b}: /{p}"));
            return Some(Libc::Glibc(a, b));
        }
        if n == "libc.so.6" && libc6.is_none() {
            libc6 = Some(p.clone());
        }
    }
    libc6.map(|p| {
        explain.push(format!(
            "glibc: /{p} without a version (no dpkg entry for libc6): assuming glibc {}.{}",
            FALLBACK_GLIBC.0, FALLBACK_GLIBC.1
        ));
        Libc::Glibc(FALLBACK_GLIBC.0, FALLBACK_GLIBC.1)
    })
}

/// `PYTHON_VERSION=3.11.7` in the base config's `Env`.
fn env_python_version(config: &serde_json::Value) -> Option<(String, (u32, u32))> {
    config["config"]["Env"]
        .as_array()?
        .iter()
        .filter_map(|e| e.as_str())
        .find_map(|e| e.strip_prefix("PYTHON_VERSION="))
        .and_then(|v| parse_xy(v).map(|xy| (v.to_string(), xy)))
}

/// Decides the target interpreter for one platform. Returns it with the lines that explain
/// where each value came from (printed by `--dry-run`).
///
/// `layers` are the base's `(digest, media type)` in image order; `locate` finds a layer blob
/// on local disk (an OCI layout's `blobs/sha256/<hex>`, or the cache for registry bases).
pub fn detect_target(
    config: &serde_json::Value,
    layers: &[(String, String)],
    locate: &dyn Fn(&str) -> Option<PathBuf>,
    oci_arch: &str,
    spec: Option<&PythonSpec>,
) -> Result<(PythonTarget, Vec<String>), PythonError> {
    let open = |digest: &str| -> Option<std::io::Result<Box<dyn Read>>> {
        let p = locate(digest)?;
        Some(File::open(p).map(|f| Box::new(f) as Box<dyn Read>))
    };
    detect_target_from(config, layers, &open, oci_arch, spec)
}

/// [`detect_target`] reading each layer through `open` (streamed; nothing is stored).
pub fn detect_target_from(
    config: &serde_json::Value,
    layers: &[(String, String)],
    open: &OpenLayer<'_>,
    oci_arch: &str,
    spec: Option<&PythonSpec>,
) -> Result<(PythonTarget, Vec<String>), PythonError> {
    let arch = PythonTarget::arch_from_oci(oci_arch);
    let mut explain = Vec::new();
    let spec_libc = spec.and_then(|s| s.libc.as_ref()).map(|(k, a, b)| {
        if k == "musl" {
            Libc::Musl(*a, *b)
        } else {
            Libc::Glibc(*a, *b)
        }
    });
    // A complete [python] table needs no look at the base.
    if let Some(s) = spec
        && let (Some(prefix), Some(libc)) = (&s.prefix, spec_libc)
    {
        explain.push("python: all from [python] in the spec".into());
        let t = PythonTarget {
            version: s.version,
            prefix: prefix.clone(),
            libc,
            arch,
            site_packages_dir: s.site_packages.clone(),
        };
        explain.push(format!("target: {t}, site-packages {}", t.site_packages()));
        return Ok((t, explain));
    }

    let env_version = env_python_version(config);
    if let Some((v, _)) = &env_version {
        explain.push(format!("base config sets PYTHON_VERSION={v}"));
    }
    let mut scan = Scan::default();
    let mut missing = Vec::new();
    for (digest, _media_type) in layers {
        match open(digest) {
            Some(r) => {
                let label = PathBuf::from(format!("base layer {digest}"));
                let r = r.map_err(|e| PythonError::io(&label, e))?;
                scan_layer(&label, r, &mut scan)?
            }
            None => missing.push(digest.clone()),
        }
    }
    if !layers.is_empty() {
        explain.push(format!(
            "read the tar headers of {} base layer(s) ({} paths)",
            layers.len() - missing.len(),
            scan.paths.len()
        ));
    }
    if !missing.is_empty() {
        explain.push(format!(
            "base layers not available locally, not read: {}",
            missing.join(", ")
        ));
    }
    let found = find_pythons(&scan, &mut explain);
    let detected_libc = find_libc(&scan, &mut explain);

    let no_python = |why: &str| PythonError::Detect {
        message: format!(
            "cannot detect the target Python from the base image: {why}; add a [python] table to the spec, e.g. [python] version = \"3.11\", prefix = \"/usr/local\", libc = \"glibc 2.36\""
        ),
    };

    // Version and prefix: the spec, else PYTHON_VERSION (+ /usr/local), else the layers.
    let (version, prefix, site_packages) = match spec {
        Some(s) => {
            explain.push(format!(
                "python {}.{}: from [python].version",
                s.version.0, s.version.1
            ));
            let same = found.iter().find(|f| f.version == s.version);
            let (prefix, sp) = match (&s.prefix, same) {
                (Some(p), _) => {
                    explain.push(format!("prefix {p}: from [python].prefix"));
                    (p.clone(), s.site_packages.clone())
                }
                (None, Some(f)) => {
                    explain.push(format!("prefix {}: detected", f.prefix));
                    (
                        f.prefix.clone(),
                        s.site_packages.clone().or(f.site_packages.clone()),
                    )
                }
                (None, None) => {
                    explain.push("prefix /usr/local: default".into());
                    ("/usr/local".to_string(), s.site_packages.clone())
                }
            };
            (s.version, prefix, sp)
        }
        None => {
            let pick = match &env_version {
                Some((_, v)) => found
                    .iter()
                    .find(|f| f.version == *v && f.prefix == "/usr/local")
                    .or_else(|| found.iter().find(|f| f.version == *v))
                    .cloned()
                    .or_else(|| {
                        explain.push(format!(
                            "no python{}.{} stdlib found in the layers: assuming prefix /usr/local",
                            v.0, v.1
                        ));
                        Some(Found {
                            version: *v,
                            prefix: "/usr/local".into(),
                            site_packages: None,
                        })
                    }),
                None => found.first().cloned(),
            };
            let Some(f) = pick else {
                return Err(no_python(if layers.is_empty() {
                    "it has no layers and its config sets no PYTHON_VERSION"
                } else {
                    "no PYTHON_VERSION in its config and no usr/local/lib/python3.X/os.py or usr/lib/python3.X/os.py in its layers"
                }));
            };
            if found.len() > 1 {
                explain.push(format!(
                    "several interpreters: using CPython {}.{} under {}",
                    f.version.0, f.version.1, f.prefix
                ));
            }
            (f.version, f.prefix, f.site_packages)
        }
    };

    let libc = match (spec_libc, detected_libc) {
        (Some(l), _) => {
            explain.push("libc: from [python].libc".into());
            l
        }
        (None, Some(l)) => l,
        (None, None) if spec.is_some() => {
            explain.push(format!(
                "libc not found in the base: assuming glibc {}.{}",
                FALLBACK_GLIBC.0, FALLBACK_GLIBC.1
            ));
            Libc::Glibc(FALLBACK_GLIBC.0, FALLBACK_GLIBC.1)
        }
        (None, None) => {
            return Err(no_python(
                "no C library found (no libc6 in var/lib/dpkg/status, no libc.so.6, no ld-musl-*.so.1)",
            ));
        }
    };
    let t = PythonTarget {
        version,
        prefix,
        libc,
        arch,
        site_packages_dir: site_packages,
    };
    explain.push(format!(
        "target: {t}, site-packages {}, scripts {}",
        t.site_packages(),
        t.scripts_dir()
    ));
    Ok((t, explain))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    enum E<'a> {
        F(&'a str, &'a [u8]),
        D(&'a str),
    }

    fn layer(dir: &Path, name: &str, entries: &[E], compress: &str) -> (String, String) {
        let mut b = tar::Builder::new(Vec::new());
        for e in entries {
            let mut h = tar::Header::new_gnu();
            match e {
                E::F(p, data) => {
                    h.set_size(data.len() as u64);
                    h.set_mode(0o644);
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_cksum();
                    b.append_data(&mut h, p, *data).unwrap();
                }
                E::D(p) => {
                    h.set_size(0);
                    h.set_mode(0o755);
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_cksum();
                    b.append_data(&mut h, p, &[][..]).unwrap();
                }
            }
        }
        let tar = b.into_inner().unwrap();
        let bytes = match compress {
            "gzip" => {
                let mut g = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                g.write_all(&tar).unwrap();
                g.finish().unwrap()
            }
            "zstd" => zstd::encode_all(&tar[..], 1).unwrap(),
            _ => tar,
        };
        std::fs::write(dir.join(name), bytes).unwrap();
        (name.to_string(), format!("media/{compress}"))
    }

    fn run(
        dir: &Path,
        config: serde_json::Value,
        layers: &[(String, String)],
        spec: Option<&PythonSpec>,
    ) -> Result<(PythonTarget, Vec<String>), PythonError> {
        let d = dir.to_path_buf();
        let locate = move |digest: &str| {
            let p = d.join(digest);
            p.exists().then_some(p)
        };
        detect_target(&config, layers, &locate, "arm64", spec)
    }

    const STATUS: &[u8] = b"Package: zlib1g\nStatus: install ok installed\nVersion: 1:1.2.13\n\nPackage: libc6\nStatus: install ok installed\nArchitecture: amd64\nVersion: 2.36-9+deb12u4\n\n";

    #[test]
    fn official_python_image() {
        let tmp = tempfile::tempdir().unwrap();
        let l1 = layer(
            tmp.path(),
            "l1",
            &[
                E::D("var/lib/dpkg/"),
                E::F("var/lib/dpkg/status", STATUS),
                E::F("usr/lib/x86_64-linux-gnu/libc.so.6", b"x"),
                E::D("usr/lib/python3/"),
            ],
            "gzip",
        );
        let l2 = layer(
            tmp.path(),
            "l2",
            &[
                E::F("usr/local/lib/python3.11/os.py", b""),
                E::D("usr/local/lib/python3.11/site-packages/"),
                E::F("usr/local/bin/python3.11", b""),
            ],
            "zstd",
        );
        let cfg = serde_json::json!({"config": {"Env": ["PATH=/usr/local/bin", "PYTHON_VERSION=3.11.7"]}});
        let (t, why) = run(tmp.path(), cfg, &[l1, l2], None).unwrap();
        assert_eq!(t.version, (3, 11));
        assert_eq!(t.prefix, "/usr/local");
        assert_eq!(t.libc, Libc::Glibc(2, 36));
        assert_eq!(t.arch, "aarch64");
        assert_eq!(t.site_packages(), "/usr/local/lib/python3.11/site-packages");
        let why = why.join("\n");
        assert!(why.contains("PYTHON_VERSION=3.11.7"), "{why}");
        assert!(why.contains("libc6 2.36-9+deb12u4"), "{why}");
        assert!(
            why.contains("found /usr/local/lib/python3.11/os.py"),
            "{why}"
        );
    }

    #[test]
    fn debian_python_and_whiteouts() {
        let tmp = tempfile::tempdir().unwrap();
        let l1 = layer(
            tmp.path(),
            "l1",
            &[
                E::F("./var/lib/dpkg/status", STATUS),
                E::F("./usr/lib/python3.9/os.py", b""),
                E::F("./usr/lib/python3.11/os.py", b""),
                E::D("./usr/lib/python3/dist-packages/"),
                E::F("./usr/local/lib/python3.12/os.py", b""),
            ],
            "none",
        );
        // The second layer deletes python3.11's stdlib and /usr/local's python.
        let l2 = layer(
            tmp.path(),
            "l2",
            &[
                E::F("usr/lib/.wh.python3.11", b""),
                E::F("usr/local/.wh..wh..opq", b""),
            ],
            "gzip",
        );
        let (t, why) = run(tmp.path(), serde_json::json!({}), &[l1, l2], None).unwrap();
        assert_eq!(t.version, (3, 9), "{why:?}");
        assert_eq!(t.prefix, "/usr");
        assert_eq!(t.site_packages(), "/usr/lib/python3/dist-packages");
        assert_eq!(t.interpreter(), "/usr/bin/python3.9");
        assert!(why.iter().any(|l| l.contains("Debian layout")), "{why:?}");
    }

    #[test]
    fn musl_and_old_glibc_names() {
        let tmp = tempfile::tempdir().unwrap();
        let l = layer(
            tmp.path(),
            "l",
            &[
                E::F("lib/ld-musl-aarch64.so.1", b""),
                E::F(
                    "lib/apk/db/installed",
                    b"C:Q1x\nP:busybox\nV:1.36.1-r5\n\nC:Q1y\nP:musl\nV:1.2.4-r2\nA:aarch64\n\n",
                ),
                E::F("usr/local/lib/python3.12/os.py", b""),
            ],
            "gzip",
        );
        let (t, _) = run(tmp.path(), serde_json::json!({}), &[l], None).unwrap();
        assert_eq!(t.libc, Libc::Musl(1, 2));
        assert_eq!(t.version, (3, 12));

        let l = layer(
            tmp.path(),
            "old",
            &[
                E::F("lib/x86_64-linux-gnu/libc-2.28.so", b""),
                E::F("usr/lib/python3.7/os.py", b""),
            ],
            "gzip",
        );
        let (t, _) = run(tmp.path(), serde_json::json!({}), &[l], None).unwrap();
        assert_eq!(t.libc, Libc::Glibc(2, 28));
        assert_eq!(t.site_packages(), "/usr/lib/python3.7/site-packages");
    }

    #[test]
    fn spec_values_win_and_missing_python_is_clear() {
        let tmp = tempfile::tempdir().unwrap();
        let l = layer(
            tmp.path(),
            "l",
            &[
                E::F("var/lib/dpkg/status", STATUS),
                E::F("usr/lib/python3.11/os.py", b""),
                E::D("usr/lib/python3/dist-packages"),
            ],
            "gzip",
        );
        let spec = PythonSpec {
            version: (3, 11),
            prefix: None,
            libc: Some(("glibc".into(), 2, 31)),
            site_packages: None,
        };
        let (t, _) = run(
            tmp.path(),
            serde_json::json!({}),
            std::slice::from_ref(&l),
            Some(&spec),
        )
        .unwrap();
        assert_eq!(t.libc, Libc::Glibc(2, 31));
        assert_eq!(t.prefix, "/usr");
        assert_eq!(t.site_packages(), "/usr/lib/python3/dist-packages");

        let full = PythonSpec {
            version: (3, 10),
            prefix: Some("/opt/py".into()),
            libc: Some(("musl".into(), 1, 2)),
            site_packages: Some("/opt/sp".into()),
        };
        // A complete table does not even read the layers.
        let (t, _) = run(
            tmp.path(),
            serde_json::json!({}),
            &[("absent".into(), "x".into())],
            Some(&full),
        )
        .unwrap();
        assert_eq!(t.site_packages(), "/opt/sp");
        assert_eq!(t.libc, Libc::Musl(1, 2));

        let err = run(tmp.path(), serde_json::json!({}), &[], None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("add a [python] table"), "{err}");
        let l = layer(tmp.path(), "nopy", &[E::F("bin/sh", b"")], "gzip");
        let err = run(tmp.path(), serde_json::json!({}), &[l], None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("no PYTHON_VERSION"), "{err}");
        assert!(err.contains("[python]"), "{err}");
    }
}
