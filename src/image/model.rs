//! The weights as artifacts of their own (`[model]`): a CNCF ModelPack artifact and a
//! weights-only image, both made of the service image's weights layer blobs — the same digests;
//! only the manifests and the small configs are new. Pure: values in, documents out.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::{
    Blob, Descriptor, Document, INDEX_MEDIA_TYPE, ImageError, Layer, MANIFEST_MEDIA_TYPE,
    build_config, build_index, build_manifest, canonical, scratch_config,
};
use crate::spec::{ConfigSpec, ModelMetadata, Platform};

pub const MODEL_ARTIFACT_TYPE: &str = "application/vnd.cncf.model.manifest.v1+json";
pub const MODEL_CONFIG_MEDIA_TYPE: &str = "application/vnd.cncf.model.config.v1+json";
pub const MODEL_WEIGHT: &str = "application/vnd.cncf.model.weight.v1.tar";
pub const MODEL_WEIGHT_CONFIG: &str = "application/vnd.cncf.model.weight.config.v1.tar";
pub const MODEL_DOC: &str = "application/vnd.cncf.model.doc.v1.tar";
pub const ANNOTATION_FILEPATH: &str = "org.cncf.model.filepath";
pub const ANNOTATION_FILE_METADATA: &str = "org.cncf.model.file.metadata+json";

/// What an artifact is, as the `--json` report names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ArtifactKind {
    #[serde(rename = "modelpack")]
    ModelPack,
    WeightsImage,
}

impl ArtifactKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ArtifactKind::ModelPack => "modelpack",
            ArtifactKind::WeightsImage => "weights-image",
        }
    }
}

/// A manifest (or an index over several) beside the service image, with its own name and tags.
#[derive(Debug, Clone)]
pub struct Artifact {
    pub kind: ArtifactKind,
    /// The repository (`[model].name`).
    pub name: String,
    pub tags: Vec<String>,
    /// The layers with this artifact's media types (same digests as the service image's).
    pub layers: Vec<Layer>,
    pub configs: Vec<Document>,
    /// Children first; the last one is what the tags point at.
    pub manifests: Vec<Document>,
    /// The top document's `artifactType`, if any (for index entries).
    pub artifact_type: Option<String>,
}

impl Artifact {
    /// The document the tags point at.
    pub fn top(&self) -> &Document {
        // built with at least one manifest
        &self.manifests[self.manifests.len() - 1]
    }

    /// Layers, then configs, each once.
    pub fn blobs(&self) -> Vec<Blob> {
        let mut seen = std::collections::BTreeSet::new();
        let mut out = Vec::new();
        for l in &self.layers {
            if seen.insert(l.descriptor.digest.clone()) {
                out.push(Blob {
                    descriptor: l.descriptor.clone(),
                    source: l.source.clone(),
                });
            }
        }
        for c in &self.configs {
            if seen.insert(c.descriptor.digest.clone()) {
                out.push(c.blob());
            }
        }
        out
    }

    /// Manifests, then the index: children before parents.
    pub fn documents(&self) -> Vec<&Document> {
        self.manifests.iter().collect()
    }
}

/// A regular file inside a weights layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeightsFile {
    /// Relative to `/`, as in the tar (`models/sst2/config.json`).
    pub path: String,
    pub mode: u32,
    pub size: u64,
}

/// A weights layer of the service image and what it holds.
#[derive(Debug, Clone)]
pub struct WeightsLayer {
    pub layer: Layer,
    /// The entry's `dest`, relative to `/` (`models/sst2`).
    pub dest: String,
    pub files: Vec<WeightsFile>,
}

