//! The build attestation: an in-toto Statement v1 with a SLSA Provenance v1 predicate. No start
//! or finish time unless `--provenance-times` asks for them: by default the same inputs give
//! the same bytes.

use serde_json::{Value, json};

use super::{BUILD_TYPE, BUILDER_ID, Inputs, Target, VERSION, oci_purl};
use crate::spec::BaseSpec;

/// The statement about `t`'s image (its manifest digest is the subject).
pub fn statement(inp: &Inputs, t: &Target) -> Value {
    let spec = inp.spec;
    let image = t.image;
    let name = spec
        .image
        .name
        .clone()
        .unwrap_or_else(|| "image".to_string());
    let mut deps = Vec::new();
    if let Some(url) = &inp.source {
        let commit = inp
            .revision
            .as_ref()
            .filter(|r| r.len() == 40 && r.chars().all(|c| c.is_ascii_hexdigit()));
        let mut d = json!({"name": "source", "uri": format!("git+{url}")});
        match (commit, &inp.revision) {
            (Some(c), _) => d["digest"] = json!({"gitCommit": c}),
            (None, Some(r)) => d["annotations"] = json!({"revision": r}),
            (None, None) => {}
        }
        deps.push(d);
    }
    if spec.image.base != BaseSpec::Scratch {
        let base = &t.resolved.base;
        let mut d = json!({"name": format!("base {}", base.name)});
        if let Some(md) = &base.manifest_digest {
            if let BaseSpec::Registry(r) = &spec.image.base
                && let Some(u) = oci_purl(r, md)
            {
                d["uri"] = json!(u);
            }
            if let Some(hex) = md.strip_prefix("sha256:") {
                d["digest"] = json!({"sha256": hex});
            }
        }
        deps.push(d);
    }
    for (set, wheels) in &t.resolved.deps {
        for w in wheels {
            let uri =
                if w.url_or_path.starts_with("https://") || w.url_or_path.starts_with("http://") {
                    w.url_or_path.clone()
                } else {
                    format!("pkg:pypi/{}@{}", w.name, w.version)
                };
            deps.push(json!({
                "name": w.filename,
                "uri": uri,
                "digest": {"sha256": w.sha256},
                "annotations": {"deps": set, "purl": format!("pkg:pypi/{}@{}", w.name, w.version)},
            }));
        }
    }
    for lock in &inp.resolved.weights {
        for f in &lock.files {
            let mut d = json!({
                "name": format!("weights {}: {}", lock.name, f.path),
                "uri": format!("hf://{}@{}/{}", lock.repo, lock.commit, f.path),
                "annotations": {"size": f.size},
            });
            if !f.sha256.is_empty() {
                d["digest"] = json!({"sha256": f.sha256});
            }
            deps.push(d);
        }
    }
    let platforms: Vec<String> = inp
        .plan
        .platforms
        .iter()
        .map(|p| p.platform.to_string())
        .collect();
    let mut run = json!({
        "builder": {
            "id": BUILDER_ID,
            "version": {"mlimg": VERSION},
        },
    });
    if let Some((started, finished)) = &inp.times {
        run["metadata"] = json!({"startedOn": started, "finishedOn": finished});
    }
    json!({
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{
            "name": name,
            "digest": {"sha256": image.manifest.descriptor.digest.hex()},
        }],
        "predicateType": "https://slsa.dev/provenance/v1",
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": {
                    "spec": {
                        "path": inp.spec_path,
                        "digest": {"sha256": inp.spec_sha256},
                    },
                    "platforms": platforms,
                    "tags": inp.tags,
                },
                "internalParameters": {
                    "platform": image.platform.to_string(),
                    "created": inp.created,
                },
                "resolvedDependencies": deps,
            },
            "runDetails": run,
        },
    })
}
