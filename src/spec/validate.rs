//! Turning [`raw::RawSpec`] into a validated [`Spec`], with positioned errors.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::raw::{self, S};
use super::*;

/// Where errors point: the file and its text (for line:column).
struct Ctx<'a> {
    file: &'a Path,
    dir: PathBuf,
    text: &'a str,
    /// Canonical folder local sources must resolve inside; `None`: no check.
    context: Option<PathBuf>,
}

impl Ctx<'_> {
    fn pos(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let before = &self.text[..offset];
        let line = before.matches('\n').count() + 1;
        let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        (line, col)
    }

    fn err(
        &self,
        span: Range<usize>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> SpecError {
        let (line, column) = self.pos(span.start);
        SpecError {
            file: self.file.to_path_buf(),
            line,
            column,
            field: field.into(),
            message: message.into(),
            hint: None,
        }
    }

    fn err_hint(
        &self,
        span: Range<usize>,
        field: impl Into<String>,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) -> SpecError {
        let mut e = self.err(span, field, message);
        e.hint = Some(hint.into());
        e
    }

    /// `owner = "UID:GID"` (numbers: the writer records no names).
    fn owner(&self, s: &S<String>, field: &str) -> Result<(u64, u64), SpecError> {
        numeric_ids(s.get_ref())
            .filter(|_| s.get_ref().contains(':'))
            .ok_or_else(|| {
                self.err_hint(
                    s.span(),
                    field,
                    format!("{:?} is not UID:GID", s.get_ref()),
                    "give numbers, e.g. owner = \"1000:1000\" (names would need the base's /etc/passwd)",
                )
            })
    }

    fn resolve(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.dir.join(p)
        }
    }

    /// A local source: a path that must exist and, symlinks resolved, lie inside the context.
    fn existing(&self, s: &S<String>, field: &str, what: &str) -> Result<PathBuf, SpecError> {
        let p = self.resolve(s.get_ref());
        if let Some(root) = &self.context
            && p.exists()
        {
            let real = p.canonicalize().map_err(|e| {
                self.err(
                    s.span(),
                    field,
                    format!(
                        "{what} {:?}: cannot resolve {}: {e}",
                        s.get_ref(),
                        p.display()
                    ),
                )
            })?;
            if !real.starts_with(root) {
                return Err(self.err_hint(
                    s.span(),
                    field,
                    format!(
                        "{what} {:?} resolves to {}, outside the project folder {}",
                        s.get_ref(),
                        real.display(),
                        root.display()
                    ),
                    "local sources must stay inside the spec's folder (symlinks are followed); \
                     to allow a wider folder, set [image] context = \"..\" (relative to the spec)",
                ));
            }
        }
        if !p.exists() {
            return Err(self.err_hint(
                s.span(),
                field,
                format!(
                    "{what} {:?} does not exist (looked for {})",
                    s.get_ref(),
                    p.display()
                ),
                format!(
                    "relative paths resolve against the spec's folder {}",
                    self.dir.display()
                ),
            ));
        }
        Ok(p)
    }

    fn image_path(&self, s: &S<String>, field: &str) -> Result<String, SpecError> {
        check_image_path(s.get_ref()).map_err(|m| {
            self.err_hint(
                s.span(),
                field,
                m,
                "image paths are absolute, e.g. \"/models/sst2\"",
            )
        })
    }

    fn compression(
        &self,
        s: &Option<S<String>>,
        field: &str,
        default: Compression,
    ) -> Result<Compression, SpecError> {
        let Some(s) = s else { return Ok(default) };
        match s.get_ref().as_str() {
            "gzip" => Ok(Compression::Gzip),
            "zstd" => Ok(Compression::Zstd),
            "none" => Ok(Compression::None),
            other => Err(self.err_hint(
                s.span(),
                field,
                format!("unknown compression {other:?}"),
                "use \"gzip\", \"zstd\" or \"none\"",
            )),
        }
    }

    fn name(&self, s: &S<String>, field: &str) -> Result<String, SpecError> {
        let n = s.get_ref();
        let ok = !n.is_empty()
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        if !ok {
            return Err(self.err_hint(
                s.span(),
                field,
                format!("invalid name {n:?}"),
                "names use letters, digits, '-', '_' and '.'",
            ));
        }
        Ok(n.clone())
    }

    fn tag(&self, t: &S<String>, field: &str) -> Result<String, SpecError> {
        let v = t.get_ref();
        let valid = !v.is_empty()
            && v.len() <= 128
            && v.chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
            && v.chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
        if !valid {
            return Err(self.err_hint(
                t.span(),
                field,
                format!("invalid tag {v:?}"),
                "tags are up to 128 letters, digits, '_', '.' and '-', not starting with '.' or '-'",
            ));
        }
        Ok(v.clone())
    }

    fn duration(&self, s: &Option<S<String>>, field: &str) -> Result<Option<Duration>, SpecError> {
        let Some(s) = s else { return Ok(None) };
        parse_duration(s.get_ref()).map(Some).map_err(|m| {
            self.err_hint(
                s.span(),
                field,
                m,
                "durations look like \"30s\", \"1m30s\" or \"500ms\"",
            )
        })
    }

    fn globs(&self, list: &[S<String>], field: &str) -> Result<Vec<String>, SpecError> {
        list.iter()
            .enumerate()
            .map(|(i, g)| {
                globset::Glob::new(g.get_ref())
                    .map(|_| g.get_ref().clone())
                    .map_err(|e| {
                        self.err(g.span(), format!("{field}[{i}]"), format!("bad glob: {e}"))
                    })
            })
            .collect()
    }
}

/// Checks an absolute image path and returns it normalized (no trailing slash).
pub fn check_image_path(p: &str) -> Result<String, String> {
    if !p.starts_with('/') {
        return Err(format!("{p:?} is not absolute"));
    }
    let mut parts = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => return Err(format!("{p:?} contains \"..\"")),
            c => parts.push(c),
        }
    }
    Ok(format!("/{}", parts.join("/")))
}

