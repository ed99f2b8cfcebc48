//! PEP 751 `pylock.toml`: every package with its version, an optional marker and the exact
//! files (wheels, sdist) with their hashes. The index is not consulted: the lock names the files.

use std::path::Path;

use toml::Spanned;

use super::index::{FileLink, percent_decode};
use super::markers::{self, Environment};
use super::{Origin, Pin, PythonError, normalize_name};

#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
struct Lock {
    lock_version: Spanned<String>,
    #[serde(default)]
    environments: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    default_groups: Vec<String>,
    #[serde(default)]
    packages: Vec<Package>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
struct Package {
    name: Spanned<String>,
    version: Option<String>,
    marker: Option<String>,
    #[serde(default)]
    wheels: Vec<LockFile>,
    sdist: Option<LockFile>,
    vcs: Option<toml::Value>,
    directory: Option<toml::Value>,
    archive: Option<toml::Value>,
}

#[derive(Debug, serde::Deserialize)]
struct LockFile {
    name: Option<String>,
    url: Option<String>,
    path: Option<String>,
    #[serde(default)]
    hashes: std::collections::BTreeMap<String, String>,
}

/// Byte offsets where lines start, so each origin costs a binary search, not a scan.
fn line_starts(text: &str) -> Vec<usize> {
    std::iter::once(0)
        .chain(text.match_indices('\n').map(|(i, _)| i + 1))
        .collect()
}

fn line_of(starts: &[usize], offset: usize) -> usize {
    starts.partition_point(|&s| s <= offset).max(1)
}

/// Largest lock read (a lock of 10 000 packages with a few wheels each is about 10 MiB).
pub const MAX_FILE_BYTES: u64 = 16 << 20;

/// Reads the lock: a regular file of at most [`MAX_FILE_BYTES`].
fn read_capped(path: &Path) -> Result<String, PythonError> {
    use std::io::Read;
    let io = |e| PythonError::io(path, e);
    let meta = std::fs::metadata(path).map_err(io)?;
    if !meta.is_file() {
        return Err(io(std::io::Error::other("not a regular file")));
    }
    let mut buf = Vec::new();
    std::fs::File::open(path)
        .map_err(io)?
        .take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut buf)
        .map_err(io)?;
    if buf.len() as u64 > MAX_FILE_BYTES {
        return Err(io(std::io::Error::other(format!(
            "larger than {} MiB",
            MAX_FILE_BYTES >> 20
        ))));
    }
    String::from_utf8(buf).map_err(|_| {
        io(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "not valid UTF-8",
        ))
    })
}

