//! The checks: pure functions of the spec, the resolved inputs, the plan, the lock and the
//! facts read for them.

use std::collections::BTreeSet;

use serde_json::Value;

use super::base::Wants;
use super::{Facts, Inputs, warning};
use crate::layer::Content;
use crate::plan::{LayerPlan, LayerRole, PlatformPlan};
use crate::progress::Warning;
use crate::sources::python::ResolvedWheel;
use crate::spec::{BaseSpec, DepsSource};

/// Weights above this want a healthcheck `start_period`.
pub const BIG_WEIGHTS: u64 = 100_000_000;

const WEIGHT_EXTENSIONS: [&str; 9] = [
    "safetensors",
    "bin",
    "pt",
    "pth",
    "onnx",
    "gguf",
    "h5",
    "joblib",
    "pkl",
];
const JUNK: [&str; 5] = [
    ".git",
    "__pycache__",
    ".ipynb_checkpoints",
    ".venv",
    "node_modules",
];
/// Env vars naming a model path by their whole name.
const MODEL_VARS: [&str; 10] = [
    "MODEL_PATH",
    "MODEL_DIR",
    "MODEL_HOME",
    "HF_HOME",
    "HF_HUB_CACHE",
    "HUGGINGFACE_HUB_CACHE",
    "TRANSFORMERS_CACHE",
    "SENTENCE_TRANSFORMERS_HOME",
    "TORCH_HOME",
    "MODELS_DIR",
];
/// … and by their suffix.
const MODEL_SUFFIXES: [&str; 4] = ["_MODEL_PATH", "_MODEL_DIR", "_MODELS_DIR", "_MODEL_HOME"];

/// The example paths a message lists.
const SHOWN: usize = 3;

fn list(paths: &[String]) -> String {
    let mut s: Vec<String> = paths.iter().take(SHOWN).map(|p| format!("/{p}")).collect();
    if paths.len() > SHOWN {
        s.push(format!("and {} more", paths.len() - SHOWN));
    }
    s.join(", ")
}

