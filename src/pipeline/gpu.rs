//! `[config] gpu`: the NVIDIA container runtime's variables, merged into the run settings of
//! each platform's image. The CUDA version comes from `[gpu] cuda`, else the base config's
//! `CUDA_VERSION`, else the newest CUDA the platform's wheels need (`nvidia-cuda-runtime-cuXX`,
//! `+cuXYZ` local versions). A base that already sets `NVIDIA_REQUIRE_CUDA` (NVIDIA's CUDA
//! images, with driver-branch constraints) keeps it unless `[gpu] cuda` is given.

use std::borrow::Cow;

use serde_json::Value;

use crate::resolve::ResolvedPlatform;
use crate::spec::ConfigSpec;
use crate::spec::gpu::{GpuSpec, cuda_key, major_minor, wheel_cuda};

/// The base config's environment variable `name`.
fn base_env<'a>(base_config: &'a Value, name: &str) -> Option<&'a str> {
    base_config["config"]["Env"]
        .as_array()?
        .iter()
        .filter_map(Value::as_str)
        .find_map(|e| e.strip_prefix(name)?.strip_prefix('='))
}

/// The CUDA version the image needs and where it was found.
pub fn cuda_version(g: &GpuSpec, rp: &ResolvedPlatform) -> Option<(String, String)> {
    if let Some(c) = &g.cuda {
        return Some((c.clone(), "[gpu] cuda".into()));
    }
    if let Some(v) = base_env(&rp.base.config, "CUDA_VERSION") {
        return Some((major_minor(v), format!("the base's CUDA_VERSION={v}")));
    }
    rp.deps
        .iter()
        .flat_map(|(_, ws)| ws)
        .filter_map(|w| Some((wheel_cuda(&w.name, &w.version)?, w)))
        .max_by_key(|(v, _)| cuda_key(v))
        .map(|(v, w)| (v, format!("wheel {} {}", w.name, w.version)))
}

/// The run settings with the GPU variables added (variables set in `[config] env` win).
pub fn settings<'a>(config: &'a ConfigSpec, rp: &ResolvedPlatform) -> Cow<'a, ConfigSpec> {
    let Some(g) = &config.gpu else {
        return Cow::Borrowed(config);
    };
    let mut c = config.clone();
    let mut set = |k: &str, v: String| {
        c.env.entry(k.to_string()).or_insert(v);
    };
    set("NVIDIA_VISIBLE_DEVICES", g.visible_devices.clone());
    set("NVIDIA_DRIVER_CAPABILITIES", g.capabilities.join(","));
    let base_has = base_env(&rp.base.config, "NVIDIA_REQUIRE_CUDA").is_some();
    if (g.cuda.is_some() || !base_has)
        && let Some((v, _)) = cuda_version(g, rp)
    {
        set("NVIDIA_REQUIRE_CUDA", format!("cuda>={v}"));
    }
    Cow::Owned(c)
}
