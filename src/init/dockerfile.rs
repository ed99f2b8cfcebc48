//! A draft spec from a Dockerfile, parsed with the `parse-dockerfile` crate (a full parser of
//! the Dockerfile grammar: heredocs, escapes, exec and shell forms, stages).
//!
//! What translates: the final stage's `FROM` (through stages it builds on), `ARG` defaults
//! (substituted), `WORKDIR`, `ENV`, `EXPOSE`, `USER`, `HEALTHCHECK`, `LABEL`, `MAINTAINER`,
//! `VOLUME`, `STOPSIGNAL`, `ENTRYPOINT`/`CMD`; `COPY` of requirement files plus
//! `RUN pip install -r …` (also in a builder stage whose output the final stage copies) →
//! `[[deps]]`; `COPY` of folders or files of weights → `[[weights]]`; `COPY` of code → `[app]`.
//! Everything else is listed with what to do instead.

use std::collections::HashMap;
use std::path::Path;

use parse_dockerfile::{
    Command, Flag, HealthcheckArguments, Instruction, JsonOrStringArray, Source,
};

use super::{
    Draft, DraftApp, DraftDeps, DraftHealthcheck, DraftWeights, InitError, Untranslated, Why,
    deps_name, is_weight_file, slug,
};

/// Docker's default PATH, for `ENV PATH=…:$PATH`.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Expands `$NAME`, `${NAME}` and `${NAME:-default}` from `vars`; returns the names it could
/// not resolve.
fn expand(s: &str, vars: &HashMap<String, String>) -> (String, Vec<String>) {
    let mut out = String::new();
    let mut missing = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 1 < b.len() && b[i + 1] == b'$' {
            out.push('$');
            i += 2;
            continue;
        }
        if b[i] != b'$' {
            let c = s[i..].chars().next().unwrap_or('\0');
            out.push(c);
            i += c.len_utf8();
            continue;
        }
        let (name, default, end) = if b.get(i + 1) == Some(&b'{') {
            match s[i + 2..].find('}') {
                Some(e) => {
                    let inner = &s[i + 2..i + 2 + e];
                    let (n, d) = match inner.split_once(":-") {
                        Some((n, d)) => (n.to_string(), Some(d.to_string())),
                        None => (inner.to_string(), None),
                    };
                    (n, d, i + 3 + e)
                }
                None => {
                    out.push_str(&s[i..]);
                    break;
                }
            }
        } else {
            let n: String = s[i + 1..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if n.is_empty() {
                out.push('$');
                i += 1;
                continue;
            }
            let l = n.len();
            (n, None, i + 1 + l)
        };
        match vars.get(&name).cloned().or(default) {
            Some(v) => out.push_str(&v),
            None if name == "PATH" => out.push_str(DEFAULT_PATH),
            None => {
                out.push_str(&s[i..end]);
                missing.push(name);
            }
        }
        i = end;
    }
    (out, missing)
}

/// `A=1 B="two words"` (or the legacy `KEY value`) as pairs, quotes removed.
fn pairs(s: &str) -> Vec<(String, String)> {
    let s = s.trim();
    let first = s.split_whitespace().next().unwrap_or_default();
    if !first.contains('=') {
        // legacy form: the key, then the rest of the line
        let rest = s[first.len()..].trim();
        return vec![(first.to_string(), unquote(rest))];
    }
    let mut out = Vec::new();
    for w in words(s) {
        if let Some((k, v)) = w.split_once('=') {
            out.push((k.to_string(), v.to_string()));
        }
    }
    out
}

fn unquote(s: &str) -> String {
    words(s).join(" ")
}

/// Shell-like words: quotes group and are removed, backslash escapes the next character.
fn words(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut any = false;
    let mut quote: Option<char> = None;
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (None, '"' | '\'') => {
                quote = Some(c);
                any = true;
            }
            (Some(q), c) if c == q => quote = None,
            (Some('"') | None, '\\') => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            (None, c) if c.is_whitespace() => {
                if any || !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            (_, c) => cur.push(c),
        }
    }
    if any || !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// An absolute image path for `p` relative to `workdir`, normalized.
fn image_path(workdir: &str, p: &str) -> String {
    let joined = if p.starts_with('/') {
        p.to_string()
    } else {
        format!("{}/{p}", workdir.trim_end_matches('/'))
    };
    let mut parts: Vec<&str> = Vec::new();
    for c in joined.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    format!("/{}", parts.join("/"))
}

