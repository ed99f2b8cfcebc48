//! Lints: what a build can tell about the image it makes that would hurt at run time (root,
//! a floating base, a user the container cannot switch to, secrets or stray weights in a
//! layer, …). Each is a [`Warning`] with a stable code and a hint; `--strict` makes them errors.
//!
//! [`LINTS`] is the table (code, one line, hint) that `docs/lints.md` mirrors. The checks in
//! `checks.rs` are pure functions of values the pipeline already has (spec, resolved inputs,
//! plan, lock) plus [`Facts`]: what must be read — the base's `/etc/passwd`, `/etc/group`,
//! CUDA libraries and model paths (streamed from its layers' tar entries, nothing unpacked or
//! stored, only when a check needs them) and small local files of the layers we build (a
//! bounded scan for tokens, the `RECORD`s of installed distributions in a `dir` tree).

mod base;
mod checks;
mod elf;
mod local;
mod sharedlibs;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::lock::Lockfile;
use crate::plan::BuildPlan;
use crate::progress::Warning;
use crate::registry::RegistryClient;
use crate::resolve::Resolved;
use crate::sources::python::{PythonTarget, ResolvedWheel};
use crate::spec::Spec;

pub use base::{BaseFacts, BaseLibs};
pub use elf::{Dynamic, FileSource, Source, read_dynamic};
pub use local::LocalFacts;
pub use sharedlibs::{SystemLibs, WheelLibs, debian_package};

/// One lint: its code (stable, for CI and `docs/lints.md`), what it means in one line, and
/// how to fix it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lint {
    pub code: &'static str,
    pub summary: &'static str,
    pub hint: &'static str,
}

/// Every lint mlimg has. `docs/lints.md` has one section per code (a test checks it).
pub const LINTS: &[Lint] = &[
    Lint {
        code: "root-user",
        summary: "the container's process runs as root",
        hint: "set [config] user = \"1000:1000\" (or a user the base defines) and give that user the folders it writes",
    },
    Lint {
        code: "base-unpinned",
        summary: "the registry base is neither pinned by digest nor locked",
        hint: "run `mlimg lock` and commit mlimg.lock, or write the base as NAME@sha256:…",
    },
    Lint {
        code: "user-unknown",
        summary: "[config] user names a user or group that /etc/passwd or /etc/group of the image lacks; the container would fail to start",
        hint: "use a numeric UID[:GID] (e.g. \"1000:1000\"), or a name the base defines",
    },
    Lint {
        code: "python-unbuffered",
        summary: "a Python service without PYTHONUNBUFFERED: its log lines sit in a buffer and are lost when it crashes",
        hint: "add PYTHONUNBUFFERED = \"1\" to [config] env",
    },
    Lint {
        code: "healthcheck-start-period",
        summary: "the image holds more than 100 MB of weights and its healthcheck has no start_period: loading the model counts as failures",
        hint: "add start_period = \"60s\" (about the time the model takes to load) to [config] healthcheck",
    },
    Lint {
        code: "healthcheck-missing",
        summary: "the service exposes a port but has no healthcheck",
        hint: "add [config] healthcheck = { test = [\"CMD\", \"curl\", \"-f\", \"http://localhost:PORT/health\"], start_period = \"60s\" }",
    },
    Lint {
        code: "stray-weights",
        summary: "weight files (*.safetensors, *.bin, *.pt, *.pth, *.onnx, *.gguf, *.h5, *.joblib, *.pkl) in the app layer or a deps dir instead of a [[weights]] entry",
        hint: "move them to a [[weights]] entry (a layer of their own that a code change does not rebuild) and exclude them from [app]",
    },
    Lint {
        code: "app-junk",
        summary: "the app layer holds .git, __pycache__, .ipynb_checkpoints, .venv or node_modules",
        hint: "add them to .dockerignore or [app] exclude",
    },
    Lint {
        code: "secret",
        summary: "a layer holds what looks like a secret (.env, *.pem, id_rsa, .netrc, .docker/config.json, .aws/credentials, an hf_ token)",
        hint: "exclude the file ([app] exclude, .dockerignore) and pass secrets at run time (environment, mounted secrets); rotate a token that was built into an image",
    },
    Lint {
        code: "model-path-missing",
        summary: "an env var names a model path (MODEL_PATH, *_MODEL_DIR, HF_HOME, …) that no layer provides",
        hint: "point it at a [[weights]] entry's dest (\"${weights.NAME.dest}\"), or declare the folder in [config] volumes if it is mounted at run time",
    },
    Lint {
        code: "cuda-mismatch",
        summary: "CUDA-built wheels (+cu121, nvidia-*) on a base without CUDA libraries, or CPU-only wheels (+cpu) on a CUDA base",
        hint: "build CUDA wheels on a CUDA base (e.g. nvidia/cuda:12.1.1-runtime-ubuntu22.04), or use the CPU wheels (e.g. torch +cpu from https://download.pytorch.org/whl/cpu) on a plain base",
    },
    Lint {
        code: "shared-lib-missing",
        summary: "a wheel's native code needs a shared library (DT_NEEDED) that neither the base, the image's other wheels nor its system packages provide: the import fails at run time",
        hint: "add the named Debian package to [system] packages (as `RUN apt-get install -y libgomp1` would), or build on a base that has the library",
    },
];

