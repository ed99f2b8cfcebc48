//! `requirements.txt` as a lock: `name[extras]==version ; marker --hash=sha256:...` lines,
//! `-r` includes (relative to the including file), comments and `\` continuations.
//!
//! The file must be complete (like `pip install --require-hashes --no-deps`): every line an
//! exact pin with at least one sha256 hash. Index options inside the file (`--index-url`,
//! `--extra-index-url`, `--find-links`) are collected; harmless pip switches are ignored.

use std::io::Read;
use std::path::{Path, PathBuf};

use super::markers::{self, Environment};
use super::{Origin, Pin, PythonError, normalize_name};

/// One requirement line, before marker evaluation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    /// Normalized name.
    pub name: String,
    /// Name as written.
    pub raw_name: String,
    pub extras: Vec<String>,
    /// The pinned version (after `==` / `===`).
    pub version: String,
    pub marker: Option<String>,
    /// sha256 hex digests (lowercase).
    pub hashes: Vec<String>,
    pub origin: Origin,
}

/// A parsed requirements file with its includes flattened.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequirementsFile {
    pub requirements: Vec<Requirement>,
    pub index_urls: Vec<String>,
    pub find_links: Vec<PathBuf>,
    /// Where `--no-index` was given, if anywhere: then no index may be asked.
    pub no_index: Option<Origin>,
    /// The file names its main index (`-i` / `--index-url`): as in pip, that replaces
    /// `PIP_INDEX_URL` (`PIP_EXTRA_INDEX_URL` still adds its indexes).
    pub sets_index_url: bool,
}

/// Deepest `-r` include chain accepted (pip has no limit; real locks use one or two levels).
pub const MAX_INCLUDE_DEPTH: usize = 32;
/// Largest requirements file read (a hashed lock of 10 000 packages is about 2 MiB).
pub const MAX_FILE_BYTES: u64 = 16 << 20;

/// The include walk: the chain being read (for cycles) and every file read so far (so a file
/// included twice, e.g. the bottom of a diamond, is parsed once).
#[derive(Default)]
struct Includes {
    stack: Vec<PathBuf>,
    visited: std::collections::HashSet<PathBuf>,
}

pub fn parse_file(path: &Path) -> Result<RequirementsFile, PythonError> {
    let mut out = RequirementsFile::default();
    let mut inc = Includes::default();
    let text = read_capped(path, None)?;
    let top = canonical(path);
    inc.visited.insert(top.clone());
    inc.stack.push(top);
    parse_text(&text, path, &mut out, &mut inc)?;
    Ok(out)
}

/// Parses `text` as if read from `path` (includes resolve against `path`'s folder).
pub fn parse_str(text: &str, path: &Path) -> Result<RequirementsFile, PythonError> {
    let mut out = RequirementsFile::default();
    let top = canonical(path);
    let mut inc = Includes {
        stack: vec![top.clone()],
        visited: [top].into_iter().collect(),
    };
    parse_text(text, path, &mut out, &mut inc)?;
    Ok(out)
}

/// Reads a requirements file: a regular file (not a FIFO or a device such as `/dev/zero`) of
/// at most [`MAX_FILE_BYTES`]. `origin` is the `-r` line that included it (errors name it).
fn read_capped(path: &Path, origin: Option<&Origin>) -> Result<String, PythonError> {
    let fail = |e: std::io::Error| match origin {
        Some(o) => PythonError::Unsupported {
            origin: o.clone(),
            message: format!("`-r {}`: {e}", path.display()),
        },
        None => PythonError::io(path, e),
    };
    let meta = std::fs::metadata(path).map_err(fail)?;
    if !meta.is_file() {
        return Err(fail(std::io::Error::other("not a regular file")));
    }
    let f = std::fs::File::open(path).map_err(fail)?;
    let mut buf = Vec::new();
    f.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut buf)
        .map_err(fail)?;
    if buf.len() as u64 > MAX_FILE_BYTES {
        return Err(fail(std::io::Error::other(format!(
            "larger than {} MiB; a requirements file is a list of pins",
            MAX_FILE_BYTES >> 20
        ))));
    }
    String::from_utf8(buf).map_err(|_| {
        fail(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "not valid UTF-8",
        ))
    })
}

