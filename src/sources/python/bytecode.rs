//! Bytecode for installed wheels: `__pycache__/X.cpython-3XY.pyc` next to every `.py` file in
//! site-packages, as `pip install` writes them, so a container whose user cannot write to
//! site-packages does not compile every module again at each start.
//!
//! `.pyc` files are architecture-independent: only the magic number (the CPython minor
//! version) decides whether the target accepts them. They are compiled by a CPython of the
//! target's minor version found on the build machine ([`find_compiler`]), fed the sources over
//! a pipe: nothing is unpacked, nothing is run in the image.
//!
//! Determinism: the invalidation mode is pip's default, *timestamp*, with the layer's one mtime
//! (`SOURCE_DATE_EPOCH` or 0) and the source size in the header — exactly what the container
//! sees when it `stat`s the source, so the `.pyc` is valid without hashing the source at each
//! import. The compiler runs with `PYTHONHASHSEED=0`, no `site` and an empty environment, and
//! compiles the files in sorted order in one process, so `marshal`'s reference flags (which
//! depend on reference counts) come out the same each time; `tests/it/service_e2e.rs` builds
//! twice with separate caches and compares digests. The compiler's exact version and magic
//! number are part of the layer's selector.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use super::install::{parse_csv_line, record_hash, write_csv};
use super::{PythonError, PythonTarget};
use crate::layer::{Content, Entry};

/// A host CPython that compiles for the target's minor version.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Compiler {
    /// The interpreter's real executable (`sys.executable`).
    pub path: PathBuf,
    /// `3.11.2`.
    pub version: String,
    /// `importlib.util.MAGIC_NUMBER`, hex (`a70d0d0a` for 3.11).
    pub magic: String,
    /// `sys.implementation.cache_tag` (`cpython-311`).
    pub cache_tag: String,
}

/// How a wheel set's bytecode is made: by whom, and the mtime its headers record.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Bytecode {
    pub compiler: Compiler,
    pub mtime: u64,
}

impl Compiler {
    /// The selector line: whatever decides the `.pyc` bytes.
    pub fn fingerprint(&self) -> String {
        format!(
            "bytecode cpython {} magic {} tag {} invalidation timestamp",
            self.version, self.magic, self.cache_tag
        )
    }
}

/// The magic number of each final CPython 3.x release (`importlib.util.MAGIC_NUMBER`): a
/// host interpreter must produce this one for the target's minor version.
fn known_magic(minor: u32) -> Option<&'static str> {
    Some(match minor {
        7 => "420d0d0a",
        8 => "550d0d0a",
        9 => "610d0d0a",
        10 => "6f0d0d0a",
        11 => "a70d0d0a",
        12 => "cb0d0d0a",
        13 => "f30d0d0a",
        _ => return None,
    })
}

const PROBE: &str = "import sys, importlib.util as u\nprint(sys.implementation.name, '%d.%d.%d' % sys.version_info[:3], sys.version_info.releaselevel, u.MAGIC_NUMBER.hex(), sys.implementation.cache_tag, sys.executable)";

/// Where a CPython `3.minor` may be, in order: Debian's and the official images' paths,
/// `python3.X` on `PATH`, pyenv's versions (newest first). `MLIMG_BYTECODE_PYTHON` names the
/// one interpreter to use instead.
fn candidates(minor: u32) -> Vec<PathBuf> {
    if let Some(p) = std::env::var_os("MLIMG_BYTECODE_PYTHON") {
        return vec![PathBuf::from(p)];
    }
    let name = format!("python3.{minor}");
    let mut out = vec![
        PathBuf::from(format!("/usr/bin/{name}")),
        PathBuf::from(format!("/usr/local/bin/{name}")),
    ];
    if let Some(path) = std::env::var_os("PATH") {
        out.extend(std::env::split_paths(&path).map(|d| d.join(&name)));
    }
    if let Some(home) = std::env::var_os("HOME") {
        let root = Path::new(&home).join(".pyenv/versions");
        let mut v: Vec<(u32, PathBuf)> = std::fs::read_dir(&root)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let n = e.file_name().to_string_lossy().into_owned();
                let patch = n.strip_prefix(&format!("3.{minor}."))?.parse().ok()?;
                Some((patch, e.path().join("bin").join(&name)))
            })
            .collect();
        v.sort();
        out.extend(v.into_iter().rev().map(|(_, p)| p));
    }
    out
}

