//! Assembling the image: config (base config merged with `[config]`), manifest and index.
//! Pure: values in, canonical JSON bytes out.
//!
//! Manifests, indexes and descriptors use `oci-spec`'s types. The config is handled as JSON
//! (`serde_json::Value`) on purpose: a base image's config carries Docker fields that
//! `oci-spec`'s `ImageConfiguration` drops (`Healthcheck`, `OnBuild`, `Shell`), and an image built
//! on it must keep them. All JSON is serialized with sorted keys, so the bytes are canonical.

use std::collections::BTreeMap;

pub mod docker;
pub mod model;
mod value;

use oci_spec::image::{
    Arch, ImageIndexBuilder, ImageManifestBuilder, MediaType, Os, PlatformBuilder,
};
use serde_json::{Map, Value, json};

use crate::spec::{ConfigSpec, Platform};

pub use model::{Artifact, ArtifactKind};
pub use value::{
    Blob, BlobSource, Descriptor, Document, Generator, Image, ImageSet, Layer, Referrer, RemoteOnly,
};

pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
pub const INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("base image config is not a JSON object")]
    BadBaseConfig,
    #[error("invalid digest {0:?}")]
    BadDigest(String),
    #[error("building {what}: {message}")]
    Build { what: &'static str, message: String },
}

/// The canonical bytes of a JSON value (sorted keys, no whitespace).
pub fn canonical(v: &Value) -> Vec<u8> {
    // serde_json's Map is a BTreeMap (no `preserve_order`), so keys come out sorted.
    serde_json::to_vec(v).unwrap_or_default()
}