fn flag<'a>(flags: &'a [Flag<'a>], name: &str) -> Option<&'a str> {
    flags
        .iter()
        .find(|f| f.name.value == name)
        .and_then(|f| f.value.as_ref().map(|v| v.value.as_ref()))
}

fn command_argv(c: &Command) -> Vec<String> {
    match c {
        Command::Exec(list) => list.value.iter().map(|s| s.value.to_string()).collect(),
        Command::Shell(text) => vec!["/bin/sh".into(), "-c".into(), text.value.trim().into()],
        _ => Vec::new(),
    }
}

fn command_text(c: &Command) -> String {
    match c {
        Command::Exec(list) => list
            .value
            .iter()
            .map(|s| s.value.to_string())
            .collect::<Vec<_>>()
            .join(" "),
        Command::Shell(text) => text.value.to_string(),
        _ => String::new(),
    }
}

/// The `-r FILE` arguments of a pip install command (`pip`, `pip3`, `python -m pip`,
/// `uv pip`), and the package specs it names directly; `None` when it is no pip install.
fn pip_install(part: &str) -> Option<(Vec<String>, Vec<String>)> {
    let w = words(part);
    let i = w.iter().position(|x| x == "install")?;
    let head = &w[..i];
    let is_pip = head
        .iter()
        .any(|x| x == "pip" || x == "pip3" || x.ends_with("/pip") || x.ends_with("/pip3"));
    if !is_pip {
        return None;
    }
    let mut reqs = Vec::new();
    let mut pkgs = Vec::new();
    let mut it = w[i + 1..].iter();
    while let Some(a) = it.next() {
        if a == "-r" || a == "--requirement" || a == "-c" || a == "--constraint" {
            if let Some(f) = it.next()
                && (a == "-r" || a == "--requirement")
            {
                reqs.push(f.clone());
            }
        } else if let Some(f) = a.strip_prefix("--requirement=") {
            reqs.push(f.to_string());
        } else if let Some(f) = a.strip_prefix("-r").filter(|f| !f.is_empty()) {
            reqs.push(f.to_string());
        } else if [
            "-t",
            "--target",
            "--prefix",
            "--root",
            "-i",
            "--index-url",
            "--extra-index-url",
            "-f",
            "--find-links",
        ]
        .contains(&a.as_str())
        {
            it.next();
        } else if !a.starts_with('-') {
            pkgs.push(a.clone());
        }
    }
    Some((reqs, pkgs))
}

/// The packages of `apt-get install …` / `apt install …` (options and `-y` left out); `None`
/// for any other command. `pkg=version` is kept as written (`[system]` takes it).
fn apt_install(part: &str) -> Option<Vec<String>> {
    let w = words(part);
    let (cmd, rest) = w.split_first()?;
    if !["apt-get", "apt"].contains(&cmd.as_str()) {
        return None;
    }
    let mut it = rest.iter().skip_while(|a| a.starts_with('-'));
    if it.next().map(String::as_str) != Some("install") {
        return None;
    }
    Some(
        it.filter(|a| !a.starts_with('-'))
            .filter(|a| crate::spec::system::valid_name(a.split('=').next().unwrap_or(a)))
            .cloned()
            .collect(),
    )
}

/// What to do instead of a RUN step that is not a pip install.
fn run_advice(part: &str) -> &'static str {
    let w = words(part);
    let cmd = w.first().map(String::as_str).unwrap_or_default();
    let has = |s: &str| part.contains(s);
    if [
        "apt-get", "apt", "apk", "yum", "dnf", "microdnf", "conda", "mamba",
    ]
    .contains(&cmd)
    {
        "mlimg runs no commands: use a base image that already has these system packages (or build such a base once and set it as [image] base)"
    } else if ["useradd", "adduser", "groupadd", "addgroup"].contains(&cmd) {
        "set [config] user = \"UID:GID\" (numeric ids need no /etc/passwd entry)"
    } else if has("huggingface-cli")
        || has("hf download")
        || has("snapshot_download")
        || has("from_pretrained")
    {
        "fetch the model as a layer instead: [[weights]] source = \"hf://ORG/REPO\" with a revision (pinned by `mlimg lock`)"
    } else if ["wget", "curl", "git"].contains(&cmd) {
        "download it into the build context before mlimg runs (in CI), then add it as [[weights]] or [app]; Hugging Face models: [[weights]] source = \"hf://ORG/REPO\""
    } else if has("-m venv") || cmd == "virtualenv" || has("-m virtualenv") {
        "not needed: mlimg installs the wheels into the base's Python (site-packages, scripts in its bin folder)"
    } else if ["mkdir", "chmod", "chown", "ln", "touch"].contains(&cmd) {
        "not needed: mlimg creates parent folders; files are owned by 0:0 with normalized modes (set [config] user for the process)"
    } else if ["rm", "find"].contains(&cmd) || has("apt-get clean") || has("pip cache purge") {
        "not needed: no build caches end up in mlimg's layers"
    } else if cmd == "python" || cmd == "python3" {
        "mlimg runs no Python at build time: run this step before mlimg (in CI) and add what it writes as [[weights]] or [app]"
    } else {
        "mlimg runs nothing at build time: run this step before mlimg (in CI) and add its output as [[deps]] dir = …, [[weights]] or [app]"
    }
}

/// Whether a local path looks like model weights: a weight-like file, or a folder holding some
/// (or named like a model folder).
fn is_weights(context: &Path, rel: &str) -> bool {
    let p = context.join(rel);
    let name = Path::new(rel)
        .file_name()
        .map(|f| f.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    if p.is_file() {
        return is_weight_file(&name);
    }
    if p.is_dir() {
        let named = [
            "models",
            "model",
            "weights",
            "checkpoints",
            "checkpoint",
            "ckpt",
        ]
        .contains(&name.as_str());
        let holds = walkdir::WalkDir::new(&p)
            .max_depth(3)
            .into_iter()
            .filter_map(|e| e.ok())
            .any(|e| e.file_type().is_file() && is_weight_file(&e.file_name().to_string_lossy()));
        return holds || (named && !p.join("__init__.py").exists());
    }
    // not in the context: judge by name
    is_weight_file(&name) || ["models", "model", "weights", "checkpoints"].contains(&name.as_str())
}

struct Cx<'a> {
    label: &'a str,
    text: &'a str,
    context: &'a Path,
    draft: Draft,
    vars: HashMap<String, String>,
    workdir: String,
    /// image path → context path, from the COPYs so far
    copies: Vec<(String, String)>,
    app_sources: Vec<(String, String, usize)>,
    noted_chown: bool,
}