/// Parses `os/arch[/variant]`.
pub fn parse_platform(s: &str) -> Result<Platform, String> {
    Platform::parse(s).map_err(|e| e.to_string())
}

/// Go-style durations as docker takes them: `30s`, `1m30s`, `500ms`, `1h`.
fn parse_duration(s: &str) -> Result<Duration, String> {
    if s.trim().is_empty() || s.starts_with('-') {
        return Err(format!("{s:?} is not a duration"));
    }
    humantime::parse_duration(s).map_err(|e| format!("{s:?} is not a duration ({e})"))
}

pub(super) fn parse(file: &Path, text: &str, opts: &LoadOptions) -> Result<Spec, SpecError> {
    let dir = file
        .parent()
        .map(|p| {
            if p.as_os_str().is_empty() {
                Path::new(".")
            } else {
                p
            }
        })
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let mut cx = Ctx {
        file,
        dir: dir.clone(),
        text,
        context: None,
    };
    let raw = deserialize(&cx)?;
    cx.context = context(&cx, &raw.image, opts)?;

    let image = image(&cx, &raw.image)?;
    let python = match &raw.python {
        Some(p) if p.get_ref().version.is_some() => Some(python(&cx, p)?),
        Some(p) => {
            let r = p.get_ref();
            if r.prefix.is_some() || r.libc.is_some() || r.site_packages.is_some() {
                return Err(cx.err_hint(
                    p.span(),
                    "python.version",
                    "prefix, libc and site_packages describe an interpreter: they need its version",
                    "e.g. version = \"3.11\"",
                ));
            }
            None
        }
        None => None,
    };
    let compile_bytecode = raw
        .python
        .as_ref()
        .and_then(|p| p.get_ref().compile_bytecode)
        .unwrap_or(true);

    let mut seen = BTreeSet::new();
    let mut deps = Vec::new();
    for (i, d) in raw.deps.iter().enumerate() {
        let d = deps_set(&cx, i, d)?;
        if !seen.insert(("deps", d.name.clone())) {
            return Err(cx.err(
                raw.deps[i].get_ref().name.span(),
                format!("deps[{i}].name"),
                format!("a deps set named {:?} already exists", d.name),
            ));
        }
        deps.push(d);
    }
    let mut weights = Vec::new();
    for (i, w) in raw.weights.iter().enumerate() {
        let wv = weights_entry(&cx, i, w)?;
        if !seen.insert(("weights", wv.name.clone())) {
            return Err(cx.err(
                w.get_ref().name.span(),
                format!("weights[{i}].name"),
                format!("a weights entry named {:?} already exists", wv.name),
            ));
        }
        weights.push(wv);
    }
    let app = raw.app.as_ref().map(|a| app(&cx, a)).transpose()?;
    let mut config = match &raw.config {
        Some(c) => config(&cx, c, &weights)?,
        None => ConfigSpec::default(),
    };
    config.gpu = gpu::validate(
        raw.config.as_ref().and_then(|c| c.gpu.as_ref()),
        raw.gpu.as_ref(),
        &|span, field, message| cx.err(span, field, message),
    )?;
    let model = raw
        .model
        .as_ref()
        .map(|m| model(&cx, m, &weights))
        .transpose()?;
    let system = super::system::validate(
        raw.system.as_ref(),
        &|span, field, message| cx.err(span, field, message),
        &|offset| cx.pos(offset).0,
    )?;
    Ok(Spec {
        path: file.to_path_buf(),
        dir,
        context: cx.context.clone(),
        image,
        python,
        compile_bytecode,
        deps,
        weights,
        app,
        config,
        model,
        system,
    })
}

/// The canonical folder local sources must stay in: `[image].context` (a folder, relative to
/// the spec), else the spec's folder; `None` when the caller allowed any path.
fn context(
    cx: &Ctx,
    image: &S<raw::RawImage>,
    opts: &LoadOptions,
) -> Result<Option<PathBuf>, SpecError> {
    let Some(c) = image.get_ref().context.as_ref() else {
        // The spec's own folder. Specs parsed from text may name a file that is not on disk
        // (tests); then no relative source exists either, and absolute ones are outside.
        let real = cx
            .dir
            .canonicalize()
            .or_else(|_| std::path::absolute(&cx.dir))
            .unwrap_or_else(|_| cx.dir.clone());
        return Ok((!opts.allow_outside_context).then_some(real));
    };
    let (path, span) = (cx.resolve(c.get_ref()), c.span());
    let real = path.canonicalize().map_err(|e| {
        cx.err_hint(
            span.clone(),
            "image.context",
            format!("cannot resolve the context folder {}: {e}", path.display()),
            "context is a folder, relative to the spec, e.g. context = \"..\"",
        )
    })?;
    if !real.is_dir() {
        return Err(cx.err(
            span,
            "image.context",
            format!("{} is not a folder", real.display()),
        ));
    }
    Ok((!opts.allow_outside_context).then_some(real))
}

fn deserialize(cx: &Ctx) -> Result<raw::RawSpec, SpecError> {
    let parse_err = |e: toml::de::Error, field: String| {
        let (line, column) = e.span().map_or((0, 0), |s| cx.pos(s.start));
        let message = e.message().trim().to_string();
        let hint = if message.contains("unknown field") {
            Some("see docs/spec.md for the keys each table takes".to_string())
        } else if message.contains("missing field") {
            Some("add the field; see docs/spec.md".to_string())
        } else {
            None
        };
        SpecError {
            file: cx.file.to_path_buf(),
            line,
            column,
            field,
            message,
            hint,
        }
    };
    let de = toml::Deserializer::parse(cx.text).map_err(|e| parse_err(e, String::new()))?;
    serde_path_to_error::deserialize(de).map_err(|e| {
        // Spanned<T> shows up in the path as a private segment: leave it out.
        let mut field = e
            .path()
            .to_string()
            .split('.')
            .filter(|s| !s.contains("$__serde_spanned") && !s.is_empty())
            .collect::<Vec<_>>()
            .join(".")
            .replace(".[", "[");
        let inner = e.into_inner();
        if let Some(rest) = inner.message().strip_prefix("unknown field `")
            && let Some((name, _)) = rest.split_once('`')
        {
            if field.is_empty() {
                field = name.to_string();
            } else if !field.ends_with(name) {
                field = format!("{field}.{name}");
            }
        }
        parse_err(inner, field)
    })
}