fn include(
    path: &Path,
    origin: &Origin,
    out: &mut RequirementsFile,
    inc: &mut Includes,
) -> Result<(), PythonError> {
    let canon = canonical(path);
    if let Some(i) = inc.stack.iter().position(|p| *p == canon) {
        let chain: Vec<String> = inc.stack[i..]
            .iter()
            .chain(std::iter::once(&canon))
            .map(|p| p.display().to_string())
            .collect();
        return Err(PythonError::Syntax {
            origin: origin.clone(),
            message: format!(
                "`-r {}` includes itself (cycle: {})",
                path.display(),
                chain.join(" -> ")
            ),
        });
    }
    if !inc.visited.insert(canon.clone()) {
        // Already read through another include: its pins are in `out` once.
        return Ok(());
    }
    if inc.stack.len() >= MAX_INCLUDE_DEPTH {
        return Err(PythonError::Unsupported {
            origin: origin.clone(),
            message: format!(
                "`-r {}`: includes nest deeper than {MAX_INCLUDE_DEPTH} files",
                path.display()
            ),
        });
    }
    let text = read_capped(path, Some(origin))?;
    inc.stack.push(canon);
    parse_text(&text, path, out, inc)?;
    inc.stack.pop();
    Ok(())
}

fn canonical(path: &Path) -> PathBuf {
    path.canonicalize().unwrap_or_else(|_| path.to_path_buf())
}

/// Joins `\` continuations; yields (first line number, logical line) with comments removed.
fn logical_lines(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut start = 0;
    for (i, raw) in text.lines().enumerate() {
        if cur.is_empty() {
            start = i + 1;
        }
        // pip: a comment starts at `#` at the line start or after whitespace.
        let line = strip_comment(raw);
        if let Some(body) = line.strip_suffix('\\') {
            cur.push_str(body);
            cur.push(' ');
            continue;
        }
        cur.push_str(line);
        let l = std::mem::take(&mut cur);
        if !l.trim().is_empty() {
            out.push((start, l.trim().to_string()));
        }
    }
    if !cur.trim().is_empty() {
        out.push((start, cur.trim().to_string()));
    }
    out
}

fn strip_comment(line: &str) -> &str {
    let bytes = line.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'#' && (i == 0 || bytes[i - 1].is_ascii_whitespace()) {
            return line[..i].trim_end();
        }
    }
    line.trim_end()
}

fn parse_text(
    text: &str,
    path: &Path,
    out: &mut RequirementsFile,
    inc: &mut Includes,
) -> Result<(), PythonError> {
    let base = path.parent().unwrap_or(Path::new("."));
    let file: std::sync::Arc<Path> = path.into();
    for (line, content) in logical_lines(text) {
        let origin = Origin {
            file: file.clone(),
            line,
        };
        let tokens: Vec<&str> = content.split_whitespace().collect();
        let Some(first) = tokens.first() else {
            continue;
        };
        if first.starts_with('-') {
            parse_option(&tokens, &origin, base, out, inc)?;
            continue;
        }
        // pip: the requirement is everything before the first token starting with `-`.
        let split = tokens
            .iter()
            .position(|t| t.starts_with('-'))
            .unwrap_or(tokens.len());
        let spec = tokens[..split].join(" ");
        let mut hashes = Vec::new();
        let mut opts = tokens[split..].iter();
        while let Some(opt) = opts.next() {
            let value = if let Some(v) = opt.strip_prefix("--hash=") {
                v
            } else if *opt == "--hash" {
                opts.next().copied().ok_or_else(|| PythonError::Syntax {
                    origin: origin.clone(),
                    message: "`--hash` needs a value".into(),
                })?
            } else {
                return Err(PythonError::Unsupported {
                    origin,
                    message: format!("option `{opt}` is not supported on a requirement line"),
                });
            };
            let (algo, digest) = value.split_once(':').ok_or_else(|| PythonError::Syntax {
                origin: origin.clone(),
                message: format!("`--hash={value}` is not `algorithm:hexdigest`"),
            })?;
            // Only sha256 is checked (what PyPI, pip-compile and uv write); others are skipped.
            if algo == "sha256" {
                if digest.len() != 64 || !digest.chars().all(|c| c.is_ascii_hexdigit()) {
                    return Err(PythonError::Syntax {
                        origin,
                        message: format!("`{digest}` is not a sha256 hex digest"),
                    });
                }
                hashes.push(digest.to_ascii_lowercase());
            }
        }
        out.requirements
            .push(parse_requirement(&spec, hashes, origin)?);
    }
    Ok(())
}