impl Cx<'_> {
    fn line(&self, pos: usize) -> usize {
        self.text[..pos.min(self.text.len())].matches('\n').count() + 1
    }

    fn at(&self, pos: usize) -> String {
        format!("{}:{}", self.label, self.line(pos))
    }

    fn source_text(&self, span: &std::ops::Range<usize>) -> String {
        let t = self.text.get(span.clone()).unwrap_or_default();
        let one: String = t
            .replace("\\\n", " ")
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        if one.chars().count() > 160 {
            format!("{}…", one.chars().take(160).collect::<String>())
        } else {
            one
        }
    }

    fn untranslated(&mut self, pos: usize, instruction: String, advice: impl Into<String>) {
        let at = self.at(pos);
        self.draft.untranslated.push(Untranslated {
            at,
            instruction,
            advice: advice.into(),
        });
    }

    fn x(&self, s: &str) -> String {
        expand(s, &self.vars).0
    }

    /// The context path of a file the image has at `image`, through the COPYs so far.
    fn context_of(&self, image: &str) -> Option<String> {
        for (dest, src) in self.copies.iter().rev() {
            if dest == image {
                return Some(src.clone());
            }
            if let Some(rest) = image.strip_prefix(&format!("{}/", dest.trim_end_matches('/'))) {
                let joined = if src == "." {
                    rest.to_string()
                } else {
                    format!("{}/{rest}", src.trim_end_matches('/'))
                };
                if self.context.join(&joined).is_file() || dest == "/" {
                    return Some(joined);
                }
            }
        }
        None
    }

    fn add_deps(&mut self, file: &str, why: String) {
        if self.draft.deps.iter().any(|d| d.path == file) {
            return;
        }
        let mut name = deps_name(file);
        while self.draft.deps.iter().any(|d| d.name == name) {
            name.push('2');
        }
        let key = if file.ends_with(".toml") {
            "pylock"
        } else {
            "requirements"
        };
        self.draft.deps.push(DraftDeps {
            name,
            key,
            path: file.to_string(),
            why,
        });
    }

    /// A RUN: pip installs of requirement files become deps sets; the rest is listed.
    fn run(&mut self, pos: usize, span: &std::ops::Range<usize>, cmd: &Command, stage: &str) {
        let text = command_text(cmd).replace("\\\n", " ");
        let mut rest = Vec::new();
        let mut advice = None;
        let installs_apt = stage.is_empty()
            && text
                .split("&&")
                .flat_map(|p| p.split(';'))
                .any(|p| apt_install(p.trim()).is_some_and(|p| !p.is_empty()));
        for part in text
            .split("&&")
            .flat_map(|p| p.split(';'))
            .flat_map(|p| p.split('\n'))
            .map(str::trim)
            .filter(|p| !p.is_empty())
        {
            match pip_install(part) {
                Some((reqs, pkgs)) => {
                    for r in reqs {
                        let r = self.x(&r);
                        let img = image_path(&self.workdir, &r);
                        let file = self.context_of(&img).or_else(|| {
                            let base = Path::new(&r).file_name()?.to_string_lossy().to_string();
                            self.context.join(&base).is_file().then_some(base)
                        });
                        match file {
                            Some(f) => {
                                let why = format!(
                                    "{}: `pip install -r {r}`{}: one layer of wheels for the target platform.\nEvery line needs ==VERSION and --hash=sha256:… (pip-compile --generate-hashes writes them)",
                                    self.at(pos),
                                    if stage.is_empty() {
                                        String::new()
                                    } else {
                                        format!(" in stage {stage}")
                                    }
                                );
                                self.add_deps(&f, why);
                            }
                            None => self.untranslated(
                                pos,
                                format!("RUN pip install -r {r}"),
                                format!("{r} is not in the build context: add [[deps]] requirements = \"PATH\" for it"),
                            ),
                        }
                    }
                    let pkgs: Vec<String> = pkgs
                        .into_iter()
                        .filter(|p| {
                            !["pip", "setuptools", "wheel", "--upgrade", "-U"].contains(&p.as_str())
                        })
                        .collect();
                    if pkgs == ["."]
                        || pkgs
                            .iter()
                            .any(|p| p.starts_with('.') || p.starts_with('/'))
                    {
                        rest.push(part.to_string());
                        advice.get_or_insert(
                            "installing the project itself: mlimg copies your code as [app]; build a wheel (python -m build) and pin it in a requirements file if it must be installed",
                        );
                    } else if !pkgs.is_empty() {
                        rest.push(part.to_string());
                        advice.get_or_insert(
                            "packages named on the command line: put them in a requirements file pinned with hashes (pip-compile --generate-hashes) and add it as [[deps]]",
                        );
                    }
                }
                // only the final stage's packages end up in the image
                None if stage.is_empty() && apt_install(part).is_some_and(|p| !p.is_empty()) => {
                    let pkgs = apt_install(part).unwrap_or_default();
                    let why = format!(
                        "{}: `{}`: Debian packages resolved against the base's archive and keyring, locked, installed into their own layer without running apt",
                        self.at(pos),
                        part
                    );
                    let sys = self.draft.system.get_or_insert(Why {
                        value: Vec::new(),
                        why,
                    });
                    for p in pkgs {
                        if !sys.value.contains(&p) {
                            sys.value.push(p);
                        }
                    }
                }
                None if installs_apt
                    && (["apt-get update", "apt update", "apt-get clean", "apt clean"]
                        .iter()
                        .any(|c| part.starts_with(c))
                        || part.contains("/var/lib/apt/lists")) =>
                {
                    // apt's own housekeeping around an install: [system] needs none of it
                }
                None => {
                    advice.get_or_insert(run_advice(part));
                    rest.push(part.to_string());
                }
            }
        }
        if !rest.is_empty() {
            let shown = if rest.len() == text.split("&&").count() {
                self.source_text(span)
            } else {
                format!("RUN … {}", rest.join(" && "))
            };
            let advice = advice.unwrap_or("mlimg runs nothing at build time");
            self.untranslated(pos, shown, advice);
        }
    }

    /// A local COPY/ADD source → deps input, weights, or app code.
    fn copy_local(&mut self, pos: usize, src: &str, dest_raw: &str) {
        let src = self.x(src);
        let dest_x = self.x(dest_raw);
        let dest = image_path(&self.workdir, &dest_x);
        let dest_is_dir = dest_x.ends_with('/') || dest_x == "." || dest_x == "./";
        let src_clean = src.trim_start_matches("./").trim_end_matches('/');
        let src_clean = if src_clean.is_empty() { "." } else { src_clean };
        let base_name = Path::new(src_clean)
            .file_name()
            .map(|f| f.to_string_lossy().to_string())
            .unwrap_or_else(|| src_clean.to_string());
        let is_file = self.context.join(src_clean).is_file()
            || (!self.context.join(src_clean).exists() && base_name.contains('.'));
        // where a file lands
        let landed = if is_file && dest_is_dir {
            format!("{}/{base_name}", dest.trim_end_matches('/'))
        } else {
            dest.clone()
        };
        self.copies.push((landed.clone(), src_clean.to_string()));
        if src_clean.contains('*') {
            // globs (requirements*.txt) are inputs when they name requirement files
            if base_name.starts_with("requirements") || base_name.starts_with("pylock") {
                return;
            }
        }
        if is_file && (base_name.starts_with("requirements") || base_name.starts_with("pylock")) {
            return; // an input of a later pip install
        }
        if src_clean != "." && is_weights(self.context, src_clean) {
            let name = {
                let mut n = slug(base_name.split('.').next().unwrap_or(&base_name));
                while self.draft.weights.iter().any(|w| w.name == n) {
                    n.push('2');
                }
                n
            };
            let folder = if is_file {
                Path::new(&landed)
                    .parent()
                    .map(|p| p.to_string_lossy().to_string())
                    .unwrap_or_else(|| "/".into())
            } else {
                dest.clone()
            };
            let why = format!(
                "{}: COPY {src} {dest_raw}: model weights, a layer of their own (rebuilt only when they change){}",
                self.at(pos),
                if !self.context.join(src_clean).exists() {
                    format!(
                        "\n{src_clean} is not in the context yet: put the weights there before building"
                    )
                } else {
                    String::new()
                }
            );
            self.draft.weights.push(DraftWeights {
                name,
                source: src_clean.to_string(),
                dest: folder,
                why,
            });
            return;
        }
        self.app_sources.push((src_clean.to_string(), dest, pos));
    }

    /// Weights folders inside a code folder copied whole get layers of their own, at the same
    /// image paths (the app layer leaves them out).
    fn weights_inside(&mut self, src: &str, dest: &str, pos: usize) {
        let (dirs, _) = super::scan::weight_dirs(&self.context.join(src));
        for d in dirs {
            let rel = d.to_string_lossy().to_string();
            let source = if src == "." {
                rel.clone()
            } else {
                format!("{}/{rel}", src.trim_end_matches('/'))
            };
            if self.draft.weights.iter().any(|w| w.source == source) {
                continue;
            }
            let mut name = super::weights_name(&d);
            while self.draft.weights.iter().any(|w| w.name == name) {
                name.push('2');
            }
            let why = format!(
                "{}: {source}/ holds model weights and is copied with the code: a layer of its own at the same\npath, so a new model does not rebuild the app layer",
                self.at(pos)
            );
            self.draft.weights.push(DraftWeights {
                name,
                source,
                dest: image_path(dest, &rel),
                why,
            });
        }
    }

    /// The app from the code COPYs: one folder as it is; several, or single files, as the
    /// whole context at the working directory.
    fn finish_app(&mut self) {
        let sources = std::mem::take(&mut self.app_sources);
        let Some((first_src, first_dest, first_pos)) = sources.first().cloned() else {
            return;
        };
        let first_is_dir = first_src == "." || self.context.join(&first_src).is_dir();
        if sources.len() == 1 && first_is_dir {
            self.weights_inside(&first_src, &first_dest, first_pos);
            self.draft.app = Some(DraftApp {
                src: first_src.clone(),
                dest: first_dest.clone(),
                exclude: Vec::new(),
                why: format!(
                    "{}: COPY {first_src} {first_dest}: your code (.dockerignore / .mlimgignore in it are honoured;\nweights folders above are left out of this layer automatically)",
                    self.at(first_pos)
                ),
            });
            return;
        }
        // several sources: the context at one common destination when they keep their
        // relative paths, else the first and the rest listed
        let dest = self
            .draft
            .workdir
            .as_ref()
            .map(|w| w.value.clone())
            .unwrap_or_else(|| first_dest.clone());
        let keeps_layout = sources.iter().all(|(s, d, _)| {
            let is_dir = s == "." || self.context.join(s).is_dir();
            let expected = if is_dir {
                image_path(&dest, s)
            } else {
                image_path(
                    &dest,
                    Path::new(s)
                        .parent()
                        .map(|p| p.to_string_lossy().to_string())
                        .unwrap_or_default()
                        .as_str(),
                )
            };
            *d == expected || (!is_dir && *d == image_path(&dest, s))
        });
        if keeps_layout {
            for (src, d, pos) in &sources {
                if src == "." || self.context.join(src).is_dir() {
                    self.weights_inside(src, d, *pos);
                }
            }
            let listed: Vec<&str> = sources.iter().map(|(s, _, _)| s.as_str()).collect();
            self.draft.app = Some(DraftApp {
                src: ".".into(),
                dest: dest.clone(),
                exclude: Vec::new(),
                why: format!(
                    "{}: the COPYs of {} keep their paths under {dest}: the app is the build context\n(minus .dockerignore / .mlimgignore; add exclude = [...] for anything else that should not ship)",
                    self.at(first_pos),
                    listed.join(", ")
                ),
            });
            return;
        }
        let first_src_dir = if first_is_dir {
            first_src.clone()
        } else {
            Path::new(&first_src)
                .parent()
                .map(|p| p.to_string_lossy().to_string())
                .filter(|p| !p.is_empty())
                .unwrap_or_else(|| ".".into())
        };
        let first_dest_dir = if first_is_dir {
            first_dest.clone()
        } else {
            Path::new(&first_dest)
                .parent()
                .map(|p| p.to_string_lossy().to_string())
                .unwrap_or_else(|| "/".into())
        };
        self.draft.app = Some(DraftApp {
            src: first_src_dir.clone(),
            dest: first_dest_dir.clone(),
            exclude: Vec::new(),
            why: format!(
                "{}: COPY {first_src} {first_dest}: your code",
                self.at(first_pos)
            ),
        });
        for (s, d, pos) in sources.into_iter().skip(1) {
            self.untranslated(
                pos,
                format!("COPY {s} {d}"),
                format!("[app] is one folder ({first_src_dir} → {first_dest_dir}): move {s} into it, or make the app the whole context (src = \".\") with exclude = [...]"),
            );
        }
    }
}