fn image(cx: &Ctx, s: &S<raw::RawImage>) -> Result<ImageSpec, SpecError> {
    let r = s.get_ref();
    let name = match &r.name {
        Some(n)
            if n.get_ref().trim().is_empty() || n.get_ref().chars().any(char::is_whitespace) =>
        {
            return Err(cx.err(
                n.span(),
                "image.name",
                format!("invalid image name {:?}", n.get_ref()),
            ));
        }
        Some(n) => Some(n.get_ref().clone()),
        None => None,
    };
    let mut tags = Vec::new();
    for (i, t) in r.tags.iter().enumerate() {
        tags.push(cx.tag(t, &format!("image.tags[{i}]"))?);
    }
    let base = match &r.base {
        None => BaseSpec::Scratch,
        Some(b) => {
            let v = b.get_ref().trim();
            if v.is_empty() {
                return Err(cx.err_hint(
                    b.span(),
                    "image.base",
                    "empty base",
                    "use \"scratch\" for an empty base",
                ));
            } else if v == "scratch" {
                BaseSpec::Scratch
            } else if let Some(rest) = v.strip_prefix("oci:") {
                let (p, tag) = split_layout_ref(rest);
                let path = cx.resolve(p);
                if !path.join("index.json").is_file() {
                    return Err(cx.err_hint(
                        b.span(),
                        "image.base",
                        format!("{} is not an OCI image layout (no index.json)", path.display()),
                        "write one with `mlimg build --output oci:DIR` or `skopeo copy … oci:DIR:TAG`",
                    ));
                }
                BaseSpec::OciLayout { path, tag }
            } else {
                BaseSpec::Registry(v.to_string())
            }
        }
    };
    let mut platforms = Vec::new();
    for (i, p) in r.platforms.iter().enumerate() {
        let plat = parse_platform(p.get_ref()).map_err(|m| {
            cx.err_hint(
                p.span(),
                format!("image.platforms[{i}]"),
                m,
                "platforms look like \"linux/amd64\" or \"linux/arm64/v8\"",
            )
        })?;
        if platforms.contains(&plat) {
            return Err(cx.err(
                p.span(),
                format!("image.platforms[{i}]"),
                format!("{plat} is listed twice"),
            ));
        }
        platforms.push(plat);
    }
    if platforms.is_empty() {
        platforms.push(Platform {
            os: "linux".into(),
            architecture: "amd64".into(),
            variant: None,
        });
    }
    let base_name = r
        .base
        .as_ref()
        .map_or_else(|| "scratch".to_string(), |b| b.get_ref().trim().to_string());
    let text = |v: &Option<S<String>>, field: &str| -> Result<Option<String>, SpecError> {
        match v {
            Some(t) if t.get_ref().trim().is_empty() || t.get_ref().contains(['\n', '\r']) => {
                Err(cx.err(
                    t.span(),
                    format!("image.{field}"),
                    "must be one non-empty line",
                ))
            }
            Some(t) => Ok(Some(t.get_ref().trim().to_string())),
            None => Ok(None),
        }
    };
    let format = match &r.format {
        None => ImageFormat::Oci,
        Some(f) => match f.get_ref().as_str() {
            "oci" => ImageFormat::Oci,
            "docker" => ImageFormat::Docker,
            other => {
                return Err(cx.err_hint(
                    f.span(),
                    "image.format",
                    format!("unknown image format {other:?}"),
                    "use \"oci\" (OCI image spec media types) or \"docker\" (Docker image manifest v2 schema 2)",
                ));
            }
        },
    };
    Ok(ImageSpec {
        name,
        base_name,
        tags,
        base,
        platforms,
        source: text(&r.source, "source")?,
        revision: text(&r.revision, "revision")?,
        format,
    })
}

/// `PATH[:TAG]`: the tag is what follows the last ':' when it holds no '/'.
fn split_layout_ref(s: &str) -> (&str, Option<String>) {
    match s.rsplit_once(':') {
        Some((p, t)) if !t.contains('/') && !t.is_empty() && !p.is_empty() => {
            (p, Some(t.to_string()))
        }
        _ => (s, None),
    }
}

fn python(cx: &Ctx, s: &S<raw::RawPython>) -> Result<PythonSpec, SpecError> {
    let r = s.get_ref();
    let Some(version_s) = &r.version else {
        return Err(cx.err(s.span(), "python.version", "missing"));
    };
    let v = version_s.get_ref();
    let version = v
        .split_once('.')
        .and_then(|(a, b)| Some((a.parse::<u32>().ok()?, b.parse::<u32>().ok()?)))
        .filter(|(a, _)| *a == 3)
        .ok_or_else(|| {
            cx.err_hint(
                version_s.span(),
                "python.version",
                format!("{v:?} is not a CPython X.Y version"),
                "e.g. version = \"3.11\"",
            )
        })?;
    crate::sources::python::check_python_version(version).map_err(|m| {
        cx.err_hint(
            version_s.span(),
            "python.version",
            m,
            "e.g. version = \"3.11\"",
        )
    })?;
    let prefix = r
        .prefix
        .as_ref()
        .map(|p| cx.image_path(p, "python.prefix"))
        .transpose()?;
    let site_packages = r
        .site_packages
        .as_ref()
        .map(|p| cx.image_path(p, "python.site_packages"))
        .transpose()?;
    let libc = match &r.libc {
        None => None,
        Some(l) => {
            let hint = "use \"glibc 2.36\" or \"musl 1.2\"";
            let parsed = parse_libc(l.get_ref()).ok_or_else(|| {
                cx.err_hint(
                    l.span(),
                    "python.libc",
                    format!("{:?} is not a libc", l.get_ref()),
                    hint,
                )
            })?;
            let libc = match parsed.0.as_str() {
                "musl" => crate::sources::python::Libc::Musl(parsed.1, parsed.2),
                _ => crate::sources::python::Libc::Glibc(parsed.1, parsed.2),
            };
            crate::sources::python::check_libc(libc)
                .map_err(|m| cx.err_hint(l.span(), "python.libc", m, hint))?;
            Some(parsed)
        }
    };
    Ok(PythonSpec {
        version,
        prefix,
        libc,
        site_packages,
    })
}

