//! The SPDX 2.3 JSON SBOM of one platform image.
//!
//! Every component is an SPDX package (`filesAnalyzed: false`), so no SHA1 is needed: the
//! image itself, its base, each installed Python distribution, each weights entry and each
//! file in it, and the app layer. Sizes and layer digests go into each package's `comment`
//! (SPDX has no size field).

use serde_json::{Value, json};

use super::{Inputs, Target, VERSION, oci_purl};
use crate::plan::{Content, LayerRole};
use crate::spec::{BaseSpec, WeightsSource};

const NOASSERTION: &str = "NOASSERTION";

/// An SPDX id from free text: letters, digits, `.` and `-` only.
fn spdx_id(parts: &[&str]) -> String {
    let mut s = String::from("SPDXRef");
    for p in parts {
        s.push('-');
        s.extend(p.chars().map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        }));
    }
    s
}

/// Whether SPDX accepts `url` as a `downloadLocation`: its grammar wants a host name with a
/// top-level domain (or `localhost`); an index on an IP address stays in `sourceInfo` only.
pub(super) fn spdx_url(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let host = rest.split(['/', ':', '?', '#']).next().unwrap_or("");
    if host.contains('@') {
        return false;
    }
    if host == "localhost" {
        return true;
    }
    let labels: Vec<&str> = host.split('.').collect();
    labels.len() >= 2
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        })
        && labels.last().is_some_and(|t| {
            (2..=5).contains(&t.len()) && t.chars().all(|c| c.is_ascii_lowercase())
        })
}

fn package(id: &str, name: &str, purpose: &str) -> Value {
    json!({
        "SPDXID": id,
        "name": name,
        "downloadLocation": NOASSERTION,
        "filesAnalyzed": false,
        "licenseConcluded": NOASSERTION,
        "licenseDeclared": NOASSERTION,
        "copyrightText": NOASSERTION,
        "primaryPackagePurpose": purpose,
    })
}

fn sha256(hex: &str) -> Value {
    json!([{"algorithm": "SHA256", "checksumValue": hex}])
}

/// `pkg:deb/debian/curl@7.88.1-10%2Bdeb12u12?arch=amd64` (the purl spec's deb type).
pub(crate) fn deb_purl(d: &crate::lock::DebLock, os_id: Option<&str>) -> String {
    let enc = |s: &str| {
        s.replace('%', "%25")
            .replace('+', "%2B")
            .replace(':', "%3A")
    };
    format!(
        "pkg:deb/{}/{}@{}?arch={}",
        os_id.unwrap_or("debian"),
        d.name,
        enc(&d.version),
        d.architecture
    )
}

fn purl(p: &str) -> Value {
    json!([{"referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl", "referenceLocator": p}])
}

fn rel(from: &str, kind: &str, to: &str) -> Value {
    json!({"spdxElementId": from, "relationshipType": kind, "relatedSpdxElement": to})
}

/// The files (not folders) a layer plan holds.
pub(super) fn file_count(lp: &crate::plan::LayerPlan) -> usize {
    lp.entries
        .iter()
        .filter(|e| !matches!(e.content, Content::Dir))
        .count()
}

