//! The spec file (`mlimg.toml`): loading, validation, and the validated [`Spec`] value.
//!
//! Every error names the file, line:column and the field (e.g. `weights[0].dest`), with a hint
//! where one helps. Relative paths resolve against the spec file's folder.

pub mod gpu;
mod raw;
pub mod system;
mod validate;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::layer::Compression;

pub use validate::{check_image_path, parse_platform};

/// A validated spec.
#[derive(Debug, Clone)]
pub struct Spec {
    /// The spec file.
    pub path: PathBuf,
    /// The folder relative paths resolve against.
    pub dir: PathBuf,
    /// The folder every local source resolves inside (canonical): `[image].context`, else
    /// `dir`. `None` when [`LoadOptions::allow_outside_context`] turned the check off.
    pub context: Option<PathBuf>,
    pub image: ImageSpec,
    pub python: Option<PythonSpec>,
    /// `[python].compile_bytecode` (default true): `.pyc` files for installed wheels.
    pub compile_bytecode: bool,
    pub deps: Vec<DepsSpec>,
    pub weights: Vec<WeightsSpec>,
    pub app: Option<AppSpec>,
    pub config: ConfigSpec,
    /// `[model]`: the weights also as a ModelPack artifact and/or a weights-only image.
    pub model: Option<ModelSpec>,
    /// `[system]`: Debian packages installed into a layer of their own.
    pub system: Option<system::SystemSpec>,
}

#[derive(Debug, Clone)]
pub struct ImageSpec {
    pub name: Option<String>,
    /// The base as written in the spec (what the `base.name` annotation records).
    pub base_name: String,
    pub tags: Vec<String>,
    pub base: BaseSpec,
    pub platforms: Vec<Platform>,
    /// `[image].source` / `revision`: the source repository URL and revision the manifest
    /// annotations name (else read from the spec's git checkout when it is clean).
    pub source: Option<String>,
    pub revision: Option<String>,
    /// `[image].format`: OCI (default) or Docker image manifest v2 schema 2 media types.
    pub format: ImageFormat,
}

/// The media types an image is written with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ImageFormat {
    /// OCI image spec 1.1: `application/vnd.oci.image.*`.
    #[default]
    Oci,
    /// Docker image manifest v2 schema 2 (`application/vnd.docker.*`): keeps `Healthcheck`
    /// under engines that drop it from OCI configs (podman).
    Docker,
}

impl ImageFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            ImageFormat::Oci => "oci",
            ImageFormat::Docker => "docker",
        }
    }
}

/// Where the base image comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BaseSpec {
    Scratch,
    /// A local OCI image layout: `oci:PATH[:TAG]`.
    OciLayout {
        path: PathBuf,
        tag: Option<String>,
    },
    /// A registry reference, e.g. `docker.io/library/python:3.11-slim`.
    Registry(String),
}

impl fmt::Display for BaseSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BaseSpec::Scratch => write!(f, "scratch"),
            BaseSpec::OciLayout { path, tag: Some(t) } => write!(f, "oci:{}:{t}", path.display()),
            BaseSpec::OciLayout { path, tag: None } => write!(f, "oci:{}", path.display()),
            BaseSpec::Registry(r) => write!(f, "{r}"),
        }
    }
}

pub use crate::platform::Platform;

#[derive(Debug, Clone)]
pub struct PythonSpec {
    pub version: (u32, u32),
    /// `None`: detected from the base image, else `/usr/local`.
    pub prefix: Option<String>,
    /// `glibc 2.36` or `musl 1.2`, parsed.
    pub libc: Option<(String, u32, u32)>,
    /// Overrides `{prefix}/lib/python3.X/site-packages` (e.g. Debian's
    /// `/usr/lib/python3/dist-packages`).
    pub site_packages: Option<String>,
}

#[derive(Debug, Clone)]
pub struct DepsSpec {
    pub name: String,
    pub source: DepsSource,
    /// Image path for `dir` sets (absolute, normalized).
    pub dest: Option<String>,
    pub index_url: Option<String>,
    pub find_links: Vec<PathBuf>,
    pub compression: Compression,
    /// How a wheel set is cut into layers (`dir` sets are always one layer).
    pub layering: DepsLayering,
}

/// `[[deps]].layers`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DepsLayering {
    /// The whole set in one layer.
    #[default]
    One,
    /// One layer per installed distribution: adding a package ships that package.
    PerPackage,
    /// Wheels of 10 MiB or more alone, the others in 4 layers chosen by a hash of their name:
    /// adding a small package re-ships one quarter of the small ones.
    Auto,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DepsSource {
    /// A prepared tree, copied as is.
    Dir(PathBuf),
    /// A pinned requirements file (`==` and `--hash`).
    Requirements(PathBuf),
    /// A PEP 751 `pylock.toml`.
    Pylock(PathBuf),
}