fn parse_libc(s: &str) -> Option<(String, u32, u32)> {
    let (kind, ver) = s.trim().split_once(char::is_whitespace)?;
    if kind != "glibc" && kind != "musl" {
        return None;
    }
    let (a, b) = ver.trim().split_once('.')?;
    Some((kind.to_string(), a.parse().ok()?, b.parse().ok()?))
}

fn deps_set(cx: &Ctx, i: usize, s: &S<raw::RawDeps>) -> Result<DepsSpec, SpecError> {
    let r = s.get_ref();
    let f = |k: &str| format!("deps[{i}].{k}");
    let name = cx.name(&r.name, &f("name"))?;
    let given: Vec<&S<String>> = [&r.dir, &r.requirements, &r.pylock]
        .into_iter()
        .flatten()
        .collect();
    if given.len() != 1 {
        let span = given.get(1).map_or(s.span(), |g| g.span());
        return Err(cx.err_hint(
            span,
            format!("deps[{i}]"),
            format!("deps set {name:?} needs exactly one of `dir`, `requirements` or `pylock`"),
            "dir = \"vendor/site-packages\" copies a prepared tree; requirements = \"requirements.txt\" installs pinned wheels",
        ));
    }
    let source = if let Some(d) = &r.dir {
        let p = cx.existing(d, &f("dir"), "folder")?;
        if !p.is_dir() {
            return Err(cx.err(
                d.span(),
                f("dir"),
                format!("{} is not a folder", p.display()),
            ));
        }
        DepsSource::Dir(p)
    } else if let Some(q) = &r.requirements {
        DepsSource::Requirements(cx.existing(q, &f("requirements"), "requirements file")?)
    } else if let Some(q) = &r.pylock {
        DepsSource::Pylock(cx.existing(q, &f("pylock"), "lock file")?)
    } else {
        unreachable!("exactly one source was checked above")
    };
    let dest = match (&source, &r.dest) {
        (DepsSource::Dir(_), Some(d)) => Some(cx.image_path(d, &f("dest"))?),
        (DepsSource::Dir(_), None) => {
            return Err(cx.err_hint(
                s.span(),
                f("dest"),
                format!("deps set {name:?} with `dir` needs `dest`"),
                "e.g. dest = \"/usr/local/lib/python3.11/site-packages\"",
            ));
        }
        (_, Some(d)) => {
            return Err(cx.err_hint(
                d.span(),
                f("dest"),
                "`dest` applies to `dir` sets only",
                "wheels install into the target's site-packages; set [python].prefix to move it",
            ));
        }
        (_, None) => None,
    };
    let find_links = r
        .find_links
        .iter()
        .enumerate()
        .map(|(j, l)| cx.existing(l, &format!("deps[{i}].find_links[{j}]"), "folder"))
        .collect::<Result<_, _>>()?;
    let layering = match &r.layers {
        None => DepsLayering::One,
        Some(l) => {
            let v = match l.get_ref().as_str() {
                "one" => DepsLayering::One,
                "per-package" => DepsLayering::PerPackage,
                "auto" => DepsLayering::Auto,
                other => {
                    return Err(cx.err_hint(
                        l.span(),
                        f("layers"),
                        format!("unknown layering {other:?}"),
                        "use \"one\" (default), \"per-package\" or \"auto\"",
                    ));
                }
            };
            if matches!(source, DepsSource::Dir(_)) && v != DepsLayering::One {
                return Err(cx.err_hint(
                    l.span(),
                    f("layers"),
                    "a `dir` set is copied as one layer",
                    "`layers` applies to wheel sets (`requirements` or `pylock`)",
                ));
            }
            v
        }
    };
    Ok(DepsSpec {
        name,
        source,
        dest,
        index_url: r.index_url.as_ref().map(|u| u.get_ref().clone()),
        find_links,
        compression: cx.compression(&r.compression, &f("compression"), Compression::Gzip)?,
        layering,
    })
}

fn weights_entry(cx: &Ctx, i: usize, s: &S<raw::RawWeights>) -> Result<WeightsSpec, SpecError> {
    let r = s.get_ref();
    let f = |k: &str| format!("weights[{i}].{k}");
    let name = cx.name(&r.name, &f("name"))?;
    let src = r.source.get_ref();
    let source = if let Some(repo) = src.strip_prefix("hf://") {
        let parts: Vec<&str> = repo.split('/').collect();
        if parts.len() != 2 || parts.iter().any(|p| p.is_empty()) {
            return Err(cx.err_hint(
                r.source.span(),
                f("source"),
                format!("{src:?} is not a Hub repository"),
                "use hf://ORG/REPO",
            ));
        }
        WeightsSource::Hub {
            repo: repo.to_string(),
            revision: r
                .revision
                .as_ref()
                .map_or_else(|| "main".to_string(), |v| v.get_ref().clone()),
            subfolder: r
                .subfolder
                .as_ref()
                .map(|v| v.get_ref().trim_matches('/').to_string()),
        }
    } else {
        if let Some(rv) = r.revision.as_ref().or(r.subfolder.as_ref()) {
            return Err(cx.err(
                rv.span(),
                f(if r.revision.is_some() {
                    "revision"
                } else {
                    "subfolder"
                }),
                "only hf:// sources take `revision` and `subfolder`",
            ));
        }
        WeightsSource::Local(cx.existing(&r.source, &f("source"), "weights source")?)
    };
    let layering = match &r.layers {
        None => Layering::One,
        Some(l) => match l.get_ref().as_str() {
            "one" => Layering::One,
            "per-file" => Layering::PerFile,
            other => {
                return Err(cx.err_hint(
                    l.span(),
                    f("layers"),
                    format!("unknown layering {other:?}"),
                    "use \"one\" (default) or \"per-file\"",
                ));
            }
        },
    };
    let compression = cx.compression(
        &r.compression,
        &f("compression"),
        crate::plan::DEFAULT_WEIGHTS_COMPRESSION,
    )?;
    Ok(WeightsSpec {
        name,
        source,
        dest: cx.image_path(&r.dest, &f("dest"))?,
        compression,
        include: cx.globs(&r.include, &f("include"))?,
        exclude: cx.globs(&r.exclude, &f("exclude"))?,
        layering,
        owner: r
            .owner
            .as_ref()
            .map(|o| cx.owner(o, &f("owner")))
            .transpose()?,
    })
}