/// A final-release CPython `3.minor` on this machine whose magic number is the target's.
/// `Err` says what was tried.
pub fn find_compiler(version: (u32, u32)) -> Result<Compiler, String> {
    find_compiler_with(version, &|_| None, &|_, _| {})
}

/// [`find_compiler`] with a memory of earlier answers: `known(key)` / `learn(key, compiler)`,
/// where the key names the candidate's real file and its size, mtime, ctime and inode, so an
/// interpreter replaced in place (an upgrade) is asked again. A rebuild then starts no Python.
pub fn find_compiler_with(
    version: (u32, u32),
    known: &dyn Fn(&str) -> Option<Compiler>,
    learn: &dyn Fn(&str, &Compiler),
) -> Result<Compiler, String> {
    let (major, minor) = version;
    let mut tried = Vec::new();
    for c in candidates(minor) {
        if !c.is_file() {
            continue;
        }
        let key = candidate_key(&c, version);
        if let Some(hit) = key.as_deref().and_then(known) {
            return Ok(hit);
        }
        match probe(&c, version).inspect(|found| {
            if let Some(k) = &key {
                learn(k, found);
            }
        }) {
            Ok(found) => return Ok(found),
            Err(why) => tried.push(format!("{}: {why}", c.display())),
        }
    }
    Err(if tried.is_empty() {
        format!(
            "no python{major}.{minor} found (looked in /usr/bin, /usr/local/bin, PATH, ~/.pyenv/versions)"
        )
    } else {
        format!("no usable python{major}.{minor}: {}", tried.join("; "))
    })
}

/// What decides a candidate's answer: the file it runs (after symlinks) and that file's stat.
fn candidate_key(exe: &Path, (major, minor): (u32, u32)) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let real = std::fs::canonicalize(exe).ok()?;
    let m = std::fs::metadata(&real).ok()?;
    Some(format!(
        "v1 {major}.{minor} {} {} {} {}.{} {}.{} {}:{}",
        exe.display(),
        real.display(),
        m.len(),
        m.mtime(),
        m.mtime_nsec(),
        m.ctime(),
        m.ctime_nsec(),
        m.dev(),
        m.ino()
    ))
}

fn probe(exe: &Path, (major, minor): (u32, u32)) -> Result<Compiler, String> {
    let out = Command::new(exe)
        .args(["-s", "-S", "-c", PROBE])
        .env_clear()
        .stdin(Stdio::null())
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!("exited with {}", out.status));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let f: Vec<&str> = text.trim().splitn(6, ' ').collect();
    let [imp, ver, level, magic, tag, real] = f.as_slice() else {
        return Err(format!("unexpected answer {text:?}"));
    };
    if *imp != "cpython" || *level != "final" {
        return Err(format!(
            "{imp} {ver} {level} is not a final CPython release"
        ));
    }
    if !ver.starts_with(&format!("{major}.{minor}.")) {
        return Err(format!("is {ver}"));
    }
    if let Some(want) = known_magic(minor)
        && *magic != want
    {
        return Err(format!(
            "magic number {magic}, CPython 3.{minor} uses {want}"
        ));
    }
    Ok(Compiler {
        path: PathBuf::from(real),
        version: ver.to_string(),
        magic: magic.to_string(),
        cache_tag: tag.to_string(),
    })
}