fn parse_option(
    tokens: &[&str],
    origin: &Origin,
    base: &Path,
    out: &mut RequirementsFile,
    inc: &mut Includes,
) -> Result<(), PythonError> {
    let (opt, inline) = match tokens[0].split_once('=') {
        Some((o, v)) if o.starts_with("--") => (o, Some(v)),
        _ => (tokens[0], None),
    };
    let value = || -> Result<String, PythonError> {
        inline
            .map(str::to_string)
            .or_else(|| tokens.get(1).map(|s| s.to_string()))
            .ok_or_else(|| PythonError::Syntax {
                origin: origin.clone(),
                message: format!("`{opt}` needs a value"),
            })
    };
    match opt {
        "-r" | "--requirement" => {
            let path = base.join(value()?);
            include(&path, origin, out, inc)
        }
        "-i" | "--index-url" | "--extra-index-url" => {
            out.index_urls.push(value()?);
            if opt != "--extra-index-url" {
                out.sets_index_url = true;
            }
            Ok(())
        }
        "-f" | "--find-links" => {
            let v = value()?;
            if v.contains("://") {
                return Err(PythonError::Unsupported {
                    origin: origin.clone(),
                    message: format!("`--find-links {v}`: only local folders are supported"),
                });
            }
            out.find_links.push(base.join(v));
            Ok(())
        }
        // Switches that do not change what a complete, hashed pin list installs.
        "--require-hashes" | "--no-deps" | "--only-binary" | "--prefer-binary" | "--pre"
        | "--no-binary" | "--trusted-host" => Ok(()),
        "--no-index" => {
            out.no_index.get_or_insert_with(|| origin.clone());
            Ok(())
        }
        "-e" | "--editable" => Err(PythonError::Unsupported {
            origin: origin.clone(),
            message: "editable requirements cannot be installed into an image layer; build a wheel"
                .into(),
        }),
        "-c" | "--constraint" => Err(PythonError::Unsupported {
            origin: origin.clone(),
            message:
                "constraints files are not supported: the requirements must be a complete pin list"
                    .into(),
        }),
        other => Err(PythonError::Unsupported {
            origin: origin.clone(),
            message: format!("unknown option `{other}`"),
        }),
    }
}

fn parse_requirement(
    spec: &str,
    hashes: Vec<String>,
    origin: Origin,
) -> Result<Requirement, PythonError> {
    let (req, marker) = match spec.split_once(';') {
        Some((r, m)) => (r.trim(), Some(m.trim().to_string())),
        None => (spec.trim(), None),
    };
    let name_end = req
        .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
        .unwrap_or(req.len());
    let raw_name = &req[..name_end];
    if raw_name.is_empty() {
        return Err(PythonError::Syntax {
            origin,
            message: format!("`{spec}` is not a requirement"),
        });
    }
    let name = normalize_name(raw_name);
    let mut rest = req[name_end..].trim_start();
    let mut extras = Vec::new();
    if let Some(r) = rest.strip_prefix('[') {
        let (inner, after) = r.split_once(']').ok_or_else(|| PythonError::Syntax {
            origin: origin.clone(),
            message: format!("unclosed `[` in `{spec}`"),
        })?;
        extras = inner
            .split(',')
            .map(|e| normalize_name(e.trim()))
            .filter(|e| !e.is_empty())
            .collect();
        rest = after.trim_start();
    }
    if rest.starts_with('@') {
        return Err(PythonError::Unsupported {
            origin,
            message: format!(
                "`{raw_name}`: direct URL requirements are not supported; pin a version from an index or find_links"
            ),
        });
    }
    let rest = rest.trim_start_matches('(').trim_end_matches(')').trim();
    let unpinned = || PythonError::Unpinned {
        origin: origin.clone(),
        package: name.clone(),
        requirement: spec.trim().to_string(),
    };
    let version = if let Some(v) = rest.strip_prefix("===") {
        v.trim()
    } else if let Some(v) = rest.strip_prefix("==") {
        v.trim()
    } else {
        return Err(unpinned());
    };
    if version.is_empty() || version.contains([',', '*', '<', '>', '=', '!', '~', ' ']) {
        return Err(unpinned());
    }
    if markers::Version::parse(version).is_none() {
        return Err(PythonError::Syntax {
            origin,
            message: format!("`{version}` is not a valid version for `{name}`"),
        });
    }
    if hashes.is_empty() {
        return Err(PythonError::MissingHash {
            origin,
            package: name,
        });
    }
    Ok(Requirement {
        name,
        raw_name: raw_name.to_string(),
        extras,
        version: version.to_string(),
        marker,
        hashes,
        origin,
    })
}