/// `[model]`: a registry name without tag or digest, valid tags, known formats, and
/// metadata the ModelPack schema takes.
fn model(cx: &Ctx, s: &S<raw::RawModel>, weights: &[WeightsSpec]) -> Result<ModelSpec, SpecError> {
    let r = s.get_ref();
    if weights.is_empty() {
        return Err(cx.err_hint(
            s.span(),
            "model",
            "[model] publishes the weights layers, and the spec has no [[weights]] entry",
            "add a [[weights]] entry, or remove [model]",
        ));
    }
    let name = r.name.get_ref().trim();
    let parsed = crate::registry::Reference::parse(name).map_err(|e| {
        cx.err_hint(
            r.name.span(),
            "model.name",
            format!("invalid model name {name:?}: {e}"),
            "use a repository like \"registry.example/acme/sst2-model\"",
        )
    })?;
    if parsed.tag.is_some() || parsed.digest.is_some() {
        return Err(cx.err_hint(
            r.name.span(),
            "model.name",
            format!("{name:?} names a tag or digest"),
            "give the repository only; tags go in model.tags",
        ));
    }
    let mut tags = Vec::new();
    for (i, t) in r.tags.iter().enumerate() {
        tags.push(cx.tag(t, &format!("model.tags[{i}]"))?);
    }
    let mut formats = Vec::new();
    match &r.formats {
        None => formats.push(ModelFormat::ModelPack),
        Some(list) => {
            if list.get_ref().is_empty() {
                return Err(cx.err_hint(
                    list.span(),
                    "model.formats",
                    "no format",
                    "use [\"modelpack\"], [\"image\"] or both",
                ));
            }
            for (i, f) in list.get_ref().iter().enumerate() {
                let field = format!("model.formats[{i}]");
                let v = match f.get_ref().as_str() {
                    "modelpack" => ModelFormat::ModelPack,
                    "image" => ModelFormat::Image,
                    other => {
                        return Err(cx.err_hint(
                            f.span(),
                            field,
                            format!("unknown format {other:?}"),
                            "use \"modelpack\" or \"image\"",
                        ));
                    }
                };
                if formats.contains(&v) {
                    return Err(cx.err(
                        f.span(),
                        field,
                        format!("{:?} is listed twice", v.as_str()),
                    ));
                }
                formats.push(v);
            }
        }
    }
    let mut metadata = ModelMetadata::default();
    if let Some(m) = &r.metadata {
        let text = |v: &Option<S<String>>, k: &str| -> Result<Option<String>, SpecError> {
            match v {
                Some(s) if s.get_ref().trim().is_empty() => {
                    Err(cx.err(s.span(), format!("model.metadata.{k}"), "empty value"))
                }
                Some(s) => Ok(Some(s.get_ref().clone())),
                None => Ok(None),
            }
        };
        metadata.name = text(&m.name, "name")?;
        metadata.version = text(&m.version, "version")?;
        metadata.family = text(&m.family, "family")?;
        metadata.architecture = text(&m.architecture, "architecture")?;
        metadata.format = text(&m.format, "format")?;
        metadata.precision = text(&m.precision, "precision")?;
        metadata.param_size = text(&m.param_size, "param_size")?;
        if let (Some(p), Some(s)) = (&metadata.precision, &m.precision)
            && let Some(bad) = p
                .split(',')
                .map(str::trim)
                .find(|x| !PRECISIONS.contains(x))
        {
            return Err(cx.err_hint(
                s.span(),
                "model.metadata.precision",
                format!("unknown precision {bad:?}"),
                format!(
                    "use one of {} (several separated by commas)",
                    PRECISIONS.join(", ")
                ),
            ));
        }
        if let (Some(p), Some(s)) = (&metadata.param_size, &m.param_size)
            && !valid_param_size(p)
        {
            return Err(cx.err_hint(
                s.span(),
                "model.metadata.param_size",
                format!("{p:?} is not a parameter count"),
                "a number with at most one decimal and a scale letter: \"66M\", \"6.7B\", \"1t\"",
            ));
        }
        for (i, l) in m.licenses.iter().enumerate() {
            if l.get_ref().trim().is_empty() {
                return Err(cx.err(
                    l.span(),
                    format!("model.metadata.licenses[{i}]"),
                    "empty license",
                ));
            }
            metadata.licenses.push(l.get_ref().clone());
        }
    }
    Ok(ModelSpec {
        name: name.to_string(),
        tags,
        formats,
        metadata,
    })
}

/// The precisions the ModelPack config lists.
const PRECISIONS: &[&str] = &[
    "float32",
    "float64",
    "float16",
    "bfloat16",
    "float8_e4m3",
    "float8_e5m2",
    "complex32",
    "complex64",
    "complex128",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "bool",
];

