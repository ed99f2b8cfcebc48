//! The CycloneDX 1.6 JSON SBOM of one platform image: the same facts as the SPDX document in
//! CycloneDX's terms. The image is `metadata.component` (a `container`); the base, each
//! installed Python distribution (`library`), each prepared deps tree, each weights entry (a
//! `machine-learning-model` with its files as `file` sub-components) and the app layer
//! (`application`) are components. What CycloneDX has no field for (layer digests, sizes,
//! destinations) is in `properties` named `mlimg:…`.

use serde_json::{Value, json};

use super::sbom::{file_count, spdx_url};
use super::{Inputs, Target, VERSION, oci_purl};
use crate::plan::{Content, LayerRole};
use crate::spec::{BaseSpec, WeightsSource};

fn sha256(hex: &str) -> Value {
    json!([{"alg": "SHA-256", "content": hex}])
}

fn props(items: &[(&str, String)]) -> Value {
    Value::Array(
        items
            .iter()
            .map(|(k, v)| json!({"name": format!("mlimg:{k}"), "value": v}))
            .collect(),
    )
}

/// `urn:uuid:` of a version-5-shaped UUID from the manifest digest: unique per image, the same
/// for the same image.
fn serial(manifest_hex: &str) -> String {
    let h = crate::digest::Digest::of(format!("mlimg cyclonedx {manifest_hex}").as_bytes());
    let mut b = [0u8; 16];
    let _ = hex::decode_to_slice(&h.hex()[..32], &mut b);
    b[6] = (b[6] & 0x0f) | 0x50;
    b[8] = (b[8] & 0x3f) | 0x80;
    let x = hex::encode(b);
    format!(
        "urn:uuid:{}-{}-{}-{}-{}",
        &x[..8],
        &x[8..12],
        &x[12..16],
        &x[16..20],
        &x[20..]
    )
}

