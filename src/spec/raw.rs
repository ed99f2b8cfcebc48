//! The spec file as written: serde types that mirror `mlimg.toml` one to one.
//! Every field that is validated after parsing keeps its span, so errors can name line and column.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

pub type S<T> = Spanned<T>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSpec {
    pub image: S<RawImage>,
    #[serde(default)]
    pub python: Option<S<RawPython>>,
    #[serde(default)]
    pub deps: Vec<S<RawDeps>>,
    #[serde(default)]
    pub weights: Vec<S<RawWeights>>,
    #[serde(default)]
    pub app: Option<S<RawApp>>,
    #[serde(default)]
    pub config: Option<RawConfig>,
    #[serde(default)]
    pub model: Option<S<RawModel>>,
    #[serde(default)]
    pub gpu: Option<S<super::gpu::RawGpu>>,
    #[serde(default)]
    pub system: Option<S<super::system::RawSystem>>,
}

/// `[model]`: the weights as artifacts of their own (ModelPack, weights-only image).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawModel {
    pub name: S<String>,
    #[serde(default)]
    pub tags: Vec<S<String>>,
    #[serde(default)]
    pub formats: Option<S<Vec<S<String>>>>,
    #[serde(default)]
    pub metadata: Option<RawModelMetadata>,
}

/// `[model.metadata]`: what the ModelPack config says about the model.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawModelMetadata {
    #[serde(default)]
    pub name: Option<S<String>>,
    #[serde(default)]
    pub version: Option<S<String>>,
    #[serde(default)]
    pub family: Option<S<String>>,
    #[serde(default)]
    pub architecture: Option<S<String>>,
    #[serde(default)]
    pub format: Option<S<String>>,
    #[serde(default)]
    pub precision: Option<S<String>>,
    #[serde(default)]
    pub param_size: Option<S<String>>,
    #[serde(default)]
    pub licenses: Vec<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawImage {
    #[serde(default)]
    pub name: Option<S<String>>,
    #[serde(default)]
    pub tags: Vec<S<String>>,
    #[serde(default)]
    pub base: Option<S<String>>,
    #[serde(default)]
    pub platforms: Vec<S<String>>,
    /// The folder local sources must stay inside (relative to the spec); default its folder.
    #[serde(default)]
    pub context: Option<S<String>>,
    /// `org.opencontainers.image.source` (default: the git checkout's origin URL).
    #[serde(default)]
    pub source: Option<S<String>>,
    /// `org.opencontainers.image.revision` (default: the git checkout's HEAD commit).
    #[serde(default)]
    pub revision: Option<S<String>>,
    /// `oci` (default) or `docker`: the media types of manifest, config and layers.
    #[serde(default)]
    pub format: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPython {
    /// Required with `prefix`, `libc` or `site_packages`; alone, `[python]` only sets options.
    #[serde(default)]
    pub version: Option<S<String>>,
    /// Compile `.pyc` files for installed wheels (default true).
    #[serde(default)]
    pub compile_bytecode: Option<bool>,
    #[serde(default)]
    pub prefix: Option<S<String>>,
    #[serde(default)]
    pub libc: Option<S<String>>,
    #[serde(default)]
    pub site_packages: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDeps {
    pub name: S<String>,
    #[serde(default)]
    pub dir: Option<S<String>>,
    #[serde(default)]
    pub dest: Option<S<String>>,
    #[serde(default)]
    pub requirements: Option<S<String>>,
    #[serde(default)]
    pub pylock: Option<S<String>>,
    #[serde(default)]
    pub index_url: Option<S<String>>,
    #[serde(default)]
    pub find_links: Vec<S<String>>,
    #[serde(default)]
    pub compression: Option<S<String>>,
    /// `one` (default), `per-package` or `auto`: how a wheel set is cut into layers.
    #[serde(default)]
    pub layers: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWeights {
    pub name: S<String>,
    pub source: S<String>,
    pub dest: S<String>,
    #[serde(default)]
    pub revision: Option<S<String>>,
    #[serde(default)]
    pub subfolder: Option<S<String>>,
    #[serde(default)]
    pub compression: Option<S<String>>,
    #[serde(default)]
    pub include: Vec<S<String>>,
    #[serde(default)]
    pub exclude: Vec<S<String>>,
    #[serde(default)]
    pub layers: Option<S<String>>,
    #[serde(default)]
    pub owner: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawApp {
    #[serde(default)]
    pub src: Option<S<String>>,
    #[serde(default)]
    pub dest: Option<S<String>>,
    #[serde(default)]
    pub exclude: Vec<S<String>>,
    #[serde(default)]
    pub compression: Option<S<String>>,
    #[serde(default)]
    pub owner: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default)]
    pub cmd: Option<Vec<String>>,
    #[serde(default)]
    pub env: BTreeMap<String, S<String>>,
    #[serde(default)]
    pub workdir: Option<S<String>>,
    #[serde(default)]
    pub user: Option<S<String>>,
    #[serde(default)]
    pub writable: Vec<S<String>>,
    #[serde(default)]
    pub ports: Vec<S<String>>,
    #[serde(default)]
    pub volumes: Vec<S<String>>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    #[serde(default)]
    pub stop_signal: Option<S<String>>,
    #[serde(default)]
    pub healthcheck: Option<S<RawHealthcheck>>,
    #[serde(default)]
    pub gpu: Option<S<bool>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealthcheck {
    pub test: S<Vec<String>>,
    #[serde(default)]
    pub interval: Option<S<String>>,
    #[serde(default)]
    pub timeout: Option<S<String>>,
    #[serde(default)]
    pub start_period: Option<S<String>>,
    #[serde(default)]
    pub retries: Option<S<i64>>,
}
