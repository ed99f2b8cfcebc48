//! A draft spec from what a project folder holds: dependency files, folders of weight-like
//! files, the app's entry point, `.dockerignore`.

use std::path::Path;

use super::{
    Draft, DraftApp, DraftDeps, DraftHealthcheck, DraftWeights, InitError, Why, deps_name,
    is_weight_file, slug,
};

/// Folders never searched for weights (environments, caches, VCS).
const SKIP_DIRS: &[&str] = &[
    ".git",
    ".venv",
    "venv",
    "env",
    "node_modules",
    "__pycache__",
    "site-packages",
    ".mypy_cache",
    ".pytest_cache",
    ".tox",
    "dist",
    "build",
];

/// Requirements files for development, not the service.
fn is_dev_requirements(name: &str) -> bool {
    ["dev", "test", "lint", "docs", "ci"]
        .iter()
        .any(|w| name.contains(w))
}

/// The entry point found in a Python file: (module:var or script, framework, port, health).
struct Entry {
    argv: Vec<String>,
    port: Option<u16>,
    why: String,
    health: Option<String>,
}

fn entry_of(rel: &str, text: &str) -> Entry {
    let module = rel.trim_end_matches(".py").replace('/', ".");
    // `app = FastAPI(` / `application = Flask(__name__)`
    let var_of = |ctor: &str| {
        text.lines().find_map(|l| {
            let (lhs, rhs) = l.split_once('=')?;
            let lhs = lhs.trim();
            (rhs.trim_start().starts_with(ctor)
                && !lhs.is_empty()
                && lhs.chars().all(|c| c.is_alphanumeric() || c == '_'))
            .then(|| lhs.to_string())
        })
    };
    let health = ["/health", "/healthz", "/ready", "/readyz"]
        .iter()
        .find(|r| text.contains(&format!("\"{r}\"")) || text.contains(&format!("'{r}'")))
        .map(|r| r.to_string());
    if let Some(var) = var_of("FastAPI(") {
        return Entry {
            argv: [
                "python",
                "-m",
                "uvicorn",
                &format!("{module}:{var}"),
                "--host",
                "0.0.0.0",
                "--port",
                "8000",
            ]
            .map(String::from)
            .to_vec(),
            port: Some(8000),
            why: format!("{rel} creates a FastAPI app ({var}): served by uvicorn on port 8000"),
            health,
        };
    }
    if let Some(var) = var_of("Flask(") {
        return Entry {
            argv: [
                "python",
                "-m",
                "flask",
                "--app",
                &format!("{module}:{var}"),
                "run",
                "--host",
                "0.0.0.0",
                "--port",
                "5000",
            ]
            .map(String::from)
            .to_vec(),
            port: Some(5000),
            why: format!(
                "{rel} creates a Flask app ({var}): Flask's server on port 5000 (use gunicorn in production)"
            ),
            health,
        };
    }
    Entry {
        argv: vec!["python".into(), rel.to_string()],
        port: None,
        why: format!("{rel} looks like the program to run"),
        health: None,
    }
}

/// The folders under `dir` (relative) that hold weight-like files, outermost only, and the
/// weight-like files directly in `dir`.
pub fn weight_dirs(dir: &Path) -> (Vec<std::path::PathBuf>, Vec<String>) {
    let mut weight_dirs: Vec<std::path::PathBuf> = Vec::new();
    let walker = walkdir::WalkDir::new(dir)
        .max_depth(4)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|e| {
            let n = e.file_name().to_string_lossy();
            e.depth() == 0 || !(n.starts_with('.') || SKIP_DIRS.contains(&n.as_ref()))
        });
    let mut root_weights = Vec::new();
    for e in walker.filter_map(|e| e.ok()) {
        if !e.file_type().is_file() || !is_weight_file(&e.file_name().to_string_lossy()) {
            continue;
        }
        let Some(parent) = e.path().parent() else {
            continue;
        };
        let Ok(rel) = parent.strip_prefix(dir) else {
            continue;
        };
        if rel.as_os_str().is_empty() {
            root_weights.push(e.file_name().to_string_lossy().to_string());
            continue;
        }
        if !weight_dirs.iter().any(|w| rel.starts_with(w)) {
            // a folder above ones found before takes them in
            weight_dirs.retain(|w| !w.starts_with(rel));
            weight_dirs.push(rel.to_path_buf());
        }
    }
    (weight_dirs, root_weights)
}