/// The CycloneDX SBOM of `t`'s image.
pub fn cyclonedx(inp: &Inputs, t: &Target) -> Value {
    let spec = inp.spec;
    let image = t.image;
    let manifest = &image.manifest.descriptor.digest;
    let name = spec
        .image
        .name
        .clone()
        .unwrap_or_else(|| "image".to_string());
    let mut components = Vec::new();

    let mut me = json!({
        "type": "container",
        "bom-ref": "image",
        "name": name,
        "version": inp.tags.first().map_or("latest", String::as_str),
        "hashes": sha256(manifest.hex()),
        "properties": props(&[
            ("platform", image.platform.to_string()),
            ("manifest", manifest.to_string()),
            ("config", image.config.descriptor.digest.to_string()),
        ]),
    });
    if let Some(u) = oci_purl(&name, manifest.as_str()) {
        me["purl"] = json!(format!(
            "{u}&arch={}&os={}",
            image.platform.architecture, image.platform.os
        ));
    }

    if spec.image.base != BaseSpec::Scratch {
        let base = &t.resolved.base;
        let mut c = json!({
            "type": "container",
            "bom-ref": "base",
            "name": base.name,
            "description": "the base image",
        });
        if let Some(d) = &base.manifest_digest {
            c["version"] = json!(d);
            if let Some(hex) = d.strip_prefix("sha256:") {
                c["hashes"] = sha256(hex);
            }
            if let BaseSpec::Registry(r) = &spec.image.base
                && let Some(u) = oci_purl(r, d)
            {
                c["purl"] = json!(u);
            }
        }
        let mut p = vec![("layers", base.layers.len().to_string())];
        if let Some(top) = base
            .top_digest
            .as_ref()
            .filter(|t| Some(*t) != base.manifest_digest.as_ref())
        {
            p.push(("index", top.clone()));
        }
        c["properties"] = props(&p);
        components.push(c);
    }

    if let Some(sys) = &t.resolved.system {
        for d in &sys.packages {
            let mut c = json!({
                "type": "library",
                "bom-ref": format!("deb:{}:{}@{}", d.name, d.architecture, d.version),
                "name": d.name,
                "version": d.version,
                "purl": super::sbom::deb_purl(d, sys.base.os_id.as_deref()),
                "hashes": sha256(&d.sha256),
                "properties": props(&[("system", d.architecture.clone())]),
            });
            if spdx_url(&d.url) {
                c["externalReferences"] = json!([{"type": "distribution", "url": d.url}]);
            }
            components.push(c);
        }
    }

    for (set, wheels) in &t.resolved.deps {
        for w in wheels {
            let purl = format!("pkg:pypi/{}@{}", w.name, w.version);
            let mut c = json!({
                "type": "library",
                "bom-ref": format!("pypi:{set}:{}@{}", w.name, w.version),
                "name": w.name,
                "version": w.version,
                "purl": purl,
                "hashes": sha256(&w.sha256),
                "properties": props(&[("deps", set.clone()), ("wheel", w.filename.clone())]),
            });
            if let Some(l) = inp.licenses.get(&w.sha256) {
                c["licenses"] = json!([{"expression": l}]);
            }
            if (w.url_or_path.starts_with("https://") || w.url_or_path.starts_with("http://"))
                && spdx_url(&w.url_or_path)
            {
                c["externalReferences"] = json!([{"type": "distribution", "url": w.url_or_path}]);
            }
            components.push(c);
        }
    }

    for (layer, lp) in t.new_layers() {
        let LayerRole::Deps(set) = &lp.role else {
            continue;
        };
        if lp.wheels.is_some() {
            continue;
        }
        components.push(json!({
            "type": "library",
            "bom-ref": format!("deps:{set}"),
            "name": set,
            "description": "a prepared tree copied as it is (not itemized)",
            "hashes": sha256(layer.descriptor.digest.hex()),
            "properties": props(&[
                ("files", file_count(lp).to_string()),
                ("layer", layer.descriptor.digest.to_string()),
                ("size", layer.descriptor.size.to_string()),
            ]),
        }));
    }

    for w in &spec.weights {
        let layers: Vec<_> = t
            .new_layers()
            .filter(|(_, lp)| matches!(&lp.role, LayerRole::Weights(n) if n == &w.name))
            .collect();
        let mut c = json!({
            "type": "machine-learning-model",
            "bom-ref": format!("weights:{}", w.name),
            "name": w.name,
        });
        let mut p = vec![("dest", w.dest.clone())];
        match &w.source {
            WeightsSource::Hub { repo, .. } => {
                p.push(("source", format!("hf://{repo}")));
                if let Some(lock) = inp.resolved.weights.iter().find(|l| l.name == w.name) {
                    c["version"] = json!(lock.commit);
                    c["purl"] = json!(format!("pkg:huggingface/{repo}@{}", lock.commit));
                    p.push(("revision", lock.revision.clone()));
                }
            }
            WeightsSource::Local(path) => {
                let shown = path
                    .strip_prefix(&spec.dir)
                    .unwrap_or(path)
                    .to_string_lossy()
                    .replace('\\', "/");
                p.push(("source", format!("local {shown}")));
            }
        }
        for (l, _) in &layers {
            p.push(("layer", l.descriptor.digest.to_string()));
        }
        c["properties"] = props(&p);
        let mut files = Vec::new();
        for (layer, lp) in &layers {
            for e in &lp.entries {
                let (size, sum) = match &e.content {
                    Content::Fetched { sha256, size } => (*size, Some(sha256.as_str())),
                    Content::Dir | Content::Symlink(_) => continue,
                    _ => (e.size(), None),
                };
                let path = format!("/{}", e.path);
                let mut f = json!({
                    "type": "file",
                    "bom-ref": format!("weights:{}:{path}", w.name),
                    "name": path,
                    "properties": props(&[
                        ("size", size.to_string()),
                        ("layer", layer.descriptor.digest.to_string()),
                    ]),
                });
                if let Some(s) = sum.filter(|s| !s.is_empty()) {
                    f["hashes"] = sha256(s);
                }
                files.push(f);
            }
        }
        if !files.is_empty() {
            c["components"] = Value::Array(files);
        }
        components.push(c);
    }

    if let Some((layer, lp)) = t.new_layers().find(|(_, lp)| lp.role == LayerRole::App) {
        components.push(json!({
            "type": "application",
            "bom-ref": "app",
            "name": "app",
            "description": "the app layer",
            "hashes": sha256(layer.descriptor.digest.hex()),
            "properties": props(&[
                ("files", file_count(lp).to_string()),
                ("layer", layer.descriptor.digest.to_string()),
                ("size", layer.descriptor.size.to_string()),
            ]),
        }));
    }

    let refs: Vec<Value> = components.iter().map(|c| c["bom-ref"].clone()).collect();
    json!({
        "$schema": "http://cyclonedx.org/schema/bom-1.6.schema.json",
        "bomFormat": "CycloneDX",
        "specVersion": "1.6",
        "serialNumber": serial(manifest.hex()),
        "version": 1,
        "metadata": {
            "timestamp": inp.created,
            "tools": {"components": [{"type": "application", "name": "mlimg", "version": VERSION}]},
            "component": me,
        },
        "components": components,
        "dependencies": [{"ref": "image", "dependsOn": refs}],
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn serial_numbers_are_rfc4122_uuids() {
        let s = super::serial("ab");
        assert_eq!(s, super::serial("ab"));
        assert_ne!(s, super::serial("cd"));
        let u = s.strip_prefix("urn:uuid:").unwrap();
        let parts: Vec<&str> = u.split('-').collect();
        assert_eq!(
            parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
            [8, 4, 4, 4, 12]
        );
        assert!(parts[2].starts_with('5'));
        assert!(matches!(&parts[3][..1], "8" | "9" | "a" | "b"));
    }
}
