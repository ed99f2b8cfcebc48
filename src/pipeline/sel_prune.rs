//! `mlimg cache prune --registry REPO`: deletes the repository's `mlimg-sel-*` selector records
//! (see `shared_cache`) whose layer no image of the repository uses any more — never one
//! whose layer is a layer of an image an existing tag names (through an index too).

use std::collections::BTreeSet;

use serde::Serialize;
use serde_json::Value;

use crate::registry::{Reference, RegistryClient, RegistryError};

/// Tags of selector records.
pub const RECORD_PREFIX: &str = "mlimg-sel-";

#[derive(Debug, Clone, Serialize)]
pub struct Record {
    pub tag: String,
    /// The record manifest's digest.
    pub digest: String,
    /// The layer it names.
    pub layer: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct RegistryPrune {
    pub repository: String,
    pub dry_run: bool,
    /// Tags whose images were read.
    pub image_tags: usize,
    pub kept: Vec<Record>,
    pub deleted: Vec<Record>,
}

fn layers_of(v: &Value) -> impl Iterator<Item = String> + '_ {
    v["layers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| l["digest"].as_str().map(str::to_string))
}

/// Deletes stale records in `repo` (`dry_run`: only says which).
pub fn prune_records(
    client: &RegistryClient,
    repo: &Reference,
    dry_run: bool,
) -> Result<RegistryPrune, RegistryError> {
    let repo = Reference {
        tag: None,
        digest: None,
        ..repo.clone()
    };
    let tags = client.list_tags(&repo)?;
    let (records, images): (Vec<&String>, Vec<&String>) =
        tags.iter().partition(|t| t.starts_with(RECORD_PREFIX));
    // referrer indexes (`sha256-<hex>`) name documents, not layers
    let images: Vec<&String> = images
        .into_iter()
        .filter(|t| !(t.starts_with("sha256-") && t.len() == 71))
        .collect();
    let mut in_use: BTreeSet<String> = BTreeSet::new();
    let mut seen: BTreeSet<String> = BTreeSet::new();
    for t in &images {
        let m = client.fetch_manifest(&repo.with_tag(t))?;
        let v: Value = serde_json::from_slice(&m.bytes).unwrap_or_default();
        if let Some(children) = v["manifests"].as_array() {
            for c in children {
                let Some(d) = c["digest"].as_str() else {
                    continue;
                };
                if !seen.insert(d.to_string()) {
                    continue;
                }
                let cm = client.fetch_manifest(&repo.with_digest(d))?;
                let cv: Value = serde_json::from_slice(&cm.bytes).unwrap_or_default();
                in_use.extend(layers_of(&cv));
            }
        } else {
            in_use.extend(layers_of(&v));
        }
    }
    let mut kept = Vec::new();
    let mut deleted = Vec::new();
    for t in records {
        let m = client.fetch_manifest(&repo.with_tag(t))?;
        let v: Value = serde_json::from_slice(&m.bytes).unwrap_or_default();
        let Some(layer) = layers_of(&v).next() else {
            continue; // not a record mlimg wrote: leave it
        };
        let rec = Record {
            tag: t.clone(),
            digest: m.digest.clone(),
            layer: layer.clone(),
        };
        if in_use.contains(&layer) {
            kept.push(rec);
        } else {
            if !dry_run {
                client.delete_manifest(&repo, &m.digest)?;
            }
            deleted.push(rec);
        }
    }
    Ok(RegistryPrune {
        repository: repo.to_string(),
        dry_run,
        image_tags: images.len(),
        kept,
        deleted,
    })
}