/// Translates `text` (a Dockerfile named `label`, e.g. `Dockerfile`) whose build context is
/// `context`.
pub fn translate(text: &str, label: &str, context: &Path) -> Result<Draft, InitError> {
    let df = parse_dockerfile::parse(text).map_err(|e| InitError::Dockerfile {
        file: label.to_string(),
        line: e.line(),
        message: e.to_string(),
    })?;
    let folder = context
        .canonicalize()
        .ok()
        .and_then(|p| p.file_name().map(|f| f.to_string_lossy().to_string()))
        .unwrap_or_else(|| "app".into());
    let mut cx = Cx {
        label,
        text,
        context,
        draft: Draft {
            source: label.to_string(),
            name: Some(Why::new(
                format!("localhost/{}", slug(&folder)),
                "where `mlimg build --push` sends the image: replace with your registry repository",
            )),
            ..Draft::default()
        },
        vars: HashMap::new(),
        workdir: "/".into(),
        copies: Vec::new(),
        app_sources: Vec::new(),
        noted_chown: false,
    };
    let mut global: HashMap<String, String> = HashMap::new();
    for a in df.global_args() {
        let (k, v) = match a.arguments.value.split_once('=') {
            Some((k, v)) => (k.trim().to_string(), unquote(v)),
            None => (a.arguments.value.trim().to_string(), String::new()),
        };
        if !v.is_empty() {
            global.insert(k, v);
        }
    }
    let stages: Vec<_> = df.stages().collect();
    let names: Vec<Option<String>> = stages
        .iter()
        .map(|s| s.from.as_.as_ref().map(|(_, n)| n.value.to_lowercase()))
        .collect();
    let index_of = |n: &str| {
        names
            .iter()
            .position(|x| x.as_deref() == Some(&n.to_lowercase()))
    };
    // the final stage and the stages it is built on
    let mut chain = vec![stages.len() - 1];
    loop {
        let s = &stages[chain[0]];
        let img = expand(&s.from.image.value, &global).0;
        match index_of(&img) {
            Some(i) if i < chain[0] => chain.insert(0, i),
            _ => break,
        }
    }
    let root = &stages[chain[0]];
    let (base, missing) = expand(&root.from.image.value, &global);
    let pos = root.from.from.span.start;
    if missing.is_empty() {
        cx.draft.base = Some(Why::new(
            base.clone(),
            format!(
                "{}: FROM {base} (pinned to a digest by `mlimg lock`)",
                cx.at(pos)
            ),
        ));
    } else {
        cx.untranslated(
            pos,
            cx.source_text(&(root.from.from.span.start..root.from.image.span.end)),
            format!(
                "the base names ARG {} without a default: set [image] base",
                missing.join(", ")
            ),
        );
    }
    if let Some(p) = flag(&root.from.options, "platform") {
        let p = expand(p, &global).0;
        if !p.contains('$') {
            cx.draft.platforms.push(p);
        }
    }
    let mut used: Vec<usize> = Vec::new();
    for &si in &chain {
        let stage = &stages[si];
        let stage_name = if chain.len() > 1 {
            names[si].clone().unwrap_or_default()
        } else {
            String::new()
        };
        for ins in stage.instructions {
            walk(
                &mut cx,
                ins,
                &stages,
                &names,
                &global,
                &stage_name,
                &mut used,
            );
        }
    }
    for (i, n) in names.iter().enumerate() {
        if !chain.contains(&i) && !used.contains(&i) {
            let pos = stages[i].from.from.span.start;
            cx.draft.notes.push(format!(
                "{}: stage {} is not used by the final stage: left out",
                cx.at(pos),
                n.clone().unwrap_or_else(|| i.to_string())
            ));
        }
    }
    cx.finish_app();
    Ok(cx.draft)
}