pub fn scan(dir: &Path) -> Result<Draft, InitError> {
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |source| InitError::Io { path: p, source }
    };
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map_err(io(dir))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect();
    names.sort();
    let folder = dir
        .canonicalize()
        .ok()
        .and_then(|p| p.file_name().map(|f| f.to_string_lossy().to_string()))
        .unwrap_or_else(|| "app".into());
    let mut d = Draft {
        source: format!("the files in {folder}/"),
        ..Draft::default()
    };
    d.name = Some(Why::new(
        format!("localhost/{}", slug(&folder)),
        "where `mlimg build --push` sends the image: replace with your registry repository",
    ));

    // dependencies: a PEP 751 lock wins over requirements files
    let pylocks: Vec<&String> = names
        .iter()
        .filter(|n| n.starts_with("pylock") && n.ends_with(".toml"))
        .collect();
    let reqs: Vec<&String> = names
        .iter()
        .filter(|n| n.starts_with("requirements") && n.ends_with(".txt"))
        .collect();
    if !pylocks.is_empty() {
        for p in &pylocks {
            d.deps.push(DraftDeps {
                name: deps_name(p),
                key: "pylock",
                path: p.to_string(),
                why: format!(
                    "{p}: a PEP 751 lock; its wheels are installed for the target platform, no pip needed"
                ),
            });
        }
        if !reqs.is_empty() {
            d.notes.push(format!(
                "{} left out: {} pins the dependencies",
                reqs.iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                pylocks[0]
            ));
        }
    } else {
        // requirements.txt first, then the others by name; dev/test files left out
        let mut ordered: Vec<&String> = reqs.clone();
        ordered.sort_by_key(|n| (n.as_str() != "requirements.txt", n.to_string()));
        for r in ordered {
            if is_dev_requirements(r) {
                d.notes.push(format!(
                    "{r} left out: it looks like development dependencies"
                ));
                continue;
            }
            d.deps.push(DraftDeps {
                name: deps_name(r),
                key: "requirements",
                path: r.to_string(),
                why: format!(
                    "{r}: one layer of wheels for the target platform. Every line needs ==VERSION and\n--hash=sha256:… (`pip-compile --generate-hashes` or `uv pip compile --generate-hashes` writes them)"
                ),
            });
        }
    }

    // weights: folders that directly hold weight-like files
    let (weight_dirs, root_weights) = weight_dirs(dir);
    for w in &weight_dirs {
        let rel = w.to_string_lossy().to_string();
        let name = super::weights_name(w);
        d.weights.push(DraftWeights {
            dest: format!("/models/{name}"),
            name,
            source: rel.clone(),
            why: format!(
                "{rel}/ holds model weights: a layer of its own, rebuilt only when they change\n(uncompressed: weights barely compress; add include = [\"*.safetensors\", \"*.json\"] to pick files)"
            ),
        });
    }
    if !root_weights.is_empty() {
        d.untranslated.push(super::Untranslated {
            at: folder.clone(),
            instruction: format!("weight files at the top level: {}", root_weights.join(", ")),
            advice: "move them into a folder (e.g. models/) and add it as [[weights]]: then a new model rebuilds only that layer; as they are, they ship in the app layer".into(),
        });
    }

    // the entry point
    let mut entry = None;
    'find: for sub in ["", "app/", "src/"] {
        for f in ["main.py", "app.py", "server.py", "serve.py", "api.py"] {
            let rel = format!("{sub}{f}");
            let p = dir.join(&rel);
            if let Ok(text) = std::fs::read_to_string(&p) {
                entry = Some(entry_of(&rel, &text));
                break 'find;
            }
        }
    }
    let python = !d.deps.is_empty()
        || entry.is_some()
        || names
            .iter()
            .any(|n| n.ends_with(".py") || n == "pyproject.toml");
    if python {
        let version = std::fs::read_to_string(dir.join(".python-version"))
            .ok()
            .and_then(|v| {
                let v = v.trim();
                let mut it = v.split('.');
                Some(format!("{}.{}", it.next()?, it.next()?))
            });
        d.base = Some(match version {
            Some(v) => Why::new(
                format!("python:{v}-slim"),
                format!(
                    ".python-version says {v}: the official slim Python image (pinned to a digest by `mlimg lock`)"
                ),
            ),
            None => Why::new(
                "python:3.11-slim".to_string(),
                "a Python service: the official slim Python image (pinned to a digest by `mlimg lock`);\nuse the Python version your wheels are built for",
            ),
        });
    }
    let ignore = dir.join(".dockerignore").is_file() || dir.join(".mlimgignore").is_file();
    let mut exclude: Vec<String> = Vec::new();
    if !ignore {
        for n in [".git", ".venv", "venv", "__pycache__", "tests", "notebooks"] {
            if dir.join(n).is_dir() {
                exclude.push(format!("{n}/"));
            }
        }
    }
    d.app = Some(DraftApp {
        src: ".".into(),
        dest: "/app".into(),
        exclude,
        why: if ignore {
            "your code: this folder, minus what .dockerignore / .mlimgignore exclude (honoured as docker does);\nweights folders and dependency trees above are left out automatically".into()
        } else {
            "your code: this folder; weights folders above are left out automatically (a .dockerignore\nor .mlimgignore here is honoured as docker does)".into()
        },
    });
    d.workdir = Some(Why::new("/app".to_string(), "where the app layer lands"));
    d.user = Some(Why::new(
        "1000:1000".to_string(),
        "run as an unprivileged user (numeric: needs no /etc/passwd entry)",
    ));
    d.env.insert("PYTHONUNBUFFERED".into(), "1".into());
    if let [w] = d.weights.as_slice() {
        d.env
            .insert("MODEL_PATH".into(), format!("${{weights.{}.dest}}", w.name));
    }
    if let Some(e) = entry {
        if let Some(p) = e.port {
            d.ports.push(format!("{p}/tcp"));
        }
        if let (Some(route), Some(p)) = (&e.health, e.port) {
            d.healthcheck = Some(Why::new(
                DraftHealthcheck {
                    test: vec![
                        "CMD".into(),
                        "python".into(),
                        "-c".into(),
                        format!(
                            "import urllib.request; urllib.request.urlopen('http://localhost:{p}{route}')"
                        ),
                    ],
                    interval: Some("30s".into()),
                    timeout: Some("5s".into()),
                    start_period: Some("60s".into()),
                    retries: Some(3),
                },
                format!(
                    "the app serves {route}: checked with Python (slim images have no curl); start_period covers model loading"
                ),
            ));
        }
        d.entrypoint = Some(Why::new(e.argv, e.why));
    } else if python {
        d.notes.push(
            "no entry point found (main.py, app.py, server.py, serve.py, api.py): set [config] entrypoint".into(),
        );
    }
    Ok(d)
}