/// RFC 3339 UTC time for a count of seconds since 1970.
pub fn rfc3339(secs: u64) -> String {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (h, m, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    // civil-from-days (Howard Hinnant's algorithm)
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if mo <= 2 { y + 1 } else { y };
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{m:02}:{s:02}Z")
}

/// Docker layer media types map to their OCI twins (same bytes).
pub fn oci_layer_media_type(mt: &str) -> String {
    match mt {
        "application/vnd.docker.image.rootfs.diff.tar.gzip" => {
            "application/vnd.oci.image.layer.v1.tar+gzip".into()
        }
        "application/vnd.docker.image.rootfs.diff.tar" => {
            "application/vnd.oci.image.layer.v1.tar".into()
        }
        "application/vnd.docker.image.rootfs.diff.tar.zstd" => {
            "application/vnd.oci.image.layer.v1.tar+zstd".into()
        }
        other => other.into(),
    }
}

/// The config of an empty (`scratch`) base for a platform.
pub fn scratch_config(p: &Platform) -> Value {
    let mut v = json!({
        "architecture": p.architecture,
        "os": p.os,
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": []},
        "history": [],
    });
    if let Some(var) = &p.variant {
        v["variant"] = json!(var);
    }
    v
}

/// The `PATH` docker gives a container whose image sets none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Merges `[config]` and the new layers into the base config, the way a Dockerfile would:
/// a new entrypoint resets the base's cmd, env entries replace same-named ones, ports, volumes
/// and labels merge.
pub fn build_config(
    base: &Value,
    platform: &Platform,
    settings: &ConfigSpec,
    layers: &[Layer],
    created: &str,
) -> Result<Value, ImageError> {
    let mut cfg = base.as_object().cloned().ok_or(ImageError::BadBaseConfig)?;
    cfg.insert("created".into(), json!(created));
    cfg.insert("architecture".into(), json!(platform.architecture));
    cfg.insert("os".into(), json!(platform.os));
    match &platform.variant {
        Some(v) => cfg.insert("variant".into(), json!(v)),
        None => cfg.remove("variant"),
    };
    // Fields that describe how the base was built, not this image.
    for k in ["container", "container_config", "docker_version", "author"] {
        cfg.remove(k);
    }

    let mut c: Map<String, Value> = cfg
        .get("config")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    if let Some(ep) = &settings.entrypoint {
        c.insert("Entrypoint".into(), json!(ep));
        if settings.cmd.is_none() {
            c.remove("Cmd");
        }
    }
    if let Some(cmd) = &settings.cmd {
        c.insert("Cmd".into(), json!(cmd));
    }
    if !settings.env.is_empty() {
        let mut env: Vec<String> = c
            .get("Env")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        for (k, v) in &settings.env {
            let item = format!("{k}={v}");
            match env
                .iter_mut()
                .find(|e| e.split_once('=').map_or(e.as_str(), |(n, _)| n) == k)
            {
                Some(slot) => *slot = item,
                None => env.push(item),
            }
        }
        c.insert("Env".into(), json!(env));
    }
    // Like docker, an image whose base sets no PATH gets docker's default one.
    let has_path = c.get("Env").and_then(Value::as_array).is_some_and(|a| {
        a.iter()
            .filter_map(Value::as_str)
            .any(|e| e.starts_with("PATH="))
    });
    if !has_path {
        let mut env = vec![json!(format!("PATH={DEFAULT_PATH}"))];
        if let Some(a) = c.get("Env").and_then(Value::as_array) {
            env.extend(a.iter().cloned());
        }
        c.insert("Env".into(), Value::Array(env));
    }
    if let Some(w) = &settings.workdir {
        c.insert("WorkingDir".into(), json!(w));
    }
    if let Some(u) = &settings.user {
        c.insert("User".into(), json!(u));
    }
    merge_set(&mut c, "ExposedPorts", &settings.ports);
    merge_set(&mut c, "Volumes", &settings.volumes);
    if !settings.labels.is_empty() {
        let mut labels = c
            .get("Labels")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        for (k, v) in &settings.labels {
            labels.insert(k.clone(), json!(v));
        }
        c.insert("Labels".into(), Value::Object(labels));
    }
    if let Some(s) = &settings.stop_signal {
        c.insert("StopSignal".into(), json!(s));
    }
    if let Some(h) = &settings.healthcheck {
        let mut hc = Map::new();
        hc.insert("Test".into(), json!(h.test));
        let ns = |d: std::time::Duration| json!(d.as_nanos() as u64);
        if let Some(d) = h.interval {
            hc.insert("Interval".into(), ns(d));
        }
        if let Some(d) = h.timeout {
            hc.insert("Timeout".into(), ns(d));
        }
        if let Some(d) = h.start_period {
            hc.insert("StartPeriod".into(), ns(d));
        }
        if let Some(r) = h.retries {
            hc.insert("Retries".into(), json!(r));
        }
        c.insert("Healthcheck".into(), Value::Object(hc));
    }
    cfg.insert("config".into(), Value::Object(c));

    let mut rootfs = cfg
        .get("rootfs")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    rootfs.insert("type".into(), json!("layers"));
    let mut diff_ids = rootfs
        .get("diff_ids")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut history = cfg
        .get("history")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for l in layers {
        diff_ids.push(json!(l.diff_id));
        history.push(json!({"created": created, "created_by": l.created_by, "comment": "mlimg"}));
    }
    rootfs.insert("diff_ids".into(), Value::Array(diff_ids));
    cfg.insert("rootfs".into(), Value::Object(rootfs));
    cfg.insert("history".into(), Value::Array(history));
    Ok(Value::Object(cfg))
}

/// One platform's image from its layers (base layers first, `new` of them added by this
/// build): the config merged from the base's and the settings, then the manifest.
#[allow(clippy::too_many_arguments)]
pub fn assemble(
    platform: &Platform,
    base_config: &Value,
    settings: &ConfigSpec,
    layers: Vec<Layer>,
    new: usize,
    created: &str,
    annotations: &BTreeMap<String, String>,
    layer_annotations: &[BTreeMap<String, String>],
) -> Result<Image, ImageError> {
    let first_new = layers.len().saturating_sub(new);
    let config = build_config(
        base_config,
        platform,
        settings,
        &layers[first_new..],
        created,
    )?;
    let config = Document::new(CONFIG_MEDIA_TYPE, canonical(&config));
    let descs: Vec<Descriptor> = layers.iter().map(|l| l.descriptor.clone()).collect();
    let manifest =
        build_manifest_annotated(&config.descriptor, &descs, layer_annotations, annotations)?;
    Ok(Image {
        platform: platform.clone(),
        manifest: Document::new(MANIFEST_MEDIA_TYPE, manifest),
        config,
        layers,
    })
}

fn merge_set(c: &mut Map<String, Value>, key: &str, items: &[String]) {
    if items.is_empty() {
        return;
    }
    let mut m = c
        .get(key)
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    for i in items {
        m.insert(i.clone(), json!({}));
    }
    c.insert(key.into(), Value::Object(m));
}

fn descriptor(b: &Descriptor) -> Result<oci_spec::image::Descriptor, ImageError> {
    let digest = oci_spec::image::Digest::try_from(b.digest.as_str())
        .map_err(|_| ImageError::BadDigest(b.digest.to_string()))?;
    Ok(oci_spec::image::Descriptor::new(
        MediaType::from(b.media_type.as_str()),
        b.size,
        digest,
    ))
}

fn build_err(what: &'static str) -> impl Fn(oci_spec::OciSpecError) -> ImageError {
    move |e| ImageError::Build {
        what,
        message: e.to_string(),
    }
}

/// The OCI image manifest's canonical bytes.
pub fn build_manifest(
    config: &Descriptor,
    layers: &[Descriptor],
    annotations: &BTreeMap<String, String>,
) -> Result<Vec<u8>, ImageError> {
    build_manifest_annotated(config, layers, &[], annotations)
}

/// The OCI image manifest's canonical bytes, layer `i` with `layer_annotations[i]` (when
/// there is one and it is not empty).
pub fn build_manifest_annotated(
    config: &Descriptor,
    layers: &[Descriptor],
    layer_annotations: &[BTreeMap<String, String>],
    annotations: &BTreeMap<String, String>,
) -> Result<Vec<u8>, ImageError> {
    let mut descs = Vec::with_capacity(layers.len());
    for (i, l) in layers.iter().enumerate() {
        let mut d = descriptor(l)?;
        if let Some(a) = layer_annotations.get(i).filter(|a| !a.is_empty()) {
            d.set_annotations(Some(annotation_map(a)));
        }
        descs.push(d);
    }
    let mut b = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(descriptor(config)?)
        .layers(descs);
    if !annotations.is_empty() {
        b = b.annotations(annotation_map(annotations));
    }
    let m = b.build().map_err(build_err("manifest"))?;
    canonical_of(&m, "manifest")
}

/// Canonical bytes of an `oci-spec` value (its `HashMap`s come out sorted through `Value`).
fn canonical_of<T: serde::Serialize>(x: &T, what: &'static str) -> Result<Vec<u8>, ImageError> {
    let v = serde_json::to_value(x).map_err(|e| ImageError::Build {
        what,
        message: e.to_string(),
    })?;
    Ok(canonical(&v))
}

fn annotation_map(a: &BTreeMap<String, String>) -> std::collections::HashMap<String, String> {
    a.clone().into_iter().collect()
}

/// The OCI image index's canonical bytes, one entry per platform manifest.
pub fn build_index(
    manifests: &[(Descriptor, Platform)],
    annotations: &BTreeMap<String, String>,
) -> Result<Vec<u8>, ImageError> {
    let mut descs = Vec::new();
    for (blob, p) in manifests {
        let mut d = descriptor(blob)?;
        let mut pb = PlatformBuilder::default()
            .architecture(Arch::from(p.architecture.as_str()))
            .os(Os::from(p.os.as_str()));
        if let Some(v) = &p.variant {
            pb = pb.variant(v.clone());
        }
        d.set_platform(Some(pb.build().map_err(build_err("index platform"))?));
        descs.push(d);
    }
    let mut b = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(descs);
    if !annotations.is_empty() {
        b = b.annotations(annotation_map(annotations));
    }
    let idx = b.build().map_err(build_err("index"))?;
    canonical_of(&idx, "index")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Healthcheck;
    use std::time::Duration;

    fn amd64() -> Platform {
        Platform {
            os: "linux".into(),
            architecture: "amd64".into(),
            variant: None,
        }
    }

    #[test]
    fn time_format() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn config_merge_follows_dockerfile_rules() {
        let base = json!({
            "architecture": "amd64", "os": "linux", "container_config": {},
            "config": {"Env": ["PATH=/bin", "A=1"], "Cmd": ["sh"], "Healthcheck": {"Test": ["NONE"]}, "Shell": ["/bin/sh", "-c"]},
            "rootfs": {"type": "layers", "diff_ids": ["sha256:aa"]},
            "history": [{"created_by": "base"}]
        });
        let mut s = ConfigSpec {
            entrypoint: Some(vec!["python".into()]),
            ..Default::default()
        };
        s.env.insert("A".into(), "2".into());
        s.env.insert("B".into(), "3".into());
        s.ports = vec!["8000/tcp".into()];
        s.healthcheck = Some(Healthcheck {
            test: vec!["CMD".into(), "true".into()],
            interval: Some(Duration::from_secs(30)),
            timeout: None,
            start_period: None,
            retries: Some(3),
        });
        let cc = crate::digest::Digest::of(b"cc");
        let layer = Layer {
            descriptor: Descriptor {
                media_type: "x".into(),
                digest: crate::digest::Digest::of(b"bb"),
                size: 1,
            },
            diff_id: cc.clone(),
            source: BlobSource::Bytes(std::sync::Arc::from(&b"bb"[..])),
            role: "app".into(),
            created_by: "mlimg app".into(),
            cached: false,
        };
        let c = build_config(&base, &amd64(), &s, &[layer], "1970-01-01T00:00:00Z").unwrap();
        assert_eq!(c["config"]["Env"], json!(["PATH=/bin", "A=2", "B=3"]));
        assert!(
            c["config"].get("Cmd").is_none(),
            "a new entrypoint resets the base cmd"
        );
        assert_eq!(
            c["config"]["Shell"],
            json!(["/bin/sh", "-c"]),
            "unknown base fields survive"
        );
        assert_eq!(
            c["config"]["Healthcheck"]["Interval"],
            json!(30_000_000_000u64)
        );
        assert_eq!(c["config"]["ExposedPorts"], json!({"8000/tcp": {}}));
        assert_eq!(c["rootfs"]["diff_ids"], json!(["sha256:aa", cc.as_str()]));
        assert_eq!(c["history"][1]["created_by"], json!("mlimg app"));
        assert!(c.get("container_config").is_none());
    }

    #[test]
    fn manifest_is_canonical() {
        let cfg = Descriptor {
            media_type: CONFIG_MEDIA_TYPE.into(),
            digest: crate::digest::Digest::of(b"cfg"),
            size: 10,
        };
        let mut ann = BTreeMap::new();
        ann.insert("z".to_string(), "1".to_string());
        ann.insert("a".to_string(), "2".to_string());
        let a = build_manifest(&cfg, &[], &ann).unwrap();
        let b = build_manifest(&cfg, &[], &ann).unwrap();
        assert_eq!(a, b);
        let s = String::from_utf8(a).unwrap();
        assert!(s.find("\"a\"").unwrap() < s.find("\"z\"").unwrap(), "{s}");
        assert!(s.contains(MANIFEST_MEDIA_TYPE));
    }
}
