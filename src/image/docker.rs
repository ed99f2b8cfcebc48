//! `[image] format = "docker"`: the same image under Docker image manifest v2 schema 2 media
//! types. Layer and config bytes do not change (same digests); the manifest and the index
//! (a Docker manifest list) are written again with Docker's media types and without
//! annotations, which schema 2 does not have.
//!
//! Why: the config's `Healthcheck` is a Docker extension. Engines that keep to the OCI image
//! spec (podman) drop it from an OCI image's config but keep it when the manifest is Docker's.

use serde_json::{Value, json};

use super::{Descriptor, Document, Image, ImageError, ImageSet, canonical};

pub const MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
pub const LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";

/// The Docker media type of a layer with OCI media type `mt`; zstd has none in schema 2.
pub fn layer_media_type(mt: &str, role: &str) -> Result<&'static str, ImageError> {
    match mt {
        "application/vnd.oci.image.layer.v1.tar+gzip" | LAYER_GZIP => Ok(LAYER_GZIP),
        "application/vnd.oci.image.layer.v1.tar" | LAYER_TAR => Ok(LAYER_TAR),
        other => Err(ImageError::Build {
            what: "docker manifest",
            message: format!(
                "layer {role} is {other}; Docker image manifest v2 schema 2 has gzip and \
                 uncompressed layers only (use compression = \"gzip\" or \"none\", or format = \"oci\")"
            ),
        }),
    }
}

fn desc_json(d: &Descriptor) -> Value {
    json!({"mediaType": d.media_type, "size": d.size, "digest": d.digest.as_str()})
}

fn convert_image(mut img: Image) -> Result<Image, ImageError> {
    for l in &mut img.layers {
        l.descriptor.media_type = layer_media_type(&l.descriptor.media_type, &l.role)?.into();
    }
    img.config = Document {
        descriptor: Descriptor {
            media_type: CONFIG.into(),
            ..img.config.descriptor.clone()
        },
        bytes: img.config.bytes.clone(),
    };
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "config": desc_json(&img.config.descriptor),
        "layers": img.layers.iter().map(|l| desc_json(&l.descriptor)).collect::<Vec<_>>(),
    });
    img.manifest = Document::new(MANIFEST, canonical(&manifest));
    Ok(img)
}

/// The image set with Docker media types: manifests, configs, layers, and a manifest list
/// over several platforms.
pub fn convert(set: ImageSet) -> Result<ImageSet, ImageError> {
    let images: Vec<Image> = set
        .images
        .iter()
        .cloned()
        .map(convert_image)
        .collect::<Result<_, _>>()?;
    let mut index = None;
    if set.index.is_some() {
        let manifests: Vec<Value> = images
            .iter()
            .map(|i| {
                let mut p = json!({"architecture": i.platform.architecture, "os": i.platform.os});
                if let Some(v) = &i.platform.variant {
                    p["variant"] = json!(v);
                }
                let mut d = desc_json(&i.manifest.descriptor);
                d["platform"] = p;
                d
            })
            .collect();
        let list = json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST_LIST,
            "manifests": manifests,
        });
        index = Some(Document::new(MANIFEST_LIST, canonical(&list)));
    }
    let out = ImageSet::new(images, index, set.name.clone(), set.tags.clone()).ok_or(
        ImageError::Build {
            what: "docker manifest",
            message: "the build has no platform".into(),
        },
    )?;
    Ok(out
        .with_artifacts(set.artifacts)
        .with_referrers(set.referrers))
}