/// `<count><scale>`: digits, at most one decimal, one of Q T B M K (either case).
fn valid_param_size(s: &str) -> bool {
    let Some(scale) = s.chars().last() else {
        return false;
    };
    if !"QTBMKqtbmk".contains(scale) {
        return false;
    }
    let count = &s[..s.len() - 1];
    let (int, frac) = count.split_once('.').unwrap_or((count, ""));
    !int.is_empty()
        && int.chars().all(|c| c.is_ascii_digit())
        && (frac.is_empty() && !count.ends_with('.')
            || frac.len() == 1 && frac.chars().all(|c| c.is_ascii_digit()))
}

/// `UID[:GID]` as numbers (a missing GID is the UID).
fn numeric_ids(s: &str) -> Option<(u64, u64)> {
    let num = |v: &str| {
        (!v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
            .then(|| v.parse::<u32>().ok().map(u64::from))
            .flatten()
    };
    match s.split_once(':') {
        Some((u, g)) => Some((num(u)?, num(g)?)),
        None => num(s).map(|u| (u, u)),
    }
}

fn app(cx: &Ctx, s: &S<raw::RawApp>) -> Result<AppSpec, SpecError> {
    let r = s.get_ref();
    let src = match &r.src {
        Some(p) => {
            let path = cx.existing(p, "app.src", "folder")?;
            if !path.is_dir() {
                return Err(cx.err(
                    p.span(),
                    "app.src",
                    format!("{} is not a folder", path.display()),
                ));
            }
            path
        }
        None => cx.dir.clone(),
    };
    let dest = match &r.dest {
        Some(d) => cx.image_path(d, "app.dest")?,
        None => "/app".to_string(),
    };
    for (i, e) in r.exclude.iter().enumerate() {
        if e.get_ref().trim().is_empty() {
            return Err(cx.err(e.span(), format!("app.exclude[{i}]"), "empty pattern"));
        }
    }
    Ok(AppSpec {
        src,
        dest,
        exclude: r.exclude.iter().map(|e| e.get_ref().clone()).collect(),
        compression: cx.compression(&r.compression, "app.compression", Compression::Gzip)?,
        owner: r
            .owner
            .as_ref()
            .map(|o| cx.owner(o, "app.owner"))
            .transpose()?,
    })
}

fn config(cx: &Ctx, r: &raw::RawConfig, weights: &[WeightsSpec]) -> Result<ConfigSpec, SpecError> {
    let mut env = BTreeMap::new();
    for (k, v) in &r.env {
        if k.is_empty() || k.contains('=') {
            return Err(cx.err(
                v.span(),
                format!("config.env.{k}"),
                format!("invalid variable name {k:?}"),
            ));
        }
        let value = substitute(v.get_ref(), weights).map_err(|m| {
            cx.err_hint(
                v.span(),
                format!("config.env.{k}"),
                m,
                "reference a weights entry as ${weights.NAME.dest}",
            )
        })?;
        env.insert(k.clone(), value);
    }
    let workdir = r
        .workdir
        .as_ref()
        .map(|w| cx.image_path(w, "config.workdir"))
        .transpose()?;
    let user = match &r.user {
        Some(u) if u.get_ref().trim().is_empty() || u.get_ref().split(':').count() > 2 => {
            return Err(cx.err_hint(
                u.span(),
                "config.user",
                format!("invalid user {:?}", u.get_ref()),
                "use \"UID[:GID]\" or \"NAME[:GROUP]\"",
            ));
        }
        Some(u) => Some(u.get_ref().clone()),
        None => None,
    };
    let user_ids = user.as_deref().and_then(numeric_ids);
    let mut writable = Vec::new();
    for (i, w) in r.writable.iter().enumerate() {
        let field = format!("config.writable[{i}]");
        let p = cx.image_path(w, &field)?;
        if p == "/" {
            return Err(cx.err(w.span(), field, "the root folder cannot be made writable"));
        }
        if user_ids.is_none() {
            return Err(cx.err_hint(
                w.span(),
                field,
                "writable folders belong to [config] user, which must then be numeric",
                "set user = \"UID[:GID]\", e.g. user = \"1000:1000\"",
            ));
        }
        writable.push(p);
    }
    let mut ports = Vec::new();
    for (i, p) in r.ports.iter().enumerate() {
        ports.push(parse_port(p.get_ref()).map_err(|m| {
            cx.err_hint(
                p.span(),
                format!("config.ports[{i}]"),
                m,
                "ports look like \"8000\", \"8000/tcp\" or \"53/udp\"",
            )
        })?);
    }
    let volumes = r
        .volumes
        .iter()
        .enumerate()
        .map(|(i, v)| cx.image_path(v, &format!("config.volumes[{i}]")))
        .collect::<Result<_, _>>()?;
    let stop_signal = match &r.stop_signal {
        Some(s) => {
            let v = s.get_ref();
            let ok = (v.starts_with("SIG")
                && v.len() > 3
                && v[3..]
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '+'))
                || v.parse::<u8>().is_ok_and(|n| n > 0);
            if !ok {
                return Err(cx.err_hint(
                    s.span(),
                    "config.stop_signal",
                    format!("{v:?} is not a signal"),
                    "e.g. \"SIGTERM\" or \"15\"",
                ));
            }
            Some(v.clone())
        }
        None => None,
    };
    let healthcheck = r
        .healthcheck
        .as_ref()
        .map(|h| healthcheck(cx, h))
        .transpose()?;
    Ok(ConfigSpec {
        entrypoint: r.entrypoint.clone(),
        cmd: r.cmd.clone(),
        env,
        workdir,
        user,
        writable,
        user_ids,
        ports,
        volumes,
        labels: r.labels.clone(),
        annotations: r.annotations.clone(),
        stop_signal,
        healthcheck,
        gpu: None,
    })
}