/// Extra descriptor fields found outside the spec (the Hub source of the weights).
#[derive(Debug, Clone, Default)]
pub struct ModelSource {
    pub source_url: Option<String>,
    pub revision: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum FileKind {
    Doc,
    Config,
    Weight,
}

fn file_kind(path: &str) -> FileKind {
    let name = path.rsplit('/').next().unwrap_or(path).to_ascii_lowercase();
    let ext = name.rsplit_once('.').map(|(_, e)| e).unwrap_or("");
    let stem = name.split('.').next().unwrap_or("");
    if ["readme", "license", "licence", "notice", "copying"].contains(&stem) || ext == "md" {
        FileKind::Doc
    } else if ["json", "txt", "yaml", "yml", "model", "tiktoken"].contains(&ext)
        || ["vocab", "merges"].contains(&stem)
    {
        FileKind::Config
    } else {
        FileKind::Weight
    }
}

/// The ModelPack media type of a layer holding these files: the heaviest kind among them
/// (weight over config over doc), keeping the service layer's compression.
pub fn modelpack_media_type(files: &[WeightsFile], service_media_type: &str) -> String {
    let kind = files
        .iter()
        .map(|f| file_kind(&f.path))
        .max()
        .unwrap_or(FileKind::Weight);
    let base = match kind {
        FileKind::Doc => MODEL_DOC,
        FileKind::Config => MODEL_WEIGHT_CONFIG,
        FileKind::Weight => MODEL_WEIGHT,
    };
    let suffix = if service_media_type.ends_with("+gzip") || service_media_type.ends_with(".gzip") {
        "+gzip"
    } else if service_media_type.ends_with("+zstd") || service_media_type.ends_with(".zstd") {
        "+zstd"
    } else {
        ""
    };
    format!("{base}{suffix}")
}

/// `org.cncf.model.filepath` and `org.cncf.model.file.metadata+json` for a layer: the file for
/// a one-file layer, the entry's folder otherwise.
fn layer_annotations(w: &WeightsLayer, created: &str) -> BTreeMap<String, String> {
    let (path, meta) = match w.files.as_slice() {
        [f] => (
            f.path.clone(),
            json!({
                "name": f.path.rsplit('/').next().unwrap_or(&f.path),
                "mode": f.mode,
                "uid": 0, "gid": 0,
                "size": f.size,
                "mtime": created,
                "typeflag": b'0',
            }),
        ),
        _ => (
            w.dest.clone(),
            json!({
                "name": w.dest.rsplit('/').next().unwrap_or(&w.dest),
                "mode": 0o755,
                "uid": 0, "gid": 0,
                "size": 0,
                "mtime": created,
                "typeflag": b'5',
            }),
        ),
    };
    let mut a = BTreeMap::new();
    a.insert(ANNOTATION_FILEPATH.to_string(), path);
    a.insert(
        ANNOTATION_FILE_METADATA.to_string(),
        String::from_utf8(canonical(&meta)).unwrap_or_default(),
    );
    a
}

fn desc_json(d: &Descriptor, annotations: Option<&BTreeMap<String, String>>) -> Value {
    let mut v = json!({"mediaType": d.media_type, "digest": d.digest, "size": d.size});
    if let Some(a) = annotations.filter(|a| !a.is_empty()) {
        v["annotations"] = json!(a);
    }
    v
}

fn no_layers(what: &'static str) -> ImageError {
    ImageError::Build {
        what,
        message: "the spec has no weights layer".into(),
    }
}

/// The ModelPack config (`application/vnd.cncf.model.config.v1+json`).
pub fn modelpack_config(
    meta: &ModelMetadata,
    default_name: &str,
    source: &ModelSource,
    diff_ids: &[String],
    created: &str,
) -> Value {
    let mut descriptor = serde_json::Map::new();
    descriptor.insert("createdAt".into(), json!(created));
    let name = meta.name.as_deref().unwrap_or(default_name);
    descriptor.insert("name".into(), json!(name));
    let opt = |m: &mut serde_json::Map<String, Value>, k: &str, v: &Option<String>| {
        if let Some(v) = v {
            m.insert(k.into(), json!(v));
        }
    };
    opt(&mut descriptor, "version", &meta.version);
    opt(&mut descriptor, "family", &meta.family);
    opt(&mut descriptor, "sourceURL", &source.source_url);
    opt(&mut descriptor, "revision", &source.revision);
    if !meta.licenses.is_empty() {
        descriptor.insert("licenses".into(), json!(meta.licenses));
    }
    let mut config = serde_json::Map::new();
    opt(&mut config, "architecture", &meta.architecture);
    opt(&mut config, "format", &meta.format);
    opt(&mut config, "paramSize", &meta.param_size);
    opt(&mut config, "precision", &meta.precision);
    json!({
        "descriptor": descriptor,
        "config": config,
        "modelfs": {"type": "layers", "diffIds": diff_ids},
    })
}

/// The ModelPack artifact of the weights layers.
pub fn modelpack(
    name: &str,
    tags: Vec<String>,
    weights: &[WeightsLayer],
    meta: &ModelMetadata,
    source: &ModelSource,
    created: &str,
) -> Result<Artifact, ImageError> {
    if weights.is_empty() {
        return Err(no_layers("ModelPack artifact"));
    }
    let default_name = name.rsplit('/').next().unwrap_or(name);
    let diff_ids: Vec<String> = weights
        .iter()
        .map(|w| w.layer.diff_id.to_string())
        .collect();
    let config = Document::new(
        MODEL_CONFIG_MEDIA_TYPE,
        canonical(&modelpack_config(
            meta,
            default_name,
            source,
            &diff_ids,
            created,
        )),
    );
    let mut layers = Vec::new();
    let mut layer_json = Vec::new();
    for w in weights {
        let mut l = w.layer.clone();
        l.descriptor.media_type = modelpack_media_type(&w.files, &w.layer.descriptor.media_type);
        layer_json.push(desc_json(
            &l.descriptor,
            Some(&layer_annotations(w, created)),
        ));
        layers.push(l);
    }
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "artifactType": MODEL_ARTIFACT_TYPE,
        "config": desc_json(&config.descriptor, None),
        "layers": layer_json,
        "annotations": {"org.opencontainers.image.created": created},
    });
    Ok(Artifact {
        kind: ArtifactKind::ModelPack,
        name: name.to_string(),
        tags,
        layers,
        configs: vec![config],
        manifests: vec![Document::new(MANIFEST_MEDIA_TYPE, canonical(&manifest))],
        artifact_type: Some(MODEL_ARTIFACT_TYPE.to_string()),
    })
}