/// The SBOM of `t`'s image.
pub fn spdx(inp: &Inputs, t: &Target) -> Value {
    let spec = inp.spec;
    let image = t.image;
    let manifest = &image.manifest.descriptor.digest;
    let name = spec
        .image
        .name
        .clone()
        .unwrap_or_else(|| "image".to_string());
    let platform = image.platform.to_string();
    let mut packages = Vec::new();
    let mut rels = vec![rel("SPDXRef-DOCUMENT", "DESCRIBES", "SPDXRef-Image")];

    // the image
    let mut p = package("SPDXRef-Image", &name, "CONTAINER");
    p["versionInfo"] = json!(inp.tags.first().map_or("latest", String::as_str));
    p["checksums"] = sha256(manifest.hex());
    if let Some(u) = oci_purl(&name, manifest.as_str()) {
        p["externalRefs"] = purl(&format!(
            "{u}&arch={}&os={}",
            image.platform.architecture, image.platform.os
        ));
    }
    p["comment"] = json!(format!(
        "platform {platform}; manifest {manifest}; config {}",
        image.config.descriptor.digest
    ));
    packages.push(p);

    // the base
    if spec.image.base != BaseSpec::Scratch {
        let base = &t.resolved.base;
        let mut p = package("SPDXRef-Base", &base.name, "CONTAINER");
        if let Some(d) = &base.manifest_digest {
            p["versionInfo"] = json!(d);
            if let Some(hex) = d.strip_prefix("sha256:") {
                p["checksums"] = sha256(hex);
            }
            if let BaseSpec::Registry(r) = &spec.image.base
                && let Some(u) = oci_purl(r, d)
            {
                p["externalRefs"] = purl(&u);
            }
        }
        let mut comment = format!("base image, {} layers", base.layers.len());
        if let Some(top) = base
            .top_digest
            .as_ref()
            .filter(|t| Some(*t) != base.manifest_digest.as_ref())
        {
            comment.push_str(&format!("; chosen from index {top}"));
        }
        p["comment"] = json!(comment);
        packages.push(p);
        rels.push(rel("SPDXRef-Image", "DESCENDANT_OF", "SPDXRef-Base"));
    }

    // Python distributions, per wheel set
    for (set, wheels) in &t.resolved.deps {
        for w in wheels {
            let id = spdx_id(&["Pypi", set, &w.name, &w.version]);
            let mut p = package(&id, &w.name, "LIBRARY");
            p["versionInfo"] = json!(w.version);
            p["packageFileName"] = json!(w.filename);
            p["checksums"] = sha256(&w.sha256);
            p["externalRefs"] = purl(&format!("pkg:pypi/{}@{}", w.name, w.version));
            if w.url_or_path.starts_with("https://") || w.url_or_path.starts_with("http://") {
                p["sourceInfo"] = json!(format!("downloaded from {}", w.url_or_path));
                if spdx_url(&w.url_or_path) {
                    p["downloadLocation"] = json!(w.url_or_path);
                }
            }
            if let Some(l) = inp.licenses.get(&w.sha256) {
                p["licenseDeclared"] = json!(l);
            }
            p["comment"] = json!(format!("installed from wheel {} (deps {set})", w.filename));
            packages.push(p);
            rels.push(rel("SPDXRef-Image", "CONTAINS", &id));
        }
    }

    // Debian packages of `[system]`
    if let Some(sys) = &t.resolved.system {
        for d in &sys.packages {
            let id = spdx_id(&["Deb", &d.name, &d.architecture]);
            let mut p = package(&id, &d.name, "LIBRARY");
            p["versionInfo"] = json!(d.version);
            p["checksums"] = sha256(&d.sha256);
            p["externalRefs"] = purl(&deb_purl(d, sys.base.os_id.as_deref()));
            if spdx_url(&d.url) {
                p["downloadLocation"] = json!(d.url);
            }
            p["comment"] = json!(format!("Debian package ({}), [system]", d.architecture));
            packages.push(p);
            rels.push(rel("SPDXRef-Image", "CONTAINS", &id));
        }
    }

    // prepared trees (`[[deps]] dir`): copied as they are, so one package per set
    for (layer, lp) in t.new_layers() {
        let LayerRole::Deps(set) = &lp.role else {
            continue;
        };
        if lp.wheels.is_some() {
            continue;
        }
        let id = spdx_id(&["Deps", set]);
        let mut p = package(&id, set, "LIBRARY");
        p["checksums"] = sha256(layer.descriptor.digest.hex());
        p["comment"] = json!(format!(
            "deps {set}: a prepared tree copied as it is (not itemized): {} files, layer {} ({} bytes)",
            file_count(lp),
            layer.descriptor.digest,
            layer.descriptor.size
        ));
        packages.push(p);
        rels.push(rel("SPDXRef-Image", "CONTAINS", &id));
    }

    // weights: each entry, and each file in it
    for w in &spec.weights {
        let id = spdx_id(&["Weights", &w.name]);
        let mut p = package(&id, &w.name, "OTHER");
        let layers: Vec<_> = t
            .new_layers()
            .filter(|(_, lp)| matches!(&lp.role, LayerRole::Weights(n) if n == &w.name))
            .collect();
        let digests: Vec<String> = layers
            .iter()
            .map(|(l, _)| l.descriptor.digest.to_string())
            .collect();
        match &w.source {
            WeightsSource::Hub { repo, .. } => {
                if let Some(lock) = inp.resolved.weights.iter().find(|l| l.name == w.name) {
                    p["versionInfo"] = json!(lock.commit);
                    p["sourceInfo"] = json!(format!(
                        "hf://{repo} at revision {} (commit {})",
                        lock.revision, lock.commit
                    ));
                    p["externalRefs"] = purl(&format!("pkg:huggingface/{repo}@{}", lock.commit));
                }
            }
            WeightsSource::Local(path) => {
                let shown = path
                    .strip_prefix(&spec.dir)
                    .unwrap_or(path)
                    .to_string_lossy()
                    .replace('\\', "/");
                p["sourceInfo"] = json!(format!("local {shown}"));
            }
        }
        p["comment"] = json!(format!(
            "weights {} at {}; layers {}",
            w.name,
            w.dest,
            digests.join(" ")
        ));
        packages.push(p);
        rels.push(rel("SPDXRef-Image", "CONTAINS", &id));
        let mut n = 0usize;
        for (layer, lp) in layers {
            for e in &lp.entries {
                let (size, sum) = match &e.content {
                    Content::Fetched { sha256, size } => (*size, Some(sha256.as_str())),
                    Content::Dir | Content::Symlink(_) => continue,
                    _ => (e.size(), None),
                };
                n += 1;
                let fid = format!("{id}-File-{n}");
                let path = format!("/{}", e.path);
                let mut f = package(&fid, &path, "FILE");
                f["packageFileName"] = json!(path);
                let mut comment = format!("size {size} bytes; layer {}", layer.descriptor.digest);
                match sum.filter(|s| !s.is_empty()) {
                    Some(s) => f["checksums"] = sha256(s),
                    None => comment.push_str(
                        "; sha256 not recorded (a local file: its bytes are in the layer, whose digest is recorded)",
                    ),
                }
                f["comment"] = json!(comment);
                packages.push(f);
                rels.push(rel(&id, "CONTAINS", &fid));
            }
        }
    }

    // the app layer
    if let Some((layer, lp)) = t.new_layers().find(|(_, lp)| lp.role == LayerRole::App) {
        let files = file_count(lp);
        let mut p = package("SPDXRef-App", "app", "APPLICATION");
        p["checksums"] = sha256(layer.descriptor.digest.hex());
        p["comment"] = json!(format!(
            "the app layer: {files} files, layer {} ({} bytes)",
            layer.descriptor.digest, layer.descriptor.size
        ));
        packages.push(p);
        rels.push(rel("SPDXRef-Image", "CONTAINS", "SPDXRef-App"));
    }

    json!({
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": format!("{name} {platform}"),
        "documentNamespace": format!("urn:mlimg:spdx:{}", manifest.hex()),
        "creationInfo": {
            "created": inp.created,
            "creators": [format!("Tool: mlimg-{VERSION}")],
        },
        "comment": "Written by mlimg from the build's resolved inputs. Hub files carry the sha256 \
                    the Hub states (LFS oid) or mlimg computed when it fetched them; local weights \
                    files carry path and size only (their bytes are recorded through the layer \
                    digest); wheels carry the sha256 mlimg checked when it downloaded them.",
        "packages": packages,
        "relationships": rels,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn download_locations_spdx_accepts() {
        assert!(super::spdx_url(
            "https://files.pythonhosted.org/packages/ab/cd/six-1.16.0-py2.py3-none-any.whl"
        ));
        assert!(super::spdx_url("http://localhost:8080/simple/x.whl"));
        assert!(!super::spdx_url("http://127.0.0.1:35311/files/x.whl"));
        assert!(!super::spdx_url("https://user@pypi.example.com/x.whl"));
    }
}
