//! `mlimg snippet compose|kubernetes|docker-run`: a ready service definition for a built image,
//! from the spec (and the image read back, for its digest and config) or from an image alone.
//! Pure: a [`Service`] in, text out.

use serde_json::{Value, json};

use crate::inspect::{ConfigSummary, HealthcheckSummary, Inspection};
use crate::spec::{ModelFormat, Spec};

/// What a deployment needs to know about the image.
#[derive(Debug, Clone, PartialEq)]
pub struct Service {
    /// The service / deployment name.
    pub name: String,
    /// The image reference to run.
    pub image: String,
    /// `(port, protocol)`.
    pub ports: Vec<(u16, String)>,
    pub healthcheck: Option<HealthcheckSummary>,
    /// `None`: no GPU. `Some(None)`: all GPUs (Compose) / one (Kubernetes).
    pub gpu: Option<Option<u32>>,
    /// A weights-only image (`[model] formats = ["image"]`) and where its folders go.
    pub weights_image: Option<String>,
    pub weights_dests: Vec<String>,
    /// Where it was made from, for the header comment.
    pub from: String,
}

fn ports(list: &[String]) -> Vec<(u16, String)> {
    list.iter()
        .filter_map(|p| {
            let (n, proto) = p.split_once('/').unwrap_or((p, "tcp"));
            Some((n.parse().ok()?, proto.to_string()))
        })
        .collect()
}

/// An image given as a file or folder rather than a registry reference.
fn is_local(given: &str) -> bool {
    given.starts_with("oci:")
        || given.starts_with("oci-archive:")
        || given.starts_with("docker-archive:")
}

fn service_name(image: &str) -> String {
    let repo = image.split('@').next().unwrap_or(image);
    let last = repo.rsplit('/').next().unwrap_or(repo);
    let last = last.split(':').next().unwrap_or(last);
    crate::init::slug(last)
}

/// The weights-only image `[model]` publishes, if it publishes one: `NAME:TAG`, with `-image`
/// appended to the tag when `image` is not its first format.
pub fn weights_image(spec: &Spec) -> Option<String> {
    let m = spec.model.as_ref()?;
    let i = m.formats.iter().position(|f| *f == ModelFormat::Image)?;
    let tag = m
        .tags
        .first()
        .or(spec.image.tags.first())
        .map_or("latest", String::as_str);
    Some(if i == 0 {
        format!("{}:{tag}", m.name)
    } else {
        format!("{}:{tag}-image", m.name)
    })
}

impl Service {
    /// From the spec; `image` (read back from the build's output or a registry) pins the
    /// digest and supplies the config.
    pub fn from_spec(spec: &Spec, image: Option<(&Inspection, &str)>) -> Service {
        let name_ref = spec
            .image
            .name
            .as_ref()
            .map(|n| format!("{n}:{}", spec.image.tags.first().map_or("latest", |t| t)));
        let (image_ref, config) = match image {
            Some((ins, given)) => {
                let p = &ins.platforms[0];
                let digest = p.manifest_digest.clone();
                let r = match (is_local(given), &name_ref, &digest) {
                    (true, Some(n), Some(d)) => format!("{n}@{d}"),
                    (true, Some(n), None) => n.clone(),
                    (false, _, Some(d)) if !given.contains('@') => format!("{given}@{d}"),
                    _ => given.to_string(),
                };
                (r, Some(p.config.clone()))
            }
            None => (name_ref.clone().unwrap_or_else(|| "IMAGE".into()), None),
        };
        let hc = config
            .as_ref()
            .and_then(|c| c.healthcheck.clone())
            .or_else(|| {
                spec.config
                    .healthcheck
                    .as_ref()
                    .map(|h| HealthcheckSummary {
                        test: h.test.clone(),
                        interval_s: h.interval.map(|d| d.as_secs_f64()),
                        timeout_s: h.timeout.map(|d| d.as_secs_f64()),
                        start_period_s: h.start_period.map(|d| d.as_secs_f64()),
                        retries: h.retries.map(u64::from),
                    })
            });
        let port_list = config
            .as_ref()
            .map(|c| c.ports.clone())
            .unwrap_or_else(|| spec.config.ports.clone());
        Service {
            name: service_name(&image_ref),
            ports: ports(&port_list),
            healthcheck: hc,
            gpu: spec.config.gpu.as_ref().map(|g| g.count),
            weights_image: weights_image(spec),
            weights_dests: spec.weights.iter().map(|w| w.dest.clone()).collect(),
            from: format!("{}", spec.path.display()),
            image: image_ref,
        }
    }