/// The lint with this code.
pub fn lint(code: &str) -> Option<&'static Lint> {
    LINTS.iter().find(|l| l.code == code)
}

/// A lint's warning: `code`'s table entry gives the hint.
fn warning(code: &'static str, message: String) -> Warning {
    let hint = lint(code).map(|l| l.hint).unwrap_or_default();
    Warning::new(code, message).with_hint(hint)
}

/// What the checks read: per platform of the plan, the base's facts; the local files'; and
/// the shared objects of the native wheels whose files were at hand, by [`wheel_key`].
#[derive(Debug, Default)]
pub struct Facts {
    pub bases: Vec<BaseFacts>,
    pub local: LocalFacts,
    pub wheels: BTreeMap<String, WheelLibs>,
}

/// The values a lint run looks at.
pub struct Inputs<'a> {
    pub spec: &'a Spec,
    pub resolved: &'a Resolved,
    pub plan: &'a BuildPlan,
    pub lock: Option<&'a Lockfile>,
    /// What the build's own system packages (`[system]`) add, for `shared-lib-missing`
    /// (`None`: nothing).
    pub system: Option<&'a SystemLibs>,
}

/// A wheel as installed for one target: what [`Facts::wheels`] and the facts cache key by.
pub fn wheel_key(w: &ResolvedWheel, target: &PythonTarget) -> String {
    format!("v1\n{}\n{target:?}", w.sha256.to_ascii_lowercase())
}

/// Reads the shared objects of the plan's native wheels whose files are at hand (`fetched`,
/// else local or in the wheel cache: nothing is downloaded), from the facts cache when an
/// earlier build read them (`record`: keep what is read here).
fn read_wheels(
    plan: &BuildPlan,
    cache_dir: &Path,
    record: bool,
    fetched: &dyn Fn(&ResolvedWheel) -> Option<PathBuf>,
) -> BTreeMap<String, WheelLibs> {
    let mut out = BTreeMap::new();
    let installs = plan
        .platforms
        .iter()
        .flat_map(|p| &p.layers)
        .filter_map(|l| l.wheels.as_ref());
    for wi in installs {
        for w in wi
            .wheels
            .iter()
            .filter(|w| sharedlibs::is_native(&w.filename))
        {
            let key = wheel_key(w, &wi.target);
            if out.contains_key(&key) {
                continue;
            }
            if let Some(hit) = crate::cache::facts::get::<WheelLibs>(cache_dir, "wheel-libs", &key)
            {
                out.insert(key, hit);
                continue;
            }
            let Some(path) = fetched(w).or_else(|| sharedlibs::local_wheel(w, cache_dir)) else {
                continue;
            };
            // an unreadable wheel fails the build's install step, which says why
            if let Ok(libs) = sharedlibs::scan_wheel(&path, &wi.target) {
                if record {
                    crate::cache::facts::put(cache_dir, "wheel-libs", &key, &libs);
                }
                out.insert(key, libs);
            }
        }
    }
    out
}

/// Reads what the checks need (the base's layers only when a check needs them) and runs every
/// check. Failing to read a base layer is not a lint: that check is skipped. `record`: keep
/// what was read of the base in the cache (not in a dry run).
pub fn run(
    inputs: &Inputs,
    client: Option<&RegistryClient>,
    cache_dir: &std::path::Path,
    record: bool,
) -> Vec<Warning> {
    let wheels = read_wheels(inputs.plan, cache_dir, record, &|_| None);
    let mut wants = checks::base_wants(inputs);
    // a build reads the base's libraries now, for `run_fetched` to find them in the cache; a
    // dry run (no `run_fetched`) only when it has a wheel to check
    if !record && wheels.is_empty() {
        wants.libs = false;
    }
    let facts = Facts {
        bases: bases(inputs, client, cache_dir, &wants, record),
        local: local::read(inputs.plan),
        wheels,
    };
    checks::check(inputs, &facts)
}

/// What `wants` asks of each platform's base (from the cache's record when one is there).
fn bases(
    inputs: &Inputs,
    client: Option<&RegistryClient>,
    cache_dir: &Path,
    wants: &base::Wants,
    record: bool,
) -> Vec<BaseFacts> {
    inputs
        .resolved
        .platforms
        .iter()
        .map(|rp| base::read(&rp.base, client, cache_dir, wants, record))
        .collect()
}

/// After the fetch stage: `shared-lib-missing` for the wheels [`run`] could not read yet
/// (downloaded by this build; `fetched` gives a wheel's file). Returns only the warnings that
/// `earlier` (what [`run`] returned) does not hold.
pub fn run_fetched(
    inputs: &Inputs,
    fetched: &dyn Fn(&ResolvedWheel) -> Option<PathBuf>,
    client: Option<&RegistryClient>,
    cache_dir: &Path,
    record: bool,
    earlier: &[Warning],
) -> Vec<Warning> {
    // the same wants as `run`'s: the base's facts come from the cache record it left
    let wants = checks::base_wants(inputs);
    if !wants.libs {
        return Vec::new();
    }
    let facts = Facts {
        bases: bases(inputs, client, cache_dir, &wants, record),
        local: LocalFacts::default(),
        wheels: read_wheels(inputs.plan, cache_dir, record, fetched),
    };
    checks::shared_libs(inputs, &facts)
        .into_iter()
        .filter(|w| !earlier.contains(w))
        .collect()
}
