//! `mlimg init`: a starting `mlimg.toml` for a project folder, from what the folder holds
//! (`scan`) or from its Dockerfile (`dockerfile`). Both fill a [`Draft`] whose every value
//! carries the reason it was chosen; [`Draft::render`] writes it as TOML with those reasons as
//! comments, and [`write_new`] puts it in place without ever replacing an existing file.

pub mod dockerfile;
pub mod scan;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// A value and why it was chosen (a comment line above it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Why<T> {
    pub value: T,
    pub why: String,
}

impl<T> Why<T> {
    pub fn new(value: T, why: impl Into<String>) -> Why<T> {
        Why {
            value,
            why: why.into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DraftDeps {
    pub name: String,
    /// `requirements` or `pylock`.
    pub key: &'static str,
    pub path: String,
    pub why: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DraftWeights {
    pub name: String,
    pub source: String,
    pub dest: String,
    pub why: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DraftApp {
    pub src: String,
    pub dest: String,
    pub exclude: Vec<String>,
    pub why: String,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct DraftHealthcheck {
    pub test: Vec<String>,
    pub interval: Option<String>,
    pub timeout: Option<String>,
    pub start_period: Option<String>,
    pub retries: Option<u32>,
}

/// Something the source asked for that a spec cannot say, and what to do instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Untranslated {
    /// `Dockerfile:12` (or a file name for the folder scan).
    pub at: String,
    pub instruction: String,
    pub advice: String,
}

/// A spec being drafted.
#[derive(Debug, Clone, Default)]
pub struct Draft {
    /// What it was drafted from, for the header comment.
    pub source: String,
    pub name: Option<Why<String>>,
    pub base: Option<Why<String>>,
    pub platforms: Vec<String>,
    pub deps: Vec<DraftDeps>,
    /// `apt-get install` packages: `[system] packages`, with why.
    pub system: Option<Why<Vec<String>>>,
    pub weights: Vec<DraftWeights>,
    pub app: Option<DraftApp>,
    pub entrypoint: Option<Why<Vec<String>>>,
    pub cmd: Option<Why<Vec<String>>>,
    pub workdir: Option<Why<String>>,
    pub user: Option<Why<String>>,
    pub env: BTreeMap<String, String>,
    pub ports: Vec<String>,
    pub volumes: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub stop_signal: Option<String>,
    pub healthcheck: Option<Why<DraftHealthcheck>>,
    /// Extra comment lines for the top of the file.
    pub notes: Vec<String>,
    pub untranslated: Vec<Untranslated>,
}

/// A TOML string literal.
pub fn q(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

fn list(v: &[String]) -> String {
    format!(
        "[{}]",
        v.iter().map(|s| q(s)).collect::<Vec<_>>().join(", ")
    )
}

/// A TOML key: bare when it can be, quoted otherwise.
fn key(k: &str) -> String {
    if !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        k.to_string()
    } else {
        q(k)
    }
}

fn comment(out: &mut String, text: &str) {
    for line in text.lines() {
        let _ = writeln!(out, "# {line}");
    }
}

impl Draft {
    /// The spec text: every section with the reasons for its values as comments, then the
    /// instructions that were not translated.
    pub fn render(&self) -> String {
        let mut o = String::new();
        comment(
            &mut o,
            &format!(
                "mlimg.toml drafted by `mlimg init` from {}.\nReview every value, then: mlimg build --dry-run   (reference: docs/spec.md)",
                self.source
            ),
        );
        for n in &self.notes {
            comment(&mut o, n);
        }
        o.push_str("\n[image]\n");
        if let Some(n) = &self.name {
            comment(&mut o, &n.why);
            let _ = writeln!(o, "name = {}", q(&n.value));
            let _ = writeln!(o, "tags = [\"latest\"]");
        }
        match &self.base {
            Some(b) => {
                comment(&mut o, &b.why);
                let _ = writeln!(o, "base = {}", q(&b.value));
            }
            None => {
                comment(
                    &mut o,
                    "no base found: an empty image. Set a base image to run Python",
                );
                let _ = writeln!(o, "base = \"scratch\"");
            }
        }
        if !self.platforms.is_empty() {
            let _ = writeln!(o, "platforms = {}", list(&self.platforms));
        }
        if let Some(s) = &self.system {
            o.push('\n');
            comment(&mut o, &s.why);
            let _ = writeln!(o, "[system]\npackages = {}", list(&s.value));
        }
        for d in &self.deps {
            o.push('\n');
            comment(&mut o, &d.why);
            let _ = writeln!(
                o,
                "[[deps]]\nname = {}\n{} = {}",
                q(&d.name),
                d.key,
                q(&d.path)
            );
        }
        for w in &self.weights {
            o.push('\n');
            comment(&mut o, &w.why);
            let _ = writeln!(
                o,
                "[[weights]]\nname = {}\nsource = {}\ndest = {}",
                q(&w.name),
                q(&w.source),
                q(&w.dest)
            );
        }
        if let Some(a) = &self.app {
            o.push('\n');
            comment(&mut o, &a.why);
            let _ = writeln!(o, "[app]\nsrc = {}\ndest = {}", q(&a.src), q(&a.dest));
            if !a.exclude.is_empty() {
                let _ = writeln!(o, "exclude = {}", list(&a.exclude));
            }
        }
        o.push_str("\n[config]\n");
        if let Some(e) = &self.entrypoint {
            comment(&mut o, &e.why);
            let _ = writeln!(o, "entrypoint = {}", list(&e.value));
        }
        if let Some(e) = &self.cmd {
            comment(&mut o, &e.why);
            let _ = writeln!(o, "cmd = {}", list(&e.value));
        }
        if let Some(w) = &self.workdir {
            comment(&mut o, &w.why);
            let _ = writeln!(o, "workdir = {}", q(&w.value));
        }
        if let Some(u) = &self.user {
            comment(&mut o, &u.why);
            let _ = writeln!(o, "user = {}", q(&u.value));
        }
        if !self.ports.is_empty() {
            let _ = writeln!(o, "ports = {}", list(&self.ports));
        }
        if !self.volumes.is_empty() {
            let _ = writeln!(o, "volumes = {}", list(&self.volumes));
        }
        if let Some(s) = &self.stop_signal {
            let _ = writeln!(o, "stop_signal = {}", q(s));
        }
        let table = |m: &BTreeMap<String, String>| {
            format!(
                "{{ {} }}",
                m.iter()
                    .map(|(k, v)| format!("{} = {}", key(k), q(v)))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        if !self.env.is_empty() {
            let _ = writeln!(o, "env = {}", table(&self.env));
        }
        if !self.labels.is_empty() {
            let _ = writeln!(o, "labels = {}", table(&self.labels));
        }
        if let Some(h) = &self.healthcheck {
            comment(&mut o, &h.why);
            let h = &h.value;
            let mut parts = vec![format!("test = {}", list(&h.test))];
            for (k, v) in [
                ("interval", &h.interval),
                ("timeout", &h.timeout),
                ("start_period", &h.start_period),
            ] {
                if let Some(v) = v {
                    parts.push(format!("{k} = {}", q(v)));
                }
            }
            if let Some(r) = h.retries {
                parts.push(format!("retries = {r}"));
            }
            let _ = writeln!(o, "healthcheck = {{ {} }}", parts.join(", "));
        }
        if !self.untranslated.is_empty() {
            o.push('\n');
            comment(
                &mut o,
                "Not translated (mlimg runs no build steps; each needs a decision):",
            );
            for u in &self.untranslated {
                comment(
                    &mut o,
                    &format!("  {}: {}\n    → {}", u.at, u.instruction, u.advice),
                );
            }
        }
        o
    }
}

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("{} already exists: mlimg init never replaces a file (move it away, or write elsewhere with --output)", .0.display())]
    Exists(PathBuf),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{file}:{line}: {message}")]
    Dockerfile {
        file: String,
        line: usize,
        message: String,
    },
}

/// Writes `text` to `path` only if nothing is there: a temp file beside it, then a hard link
/// (which fails if `path` appeared meanwhile), so a reader never sees half a file and an
/// existing file is never replaced.
pub fn write_new(path: &Path, text: &str) -> Result<(), InitError> {
    use std::io::Write as _;
    if path.symlink_metadata().is_ok() {
        return Err(InitError::Exists(path.to_path_buf()));
    }
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |source| InitError::Io { path: p, source }
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".mlimg-init-")
        .tempfile_in(dir)
        .map_err(io(dir))?;
    tmp.write_all(text.as_bytes()).map_err(io(tmp.path()))?;
    tmp.as_file().sync_all().map_err(io(tmp.path()))?;
    match tmp.persist_noclobber(path) {
        Ok(_) => Ok(()),
        Err(e) if e.error.kind() == std::io::ErrorKind::AlreadyExists => {
            Err(InitError::Exists(path.to_path_buf()))
        }
        Err(e) => Err(InitError::Io {
            path: path.to_path_buf(),
            source: e.error,
        }),
    }
}

/// File names that hold model weights.
pub fn is_weight_file(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    [
        ".safetensors",
        ".bin",
        ".pt",
        ".pth",
        ".ckpt",
        ".onnx",
        ".gguf",
        ".ggml",
        ".h5",
        ".keras",
        ".tflite",
        ".msgpack",
        ".joblib",
        ".pkl",
        ".npz",
        ".mlmodel",
    ]
    .iter()
    .any(|e| n.ends_with(e))
        && !n.ends_with(".py")
}

/// A spec-friendly name from a path or file name: lowercase letters, digits, `-`, `_`.
pub fn slug(s: &str) -> String {
    let s: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let s = s.trim_matches('-').to_string();
    if s.is_empty() { "main".into() } else { s }
}

/// A weights entry's name from its folder: the folder's name, with its parent's in front when
/// it is only a number (a version folder: `resnet50/1` → `resnet50-1`).
pub fn weights_name(rel: &Path) -> String {
    let name = |p: &Path| p.file_name().map(|f| f.to_string_lossy().to_string());
    let last = name(rel).unwrap_or_else(|| rel.to_string_lossy().to_string());
    if last.chars().all(|c| c.is_ascii_digit())
        && let Some(parent) = rel.parent().and_then(name)
    {
        return slug(&format!("{parent}-{last}"));
    }
    slug(&last)
}

/// The deps set name for a requirements file: `requirements-base.txt` → `base`,
/// `requirements.txt` → `python`.
pub fn deps_name(file: &str) -> String {
    let base = Path::new(file)
        .file_name()
        .map(|f| f.to_string_lossy().to_string())
        .unwrap_or_default();
    let stem = base
        .trim_end_matches(".txt")
        .trim_end_matches(".toml")
        .trim_start_matches("requirements")
        .trim_start_matches("pylock")
        .trim_matches(|c| c == '-' || c == '_' || c == '.');
    if stem.is_empty() {
        "python".into()
    } else {
        slug(stem)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(deps_name("requirements.txt"), "python");
        assert_eq!(deps_name("reqs/requirements-base.txt"), "base");
        assert_eq!(deps_name("pylock.toml"), "python");
        assert_eq!(deps_name("pylock.gpu.toml"), "gpu");
        assert_eq!(slug("My Model"), "my-model");
        assert!(is_weight_file("model.safetensors"));
        assert!(!is_weight_file("config.json"));
    }

    #[test]
    fn write_new_never_replaces() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("mlimg.toml");
        write_new(&p, "a").unwrap();
        assert!(matches!(write_new(&p, "b"), Err(InitError::Exists(_))));
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "a");
        assert_eq!(
            std::fs::read_dir(d.path()).unwrap().count(),
            1,
            "no temp left"
        );
    }
}
