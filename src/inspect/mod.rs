//! Reading an image back (`mlimg inspect`, `mlimg diff`, `mlimg snippet REF`): its platforms,
//! each platform's layers with their role, the run config, and for images mlimg built the
//! provenance summary from the in-toto statement attached as an OCI referrer. Reads manifests,
//! configs and referrer documents only — never a layer (a docker archive's unnamed layers are
//! hashed while the archive is read once).

mod store;

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use crate::registry::RegistryClient;

use store::{Doc, Store};
pub use store::{ImageRef, InspectError, MAX_SMALL_BLOB};

/// What `mlimg inspect` shows.
#[derive(Debug, Clone, Serialize)]
pub struct Inspection {
    pub image: String,
    /// The index's digest for a multi-platform image.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index_digest: Option<String>,
    pub platforms: Vec<PlatformImage>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PlatformImage {
    pub platform: String,
    /// A docker archive has no manifest: the config's digest stands in (`config_digest`).
    pub manifest_digest: Option<String>,
    pub manifest_size: u64,
    pub config_digest: String,
    pub config_size: u64,
    pub layers: Vec<LayerInfo>,
    pub config: ConfigSummary,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provenance: Option<Provenance>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct LayerInfo {
    /// `base`, `deps NAME`, `weights NAME`, `app`, or what the history says.
    pub role: String,
    pub media_type: String,
    pub size: u64,
    pub digest: String,
}

/// The run settings of the image config.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ConfigSummary {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    pub env: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workdir: Option<String>,
    pub ports: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<HealthcheckSummary>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct HealthcheckSummary {
    pub test: Vec<String>,
    /// Seconds, as Docker's nanoseconds / 1e9.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_period_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retries: Option<u64>,
}

/// From the in-toto statement and SBOM mlimg attaches to each platform image.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Provenance {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base_digest: Option<String>,
    pub wheels: usize,
    pub models: Vec<ModelSource>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub builder: Option<String>,
    /// The referrers found: SPDX SBOM, in-toto statement (digests).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sbom: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attestation: Option<String>,
    /// How many of the image's layers are the base's (from the SBOM's base package).
    #[serde(skip)]
    pub base_layers: Option<usize>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct ModelSource {
    pub repo: String,
    pub commit: String,
    pub files: usize,
}

impl PlatformImage {
    /// The digest that identifies this image (manifest, or config for a docker archive).
    pub fn id(&self) -> &str {
        self.manifest_digest
            .as_deref()
            .unwrap_or(&self.config_digest)
    }
}

/// Reads `r` (a registry needs `client`).
pub fn inspect(r: &ImageRef, client: Option<&RegistryClient>) -> Result<Inspection, InspectError> {
    if let ImageRef::DockerArchive(file) = r {
        return inspect_docker_archive(r, file);
    }
    let store = Store::open(r, client)?;
    let name = store.name();
    let top = store.top()?;
    let v = top.json(&name, "manifest")?;
    let is_index = v.get("manifests").is_some();
    let mut platforms = Vec::new();
    if is_index {
        for m in v["manifests"].as_array().into_iter().flatten() {
            if m.get("artifactType").is_some() {
                continue;
            }
            let p = &m["platform"];
            if p["os"] == "unknown" {
                continue; // attestation manifests of BuildKit
            }
            let Some(d) = m["digest"].as_str() else {
                continue;
            };
            let doc = store.manifest(d)?;
            platforms.push(platform_image(&store, &doc, Some(p))?);
        }
    } else {
        platforms.push(platform_image(&store, &top, None)?);
    }
    Ok(Inspection {
        image: name,
        index_digest: is_index.then_some(top.digest),
        platforms,
    })
}

fn platform_string(v: &Value) -> Option<String> {
    let os = v["os"].as_str()?;
    let arch = v["architecture"].as_str()?;
    Some(match v["variant"].as_str() {
        Some(var) => format!("{os}/{arch}/{var}"),
        None => format!("{os}/{arch}"),
    })
}

fn platform_image(
    store: &Store,
    manifest: &Doc,
    index_platform: Option<&Value>,
) -> Result<PlatformImage, InspectError> {
    let name = store.name();
    let m = manifest.json(&name, "manifest")?;
    let invalid = |what: &str, message: &str| InspectError::Invalid {
        image: name.clone(),
        what: format!("{what} {}", manifest.digest),
        message: message.into(),
    };
    if m.get("manifests").is_some() {
        return Err(invalid("manifest", "a nested index"));
    }
    let cfg_desc = &m["config"];
    let cfg_digest = cfg_desc["digest"]
        .as_str()
        .ok_or_else(|| invalid("manifest", "no config digest"))?;
    let cfg = store.blob(cfg_digest, cfg_desc["size"].as_u64())?;
    let config = cfg.json(&name, "config")?;
    let descs: Vec<(String, u64, String)> = m["layers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|l| {
            (
                l["mediaType"].as_str().unwrap_or_default().to_string(),
                l["size"].as_u64().unwrap_or_default(),
                l["digest"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    let provenance = provenance(store, &manifest.digest)?;
    let mut roles = roles(&config, descs.len());
    if let Some(n) = provenance.as_ref().and_then(|p| p.base_layers) {
        for r in roles.iter_mut().take(n) {
            *r = "base".into();
        }
    }
    let layers = descs
        .into_iter()
        .zip(roles)
        .map(|((media_type, size, digest), role)| LayerInfo {
            role,
            media_type,
            size,
            digest,
        })
        .collect();
    let platform = index_platform
        .and_then(platform_string)
        .or_else(|| platform_string(&config))
        .unwrap_or_else(|| "unknown".into());
    Ok(PlatformImage {
        platform,
        manifest_digest: Some(manifest.digest.clone()),
        manifest_size: manifest.bytes.len() as u64,
        config_digest: cfg.digest.clone(),
        config_size: cfg.bytes.len() as u64,
        layers,
        config: config_summary(&config),
        provenance,
    })
}

fn inspect_docker_archive(
    r: &ImageRef,
    file: &std::path::Path,
) -> Result<Inspection, InspectError> {
    let img = store::read_docker_archive(file)?;
    let config = img.config.json(&r.to_string(), "config")?;
    let roles = roles(&config, img.layers.len());
    let layers = img
        .layers
        .iter()
        .zip(roles)
        .map(|((_, size, digest, gz), role)| LayerInfo {
            role,
            media_type: if *gz {
                "application/vnd.docker.image.rootfs.diff.tar.gzip".into()
            } else {
                "application/vnd.docker.image.rootfs.diff.tar".into()
            },
            size: *size,
            digest: digest.clone(),
        })
        .collect();
    let _ = img.repo_tags;
    Ok(Inspection {
        image: r.to_string(),
        index_digest: None,
        platforms: vec![PlatformImage {
            platform: platform_string(&config).unwrap_or_else(|| "unknown".into()),
            manifest_digest: None,
            manifest_size: 0,
            config_digest: img.config.digest.clone(),
            config_size: img.config.bytes.len() as u64,
            layers,
            config: config_summary(&config),
            provenance: None,
        }],
    })
}

/// The role of each layer from the config's history: mlimg writes `mlimg deps NAME`,
/// `mlimg weights NAME …`, `mlimg app` (comment `mlimg`). The layers this build added are the
/// trailing run in mlimg's order (deps, weights, app); everything before is `base` — also a
/// base that mlimg built itself.
pub fn roles(config: &Value, n: usize) -> Vec<String> {
    let history: Vec<&Value> = config["history"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|h| h["empty_layer"] != true)
        .collect();
    let mut roles = vec!["base".to_string(); n];
    if history.len() != n {
        return roles;
    }
    let role_of = |h: &Value| -> Option<(u8, String)> {
        if h["comment"] != "mlimg" {
            return None;
        }
        let by = h["created_by"].as_str()?;
        let mut w = by.split_whitespace();
        if w.next()? != "mlimg" {
            return None;
        }
        match w.next()? {
            "deps" => Some((0, format!("deps {}", w.next()?))),
            "weights" => Some((1, format!("weights {}", w.next()?))),
            "app" => Some((2, "app".into())),
            _ => None,
        }
    };
    let mut rank = u8::MAX;
    for i in (0..n).rev() {
        match role_of(history[i]) {
            Some((r, role)) if r <= rank => {
                rank = r;
                roles[i] = role;
            }
            _ => break,
        }
    }
    roles
}

fn strings(v: &Value) -> Option<Vec<String>> {
    v.as_array().map(|a| {
        a.iter()
            .filter_map(|s| s.as_str().map(str::to_string))
            .collect()
    })
}

/// The run settings from an image config.
pub fn config_summary(config: &Value) -> ConfigSummary {
    let c = &config["config"];
    let s = |k: &str| c[k].as_str().filter(|s| !s.is_empty()).map(str::to_string);
    let secs = |k: &str| {
        c["Healthcheck"][k]
            .as_u64()
            .filter(|n| *n > 0)
            .map(|n| n as f64 / 1e9)
    };
    let healthcheck = strings(&c["Healthcheck"]["Test"])
        .filter(|t| !t.is_empty())
        .map(|test| HealthcheckSummary {
            test,
            interval_s: secs("Interval"),
            timeout_s: secs("Timeout"),
            start_period_s: secs("StartPeriod"),
            retries: c["Healthcheck"]["Retries"].as_u64(),
        });
    ConfigSummary {
        entrypoint: strings(&c["Entrypoint"]),
        cmd: strings(&c["Cmd"]),
        env: strings(&c["Env"]).unwrap_or_default(),
        user: s("User"),
        workdir: s("WorkingDir"),
        ports: c["ExposedPorts"]
            .as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default(),
        healthcheck,
        labels: c["Labels"]
            .as_object()
            .map(|o| {
                o.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                    .collect()
            })
            .unwrap_or_default(),
    }
}

/// The provenance summary from the newest in-toto statement attached to `subject`; `None`
/// when there is no mlimg referrer.
fn provenance(store: &Store, subject: &str) -> Result<Option<Provenance>, InspectError> {
    use crate::provenance::{INTOTO_ARTIFACT_TYPE, SPDX_ARTIFACT_TYPE};
    let refs = store.referrers(subject)?;
    // the last one listed is the newest
    let last = |t: &str| {
        refs.iter()
            .rev()
            .find(|(at, _)| at == t)
            .map(|(_, d)| d.clone())
    };
    let sbom = last(SPDX_ARTIFACT_TYPE);
    let attestation = last(INTOTO_ARTIFACT_TYPE);
    if sbom.is_none() && attestation.is_none() {
        return Ok(None);
    }
    let mut p = Provenance {
        sbom: sbom.clone(),
        attestation: attestation.clone(),
        ..Provenance::default()
    };
    let name = store.name();
    if let Some(sbom) = sbom {
        let m = store.manifest(&sbom)?.json(&name, "referrer")?;
        let layer = &m["layers"][0];
        if let Some(d) = layer["digest"].as_str() {
            let doc = store.blob(d, layer["size"].as_u64())?.json(&name, "SBOM")?;
            p.base_layers = sbom_base_layers(&doc);
        }
    }
    let Some(att) = attestation else {
        return Ok(Some(p));
    };
    let m = store.manifest(&att)?.json(&name, "referrer")?;
    let layer = &m["layers"][0];
    let Some(d) = layer["digest"].as_str() else {
        return Ok(Some(p));
    };
    let statement = store
        .blob(d, layer["size"].as_u64())?
        .json(&name, "statement")?;
    summarize_statement(&statement, &mut p);
    Ok(Some(p))
}

/// The base's layer count from mlimg's SPDX SBOM (`SPDXRef-Base`, comment `base image, N
/// layers`); 0 when the image has no base package (built on scratch).
pub fn sbom_base_layers(sbom: &Value) -> Option<usize> {
    let packages = sbom["packages"].as_array()?;
    let Some(base) = packages.iter().find(|p| p["SPDXID"] == "SPDXRef-Base") else {
        return Some(0);
    };
    base["comment"]
        .as_str()?
        .strip_prefix("base image, ")?
        .split_once(' ')?
        .0
        .parse()
        .ok()
}

/// Base, wheel count, Hub models (repo, commit, files) and builder from an in-toto statement.
pub fn summarize_statement(statement: &Value, p: &mut Provenance) {
    let pred = &statement["predicate"];
    let mut models: BTreeMap<(String, String), usize> = BTreeMap::new();
    for d in pred["buildDefinition"]["resolvedDependencies"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let name = d["name"].as_str().unwrap_or_default();
        let uri = d["uri"].as_str().unwrap_or_default();
        if let Some(b) = name.strip_prefix("base ") {
            p.base = Some(b.to_string());
            p.base_digest = d["digest"]["sha256"]
                .as_str()
                .map(|h| format!("sha256:{h}"));
        } else if d["annotations"]["deps"].is_string() {
            p.wheels += 1;
        } else if let Some(rest) = uri.strip_prefix("hf://")
            && let Some((repo, tail)) = rest.split_once('@')
        {
            let commit = tail.split('/').next().unwrap_or_default();
            *models.entry((repo.into(), commit.into())).or_default() += 1;
        }
    }
    p.models = models
        .into_iter()
        .map(|((repo, commit), files)| ModelSource {
            repo,
            commit,
            files,
        })
        .collect();
    let builder = &pred["runDetails"]["builder"];
    p.builder = builder["id"]
        .as_str()
        .map(|id| match builder["version"]["mlimg"].as_str() {
            Some(v) => format!("{id} {v}"),
            None => id.to_string(),
        });
}

/// What pulling `b` costs a node that holds `a`, per platform.
#[derive(Debug, Clone, Serialize)]
pub struct Diff {
    pub a: String,
    pub b: String,
    pub platforms: Vec<PlatformDiff>,
    /// Summed over the platforms compared.
    pub bytes_to_pull: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct PlatformDiff {
    pub platform: String,
    pub identical: bool,
    /// B's layers whose blob A lacks (by digest): what a node holding A downloads.
    pub layers_to_pull: Vec<LayerInfo>,
    /// A's layers B no longer uses.
    pub layers_dropped: Vec<LayerInfo>,
    /// B's layers A already has.
    pub layers_shared: usize,
    /// The new layers, plus B's config and manifest when they differ from A's.
    pub bytes_to_pull: u64,
    /// All of B for a node that holds nothing.
    pub bytes_total: u64,
}

/// Compares two inspected images platform by platform (B's platforms; a platform A lacks
/// costs all of B's bytes for it).
pub fn diff(a: &Inspection, b: &Inspection) -> Diff {
    let mut platforms = Vec::new();
    for pb in &b.platforms {
        let pa = a.platforms.iter().find(|pa| {
            match (
                crate::platform::Platform::parse(&pa.platform),
                crate::platform::Platform::parse(&pb.platform),
            ) {
                (Ok(x), Ok(y)) => x.matches(&y) || y.matches(&x),
                _ => pa.platform == pb.platform,
            }
        });
        let have: std::collections::HashSet<&str> = pa
            .map(|pa| pa.layers.iter().map(|l| l.digest.as_str()).collect())
            .unwrap_or_default();
        let want: std::collections::HashSet<&str> =
            pb.layers.iter().map(|l| l.digest.as_str()).collect();
        let mut seen = std::collections::HashSet::new();
        let layers_to_pull: Vec<LayerInfo> = pb
            .layers
            .iter()
            .filter(|l| !have.contains(l.digest.as_str()) && seen.insert(l.digest.clone()))
            .cloned()
            .collect();
        let layers_dropped: Vec<LayerInfo> = pa
            .map(|pa| {
                pa.layers
                    .iter()
                    .filter(|l| !want.contains(l.digest.as_str()))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        let same_config = pa.is_some_and(|pa| pa.config_digest == pb.config_digest);
        let same_manifest = pa.is_some_and(|pa| pa.id() == pb.id());
        let mut bytes: u64 = layers_to_pull.iter().map(|l| l.size).sum();
        if !same_config {
            bytes += pb.config_size;
        }
        if !same_manifest {
            bytes += pb.manifest_size;
        }
        platforms.push(PlatformDiff {
            platform: pb.platform.clone(),
            identical: same_manifest && same_config,
            layers_shared: pb.layers.len() - layers_to_pull.len(),
            layers_to_pull,
            layers_dropped,
            bytes_to_pull: bytes,
            bytes_total: pb.layers.iter().map(|l| l.size).sum::<u64>()
                + pb.config_size
                + pb.manifest_size,
        });
    }
    Diff {
        a: a.image.clone(),
        b: b.image.clone(),
        bytes_to_pull: platforms.iter().map(|p| p.bytes_to_pull).sum(),
        platforms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn h(by: &str, mlimg: bool) -> Value {
        if mlimg {
            json!({"created_by": by, "comment": "mlimg"})
        } else {
            json!({"created_by": by})
        }
    }

    #[test]
    fn roles_come_from_the_trailing_mlimg_run() {
        let cfg = json!({"history": [
            h("/bin/sh -c #(nop) ADD file", false),
            {"created_by": "ENV X=1", "empty_layer": true},
            h("mlimg app", true), // the base was built by mlimg
            h("mlimg deps vendor", true),
            h("mlimg weights sst2 hf://org/m@abc", true),
            h("mlimg weights lora", true),
            h("mlimg app", true),
        ]});
        assert_eq!(
            roles(&cfg, 6),
            [
                "base",
                "base",
                "deps vendor",
                "weights sst2",
                "weights lora",
                "app"
            ]
        );
        assert_eq!(roles(&cfg, 5), vec!["base"; 5], "history does not match");
        assert_eq!(roles(&json!({}), 2), ["base", "base"]);
    }

    #[test]
    fn statement_summary() {
        let st = json!({"predicate": {
            "buildDefinition": {"resolvedDependencies": [
                {"name": "base python:3.11", "digest": {"sha256": "ab"}},
                {"name": "a.whl", "annotations": {"deps": "fw"}},
                {"name": "b.whl", "annotations": {"deps": "fw"}},
                {"name": "weights m: a", "uri": "hf://org/m@c0ffee/a"},
                {"name": "weights m: b", "uri": "hf://org/m@c0ffee/sub/b"},
            ]},
            "runDetails": {"builder": {"id": "https://x", "version": {"mlimg": "0.1.0"}}},
        }});
        let mut p = Provenance::default();
        summarize_statement(&st, &mut p);
        assert_eq!(p.base.as_deref(), Some("python:3.11"));
        assert_eq!(p.base_digest.as_deref(), Some("sha256:ab"));
        assert_eq!(p.wheels, 2);
        assert_eq!(
            p.models,
            [ModelSource {
                repo: "org/m".into(),
                commit: "c0ffee".into(),
                files: 2
            }]
        );
        assert_eq!(p.builder.as_deref(), Some("https://x 0.1.0"));
    }

    #[test]
    fn image_refs() {
        assert_eq!(
            ImageRef::parse("oci:out/img:v1").unwrap(),
            ImageRef::Layout {
                dir: "out/img".into(),
                tag: Some("v1".into())
            }
        );
        assert_eq!(
            ImageRef::parse("docker-archive:a.tar").unwrap(),
            ImageRef::DockerArchive("a.tar".into())
        );
        assert!(matches!(
            ImageRef::parse("registry:127.0.0.1:5000/a/b:1").unwrap(),
            ImageRef::Registry(_)
        ));
        assert!(ImageRef::parse("oci:").is_err());
    }
}