    /// From an image alone (its config; GPU when it sets `NVIDIA_VISIBLE_DEVICES`).
    pub fn from_image(ins: &Inspection, given: &str) -> Service {
        let p = &ins.platforms[0];
        let c: &ConfigSummary = &p.config;
        let local = is_local(given);
        let image = match &p.manifest_digest {
            Some(d) if !local && !given.contains('@') => format!("{given}@{d}"),
            _ => given.to_string(),
        };
        let gpu = c
            .env
            .iter()
            .any(|e| e.starts_with("NVIDIA_VISIBLE_DEVICES=") && e != "NVIDIA_VISIBLE_DEVICES=void")
            .then_some(None);
        Service {
            name: service_name(given),
            image,
            ports: ports(&c.ports),
            healthcheck: c.healthcheck.clone(),
            gpu,
            weights_image: None,
            weights_dests: Vec::new(),
            from: given.to_string(),
        }
    }
}

fn dur(s: f64) -> String {
    if s.fract() == 0.0 {
        format!("{}s", s as u64)
    } else {
        format!("{}ms", (s * 1000.0).round() as u64)
    }
}

/// The host folder `mlimg pull-model` fills for a weights dest: `./models/sst2` for
/// `/models/sst2`.
fn host_dir(dest: &str) -> String {
    format!("./{}", dest.trim_start_matches('/'))
}

fn header(s: &Service, kind: &str, notes: &[String]) -> String {
    let mut h = format!(
        "# {kind} for {} — generated by `mlimg snippet` from {}\n",
        s.image, s.from
    );
    for n in notes {
        for l in n.lines() {
            h.push_str("# ");
            h.push_str(l);
            h.push('\n');
        }
    }
    h
}

fn yaml(v: &Value) -> String {
    serde_yaml_ng::to_string(v).unwrap_or_default()
}

/// A Compose file: ports, healthcheck, GPU reservations, and with `weights_volume` the
/// weights folders bind-mounted read-only from the host (filled by `mlimg pull-model`).
pub fn compose(s: &Service, weights_volume: bool) -> String {
    let mut svc = json!({"image": s.image});
    if !s.ports.is_empty() {
        svc["ports"] = json!(
            s.ports
                .iter()
                .map(|(p, proto)| format!("{p}:{p}/{proto}"))
                .collect::<Vec<_>>()
        );
    }
    if let Some(h) = &s.healthcheck {
        let mut hc = json!({"test": h.test});
        if let Some(v) = h.interval_s {
            hc["interval"] = json!(dur(v));
        }
        if let Some(v) = h.timeout_s {
            hc["timeout"] = json!(dur(v));
        }
        if let Some(v) = h.start_period_s {
            hc["start_period"] = json!(dur(v));
        }
        if let Some(v) = h.retries {
            hc["retries"] = json!(v);
        }
        svc["healthcheck"] = hc;
    }
    if let Some(count) = s.gpu {
        let count = match count {
            Some(n) => json!(n),
            None => json!("all"),
        };
        svc["deploy"] = json!({"resources": {"reservations": {"devices": [
            {"driver": "nvidia", "count": count, "capabilities": ["gpu"]}
        ]}}});
    }
    let mut notes = Vec::new();
    if weights_volume {
        match &s.weights_image {
            Some(w) => {
                svc["volumes"] = json!(
                    s.weights_dests
                        .iter()
                        .map(|d| json!({"type": "bind", "source": host_dir(d), "target": d, "read_only": true}))
                        .collect::<Vec<_>>()
                );
                notes.push(format!(
                    "The weights come from the weights-only image {w}, pulled onto the host first:\n  mlimg pull-model {w} .\n(they land under ./models/…, as in the image; mounted read-only over the image's copy)"
                ));
            }
            None => notes.push(
                "--weights-volume: the spec publishes no weights-only image ([model] formats = [\"image\"]); the weights stay in the image".into(),
            ),
        }
    }
    if s.gpu.is_some() {
        notes.push("GPUs: needs the NVIDIA Container Toolkit on the host".into());
    }
    let doc = json!({"services": {s.name.clone(): svc}});
    header(s, "Compose file", &notes) + &yaml(&doc)
}

/// A probe handler from a healthcheck: an HTTP GET when the check fetches a localhost URL,
/// else the command.
fn probe_handler(test: &[String]) -> Option<Value> {
    let argv: Vec<String> = match test.first().map(String::as_str) {
        Some("CMD") => test[1..].to_vec(),
        Some("CMD-SHELL") => vec!["/bin/sh".into(), "-c".into(), test.get(1)?.clone()],
        _ => return None,
    };
    let joined = argv.join(" ");
    if let Some(i) = joined
        .find("http://localhost:")
        .or_else(|| joined.find("http://127.0.0.1:"))
    {
        let rest = &joined[i..];
        let after = rest.split_once("://")?.1;
        let (hostport, path) = after.split_at(after.find('/').unwrap_or(after.len()));
        let port: u16 = hostport.split(':').nth(1)?.parse().ok()?;
        let path: String = path
            .chars()
            .take_while(|c| !c.is_whitespace() && !"'\")".contains(*c))
            .collect();
        return Some(
            json!({"httpGet": {"path": if path.is_empty() { "/".into() } else { path }, "port": port}}),
        );
    }
    Some(json!({"exec": {"command": argv}}))
}