fn healthcheck(cx: &Ctx, s: &S<raw::RawHealthcheck>) -> Result<Healthcheck, SpecError> {
    let r = s.get_ref();
    let test = r.test.get_ref();
    match test.first().map(String::as_str) {
        Some("NONE") if test.len() == 1 => {}
        Some("CMD" | "CMD-SHELL") if test.len() >= 2 => {}
        _ => {
            return Err(cx.err_hint(
                r.test.span(),
                "config.healthcheck.test",
                "test must start with \"CMD\" or \"CMD-SHELL\" followed by the command, or be [\"NONE\"]",
                "e.g. test = [\"CMD\", \"curl\", \"-f\", \"http://localhost:8000/health\"]",
            ));
        }
    }
    let retries = match &r.retries {
        Some(n) => Some(u32::try_from(*n.get_ref()).map_err(|_| {
            cx.err(
                n.span(),
                "config.healthcheck.retries",
                format!("{} is not a count", n.get_ref()),
            )
        })?),
        None => None,
    };
    Ok(Healthcheck {
        test: test.clone(),
        interval: cx.duration(&r.interval, "config.healthcheck.interval")?,
        timeout: cx.duration(&r.timeout, "config.healthcheck.timeout")?,
        start_period: cx.duration(&r.start_period, "config.healthcheck.start_period")?,
        retries,
    })
}

fn parse_port(s: &str) -> Result<String, String> {
    let (num, proto) = s.split_once('/').unwrap_or((s, "tcp"));
    let n: u16 = num.parse().map_err(|_| format!("{s:?} is not a port"))?;
    if n == 0 {
        return Err(format!("{s:?} is not a port"));
    }
    if !matches!(proto, "tcp" | "udp" | "sctp") {
        return Err(format!("{s:?}: unknown protocol {proto:?}"));
    }
    Ok(format!("{n}/{proto}"))
}