/// The compile loop: read `<u32 path len><u32 source len><path><source>` records from stdin,
/// answer each with `<u8 ok><u32 len><pyc or error text>`. `compile()` is what `py_compile`
/// calls (`SourceLoader.source_to_code`, optimize level of the interpreter, 0 here).
const COMPILER: &str = r#"
import sys, struct, importlib._bootstrap_external as be
mtime = int(sys.argv[1]) & 0xFFFFFFFF
inp, out = sys.stdin.buffer, sys.stdout.buffer
def read(n):
    b = inp.read(n)
    if len(b) != n:
        raise SystemExit(0 if not b else 3)
    return b
while True:
    head = inp.read(8)
    if not head:
        break
    if len(head) != 8:
        raise SystemExit(3)
    plen, slen = struct.unpack('<II', head)
    path = read(plen).decode('utf-8', 'surrogateescape')
    src = read(slen) if slen else b''
    try:
        code = compile(src, path, 'exec', dont_inherit=True)
        data = bytes(be._code_to_timestamp_pyc(code, mtime, len(src)))
        del code
        out.write(struct.pack('<BI', 1, len(data)))
        out.write(data)
    except Exception as e:
        msg = ('%s: %s' % (type(e).__name__, e)).encode('utf-8', 'replace')
        out.write(struct.pack('<BI', 0, len(msg)))
        out.write(msg)
    out.flush()
"#;

fn err(what: impl Into<String>) -> PythonError {
    PythonError::Bytecode {
        message: what.into(),
    }
}

/// Reads every `.py` entry's bytes (inline or out of its wheel; one open per wheel).
struct Sources {
    open: BTreeMap<PathBuf, zip::ZipArchive<std::fs::File>>,
}

impl Sources {
    fn read(&mut self, e: &Entry) -> Result<Option<Vec<u8>>, PythonError> {
        match &e.content {
            Content::Inline(b) => Ok(Some(b.to_vec())),
            Content::ZipMember { archive, name, .. } => {
                if !self.open.contains_key(archive) {
                    let f =
                        std::fs::File::open(archive).map_err(|e| PythonError::io(archive, e))?;
                    let z = zip::ZipArchive::new(f)
                        .map_err(|e| err(format!("{}: {e}", archive.display())))?;
                    self.open.insert(archive.clone(), z);
                }
                let Some(z) = self.open.get_mut(archive) else {
                    return Ok(None);
                };
                let mut m = z
                    .by_name(name)
                    .map_err(|e| err(format!("{}: {name}: {e}", archive.display())))?;
                let mut buf = Vec::with_capacity(m.size().min(64 << 20) as usize);
                m.read_to_end(&mut buf)
                    .map_err(|e| err(format!("{}: {name}: {e}", archive.display())))?;
                Ok(Some(buf))
            }
            Content::File { path, .. } => std::fs::read(path)
                .map(Some)
                .map_err(|e| PythonError::io(path, e)),
            _ => Ok(None),
        }
    }
}

/// `dir/__pycache__/stem.<tag>.pyc` for `dir/stem.py`.
pub fn pyc_path(py: &str, cache_tag: &str) -> Option<String> {
    let stem = py.strip_suffix(".py")?;
    let (dir, file) = match stem.rsplit_once('/') {
        Some((d, f)) => (format!("{d}/"), f),
        None => (String::new(), stem),
    };
    if file.is_empty() {
        return None;
    }
    Some(format!("{dir}__pycache__/{file}.{cache_tag}.pyc"))
}