/// Evaluates markers for `env` and returns the pins that apply, one per package.
pub(crate) fn pins_for(
    file: &RequirementsFile,
    env: &Environment,
) -> Result<Vec<Pin>, PythonError> {
    let mut out: Vec<Pin> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for r in &file.requirements {
        if let Some(m) = &r.marker {
            let applies = markers::evaluate(m, env).map_err(|message| PythonError::Syntax {
                origin: r.origin.clone(),
                message,
            })?;
            if !applies {
                continue;
            }
        }
        if !seen.insert(r.name.as_str()) {
            return Err(PythonError::Duplicate {
                origin: r.origin.clone(),
                package: r.name.clone(),
            });
        }
        out.push(Pin {
            name: r.name.clone(),
            version: r.version.clone(),
            hashes: r.hashes.clone(),
            origin: r.origin.clone(),
            files: None,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::python::{Libc, PythonTarget};

    const H1: &str = "8abb2f1d86890a2dfb989f9a77cfcfd3e47c2a354b01111771326f8aa26e0254";
    const H2: &str = "1e61c37477a1626458e36f7b1d82aa5c9b094fa4802892072e49de9c60c4c926";

    fn parse(text: &str) -> Result<RequirementsFile, PythonError> {
        parse_str(text, Path::new("/proj/requirements.txt"))
    }

    fn env(arch: &str) -> Environment {
        Environment::for_target(&PythonTarget {
            version: (3, 11),
            prefix: "/usr/local".into(),
            libc: Libc::Glibc(2, 36),
            arch: arch.into(),
            site_packages_dir: None,
        })
    }

    #[test]
    fn pins_hashes_markers_continuations() {
        let text = format!(
            "# a lock\n\
             Six==1.16.0 \\\n    --hash=sha256:{H1} \\\n    --hash=sha256:{H2}\n\
             \n\
             Markupsafe[Extra_One, two] == 2.1.5 ; python_version >= \"3.8\" and sys_platform == \"linux\" --hash sha256:{}  # trailing\n\
             zope.interface===6.0 ; platform_machine == \"aarch64\" --hash=sha256:{H1} --hash=sha512:abc\n\
             --require-hashes\n",
            H2.to_uppercase()
        );
        let f = parse(&text).unwrap();
        assert_eq!(f.requirements.len(), 3);
        let six = &f.requirements[0];
        assert_eq!(
            (six.name.as_str(), six.version.as_str(), six.origin.line),
            ("six", "1.16.0", 2)
        );
        assert_eq!(six.hashes, [H1, H2]);
        let ms = &f.requirements[1];
        assert_eq!(ms.name, "markupsafe");
        assert_eq!(ms.extras, ["extra-one", "two"]);
        assert_eq!(ms.version, "2.1.5");
        assert_eq!(ms.origin.line, 6);
        assert_eq!(
            ms.marker.as_deref(),
            Some("python_version >= \"3.8\" and sys_platform == \"linux\"")
        );
        assert_eq!(ms.hashes, [H2]);
        let zi = &f.requirements[2];
        assert_eq!(
            (zi.name.as_str(), zi.version.as_str()),
            ("zope-interface", "6.0")
        );
        assert_eq!(zi.hashes, [H1]);

        let x86: Vec<String> = pins_for(&f, &env("x86_64"))
            .unwrap()
            .into_iter()
            .map(|p| p.name)
            .collect();
        assert_eq!(x86, ["six", "markupsafe"]);
        let arm = pins_for(&f, &env("aarch64")).unwrap();
        assert_eq!(arm.len(), 3);
    }

    #[test]
    fn comment_needs_whitespace() {
        let f = parse(&format!("six==1.16.0 --hash=sha256:{H1}#frag\n")).unwrap_err();
        // `#frag` glued to the digest is not a comment: the digest is then invalid.
        assert!(f.to_string().contains("requirements.txt:1"), "{f}");
    }

    #[test]
    fn errors_name_file_line_and_package() {
        let e = parse(&format!(
            "six==1.16.0 --hash=sha256:{H1}\nidna>=3.7 --hash=sha256:{H1}\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("/proj/requirements.txt:2"), "{e}");
        assert!(e.contains("`idna`") && e.contains("not pinned"), "{e}");

        let e = parse("\n\nrequests\n").unwrap_err().to_string();
        assert!(
            e.contains("requirements.txt:3")
                && e.contains("`requests`")
                && e.contains("not pinned"),
            "{e}"
        );

        let e = parse("numpy==1.*\n").unwrap_err().to_string();
        assert!(e.contains("not pinned"), "{e}");
        let e = parse("numpy==1.0,<2\n").unwrap_err().to_string();
        assert!(e.contains("not pinned"), "{e}");

        let e = parse("# x\nsix==1.16.0\n").unwrap_err().to_string();
        assert!(
            e.contains("requirements.txt:2") && e.contains("`six`") && e.contains("--hash"),
            "{e}"
        );

        let e = parse("-e .\n").unwrap_err().to_string();
        assert!(e.contains("editable"), "{e}");
        let e = parse(&format!("pkg @ https://x/y.whl --hash=sha256:{H1}\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("direct URL"), "{e}");
        let e = parse("six==1.0 --hash=sha256:xyz\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("sha256 hex"), "{e}");
    }

    #[test]
    fn duplicates_after_markers() {
        let text = format!(
            "six==1.16.0 ; python_version < \"3\" --hash=sha256:{H1}\n\
             six==1.15.0 --hash=sha256:{H1}\n"
        );
        let f = parse(&text).unwrap();
        let pins = pins_for(&f, &env("x86_64")).unwrap();
        assert_eq!(pins.len(), 1);
        assert_eq!(pins[0].version, "1.15.0");
        let text = format!("six==1.16.0 --hash=sha256:{H1}\nSix==1.16.0 --hash=sha256:{H1}\n");
        let e = pins_for(&parse(&text).unwrap(), &env("x86_64"))
            .unwrap_err()
            .to_string();
        assert!(e.contains(":2") && e.contains("twice"), "{e}");
    }

    #[test]
    fn includes_are_relative_to_the_including_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(
            dir.path().join("requirements.txt"),
            format!("-r sub/base.txt\nidna==3.7 --hash=sha256:{H1}\n--extra-index-url https://example.invalid/simple\n"),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("sub/base.txt"),
            format!("--requirement=more.txt\n-f wheels\nsix==1.16.0 --hash=sha256:{H2}\n"),
        )
        .unwrap();
        std::fs::write(dir.path().join("sub/more.txt"), "\nunpinned\n").unwrap();
        let e = parse_file(&dir.path().join("requirements.txt"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("more.txt:2") && e.contains("`unpinned`"), "{e}");

        std::fs::write(
            dir.path().join("sub/more.txt"),
            format!("packaging==24.1 --hash=sha256:{H1}\n"),
        )
        .unwrap();
        let f = parse_file(&dir.path().join("requirements.txt")).unwrap();
        let names: Vec<_> = f.requirements.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["packaging", "six", "idna"]);
        assert_eq!(
            &*f.requirements[1].origin.file,
            dir.path().join("sub/base.txt").as_path()
        );
        assert_eq!(f.find_links, [dir.path().join("sub/wheels")]);
        assert_eq!(f.index_urls, ["https://example.invalid/simple"]);

        std::fs::write(dir.path().join("sub/more.txt"), "-r ../requirements.txt\n").unwrap();
        let e = parse_file(&dir.path().join("requirements.txt"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("includes itself"), "{e}");
    }

    /// `-r` diamond: each level includes the next file twice. Read naively that is 2^N parses
    /// (N = 20: 20 s and 541 MB in a release build); each file must be read once.
    #[test]
    fn include_diamond_is_read_once() {
        let dir = tempfile::tempdir().unwrap();
        let n = 20;
        for i in 0..n {
            std::fs::write(
                dir.path().join(format!("r{i}.txt")),
                format!("-r r{}.txt\n-r ./r{}.txt\n", i + 1, i + 1),
            )
            .unwrap();
        }
        std::fs::write(
            dir.path().join(format!("r{n}.txt")),
            format!("six==1.16.0 --hash=sha256:{H1}\n"),
        )
        .unwrap();
        let start = std::time::Instant::now();
        let f = parse_file(&dir.path().join("r0.txt")).unwrap();
        assert_eq!(f.requirements.len(), 1);
        assert!(start.elapsed() < std::time::Duration::from_secs(5));
    }

    #[test]
    fn include_cycles_and_depth_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("a.txt"), "# top\n-r b.txt\n").unwrap();
        std::fs::create_dir(d.join("sub")).unwrap();
        std::fs::write(d.join("b.txt"), "\n\n-r sub/../a.txt\n").unwrap();
        let e = parse_file(&d.join("a.txt")).unwrap_err().to_string();
        assert!(e.contains("b.txt:3") && e.contains("cycle"), "{e}");
        assert!(e.contains("a.txt -> ") && e.contains("b.txt -> "), "{e}");

        for i in 0..MAX_INCLUDE_DEPTH + 5 {
            std::fs::write(d.join(format!("c{i}.txt")), format!("-r c{}.txt\n", i + 1)).unwrap();
        }
        let e = parse_file(&d.join("c0.txt")).unwrap_err().to_string();
        assert!(e.contains("nest deeper than 32"), "{e}");
        assert!(
            e.contains(&format!("c{}.txt:1", MAX_INCLUDE_DEPTH - 1)),
            "{e}"
        );
        std::fs::write(d.join("m.txt"), "-r missing.txt\n").unwrap();
        let e = parse_file(&d.join("m.txt")).unwrap_err().to_string();
        assert!(e.contains("m.txt:1") && e.contains("missing.txt"), "{e}");
    }

    /// `-r /dev/zero` would be read forever, a FIFO would block: only regular files, and
    /// only up to [`MAX_FILE_BYTES`].
    #[test]
    fn includes_must_be_small_regular_files() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("r.txt"), "-r /dev/null\n").unwrap();
        let e = parse_file(&d.join("r.txt")).unwrap_err().to_string();
        assert!(
            e.contains("r.txt:1") && e.contains("not a regular file"),
            "{e}"
        );

        // Sparse: no disk space, no memory beyond the cap.
        let big = std::fs::File::create(d.join("big.txt")).unwrap();
        big.set_len(MAX_FILE_BYTES + 1).unwrap();
        std::fs::write(d.join("r.txt"), "\n-r big.txt\n").unwrap();
        let e = parse_file(&d.join("r.txt")).unwrap_err().to_string();
        assert!(
            e.contains("r.txt:2") && e.contains("larger than 16 MiB"),
            "{e}"
        );
        let e = parse_file(&d.join("big.txt")).unwrap_err().to_string();
        assert!(
            e.contains("big.txt") && e.contains("larger than 16 MiB"),
            "{e}"
        );
    }

    /// Many pins: duplicate detection must not be quadratic.
    #[test]
    fn many_pins_are_checked_quickly() {
        let mut text = String::new();
        for i in 0..50_000 {
            text.push_str(&format!("p{i}==1.0 --hash=sha256:{H1}\n"));
        }
        let f = parse(&text).unwrap();
        let start = std::time::Instant::now();
        assert_eq!(pins_for(&f, &env("x86_64")).unwrap().len(), 50_000);
        assert!(start.elapsed() < std::time::Duration::from_secs(5));
    }
}