#[allow(clippy::too_many_arguments)]
fn walk(
    cx: &mut Cx,
    ins: &Instruction,
    stages: &[parse_dockerfile::Stage],
    names: &[Option<String>],
    global: &HashMap<String, String>,
    stage_name: &str,
    used: &mut Vec<usize>,
) {
    match ins {
        Instruction::Arg(a) => {
            let pos = a.arg.span.start;
            let raw = a.arguments.value.trim();
            let (k, v) = match raw.split_once('=') {
                Some((k, v)) => (k.trim().to_string(), Some(unquote(v))),
                None => (raw.to_string(), None),
            };
            match v.or_else(|| global.get(&k).cloned()) {
                Some(v) => {
                    let v = cx.x(&v);
                    cx.vars.insert(k, v);
                }
                None => cx.draft.notes.push(format!(
                    "{}: ARG {k} has no default: its uses are left as they are",
                    cx.at(pos)
                )),
            }
        }
        Instruction::Env(e) => {
            let pos = e.env.span.start;
            for (k, v) in pairs(&e.arguments.value) {
                let (v, missing) = expand(&v, &cx.vars);
                if missing.is_empty() && !v.contains("${") {
                    cx.vars.insert(k.clone(), v.clone());
                    cx.draft.env.insert(k, v);
                } else {
                    cx.untranslated(
                        pos,
                        format!("ENV {k}={v}"),
                        format!("it uses ${} from the base or the build: mlimg sets values literally, write the full value in [config] env", missing.join(", $")),
                    );
                }
            }
            if cx
                .draft
                .env
                .get("PATH")
                .is_some_and(|p| p.contains(DEFAULT_PATH))
            {
                cx.draft.notes.push(format!(
                    "{}: $PATH in ENV PATH was replaced by Docker's default PATH; check it against your base's",
                    cx.at(pos)
                ));
            }
        }
        Instruction::Workdir(w) => {
            let p = cx.x(&w.arguments.value);
            cx.workdir = image_path(&cx.workdir, &p);
            cx.draft.workdir = Some(Why::new(
                cx.workdir.clone(),
                format!("{}: WORKDIR", cx.at(w.workdir.span.start)),
            ));
        }
        Instruction::Copy(c) => {
            let pos = c.copy.span.start;
            if (flag(&c.options, "chown").is_some() || flag(&c.options, "chmod").is_some())
                && !cx.noted_chown
            {
                cx.noted_chown = true;
                cx.draft.notes.push(format!(
                    "{}: --chown/--chmod dropped: mlimg's layers are owned by 0:0 with normalized modes (files readable, folders and executables searchable); set [config] user for the process",
                    cx.at(pos)
                ));
            }
            if let Some(from) = flag(&c.options, "from") {
                let from = expand(from, global).0;
                let srcs: Vec<String> = c
                    .src
                    .iter()
                    .filter_map(|s| match s {
                        Source::Path(p) => Some(p.value.to_string()),
                        _ => None,
                    })
                    .collect();
                let shown = cx.source_text(&(pos..c.dest.span.end));
                match names.iter().position(|n| n.as_deref() == Some(&from.to_lowercase())).or_else(|| from.parse::<usize>().ok().filter(|i| *i < stages.len())) {
                    Some(i) => {
                        used.push(i);
                        // the builder's pip installs become deps sets
                        let mut sub = Cx {
                            label: cx.label,
                            text: cx.text,
                            context: cx.context,
                            draft: Draft::default(),
                            vars: global.clone(),
                            workdir: "/".into(),
                            copies: Vec::new(),
                            app_sources: Vec::new(),
                            noted_chown: true,
                        };
                        let bname = names[i].clone().unwrap_or_else(|| i.to_string());
                        for ins in stages[i].instructions {
                            match ins {
                                Instruction::Run(r) => sub.run(r.run.span.start, &(r.run.span.start..r.arguments_end()), &r.arguments, &bname),
                                other => walk(&mut sub, other, stages, names, global, &bname, &mut Vec::new()),
                            }
                        }
                        if sub.draft.deps.is_empty() {
                            cx.untranslated(
                                pos,
                                shown,
                                format!("{} built in stage {bname}: mlimg runs no build stage. Build it before mlimg (in CI) and add the result as [[deps]] dir = \"…\" (a prepared tree), [[weights]] or [app]", srcs.join(", ")),
                            );
                        } else {
                            for d in sub.draft.deps {
                                let why = format!("{}\n(the final stage copies {} from stage {bname}; mlimg installs the same pinned wheels directly)", d.why, srcs.join(", "));
                                cx.add_deps(&d.path, why);
                            }
                            for u in sub.draft.untranslated {
                                if u.advice.starts_with("not needed") {
                                    continue;
                                }
                                cx.draft.untranslated.push(Untranslated { at: u.at, instruction: format!("(stage {bname}) {}", u.instruction), advice: u.advice });
                            }
                        }
                    }
                    None => cx.untranslated(
                        pos,
                        shown,
                        format!("files from the image {from}: copy them into the build context first (e.g. `docker create` + `docker cp`), then add them as [[deps]] dir, [[weights]] or [app]"),
                    ),
                }
                return;
            }
            let dest = c.dest.value.to_string();
            for s in &c.src {
                match s {
                    Source::Path(p) => cx.copy_local(pos, &p.value, &dest),
                    _ => cx.untranslated(
                        pos,
                        "COPY <<heredoc".into(),
                        "write the file into the build context and copy it as part of [app]",
                    ),
                }
            }
        }
        Instruction::Add(a) => {
            let pos = a.add.span.start;
            let dest = a.dest.value.to_string();
            for s in &a.src {
                let Source::Path(p) = s else {
                    cx.untranslated(
                        pos,
                        "ADD <<heredoc".into(),
                        "write the file into the build context and copy it as part of [app]",
                    );
                    continue;
                };
                let v = cx.x(&p.value);
                if v.starts_with("http://") || v.starts_with("https://") || v.starts_with("git@") {
                    let advice = match v.split_once("huggingface.co/") {
                        Some((_, rest)) => {
                            let repo: Vec<&str> = rest.split('/').take(2).collect();
                            format!("a Hugging Face file: [[weights]] source = \"hf://{}\" with include = [\"<file>\"] and a revision, pinned and verified by `mlimg lock`", repo.join("/"))
                        }
                        None => "mlimg downloads nothing at build time: download it into the build context (in CI, checking its sha256), then add it as [[weights]] or [app]".into(),
                    };
                    cx.untranslated(pos, format!("ADD {v} {dest}"), advice);
                } else if [".tar", ".tar.gz", ".tgz", ".tar.xz", ".tar.bz2", ".tar.zst"]
                    .iter()
                    .any(|e| v.ends_with(e))
                {
                    cx.untranslated(pos, format!("ADD {v} {dest}"), "ADD unpacks archives; mlimg does not: unpack it into a folder of the context and add that as [[weights]], [[deps]] dir or [app]");
                } else {
                    cx.copy_local(pos, &v, &dest);
                }
            }
        }
        Instruction::Run(r) => {
            let span = r.run.span.start..r.arguments_end();
            cx.run(r.run.span.start, &span, &r.arguments, stage_name);
        }
        Instruction::Expose(e) => {
            for a in &e.arguments {
                let v = cx.x(&a.value);
                if !cx.draft.ports.contains(&v) {
                    cx.draft.ports.push(v);
                }
            }
        }
        Instruction::User(u) => {
            let v = cx.x(&u.arguments.value);
            let numeric = v.split(':').all(|p| p.chars().all(|c| c.is_ascii_digit()));
            cx.draft.user = Some(Why::new(
                v.clone(),
                format!(
                    "{}: USER{}",
                    cx.at(u.user.span.start),
                    if numeric {
                        String::new()
                    } else {
                        format!(
                            " — the base must define {v} in /etc/passwd (mlimg runs no useradd); a numeric UID:GID always works"
                        )
                    }
                ),
            ));
        }
        Instruction::Healthcheck(h) => {
            let pos = h.healthcheck.span.start;
            let test = match &h.arguments {
                HealthcheckArguments::Cmd { arguments, .. } => match arguments {
                    Command::Exec(list) => std::iter::once("CMD".to_string())
                        .chain(list.value.iter().map(|s| s.value.to_string()))
                        .collect(),
                    Command::Shell(t) => vec!["CMD-SHELL".into(), t.value.trim().to_string()],
                    _ => vec!["NONE".into()],
                },
                _ => vec!["NONE".into()],
            };
            let f = |n: &str| flag(&h.options, n).map(str::to_string);
            cx.draft.healthcheck = Some(Why::new(
                DraftHealthcheck {
                    test,
                    interval: f("interval"),
                    timeout: f("timeout"),
                    start_period: f("start-period"),
                    retries: f("retries").and_then(|r| r.parse().ok()),
                },
                format!("{}: HEALTHCHECK", cx.at(pos)),
            ));
        }
        Instruction::Label(l) => {
            for (k, v) in pairs(&l.arguments.value) {
                let v = cx.x(&v);
                cx.draft.labels.insert(k, v);
            }
        }
        Instruction::Maintainer(m) => {
            cx.draft.labels.insert(
                "org.opencontainers.image.authors".into(),
                m.name.value.to_string(),
            );
        }
        Instruction::Entrypoint(e) => {
            let argv: Vec<String> = command_argv(&e.arguments).iter().map(|a| cx.x(a)).collect();
            cx.draft.entrypoint = Some(Why::new(
                argv,
                format!(
                    "{}: ENTRYPOINT{}",
                    cx.at(e.entrypoint.span.start),
                    shell_note(&e.arguments)
                ),
            ));
        }
        Instruction::Cmd(c) => {
            let argv: Vec<String> = command_argv(&c.arguments).iter().map(|a| cx.x(a)).collect();
            cx.draft.cmd = Some(Why::new(
                argv,
                format!(
                    "{}: CMD{}",
                    cx.at(c.cmd.span.start),
                    shell_note(&c.arguments)
                ),
            ));
        }
        Instruction::Volume(v) => {
            let list: Vec<String> = match &v.arguments {
                JsonOrStringArray::Json(l) => l.value.iter().map(|s| s.value.to_string()).collect(),
                JsonOrStringArray::String(l) => l.iter().map(|s| s.value.to_string()).collect(),
            };
            for p in list {
                let p = cx.x(&p);
                cx.draft.volumes.push(p);
            }
        }
        Instruction::Stopsignal(s) => {
            cx.draft.stop_signal = Some(cx.x(&s.arguments.value));
        }
        Instruction::Shell(s) => {
            let pos = s.shell.span.start;
            cx.untranslated(pos, cx.source_text(&(pos..s.shell.span.end + 1)), "SHELL only affects RUN steps, which mlimg does not run; shell-form ENTRYPOINT/CMD were written with /bin/sh -c");
        }
        Instruction::Onbuild(o) => {
            let pos = o.onbuild.span.start;
            cx.untranslated(
                pos,
                "ONBUILD …".into(),
                "mlimg images carry no build triggers: drop it",
            );
        }
        Instruction::From(_) => {}
        _ => {}
    }
}