/// Adds a `.pyc` entry for every `.py` file under the target's site-packages (pip's rule:
/// files in the library folders, not scripts), and the `.pyc` rows to each `RECORD`, as pip
/// does. Files that do not compile (pip skips them too) get none. Returns the entries and the
/// number of files compiled.
pub fn compile(
    entries: Vec<Entry>,
    target: &PythonTarget,
    bc: &Bytecode,
) -> Result<(Vec<Entry>, usize), PythonError> {
    let sp = target.site_packages();
    let sp_rel = format!("{}/", sp.trim_start_matches('/'));
    let mut sources: Vec<usize> = entries
        .iter()
        .enumerate()
        .filter(|(_, e)| {
            e.path.starts_with(&sp_rel)
                && e.path.ends_with(".py")
                && !matches!(e.content, Content::Dir | Content::Symlink(_))
        })
        .map(|(i, _)| i)
        .collect();
    sources.sort_by(|a, b| entries[*a].path.cmp(&entries[*b].path));
    if sources.is_empty() {
        return Ok((entries, 0));
    }
    let mut child = Command::new(&bc.compiler.path)
        .args(["-s", "-S", "-c", COMPILER, &bc.mtime.to_string()])
        .env_clear()
        .env("PYTHONHASHSEED", "0")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| err(format!("{}: {e}", bc.compiler.path.display())))?;
    let (Some(mut stdin), Some(mut stdout)) = (child.stdin.take(), child.stdout.take()) else {
        return Err(err("the compiler's pipes were not opened"));
    };
    let mut reader = Sources {
        open: BTreeMap::new(),
    };
    // image path of the .py (without leading /) → (pyc image path, bytes)
    let mut pycs: BTreeMap<String, (String, Vec<u8>)> = BTreeMap::new();
    let result = (|| -> Result<(), PythonError> {
        for &i in &sources {
            let e = &entries[i];
            let Some(src) = reader.read(e)? else { continue };
            let Some(pyc) = pyc_path(&e.path, &bc.compiler.cache_tag) else {
                continue;
            };
            let dfile = format!("/{}", e.path);
            let io = |x: std::io::Error| {
                err(format!(
                    "{} while compiling {dfile}: {x}",
                    bc.compiler.path.display()
                ))
            };
            let mut req = Vec::with_capacity(8 + dfile.len() + src.len());
            req.extend_from_slice(&(dfile.len() as u32).to_le_bytes());
            req.extend_from_slice(&(src.len() as u32).to_le_bytes());
            req.extend_from_slice(dfile.as_bytes());
            req.extend_from_slice(&src);
            stdin.write_all(&req).map_err(io)?;
            stdin.flush().map_err(io)?;
            let mut head = [0u8; 5];
            stdout.read_exact(&mut head).map_err(io)?;
            let len = u32::from_le_bytes([head[1], head[2], head[3], head[4]]) as usize;
            let mut data = vec![0u8; len];
            stdout.read_exact(&mut data).map_err(io)?;
            if head[0] == 1 {
                pycs.insert(e.path.clone(), (pyc, data));
            }
        }
        Ok(())
    })();
    drop(stdin);
    let mut stderr = String::new();
    if let Some(mut s) = child.stderr.take() {
        let _ = s.read_to_string(&mut stderr);
    }
    let status = child.wait();
    if let Err(e) = result {
        return Err(err(format!("{e}; compiler stderr: {}", stderr.trim())));
    }
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => {
            return Err(err(format!(
                "{} exited with {s}: {}",
                bc.compiler.path.display(),
                stderr.trim()
            )));
        }
        Err(e) => return Err(err(format!("{}: {e}", bc.compiler.path.display()))),
    }
    let compiled = pycs.len();
    // A wheel may ship `.pyc` files of its own (numpy does): pip's compile overwrites them,
    // and so does ours.
    let generated: std::collections::BTreeSet<&str> =
        pycs.values().map(|(p, _)| p.as_str()).collect();
    let mut out: Vec<Entry> = entries
        .into_iter()
        .filter(|e| !generated.contains(e.path.as_str()))
        .collect();
    // RECORD rows for the new files, relative to site-packages.
    let by_rel: BTreeMap<String, (String, String, String)> = pycs
        .iter()
        .filter_map(|(py, (pyc, data))| {
            let py_rel = py.strip_prefix(&sp_rel)?.to_string();
            let pyc_rel = pyc.strip_prefix(&sp_rel)?.to_string();
            Some((py_rel, (pyc_rel, record_hash(data), data.len().to_string())))
        })
        .collect();
    for e in out.iter_mut() {
        let Some(rest) = e.path.strip_prefix(&sp_rel) else {
            continue;
        };
        let Some((dir, "RECORD")) = rest.split_once('/') else {
            continue;
        };
        if !dir.ends_with(".dist-info") {
            continue;
        }
        let Content::Inline(b) = &e.content else {
            continue;
        };
        let text = String::from_utf8_lossy(b);
        let mut rows: Vec<(String, String, String)> = Vec::new();
        for line in text.split("\r\n").filter(|l| !l.is_empty()) {
            let mut f = parse_csv_line(line).into_iter();
            let row = (
                f.next().unwrap_or_default(),
                f.next().unwrap_or_default(),
                f.next().unwrap_or_default(),
            );
            rows.push(row);
        }
        let extra: Vec<_> = rows
            .iter()
            .filter_map(|(p, _, _)| by_rel.get(p).cloned())
            .collect();
        if extra.is_empty() {
            continue;
        }
        let replaced: std::collections::BTreeSet<&str> =
            extra.iter().map(|(p, _, _)| p.as_str()).collect();
        rows.retain(|(p, _, _)| !replaced.contains(p.as_str()));
        rows.extend(extra.iter().cloned());
        rows.sort();
        rows.dedup();
        e.content = Content::Inline(Arc::from(write_csv(&rows)));
    }
    out.extend(pycs.into_values().map(|(pyc, data)| Entry {
        path: pyc,
        mode: 0o644,
        content: Content::Inline(Arc::from(data)),
    }));
    Ok((out, compiled))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pyc_paths() {
        assert_eq!(
            pyc_path("usr/lib/p/six.py", "cpython-311").as_deref(),
            Some("usr/lib/p/__pycache__/six.cpython-311.pyc")
        );
        assert_eq!(
            pyc_path("a.py", "cpython-311").as_deref(),
            Some("__pycache__/a.cpython-311.pyc")
        );
        assert_eq!(pyc_path("x/.py", "cpython-311"), None);
        assert_eq!(pyc_path("x/a.pyi", "cpython-311"), None);
    }

    fn target() -> PythonTarget {
        PythonTarget {
            version: (3, 11),
            prefix: "/usr/local".into(),
            libc: super::super::Libc::Glibc(2, 36),
            arch: "aarch64".into(),
            site_packages_dir: None,
        }
    }

    fn inline(path: &str, data: &[u8]) -> Entry {
        Entry {
            path: path.into(),
            mode: 0o644,
            content: Content::Inline(Arc::from(data.to_vec())),
        }
    }

    /// A remembered answer starts no interpreter: the second search takes what the first one
    /// learned (here altered, to tell it from a fresh probe).
    #[test]
    fn a_remembered_compiler_is_not_probed_again() {
        let learned = std::cell::RefCell::new(Vec::<(String, Compiler)>::new());
        let first = find_compiler_with((3, 11), &|_| None, &|k, c| {
            learned.borrow_mut().push((k.to_string(), c.clone()))
        })
        .unwrap_or_else(|e| panic!("needs a python3.11: {e}"));
        let (key, c) = learned.borrow()[0].clone();
        assert_eq!(c, first);
        assert!(key.contains(&first.path.display().to_string()), "{key}");
        let marked = Compiler {
            version: "3.11.999".into(),
            ..c
        };
        let again =
            find_compiler_with((3, 11), &|k| (k == key).then(|| marked.clone()), &|_, _| {
                panic!("probed again")
            })
            .unwrap();
        assert_eq!(again.version, "3.11.999");
    }

    /// Compiles with the host's 3.11 (fails with a message when there is none: the CI machine
    /// has Debian's python3.11), twice, and checks the header, the RECORD rows and that the
    /// bytes are the same both times.
    #[test]
    fn compiles_like_pip_and_deterministically() {
        let c = find_compiler((3, 11)).unwrap_or_else(|e| panic!("needs a python3.11: {e}"));
        assert_eq!(c.magic, "a70d0d0a");
        assert_eq!(c.cache_tag, "cpython-311");
        let sp = "usr/local/lib/python3.11/site-packages";
        let src = b"X = {'a', 'b', 'c', 'd'}\ndef f(x):\n    return x in ('q', 'r') or x in X\n";
        let entries = || {
            vec![
                inline(&format!("{sp}/pkg/__init__.py"), src),
                inline(&format!("{sp}/pkg/bad.py"), b"def (:\n"),
                inline(&format!("{sp}/pkg-1.0.dist-info/RECORD"), b"pkg/__init__.py,sha256=x,1\r\npkg/__pycache__/__init__.cpython-311.pyc,sha256=s,5\r\npkg/bad.py,sha256=y,2\r\npkg-1.0.dist-info/RECORD,,\r\n"),
                inline("usr/local/bin/tool.py", b"print(1)\n"),
                inline(&format!("{sp}/pkg/__pycache__/__init__.cpython-311.pyc"), b"stale"),
            ]
        };
        let bc = Bytecode {
            compiler: c,
            mtime: 1_700_000_000,
        };
        let (a, n) = compile(entries(), &target(), &bc).unwrap();
        let (b, _) = compile(entries(), &target(), &bc).unwrap();
        assert_eq!(
            n, 1,
            "the syntax error is skipped, the script is not compiled"
        );
        assert_eq!(a, b);
        assert_eq!(a.len(), 5, "the wheel's own .pyc is replaced, not doubled");
        let pyc = a
            .iter()
            .find(|e| e.path == format!("{sp}/pkg/__pycache__/__init__.cpython-311.pyc"))
            .unwrap();
        let Content::Inline(data) = &pyc.content else {
            panic!()
        };
        // byte for byte what py_compile writes (pip's compileall calls it) for that source,
        // mtime and dfile
        let tmp = tempfile::tempdir().unwrap();
        let srcf = tmp.path().join("src.py");
        std::fs::write(&srcf, src).unwrap();
        std::fs::File::options()
            .write(true)
            .open(&srcf)
            .unwrap()
            .set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000))
            .unwrap();
        let refc = tmp.path().join("ref.pyc");
        let st = Command::new(&bc.compiler.path)
            .args([
                "-c",
                "import py_compile, sys; py_compile.compile(sys.argv[1], cfile=sys.argv[2], dfile=sys.argv[3], invalidation_mode=py_compile.PycInvalidationMode.TIMESTAMP, doraise=True)",
            ])
            .arg(&srcf)
            .arg(&refc)
            .arg(format!("/{sp}/pkg/__init__.py"))
            .env("PYTHONHASHSEED", "0")
            .status()
            .unwrap();
        assert!(st.success());
        assert_eq!(&std::fs::read(&refc).unwrap()[..], &data[..]);
        assert_eq!(&data[..4], &[0xa7, 0x0d, 0x0d, 0x0a]);
        assert_eq!(&data[4..8], &[0, 0, 0, 0], "timestamp-based");
        assert_eq!(&data[8..12], &1_700_000_000u32.to_le_bytes());
        assert_eq!(&data[12..16], &(src.len() as u32).to_le_bytes());
        let record = a
            .iter()
            .find(|e| e.path.ends_with("RECORD"))
            .map(|e| match &e.content {
                Content::Inline(b) => String::from_utf8(b.to_vec()).unwrap(),
                _ => panic!(),
            })
            .unwrap();
        assert_eq!(
            record,
            format!(
                "pkg-1.0.dist-info/RECORD,,\r\npkg/__init__.py,sha256=x,1\r\npkg/__pycache__/__init__.cpython-311.pyc,{},{}\r\npkg/bad.py,sha256=y,2\r\n",
                record_hash(data),
                data.len()
            )
        );
    }
}