/// Reads the lock, evaluates markers for `env` (no extras; the lock's default groups) and
/// returns one pin per package with its files.
pub(crate) fn pins_for(path: &Path, env: &Environment) -> Result<Vec<Pin>, PythonError> {
    let text = read_capped(path)?;
    let starts = line_starts(&text);
    let file: std::sync::Arc<Path> = path.into();
    let origin = |offset: usize| Origin {
        file: file.clone(),
        line: line_of(&starts, offset),
    };
    let lock: Lock = toml::from_str(&text).map_err(|e| PythonError::Syntax {
        origin: origin(e.span().map_or(0, |s| s.start)),
        message: e.message().to_string(),
    })?;
    let major = lock.lock_version.get_ref().split('.').next().unwrap_or("");
    if major != "1" {
        return Err(PythonError::Unsupported {
            origin: origin(lock.lock_version.span().start),
            message: format!(
                "lock-version {} is not supported (1.x is)",
                lock.lock_version.get_ref()
            ),
        });
    }
    let mut env = env.clone();
    env.dependency_groups = lock
        .default_groups
        .iter()
        .map(|g| normalize_name(g))
        .collect();
    let eval = |m: &str, at: usize| {
        markers::evaluate(m, &env).map_err(|message| PythonError::Syntax {
            origin: origin(at),
            message,
        })
    };
    if let Some(envs) = &lock.environments {
        let mut any = false;
        for m in envs.get_ref() {
            any |= eval(m, envs.span().start)?;
        }
        if !any {
            return Err(PythonError::Unsupported {
                origin: origin(envs.span().start),
                message: format!(
                    "the lock supports none of this target's environments ({})",
                    envs.get_ref().join(" | ")
                ),
            });
        }
    }
    let base = path.parent().unwrap_or(Path::new("."));
    let mut out: Vec<Pin> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for p in &lock.packages {
        let at = p.name.span().start;
        let name = normalize_name(p.name.get_ref());
        if let Some(m) = &p.marker
            && !eval(m, at)?
        {
            continue;
        }
        if p.vcs.is_some() || p.directory.is_some() || p.archive.is_some() {
            return Err(PythonError::Unsupported {
                origin: origin(at),
                message: format!(
                    "package `{name}`: vcs, directory and archive sources are not supported; lock a wheel"
                ),
            });
        }
        let Some(version) = p.version.clone() else {
            return Err(PythonError::Unpinned {
                origin: origin(at),
                package: name,
                requirement: "(no version)".into(),
            });
        };
        if !seen.insert(name.clone()) {
            return Err(PythonError::Duplicate {
                origin: origin(at),
                package: name,
            });
        }
        let mut files = Vec::new();
        for f in p.wheels.iter().chain(p.sdist.iter()) {
            let Some(sha) = f.hashes.get("sha256") else {
                return Err(PythonError::MissingHash {
                    origin: origin(at),
                    package: name,
                });
            };
            let (url_or_path, from_url) = match (&f.url, &f.path) {
                (Some(u), _) => (u.clone(), true),
                (None, Some(p)) => (base.join(p).to_string_lossy().into_owned(), false),
                (None, None) => {
                    return Err(PythonError::Syntax {
                        origin: origin(at),
                        message: format!("package `{name}`: a file needs `url` or `path`"),
                    });
                }
            };
            let filename = match &f.name {
                Some(n) => n.clone(),
                None => {
                    let tail = url_or_path.split(['?', '#']).next().unwrap_or("");
                    let sep: &[char] = if from_url { &['/'] } else { &['/', '\\'] };
                    let last = tail.rsplit(sep).next().unwrap_or("");
                    if from_url {
                        percent_decode(last)
                    } else {
                        last.to_string()
                    }
                }
            };
            files.push(FileLink {
                filename,
                url_or_path,
                sha256: Some(sha.to_ascii_lowercase()),
                ..FileLink::default()
            });
        }
        out.push(Pin {
            name,
            version,
            hashes: Vec::new(),
            origin: origin(at),
            files: Some(files),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::python::{Libc, PythonTarget};

    fn env() -> Environment {
        Environment::for_target(&PythonTarget {
            version: (3, 11),
            prefix: "/usr/local".into(),
            libc: Libc::Glibc(2, 36),
            arch: "x86_64".into(),
            site_packages_dir: None,
        })
    }

    const LOCK: &str = r#"lock-version = "1.0"
environments = ["sys_platform == 'linux'"]
requires-python = ">=3.9"
created-by = "test"

[[packages]]
name = "Six"
version = "1.16.0"
wheels = [
  { url = "https://files.example/six-1.16.0-py2.py3-none-any.whl", upload-time = 2024-01-01T00:00:00Z, size = 11053, hashes = { sha256 = "AA" } },
]

[[packages]]
name = "colorama"
version = "0.4.6"
marker = "sys_platform == 'win32'"
wheels = [{ name = "colorama-0.4.6-py2.py3-none-any.whl", url = "https://x/c.whl", hashes = { sha256 = "bb" } }]

[[packages]]
name = "local-thing"
version = "2.0"
marker = "'dev' in dependency_groups"
sdist = { path = "dist/local_thing-2.0.tar.gz", hashes = { sha256 = "cc" } }

[[packages]]
name = "devtool"
version = "1.0"
marker = "'lint' in dependency_groups"
wheels = [{ path = "w/devtool-1.0-py3-none-any.whl", hashes = { sha256 = "dd" } }]
"#;

    #[test]
    fn reads_packages_markers_and_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pylock.toml");
        let text = LOCK.replace("created-by", "default-groups = [\"dev\"]\ncreated-by");
        std::fs::write(&p, text).unwrap();
        let pins = pins_for(&p, &env()).unwrap();
        let names: Vec<_> = pins.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["six", "local-thing"]);
        let six = &pins[0];
        assert_eq!(six.version, "1.16.0");
        assert_eq!(six.origin.line, 8);
        let files = six.files.as_ref().unwrap();
        assert_eq!(files[0].filename, "six-1.16.0-py2.py3-none-any.whl");
        assert_eq!(files[0].sha256.as_deref(), Some("aa"));
        let lt = pins[1].files.as_ref().unwrap();
        assert_eq!(lt[0].filename, "local_thing-2.0.tar.gz");
        assert_eq!(
            lt[0].url_or_path,
            dir.path()
                .join("dist/local_thing-2.0.tar.gz")
                .to_string_lossy()
        );
    }

    #[test]
    fn errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pylock.toml");
        std::fs::write(
            &p,
            LOCK.replace("sys_platform == 'linux'", "sys_platform == 'darwin'"),
        )
        .unwrap();
        let e = pins_for(&p, &env()).unwrap_err().to_string();
        assert!(
            e.contains("pylock.toml:2") && e.contains("none of this target"),
            "{e}"
        );

        std::fs::write(
            &p,
            LOCK.replace("hashes = { sha256 = \"AA\" }", "hashes = { md5 = \"AA\" }"),
        )
        .unwrap();
        let e = pins_for(&p, &env()).unwrap_err().to_string();
        assert!(
            e.contains("pylock.toml:7") && e.contains("`six`") && e.contains("hash"),
            "{e}"
        );

        std::fs::write(&p, LOCK.replace("version = \"1.16.0\"\n", "")).unwrap();
        let e = pins_for(&p, &env()).unwrap_err().to_string();
        assert!(
            e.contains("pylock.toml:7") && e.contains("not pinned"),
            "{e}"
        );

        std::fs::write(
            &p,
            LOCK.replace("lock-version = \"1.0\"", "lock-version = \"2.0\""),
        )
        .unwrap();
        let e = pins_for(&p, &env()).unwrap_err().to_string();
        assert!(e.contains("pylock.toml:1") && e.contains("2.0"), "{e}");

        std::fs::write(&p, "lock-version = \"1.0\"\n[[packages]]\nname = \n").unwrap();
        let e = pins_for(&p, &env()).unwrap_err().to_string();
        assert!(e.contains("pylock.toml:3"), "{e}");
    }
}