/// A Kubernetes Deployment: ports, probes from the healthcheck, `nvidia.com/gpu` limits, and
/// with `weights_volume` the weights-only image as an image volume.
pub fn kubernetes(s: &Service, weights_volume: bool) -> String {
    let mut c = json!({"name": s.name, "image": s.image});
    if !s.ports.is_empty() {
        c["ports"] = json!(
            s.ports
                .iter()
                .map(|(p, proto)| json!({"containerPort": p, "protocol": proto.to_uppercase()}))
                .collect::<Vec<_>>()
        );
    }
    let mut notes = Vec::new();
    if let Some(h) = &s.healthcheck
        && let Some(handler) = probe_handler(&h.test)
    {
        let mut probe = handler;
        if let Some(v) = h.interval_s {
            probe["periodSeconds"] = json!((v.ceil() as u64).max(1));
        }
        if let Some(v) = h.timeout_s {
            probe["timeoutSeconds"] = json!((v.ceil() as u64).max(1));
        }
        if let Some(v) = h.retries {
            probe["failureThreshold"] = json!(v.max(1));
        }
        c["readinessProbe"] = probe.clone();
        if let Some(v) = h.start_period_s {
            probe["initialDelaySeconds"] = json!(v.ceil() as u64);
        }
        c["livenessProbe"] = probe;
    }
    if let Some(count) = s.gpu {
        c["resources"] = json!({"limits": {"nvidia.com/gpu": count.unwrap_or(1)}});
        notes.push("GPUs: needs the NVIDIA device plugin (or GPU operator) on the nodes".into());
    }
    let mut pod = json!({"containers": [c]});
    if weights_volume {
        match &s.weights_image {
            Some(w) => {
                pod["volumes"] = json!([{"name": "weights", "image": {"reference": w, "pullPolicy": "IfNotPresent"}}]);
                pod["containers"][0]["volumeMounts"] = json!(
                    s.weights_dests
                        .iter()
                        .map(|d| json!({"name": "weights", "mountPath": d, "subPath": d.trim_start_matches('/'), "readOnly": true}))
                        .collect::<Vec<_>>()
                );
                notes.push(format!(
                    "The weights come from the weights-only image {w} as an image volume\n(Kubernetes 1.33+ with the ImageVolume feature; subPath on image volumes needs 1.33+)"
                ));
            }
            None => notes.push(
                "--weights-volume: the spec publishes no weights-only image ([model] formats = [\"image\"]); the weights stay in the image".into(),
            ),
        }
    }
    let labels = json!({"app.kubernetes.io/name": s.name});
    let doc = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": s.name, "labels": labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": pod},
        },
    });
    header(s, "Kubernetes Deployment", &notes) + &yaml(&doc)
}

/// Quotes a word for a POSIX shell when it needs it.
fn sh(w: &str) -> String {
    if !w.is_empty()
        && w.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=@,+%".contains(c))
    {
        w.to_string()
    } else {
        format!("'{}'", w.replace('\'', "'\\''"))
    }
}

/// A `docker run` command line (the healthcheck is in the image config already).
pub fn docker_run(s: &Service, weights_volume: bool) -> String {
    let mut argv: Vec<String> = ["docker", "run", "-d", "--name", &s.name]
        .map(String::from)
        .to_vec();
    for (p, proto) in &s.ports {
        argv.push("-p".into());
        argv.push(format!("{p}:{p}/{proto}"));
    }
    if let Some(count) = s.gpu {
        argv.push("--gpus".into());
        argv.push(count.map_or("all".into(), |n| n.to_string()));
    }
    let mut notes = Vec::new();
    // bind mounts need absolute paths: "$PWD/…", double-quoted so the shell expands it
    let mut mounts = Vec::new();
    if weights_volume && let Some(w) = &s.weights_image {
        for d in &s.weights_dests {
            mounts.push(format!(
                "-v \"$PWD/{}:{d}:ro\"",
                d.trim_start_matches('/')
                    .replace(['"', '\\', '$', '`'], "_")
            ));
        }
        notes.push(format!("first: mlimg pull-model {w} ."));
    }
    let mut out = header(s, "docker run", &notes);
    let mut words: Vec<String> = argv.iter().map(|w| sh(w)).collect();
    words.extend(mounts);
    words.push(sh(&s.image));
    out.push_str(&words.join(" "));
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes() {
        let t = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            probe_handler(&t(&[
                "CMD-SHELL",
                "curl -f http://localhost:8000/health || exit 1"
            ])),
            Some(json!({"httpGet": {"path": "/health", "port": 8000}}))
        );
        assert_eq!(
            probe_handler(&t(&["CMD", "test", "-f", "/x"])),
            Some(json!({"exec": {"command": ["test", "-f", "/x"]}}))
        );
        assert_eq!(probe_handler(&t(&["NONE"])), None);
        assert_eq!(sh("a b"), "'a b'");
        assert_eq!(service_name("reg:5000/acme/api:1@sha256:x"), "api");
        assert_eq!(dur(0.5), "500ms");
    }
}