/// The weights-only image: no base, the weights layers, a config with `os`/`architecture` and
/// `rootfs.diff_ids` per platform; an index over them when there are several.
pub fn weights_image(
    name: &str,
    tags: Vec<String>,
    weights: &[WeightsLayer],
    platforms: &[Platform],
    created: &str,
) -> Result<Artifact, ImageError> {
    if weights.is_empty() {
        return Err(no_layers("weights-only image"));
    }
    let layers: Vec<Layer> = weights.iter().map(|w| w.layer.clone()).collect();
    let descs: Vec<Descriptor> = layers.iter().map(|l| l.descriptor.clone()).collect();
    let mut ann = BTreeMap::new();
    ann.insert(
        "org.opencontainers.image.created".to_string(),
        created.to_string(),
    );
    let mut configs = Vec::new();
    let mut manifests = Vec::new();
    let mut entries = Vec::new();
    for p in platforms {
        let cfg = build_config(
            &scratch_config(p),
            p,
            &ConfigSpec::default(),
            &layers,
            created,
        )?;
        let cfg = Document::new(super::CONFIG_MEDIA_TYPE, canonical(&cfg));
        let m = Document::new(
            MANIFEST_MEDIA_TYPE,
            build_manifest(&cfg.descriptor, &descs, &ann)?,
        );
        entries.push((m.descriptor.clone(), p.clone()));
        configs.push(cfg);
        manifests.push(m);
    }
    if manifests.is_empty() {
        return Err(ImageError::Build {
            what: "weights-only image",
            message: "no platform".into(),
        });
    }
    if manifests.len() > 1 {
        manifests.push(Document::new(
            INDEX_MEDIA_TYPE,
            build_index(&entries, &ann)?,
        ));
    }
    Ok(Artifact {
        kind: ArtifactKind::WeightsImage,
        name: name.to_string(),
        tags,
        layers,
        configs,
        manifests,
        artifact_type: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::Digest;
    use crate::image::BlobSource;

    fn layer(seed: &[u8], mt: &str) -> Layer {
        Layer {
            descriptor: Descriptor {
                media_type: mt.into(),
                digest: Digest::of(seed),
                size: seed.len() as u64,
            },
            diff_id: Digest::of(seed),
            source: BlobSource::Bytes(std::sync::Arc::from(seed)),
            role: "weights w".into(),
            created_by: "mlimg weights w".into(),
            cached: false,
        }
    }

    fn file(p: &str) -> WeightsFile {
        WeightsFile {
            path: p.into(),
            mode: 0o644,
            size: 3,
        }
    }

    #[test]
    fn media_types_follow_the_heaviest_file() {
        let tar = "application/vnd.oci.image.layer.v1.tar";
        let mt = |fs: &[&str]| {
            let files: Vec<_> = fs.iter().map(|p| file(p)).collect();
            modelpack_media_type(&files, tar)
        };
        assert_eq!(mt(&["m/model.safetensors"]), MODEL_WEIGHT);
        assert_eq!(mt(&["m/config.json"]), MODEL_WEIGHT_CONFIG);
        assert_eq!(mt(&["m/tokenizer.model"]), MODEL_WEIGHT_CONFIG);
        assert_eq!(mt(&["m/vocab.txt"]), MODEL_WEIGHT_CONFIG);
        assert_eq!(mt(&["m/README.md"]), MODEL_DOC);
        assert_eq!(mt(&["m/LICENSE"]), MODEL_DOC);
        assert_eq!(mt(&["m/README.md", "m/config.json"]), MODEL_WEIGHT_CONFIG);
        assert_eq!(mt(&["m/config.json", "m/model.onnx"]), MODEL_WEIGHT);
        let gz = "application/vnd.oci.image.layer.v1.tar+gzip";
        assert_eq!(
            modelpack_media_type(&[file("m/x.bin")], gz),
            format!("{MODEL_WEIGHT}+gzip")
        );
    }

    #[test]
    fn modelpack_shares_the_blobs() {
        let tar = "application/vnd.oci.image.layer.v1.tar";
        let ws = vec![
            WeightsLayer {
                layer: layer(b"weights", tar),
                dest: "models/m".into(),
                files: vec![file("models/m/model.safetensors")],
            },
            WeightsLayer {
                layer: layer(b"configs", tar),
                dest: "models/m".into(),
                files: vec![file("models/m/config.json"), file("models/m/README.md")],
            },
        ];
        let meta = ModelMetadata {
            param_size: Some("66M".into()),
            ..Default::default()
        };
        let a = modelpack(
            "reg/acme/m",
            vec!["v1".into()],
            &ws,
            &meta,
            &ModelSource::default(),
            "1970-01-01T00:00:00Z",
        )
        .unwrap();
        let m: Value = serde_json::from_slice(&a.top().bytes).unwrap();
        assert_eq!(m["artifactType"], MODEL_ARTIFACT_TYPE);
        assert_eq!(m["config"]["mediaType"], MODEL_CONFIG_MEDIA_TYPE);
        assert_eq!(m["layers"][0]["digest"], json!(Digest::of(b"weights")));
        assert_eq!(m["layers"][0]["mediaType"], MODEL_WEIGHT);
        assert_eq!(m["layers"][1]["mediaType"], MODEL_WEIGHT_CONFIG);
        assert_eq!(
            m["layers"][0]["annotations"][ANNOTATION_FILEPATH],
            "models/m/model.safetensors"
        );
        assert_eq!(
            m["layers"][1]["annotations"][ANNOTATION_FILEPATH],
            "models/m"
        );
        let c: Value = serde_json::from_slice(&a.configs[0].bytes).unwrap();
        assert_eq!(c["descriptor"]["name"], "m");
        assert_eq!(c["config"]["paramSize"], "66M");
        assert_eq!(c["modelfs"]["diffIds"][1], json!(Digest::of(b"configs")));
        assert_eq!(a.blobs().len(), 3);

        let two = [
            Platform::parse("linux/amd64").unwrap(),
            Platform::parse("linux/arm64").unwrap(),
        ];
        let img = weights_image("reg/acme/m", vec![], &ws, &two, "1970-01-01T00:00:00Z").unwrap();
        assert_eq!(img.manifests.len(), 3);
        assert_eq!(img.top().descriptor.media_type, INDEX_MEDIA_TYPE);
        let c: Value = serde_json::from_slice(&img.configs[1].bytes).unwrap();
        assert_eq!(c["architecture"], "arm64");
        assert_eq!(c["rootfs"]["diff_ids"][0], json!(Digest::of(b"weights")));
        let one = weights_image("r/m", vec![], &ws, &two[..1], "1970-01-01T00:00:00Z").unwrap();
        assert_eq!(one.top().descriptor.media_type, MANIFEST_MEDIA_TYPE);
        assert_eq!(one.blobs().len(), 3);
    }
}