/// Replaces `${weights.NAME.dest}` with the weights entry's dest.
fn substitute(v: &str, weights: &[WeightsSpec]) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = v;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("unclosed \"${{\" in {v:?}"))?;
        let key = &after[..end];
        let name = key
            .strip_prefix("weights.")
            .and_then(|k| k.strip_suffix(".dest"))
            .ok_or_else(|| format!("unknown reference ${{{key}}}"))?;
        let w = weights
            .iter()
            .find(|w| w.name == name)
            .ok_or_else(|| format!("no weights entry named {name:?}"))?;
        out.push_str(&w.dest);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(file: &Path, text: &str) -> Result<Spec, SpecError> {
        super::parse(file, text, &LoadOptions::default())
    }

    #[test]
    fn model_table() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("m")).unwrap();
        let file = dir.path().join("mlimg.toml");
        let base = "[image]\ntags = [\"v1\"]\n\n[[weights]]\nname = \"w\"\nsource = \"m\"\ndest = \"/m\"\n\n";
        let s = parse(
            &file,
            &format!("{base}[model]\nname = \"reg.example/acme/m\"\n"),
        )
        .unwrap();
        let m = s.model.unwrap();
        assert_eq!(m.formats, vec![ModelFormat::ModelPack]);
        assert!(m.tags.is_empty());
        let s = parse(
            &file,
            &format!(
                "{base}[model]\nname = \"reg.example/acme/m\"\ntags = [\"a\"]\nformats = [\"image\", \"modelpack\"]\n\n[model.metadata]\nname = \"sst2\"\nprecision = \"float16,bfloat16\"\nparam_size = \"6.7B\"\nlicenses = [\"Apache-2.0\"]\n"
            ),
        )
        .unwrap();
        let m = s.model.unwrap();
        assert_eq!(m.formats, vec![ModelFormat::Image, ModelFormat::ModelPack]);
        assert_eq!(m.metadata.param_size.as_deref(), Some("6.7B"));
        assert_eq!(m.metadata.licenses, vec!["Apache-2.0".to_string()]);

        let bad = |tail: &str| parse(&file, &format!("{base}[model]\n{tail}")).unwrap_err();
        let e = bad("name = \"reg.example/acme/m\"\nformats = [\"modelpack\", \"onnx\"]\n");
        assert_eq!((e.line, e.field.as_str()), (11, "model.formats[1]"), "{e}");
        let e = bad("name = \"reg.example/acme/m:v1\"\n");
        assert_eq!((e.line, e.field.as_str()), (10, "model.name"), "{e}");
        let e = bad("name = \"r/m\"\n[model.metadata]\nparam_size = \"6.75B\"\n");
        assert_eq!(
            (e.line, e.field.as_str()),
            (12, "model.metadata.param_size"),
            "{e}"
        );
        let e = bad("name = \"r/m\"\n[model.metadata]\nprecision = \"fp16\"\n");
        assert_eq!(e.field, "model.metadata.precision", "{e}");
        let e = bad("name = \"r/m\"\nlabels = 1\n");
        assert_eq!(e.field, "model.labels", "{e}");
        let e = parse(&file, "[image]\n[model]\nname = \"r/m\"\n").unwrap_err();
        assert_eq!(e.field, "model", "{e}");
        for ok in ["66M", "6.7B", "1t", "100m", "1.0K"] {
            assert!(valid_param_size(ok), "{ok}");
        }
        for bad in ["", "B", "6.B", ".5B", "6.75B", "6B7", "6X", "-1M"] {
            assert!(!valid_param_size(bad), "{bad}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn image_paths() {
        assert_eq!(check_image_path("/models//x/"), Ok("/models/x".into()));
        assert!(check_image_path("models").is_err());
        assert!(check_image_path("/a/../b").is_err());
    }

    #[test]
    fn ports_and_platforms() {
        assert_eq!(parse_port("8000"), Ok("8000/tcp".into()));
        assert_eq!(parse_port("53/udp"), Ok("53/udp".into()));
        assert!(parse_port("70000").is_err());
        assert!(parse_port("80/icmp").is_err());
        assert_eq!(
            parse_platform("linux/arm64/v8").map(|p| p.to_string()),
            Ok("linux/arm64/v8".into())
        );
        assert!(parse_platform("linux").is_err());
    }

    #[test]
    fn layout_refs() {
        assert_eq!(split_layout_ref("./base:v1"), ("./base", Some("v1".into())));
        assert_eq!(split_layout_ref("./base"), ("./base", None));
        assert_eq!(split_layout_ref("/tmp/x:y/z"), ("/tmp/x:y/z", None));
    }

    #[test]
    fn env_substitution() {
        let w = vec![WeightsSpec {
            name: "sst2".into(),
            source: WeightsSource::Local(PathBuf::from("/tmp")),
            dest: "/models/sst2".into(),
            compression: Compression::None,
            include: vec![],
            exclude: vec![],
            layering: Layering::One,
            owner: None,
        }];
        assert_eq!(
            substitute("${weights.sst2.dest}/model", &w),
            Ok("/models/sst2/model".into())
        );
        assert!(substitute("${weights.other.dest}", &w).is_err());
        assert!(substitute("${weights.sst2.dest", &w).is_err());
    }

    #[test]
    fn errors_name_line_and_field() {
        let text = "[image]\nbase = \"scratch\"\n\n[[weights]]\nname = \"w\"\nsource = \"hf://o/r\"\ndest = \"models\"\n";
        let e = parse(Path::new("/x/mlimg.toml"), text).unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (7, "weights[0].dest"));
        let text = "[image]\nbogus = 1\n";
        let e = parse(Path::new("/x/mlimg.toml"), text).unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.message.contains("unknown field"), "{e}");
    }

    /// Huge minors made the wheel tag lists allocate gigabytes.
    #[test]
    fn absurd_python_versions_are_refused() {
        let spec = |python: &str| format!("[image]\n[python]\n{python}\n");
        let e = parse(Path::new("/x/mlimg.toml"), &spec("version = \"3.4000000\"")).unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (3, "python.version"));
        assert!(e.message.contains("outside the supported range"), "{e}");
        let e = parse(
            Path::new("/x/mlimg.toml"),
            &spec("version = \"3.11\"\nlibc = \"glibc 2.3000000\""),
        )
        .unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (4, "python.libc"));
        assert!(e.message.contains("glibc 2.3000000 is outside"), "{e}");
        let e = parse(
            Path::new("/x/mlimg.toml"),
            &spec("version = \"3.11\"\nlibc = \"musl 2.1\""),
        )
        .unwrap_err();
        assert!(e.message.contains("musl 2.1 is outside"), "{e}");
        parse(
            Path::new("/x/mlimg.toml"),
            &spec("version = \"3.99\"\nlibc = \"glibc 2.99\""),
        )
        .unwrap();
    }

    /// Local sources that resolve outside the spec's folder (`..`, absolute paths, symlinks
    /// leading out) copied host files such as `~/.docker` into the image.
    #[test]
    fn local_sources_stay_inside_the_context() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().canonicalize().unwrap();
        let proj = root.join("repo/proj");
        std::fs::create_dir_all(proj.join("models")).unwrap();
        std::fs::create_dir_all(root.join("secrets")).unwrap();
        std::fs::write(root.join("secrets/token"), "x").unwrap();
        std::fs::write(proj.join("requirements.txt"), "").unwrap();
        std::os::unix::fs::symlink(root.join("secrets"), proj.join("link")).unwrap();
        let file = proj.join("mlimg.toml");
        let weights = |src: &str| {
            format!("[image]\n\n[[weights]]\nname = \"w\"\nsource = \"{src}\"\ndest = \"/m\"\n")
        };
        let outside = root.join("secrets").display().to_string();
        for (src, shown) in [
            ("../../secrets", outside.clone()),
            (outside.as_str(), outside.clone()),
            ("link", outside.clone()),
            ("link/token", format!("{outside}/token")),
        ] {
            let e = parse(&file, &weights(src)).unwrap_err();
            assert_eq!((e.line, e.field.as_str()), (5, "weights[0].source"), "{e}");
            assert!(
                e.message
                    .contains(&format!("resolves to {shown}, outside the project folder"))
                    && e.message.contains(&proj.display().to_string()),
                "{e}"
            );
            assert!(
                e.to_string()
                    .starts_with(&format!("{}:5:10: weights[0].source: ", file.display())),
                "{e}"
            );
        }
        // Inside, including `..` that comes back in, is fine.
        parse(&file, &weights("models")).unwrap();
        parse(&file, &weights("../proj/models")).unwrap();

        // Every kind of local source is checked.
        let cases = [
            (
                "[image]\n[[deps]]\nname = \"d\"\ndir = \"../..\"\ndest = \"/\"\n",
                "deps[0].dir",
            ),
            (
                "[image]\n[[deps]]\nname = \"d\"\nrequirements = \"link/token\"\n",
                "deps[0].requirements",
            ),
            (
                "[image]\n[[deps]]\nname = \"d\"\npylock = \"link/token\"\n",
                "deps[0].pylock",
            ),
            (
                "[image]\n[[deps]]\nname = \"d\"\nrequirements = \"requirements.txt\"\nfind_links = [\"models\", \"/\"]\n",
                "deps[0].find_links[1]",
            ),
            ("[image]\n[app]\nsrc = \"..\"\n", "app.src"),
        ];
        for (text, field) in cases {
            let e = parse(&file, text).unwrap_err();
            assert_eq!(e.field, field, "{e}");
            assert!(e.message.contains("outside the project folder"), "{e}");
        }

        // The opt-ins: a wider context in the spec, or the loader's option.
        let wide = weights("../../secrets").replace("[image]\n", "[image]\ncontext = \"../..\"\n");
        let s = parse(&file, &wide).unwrap();
        assert_eq!(s.context.as_deref(), Some(root.as_path()));
        let e = parse(
            &file,
            &weights("../../secrets").replace("[image]\n", "[image]\ncontext = \"..\"\n"),
        )
        .unwrap_err();
        assert!(e.message.contains("outside the project folder"), "{e}");
        let e = parse(&file, "[image]\ncontext = \"nope\"\n").unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (2, "image.context"), "{e}");
        let opts = LoadOptions {
            allow_outside_context: true,
        };
        let s = super::parse(&file, &weights("link"), &opts).unwrap();
        assert!(s.context.is_none());
    }
}