fn shell_note(c: &Command) -> &'static str {
    match c {
        Command::Shell(_) => " (shell form, run through /bin/sh -c as docker does)",
        _ => "",
    }
}

/// The end of a RUN's arguments in the source, for quoting it.
trait ArgumentsEnd {
    fn arguments_end(&self) -> usize;
}

impl ArgumentsEnd for parse_dockerfile::RunInstruction<'_> {
    fn arguments_end(&self) -> usize {
        match &self.arguments {
            Command::Exec(l) => l.span.end,
            Command::Shell(t) => t.span.end,
            _ => self.run.span.end,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expansion() {
        let mut v = HashMap::new();
        v.insert("PORT".to_string(), "8000".to_string());
        assert_eq!(expand("${PORT}/tcp", &v).0, "8000/tcp");
        assert_eq!(expand("$PORT", &v).0, "8000");
        assert_eq!(expand("${X:-1}", &v).0, "1");
        let (s, m) = expand("$HOME/x", &v);
        assert_eq!((s.as_str(), m), ("$HOME/x", vec!["HOME".to_string()]));
        assert_eq!(
            expand("/opt/venv/bin:$PATH", &v).0,
            format!("/opt/venv/bin:{DEFAULT_PATH}")
        );
    }

    #[test]
    fn env_pairs_and_words() {
        assert_eq!(
            pairs("A=1 B=\"two words\" C='x y'"),
            [
                ("A".into(), "1".into()),
                ("B".into(), "two words".into()),
                ("C".into(), "x y".into())
            ]
        );
        assert_eq!(
            pairs("MODEL_DIR /models"),
            [("MODEL_DIR".into(), "/models".into())]
        );
        assert_eq!(
            pip_install("pip install --no-cache-dir -r requirements.txt")
                .unwrap()
                .0,
            ["requirements.txt"]
        );
        assert_eq!(
            pip_install("python -m pip install -rreq.txt torch==2.1").unwrap(),
            (vec!["req.txt".into()], vec!["torch==2.1".into()])
        );
        assert!(pip_install("apt-get install -y curl").is_none());
        assert_eq!(
            apt_install("apt-get install -y --no-install-recommends libgomp1 tini=0.19.0-1"),
            Some(vec!["libgomp1".to_string(), "tini=0.19.0-1".to_string()])
        );
        assert_eq!(apt_install("apt-get -q update"), None);
        assert_eq!(apt_install("pip install x"), None);
        assert_eq!(image_path("/app", "./src/../x"), "/app/x");
    }
}
