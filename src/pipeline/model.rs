//! `[model]`: the artifacts beside the service image, made of its weights layers.

use crate::image::model::{self, ModelSource, WeightsFile, WeightsLayer};
use crate::image::{Artifact, ImageSet};
use crate::plan::{BuildPlan, Content, LayerRole};
use crate::resolve::Resolved;
use crate::spec::{ModelFormat, Spec};

use super::BuildError;

/// The tags each format gets: the first listed takes `tags`, the others `TAG-FORMAT`.
pub fn format_tags(formats: &[ModelFormat], tags: &[String]) -> Vec<(ModelFormat, Vec<String>)> {
    formats
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let t = if i == 0 {
                tags.to_vec()
            } else {
                tags.iter().map(|t| format!("{t}-{}", f.as_str())).collect()
            };
            (*f, t)
        })
        .collect()
}

/// The weights layers of the first platform's image (every platform has the same ones), with
/// the files the plan put in each.
fn weights_layers(spec: &Spec, plan: &BuildPlan, images: &ImageSet) -> Vec<WeightsLayer> {
    let (Some(pp), Some(img)) = (plan.platforms.first(), images.images.first()) else {
        return Vec::new();
    };
    let first_new = img.layers.len().saturating_sub(pp.layers.len());
    img.layers[first_new..]
        .iter()
        .zip(&pp.layers)
        .filter_map(|(layer, lp)| {
            let LayerRole::Weights(name) = &lp.role else {
                return None;
            };
            let dest = spec
                .weights
                .iter()
                .find(|w| &w.name == name)
                .map(|w| w.dest.trim_start_matches('/').to_string())
                .unwrap_or_default();
            let files = lp
                .entries
                .iter()
                .filter(|e| !matches!(e.content, Content::Dir | Content::Symlink(_)))
                .map(|e| WeightsFile {
                    path: e.path.clone(),
                    mode: e.mode,
                    size: e.size(),
                })
                .collect();
            Some(WeightsLayer {
                layer: layer.clone(),
                dest,
                files,
            })
        })
        .collect()
}

/// The artifacts `[model]` asks for (none without it). `image_tags`: the tags the image gets.
pub(super) fn artifacts(
    spec: &Spec,
    resolved: &Resolved,
    plan: &BuildPlan,
    images: &ImageSet,
    image_tags: &[String],
    hub_endpoint: &str,
    mtime: u64,
) -> Result<Vec<Artifact>, BuildError> {
    let Some(m) = &spec.model else {
        return Ok(Vec::new());
    };
    let weights = weights_layers(spec, plan, images);
    let created = crate::image::rfc3339(mtime);
    let tags = if m.tags.is_empty() {
        image_tags.to_vec()
    } else {
        m.tags.clone()
    };
    // One Hub entry: its repository and commit describe the model.
    let source = match resolved.weights.as_slice() {
        [w] => ModelSource {
            source_url: Some(format!("{}/{}", hub_endpoint.trim_end_matches('/'), w.repo)),
            revision: Some(w.commit.clone()),
        },
        _ => ModelSource::default(),
    };
    let platforms: Vec<_> = images.images.iter().map(|i| i.platform.clone()).collect();
    let mut out = Vec::new();
    for (format, tags) in format_tags(&m.formats, &tags) {
        out.push(match format {
            ModelFormat::ModelPack => {
                model::modelpack(&m.name, tags, &weights, &m.metadata, &source, &created)?
            }
            ModelFormat::Image => {
                model::weights_image(&m.name, tags, &weights, &platforms, &created)?
            }
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_format_takes_the_tags() {
        let t = format_tags(
            &[ModelFormat::ModelPack, ModelFormat::Image],
            &["v1".into(), "latest".into()],
        );
        assert_eq!(t[0].1, vec!["v1", "latest"]);
        assert_eq!(t[1].1, vec!["v1-image", "latest-image"]);
        let t = format_tags(&[ModelFormat::Image], &["v1".into()]);
        assert_eq!(t[0], (ModelFormat::Image, vec!["v1".to_string()]));
    }
}