#[derive(Debug, Clone)]
pub struct WeightsSpec {
    pub name: String,
    pub source: WeightsSource,
    pub dest: String,
    pub compression: Compression,
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    pub layering: Layering,
    /// `owner = "UID:GID"`: the files (and `dest`) belong to it instead of 0:0.
    pub owner: Option<(u64, u64)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WeightsSource {
    /// A local file or folder.
    Local(PathBuf),
    /// `hf://org/repo` at a revision, optionally a subfolder.
    Hub {
        repo: String,
        revision: String,
        subfolder: Option<String>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layering {
    One,
    PerFile,
}

/// `[model]`: the weights layers, also published as artifacts of their own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelSpec {
    /// Where they go (`registry.example/acme/sst2-model`), without tag.
    pub name: String,
    /// Empty: the image's tags.
    pub tags: Vec<String>,
    /// At least one, each once, in the spec's order (the first takes the plain tags).
    pub formats: Vec<ModelFormat>,
    pub metadata: ModelMetadata,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelFormat {
    /// A CNCF ModelPack artifact (`application/vnd.cncf.model.manifest.v1+json`).
    ModelPack,
    /// A runnable-shaped OCI image holding only the weights (for `volumes[].image`).
    Image,
}

impl ModelFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            ModelFormat::ModelPack => "modelpack",
            ModelFormat::Image => "image",
        }
    }
}

/// `[model.metadata]`, all optional.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModelMetadata {
    pub name: Option<String>,
    pub version: Option<String>,
    pub family: Option<String>,
    pub architecture: Option<String>,
    pub format: Option<String>,
    pub precision: Option<String>,
    pub param_size: Option<String>,
    pub licenses: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct AppSpec {
    pub src: PathBuf,
    pub dest: String,
    pub exclude: Vec<String>,
    pub compression: Compression,
    /// `owner = "UID:GID"`: the files (and `dest`) belong to it instead of 0:0.
    pub owner: Option<(u64, u64)>,
}

#[derive(Debug, Clone, Default)]
pub struct ConfigSpec {
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    /// Values with `${weights.NAME.dest}` already substituted.
    pub env: BTreeMap<String, String>,
    pub workdir: Option<String>,
    pub user: Option<String>,
    /// Folders (image paths) created in the app layer and owned by `user` (numeric).
    pub writable: Vec<String>,
    /// `user` as numbers, when it is `UID[:GID]` (a missing GID is the UID).
    pub user_ids: Option<(u64, u64)>,
    /// Normalized `PORT/proto`.
    pub ports: Vec<String>,
    pub volumes: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub stop_signal: Option<String>,
    pub healthcheck: Option<Healthcheck>,
    /// `[config] gpu = true` / `[gpu]`: NVIDIA runtime settings.
    pub gpu: Option<gpu::GpuSpec>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Healthcheck {
    pub test: Vec<String>,
    pub interval: Option<Duration>,
    pub timeout: Option<Duration>,
    pub start_period: Option<Duration>,
    pub retries: Option<u32>,
}

/// A spec error: file, position, field, message, and an optional hint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    pub field: String,
    pub message: String,
    pub hint: Option<String>,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.column)?;
        }
        if !self.field.is_empty() {
            write!(f, ": {}", self.field)?;
        }
        write!(f, ": {}", self.message)?;
        if let Some(h) = &self.hint {
            write!(f, "\n  hint: {h}")?;
        }
        Ok(())
    }
}

impl std::error::Error for SpecError {}

/// How a spec is loaded.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Let local sources (weights `source`, deps `dir` / `requirements` / `pylock` /
    /// `find_links`, app `src`) resolve outside the spec's context folder (the CLI's
    /// `--allow-outside-context`). Off by default: a spec from an untrusted checkout could
    /// otherwise copy `~/.docker` or `../../secrets` into an image.
    pub allow_outside_context: bool,
}

impl Spec {
    /// Reads and validates a spec file (local sources must stay inside its context).
    pub fn load(path: &Path) -> Result<Spec, SpecError> {
        Spec::load_with(path, &LoadOptions::default())
    }

    /// [`Spec::load`] with options.
    pub fn load_with(path: &Path, opts: &LoadOptions) -> Result<Spec, SpecError> {
        let text = std::fs::read_to_string(path).map_err(|e| SpecError {
            file: path.to_path_buf(),
            line: 0,
            column: 0,
            field: String::new(),
            message: format!("cannot read the spec: {e}"),
            hint: if e.kind() == std::io::ErrorKind::NotFound {
                Some(
                    "pass the spec with -f FILE, or run mlimg in the folder that holds mlimg.toml"
                        .into(),
                )
            } else {
                None
            },
        })?;
        Spec::parse_with(path, &text, opts)
    }

    /// Validates spec text; `path` names the file in errors and anchors relative paths.
    pub fn parse(path: &Path, text: &str) -> Result<Spec, SpecError> {
        Spec::parse_with(path, text, &LoadOptions::default())
    }

    /// [`Spec::parse`] with options.
    pub fn parse_with(path: &Path, text: &str, opts: &LoadOptions) -> Result<Spec, SpecError> {
        validate::parse(path, text, opts)
    }
}
