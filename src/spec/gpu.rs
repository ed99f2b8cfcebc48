//! `[config] gpu = true` or a `[gpu]` table: what NVIDIA's container runtime reads
//! (`NVIDIA_VISIBLE_DEVICES`, `NVIDIA_DRIVER_CAPABILITIES`, `NVIDIA_REQUIRE_CUDA`) and how
//! many GPUs `mlimg snippet` asks for.

use std::ops::Range;

use serde::Deserialize;

use super::SpecError;
use super::raw::S;

/// `[gpu]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGpu {
    #[serde(default)]
    pub visible_devices: Option<S<String>>,
    #[serde(default)]
    pub capabilities: Option<S<Vec<String>>>,
    #[serde(default)]
    pub cuda: Option<S<String>>,
    #[serde(default)]
    pub count: Option<S<u32>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuSpec {
    /// `NVIDIA_VISIBLE_DEVICES`: `all`, `none`, or a comma-separated list of indexes/UUIDs.
    pub visible_devices: String,
    /// `NVIDIA_DRIVER_CAPABILITIES`.
    pub capabilities: Vec<String>,
    /// The CUDA version the image needs (`12.1`); `None`: found in the base or the wheels.
    pub cuda: Option<String>,
    /// GPUs a deployment asks for (`mlimg snippet`); `None`: all (Compose) / 1 (Kubernetes).
    pub count: Option<u32>,
}

impl Default for GpuSpec {
    fn default() -> GpuSpec {
        GpuSpec {
            visible_devices: "all".into(),
            capabilities: vec!["compute".into(), "utility".into()],
            cuda: None,
            count: None,
        }
    }
}

const CAPABILITIES: &[&str] = &[
    "compute", "compat32", "graphics", "utility", "video", "display", "all",
];

/// The GPU settings from `[config] gpu` and `[gpu]`; `err` makes a positioned error.
pub fn validate(
    flag: Option<&S<bool>>,
    table: Option<&S<RawGpu>>,
    err: &dyn Fn(Range<usize>, &str, String) -> SpecError,
) -> Result<Option<GpuSpec>, SpecError> {
    if let Some(f) = flag
        && !*f.get_ref()
    {
        if let Some(t) = table {
            return Err(err(
                t.span(),
                "gpu",
                "[gpu] is set but [config] gpu = false: remove one".into(),
            ));
        }
        return Ok(None);
    }
    let Some(t) = table else {
        return Ok(flag.map(|_| GpuSpec::default()));
    };
    let t = t.get_ref();
    let mut g = GpuSpec::default();
    if let Some(v) = &t.visible_devices {
        let s = v.get_ref().trim();
        if s.is_empty() || s.contains(char::is_whitespace) {
            return Err(err(
                v.span(),
                "gpu.visible_devices",
                format!("{s:?}: expected \"all\", \"none\" or a comma-separated list like \"0,1\""),
            ));
        }
        g.visible_devices = s.to_string();
    }
    if let Some(c) = &t.capabilities {
        for cap in c.get_ref() {
            if !CAPABILITIES.contains(&cap.as_str()) {
                return Err(err(
                    c.span(),
                    "gpu.capabilities",
                    format!(
                        "unknown capability {cap:?} (one of {})",
                        CAPABILITIES.join(", ")
                    ),
                ));
            }
        }
        if c.get_ref().is_empty() {
            return Err(err(c.span(), "gpu.capabilities", "empty list".into()));
        }
        g.capabilities = c.get_ref().clone();
    }
    if let Some(v) = &t.cuda {
        let s = v.get_ref();
        let ok = s.split('.').count() <= 3
            && s.split('.')
                .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()));
        if !ok {
            return Err(err(
                v.span(),
                "gpu.cuda",
                format!("{s:?}: expected a CUDA version like \"12.1\""),
            ));
        }
        g.cuda = Some(major_minor(s));
    }
    if let Some(n) = &t.count {
        if *n.get_ref() == 0 {
            return Err(err(n.span(), "gpu.count", "at least 1".into()));
        }
        g.count = Some(*n.get_ref());
    }
    Ok(Some(g))
}

/// `12.1.105` → `12.1`.
pub fn major_minor(v: &str) -> String {
    v.split('.').take(2).collect::<Vec<_>>().join(".")
}

/// The CUDA version a wheel needs: `nvidia-cuda-runtime-cu12 12.1.105` → `12.1`, a local
/// version `2.2.0+cu121` → `12.1`, `+cu118` → `11.8`.
pub fn wheel_cuda(name: &str, version: &str) -> Option<String> {
    if name.starts_with("nvidia-cuda-runtime-cu") || name.starts_with("nvidia-cuda-nvrtc-cu") {
        let mm = major_minor(version);
        return mm.contains('.').then_some(mm);
    }
    let local = version.split_once('+')?.1;
    let digits = local.strip_prefix("cu")?;
    if digits.len() < 3 || !digits.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let (major, minor) = digits.split_at(digits.len() - 1);
    Some(format!("{major}.{minor}"))
}

/// Orders CUDA versions numerically (`12.10` > `12.9`).
pub fn cuda_key(v: &str) -> (u32, u32) {
    let mut it = v.split('.').map(|p| p.parse().unwrap_or(0));
    (it.next().unwrap_or(0), it.next().unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuda_from_wheels() {
        assert_eq!(
            wheel_cuda("nvidia-cuda-runtime-cu12", "12.1.105").as_deref(),
            Some("12.1")
        );
        assert_eq!(wheel_cuda("torch", "2.2.0+cu121").as_deref(), Some("12.1"));
        assert_eq!(wheel_cuda("torch", "2.0.1+cu118").as_deref(), Some("11.8"));
        assert_eq!(wheel_cuda("torch", "2.2.0+cpu"), None);
        assert_eq!(wheel_cuda("numpy", "1.26.4"), None);
        assert!(cuda_key("12.10") > cuda_key("12.9"));
    }
}