fn env(settings: &Value) -> Vec<(String, String)> {
    settings["Env"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e.as_str())
        .filter_map(|e| {
            e.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect()
}

/// `UID` or `NAME` and the optional group of a `user` value.
fn split_user(user: &str) -> (&str, Option<&str>) {
    match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    }
}

fn is_numeric(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// Whether an `/etc/passwd` or `/etc/group` text has an entry named `name`.
fn has_account(text: &str, name: &str) -> bool {
    text.lines()
        .any(|l| l.split(':').next().is_some_and(|n| n == name))
}

fn is_model_var(name: &str) -> bool {
    MODEL_VARS.contains(&name) || MODEL_SUFFIXES.iter().any(|s| name.ends_with(s))
}

/// The model paths of the spec's env, as image paths relative to `/` (relative values are
/// taken from the working directory).
fn model_paths(inputs: &Inputs, settings: &Value) -> Vec<(String, String, String)> {
    let workdir = settings["WorkingDir"].as_str().unwrap_or("/");
    inputs
        .spec
        .config
        .env
        .iter()
        .filter(|(k, v)| is_model_var(k) && !v.is_empty() && !v.contains("://"))
        .map(|(k, v)| {
            let abs = if v.starts_with('/') {
                v.clone()
            } else {
                format!("{workdir}/{v}")
            };
            let mut parts: Vec<&str> = Vec::new();
            for c in abs.split('/') {
                match c {
                    "" | "." => {}
                    ".." => {
                        parts.pop();
                    }
                    c => parts.push(c),
                }
            }
            (k.clone(), v.clone(), parts.join("/"))
        })
        .collect()
}

fn at_or_under(p: &str, dir: &str) -> bool {
    dir.is_empty() || p == dir || p.strip_prefix(dir).is_some_and(|r| r.starts_with('/'))
}

fn cuda_wheel(w: &ResolvedWheel) -> bool {
    let local = w.version.split_once('+').map(|(_, l)| l).unwrap_or("");
    let cu_local = local
        .strip_prefix("cu")
        .is_some_and(|r| !r.is_empty() && r.bytes().all(|b| b.is_ascii_digit()));
    let name = w.name.as_str();
    cu_local
        || name.starts_with("nvidia-")
        || name.starts_with("cupy-cuda")
        || name.starts_with("jax-cuda")
}

fn cpu_wheel(w: &ResolvedWheel) -> bool {
    w.version.ends_with("+cpu")
}

/// What the checks will ask of each base.
pub fn base_wants(inputs: &Inputs) -> Wants {
    let Some(pp) = inputs.plan.platforms.first() else {
        return Wants::default();
    };
    let accounts = pp.settings["User"].as_str().is_some_and(|u| {
        let (user, group) = split_user(u);
        (!user.is_empty() && !is_numeric(user)) || group.is_some_and(|g| !is_numeric(g))
    });
    let wheels = inputs
        .resolved
        .platforms
        .iter()
        .flat_map(|p| p.deps.iter().flat_map(|(_, w)| w));
    let cuda = wheels.clone().any(|w| cuda_wheel(w) || cpu_wheel(w));
    let libs = wheels
        .clone()
        .any(|w| super::sharedlibs::is_native(&w.filename));
    let paths = model_paths(inputs, &pp.settings)
        .into_iter()
        .filter(|(_, _, p)| !provided_by_layers(pp, p))
        .map(|(_, _, p)| p)
        .collect();
    Wants {
        accounts,
        cuda,
        paths,
        libs,
    }
}

fn provided_by_layers(pp: &PlatformPlan, path: &str) -> bool {
    pp.layers
        .iter()
        .flat_map(|l| &l.entries)
        .any(|e| at_or_under(&e.path, path))
}

/// Runs every check. Findings of a platform-independent check are reported once.
pub fn check(inputs: &Inputs, facts: &Facts) -> Vec<Warning> {
    let mut out: Vec<Warning> = Vec::new();
    let mut push = |w: Warning| {
        if !out.contains(&w) {
            out.push(w);
        }
    };
    base_unpinned(inputs).into_iter().for_each(&mut push);
    for (i, pp) in inputs.plan.platforms.iter().enumerate() {
        let base = facts.bases.get(i);
        root_user(pp).into_iter().for_each(&mut push);
        if let Some(b) = base {
            user_unknown(pp, b, facts).into_iter().for_each(&mut push);
            model_path_missing(inputs, pp, b)
                .into_iter()
                .for_each(&mut push);
            if let Some(rp) = inputs.resolved.platforms.get(i) {
                cuda_mismatch(rp, b).into_iter().for_each(&mut push);
            }
        }
        python_unbuffered(inputs, pp)
            .into_iter()
            .for_each(&mut push);
        healthcheck(pp).into_iter().for_each(&mut push);
    }
    let layers: Vec<&LayerPlan> = {
        let mut seen = BTreeSet::new();
        inputs
            .plan
            .platforms
            .iter()
            .flat_map(|p| p.layers.iter())
            .filter(|l| seen.insert(l.selector.clone()))
            .map(|l| l.as_ref())
            .collect()
    };
    shared_libs(inputs, facts).into_iter().for_each(&mut push);
    stray_weights(inputs, &layers, facts)
        .into_iter()
        .for_each(&mut push);
    app_junk(&layers).into_iter().for_each(&mut push);
    secrets(&layers, facts).into_iter().for_each(&mut push);
    out
}

/// `shared-lib-missing` on every platform whose base was read in full and whose native wheels
/// were all read (a wheel not read could be the one that provides a library).
pub fn shared_libs(inputs: &Inputs, facts: &Facts) -> Vec<Warning> {
    use super::sharedlibs::{self, Image, SystemLibs};
    let none = SystemLibs::default();
    let mut out: Vec<Warning> = Vec::new();
    'platforms: for (i, pp) in inputs.plan.platforms.iter().enumerate() {
        let Some(base) = facts.bases.get(i) else {
            continue;
        };
        let Some(libs) = base.libs.as_ref().filter(|l| base.complete && !l.truncated) else {
            continue;
        };
        let mut files: BTreeSet<String> = sharedlibs::layer_files(pp).collect();
        let mut wheels = Vec::new();
        for l in &pp.layers {
            let Some(wi) = &l.wheels else { continue };
            for w in wi
                .wheels
                .iter()
                .filter(|w| sharedlibs::is_native(&w.filename))
            {
                let Some(wl) = facts.wheels.get(&super::wheel_key(w, &wi.target)) else {
                    continue 'platforms;
                };
                files.extend(wl.files.iter().cloned());
                wheels.push((l.role.to_string(), w, wl));
            }
        }
        let system = inputs.system.unwrap_or(&none);
        files.extend(system.paths.iter().cloned());
        let image = Image {
            base: libs,
            files,
            ld_library_path: sharedlibs::ld_library_path(&pp.settings),
            gpu: inputs.spec.config.gpu.is_some(),
            system,
        };
        for w in sharedlibs::check(&image, &wheels) {
            if !out.contains(&w) {
                out.push(w);
            }
        }
    }
    out
}

fn root_user(pp: &PlatformPlan) -> Option<Warning> {
    let user = pp.settings["User"].as_str().unwrap_or("");
    let (u, _) = split_user(user);
    if !(u.is_empty() || u == "root" || u == "0") {
        return None;
    }
    let why = if user.is_empty() {
        "neither [config] user nor the base sets a user".to_string()
    } else {
        format!("the user is {user:?}")
    };
    Some(warning(
        "root-user",
        format!("the container runs as root: {why}"),
    ))
}

fn base_unpinned(inputs: &Inputs) -> Option<Warning> {
    let BaseSpec::Registry(r) = &inputs.spec.image.base else {
        return None;
    };
    if r.contains('@') {
        return None;
    }
    let locked = inputs.plan.platforms.iter().all(|p| {
        inputs
            .lock
            .and_then(|l| l.base_digest(r, &p.platform))
            .is_some()
    });
    (!locked).then(|| {
        warning(
            "base-unpinned",
            format!(
                "base {r} is a tag: neither pinned by digest nor in mlimg.lock, so the next build may get another image"
            ),
        )
    })
}

fn user_unknown(pp: &PlatformPlan, base: &super::BaseFacts, facts: &Facts) -> Vec<Warning> {
    let Some(user) = pp.settings["User"].as_str() else {
        return Vec::new();
    };
    let (name, group) = split_user(user);
    let mut out = Vec::new();
    let mut check = |what: &str, name: &str, own: Option<&String>, based: Option<&String>| {
        if name.is_empty() || is_numeric(name) {
            return;
        }
        // our own layers' file replaces the base's
        let (text, whose) = match (own, based) {
            (Some(t), _) => (Some(t), "the image's"),
            (None, b) => (b, "the base's"),
        };
        if text.is_none() && !base.complete {
            return; // the base was not read in full: no verdict
        }
        if text.is_some_and(|t| has_account(t, name)) {
            return;
        }
        let file = if what == "user" { "passwd" } else { "group" };
        let why = match text {
            Some(_) => format!("{whose} /etc/{file} has no {what} {name:?}"),
            None => format!("the image has no /etc/{file}"),
        };
        out.push(warning(
            "user-unknown",
            format!("[config] user = {user:?}: {why}; the container would fail to start"),
        ));
    };
    check(
        "user",
        name,
        facts.local.passwd.as_ref(),
        base.passwd.as_ref(),
    );
    if let Some(g) = group {
        check("group", g, facts.local.group.as_ref(), base.group.as_ref());
    }
    out
}

fn is_python_app(inputs: &Inputs, pp: &PlatformPlan) -> bool {
    let spec = inputs.spec;
    if spec
        .deps
        .iter()
        .any(|d| !matches!(d.source, DepsSource::Dir(_)))
    {
        return true;
    }
    if spec.deps.iter().any(|d| {
        d.dest
            .as_deref()
            .is_some_and(|p| p.contains("site-packages") || p.contains("dist-packages"))
    }) {
        return true;
    }
    let runs_python = ["Entrypoint", "Cmd"].iter().any(|k| {
        pp.settings[*k].as_array().into_iter().flatten().any(|a| {
            let prog = a.as_str().unwrap_or("");
            let base = prog.rsplit('/').next().unwrap_or(prog);
            base.starts_with("python")
                || matches!(base, "uvicorn" | "gunicorn" | "hypercorn" | "streamlit")
        })
    });
    runs_python
        || pp
            .layers
            .iter()
            .filter(|l| l.role == LayerRole::App)
            .flat_map(|l| &l.entries)
            .any(|e| e.path.ends_with(".py"))
}

fn python_unbuffered(inputs: &Inputs, pp: &PlatformPlan) -> Option<Warning> {
    if !is_python_app(inputs, pp) {
        return None;
    }
    let set = env(&pp.settings)
        .iter()
        .any(|(k, v)| k == "PYTHONUNBUFFERED" && !v.is_empty());
    (!set).then(|| {
        warning(
            "python-unbuffered",
            "a Python service without PYTHONUNBUFFERED in its environment".to_string(),
        )
    })
}

fn healthcheck(pp: &PlatformPlan) -> Option<Warning> {
    let hc = &pp.settings["Healthcheck"];
    let test = hc["Test"].as_array();
    let has = test.is_some_and(|t| !t.is_empty() && t[0].as_str() != Some("NONE"));
    let weights: u64 = pp
        .layers
        .iter()
        .filter(|l| matches!(l.role, LayerRole::Weights(_)))
        .map(|l| l.size())
        .sum();
    if has && weights > BIG_WEIGHTS && hc["StartPeriod"].as_u64().unwrap_or(0) == 0 {
        return Some(warning(
            "healthcheck-start-period",
            format!(
                "{} MB of weights and a healthcheck without start_period: checks fail while the model loads",
                weights / 1_000_000
            ),
        ));
    }
    let ports: Vec<&String> = pp.settings["ExposedPorts"]
        .as_object()
        .map(|o| o.keys().collect())
        .unwrap_or_default();
    if !has && !ports.is_empty() {
        let ports: Vec<&str> = ports.iter().map(|p| p.as_str()).collect();
        return Some(warning(
            "healthcheck-missing",
            format!(
                "the service exposes {} but has no healthcheck",
                ports.join(", ")
            ),
        ));
    }
    None
}

fn is_weight_file(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    name.rsplit_once('.')
        .is_some_and(|(stem, ext)| !stem.is_empty() && WEIGHT_EXTENSIONS.contains(&ext))
}

fn stray_weights(inputs: &Inputs, layers: &[&LayerPlan], facts: &Facts) -> Vec<Warning> {
    let mut out = Vec::new();
    for l in layers {
        let dir_deps = match &l.role {
            LayerRole::Deps(n) => inputs
                .spec
                .deps
                .iter()
                .any(|d| &d.name == n && matches!(d.source, DepsSource::Dir(_))),
            LayerRole::App => true,
            _ => false,
        };
        if !dir_deps {
            continue;
        }
        let found: Vec<String> = l
            .entries
            .iter()
            .filter(|e| !matches!(e.content, Content::Dir | Content::Symlink(_)))
            .filter(|e| is_weight_file(&e.path) && !facts.local.recorded.contains(&e.path))
            .map(|e| e.path.clone())
            .collect();
        if !found.is_empty() {
            out.push(warning(
                "stray-weights",
                format!(
                    "{}: {} weight file(s) outside a [[weights]] entry: {}",
                    l.role,
                    found.len(),
                    list(&found)
                ),
            ));
        }
    }
    out
}

fn app_junk(layers: &[&LayerPlan]) -> Option<Warning> {
    let mut found: Vec<String> = Vec::new();
    for l in layers.iter().filter(|l| l.role == LayerRole::App) {
        for e in &l.entries {
            let parts: Vec<&str> = e.path.split('/').collect();
            if let Some(i) = parts.iter().position(|p| JUNK.contains(p)) {
                let dir = parts[..=i].join("/");
                if !found.contains(&dir) {
                    found.push(dir);
                }
            }
        }
    }
    (!found.is_empty())
        .then(|| warning("app-junk", format!("the app layer holds {}", list(&found))))
}

fn secret_name(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    matches!(
        name,
        ".env" | "id_rsa" | "id_dsa" | "id_ecdsa" | "id_ed25519" | ".netrc" | "_netrc"
    ) || name.ends_with(".pem")
        || path == ".docker/config.json"
        || path.ends_with("/.docker/config.json")
        || path == ".aws/credentials"
        || path.ends_with("/.aws/credentials")
}

fn secrets(layers: &[&LayerPlan], facts: &Facts) -> Vec<Warning> {
    let mut out = Vec::new();
    for l in layers {
        let mut found: Vec<String> = l
            .entries
            .iter()
            .filter(|e| !matches!(e.content, Content::Dir))
            .filter(|e| secret_name(&e.path) && !facts.local.recorded.contains(&e.path))
            .map(|e| e.path.clone())
            .collect();
        for t in &facts.local.tokens {
            if l.entries.iter().any(|e| &e.path == t) && !found.contains(t) {
                found.push(t.clone());
            }
        }
        if !found.is_empty() {
            out.push(warning(
                "secret",
                format!(
                    "{}: {} file(s) that look like secrets: {}",
                    l.role,
                    found.len(),
                    list(&found)
                ),
            ));
        }
    }
    out
}

fn model_path_missing(inputs: &Inputs, pp: &PlatformPlan, base: &super::BaseFacts) -> Vec<Warning> {
    let volumes: Vec<String> = pp.settings["Volumes"]
        .as_object()
        .map(|o| o.keys().map(|k| k.trim_matches('/').to_string()).collect())
        .unwrap_or_default();
    let mut out = Vec::new();
    for (var, value, path) in model_paths(inputs, &pp.settings) {
        if provided_by_layers(pp, &path)
            || base.present.contains(&path)
            || volumes.iter().any(|v| at_or_under(&path, v))
            || pp.layers.iter().any(|l| {
                // a wheel set's files are known once installed: site-packages counts
                l.wheels
                    .as_ref()
                    .is_some_and(|w| at_or_under(&path, w.target.site_packages().trim_matches('/')))
            })
        {
            continue;
        }
        if !base.complete {
            continue;
        }
        out.push(warning(
            "model-path-missing",
            format!("{var}={value}: no layer of the image provides /{path}"),
        ));
    }
    out
}

fn cuda_mismatch(
    rp: &crate::resolve::ResolvedPlatform,
    base: &super::BaseFacts,
) -> Option<Warning> {
    let wheels: Vec<&ResolvedWheel> = rp.deps.iter().flat_map(|(_, w)| w).collect();
    let cuda: Vec<&str> = wheels
        .iter()
        .filter(|w| cuda_wheel(w))
        .map(|w| w.filename.as_str())
        .collect();
    let cpu: Vec<&str> = wheels
        .iter()
        .filter(|w| cpu_wheel(w))
        .map(|w| w.filename.as_str())
        .collect();
    let names = |v: &[&str]| {
        let mut s: Vec<String> = v.iter().take(SHOWN).map(|s| s.to_string()).collect();
        if v.len() > SHOWN {
            s.push(format!("and {} more", v.len() - SHOWN));
        }
        s.join(", ")
    };
    if !cuda.is_empty() && !base.cuda && base.complete {
        return Some(warning(
            "cuda-mismatch",
            format!(
                "{}: CUDA-built wheels on a base without CUDA libraries: {}",
                rp.platform,
                names(&cuda)
            ),
        ));
    }
    if !cpu.is_empty() && base.cuda {
        return Some(warning(
            "cuda-mismatch",
            format!(
                "{}: CPU-only wheels on a CUDA base: {}",
                rp.platform,
                names(&cpu)
            ),
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(is_weight_file("app/model.safetensors"));
        assert!(is_weight_file("app/x.pkl"));
        assert!(!is_weight_file("app/.pkl"));
        assert!(!is_weight_file("app/binary"));
        assert!(secret_name("app/.env"));
        assert!(secret_name("app/home/.docker/config.json"));
        assert!(!secret_name("app/docker/config.json"));
        assert!(secret_name("app/certs/key.pem"));
        assert!(is_model_var("MODEL_PATH"));
        assert!(is_model_var("SST2_MODEL_DIR"));
        assert!(!is_model_var("MODEL"));
        assert!(has_account(
            "root:x:0:0::/:/bin/sh\napp:x:1000:1000::/:/bin/sh\n",
            "app"
        ));
        assert!(!has_account("root:x:0:0::/:/bin/sh\n", "ap"));
    }

    fn wheel(name: &str, version: &str) -> ResolvedWheel {
        ResolvedWheel {
            name: name.into(),
            version: version.into(),
            filename: format!("{name}-{version}-py3-none-any.whl"),
            sha256: String::new(),
            url_or_path: String::new(),
            size: None,
        }
    }

    #[test]
    fn cuda_and_cpu_wheels() {
        assert!(cuda_wheel(&wheel("torch", "2.3.1+cu121")));
        assert!(cuda_wheel(&wheel("nvidia-cublas-cu12", "12.1.3.1")));
        assert!(!cuda_wheel(&wheel("torch", "2.3.1")));
        assert!(!cuda_wheel(&wheel("torch", "2.3.1+cpu")));
        assert!(cpu_wheel(&wheel("torch", "2.3.1+cpu")));
    }
}
