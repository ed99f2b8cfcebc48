//! Listing a repository's tags and deleting manifests (`mlimg cache prune --registry`).

use reqwest::Method;

use super::client::{Ctx, RegistryClient};
use super::error::Result;
use super::reference::{Reference, validate_digest};
use crate::transport::read_capped;

/// A tag list larger than this is not read.
const MAX_TAG_LIST_BYTES: u64 = 32 << 20;

impl RegistryClient {
    /// Every tag of `r`'s repository, following `Link: <…>; rel="next"` pages.
    pub fn list_tags(&self, r: &Reference) -> Result<Vec<String>> {
        let ctx = Ctx::pull(r);
        let mut url = self.url(r, "tags/list?n=1000")?;
        let mut tags = Vec::new();
        for _ in 0..10_000 {
            let what = "tag list";
            let resp = self.simple(&ctx, Method::GET, &url, what, &[], &[200])?;
            let next = resp
                .headers()
                .get("link")
                .and_then(|v| v.to_str().ok())
                .and_then(|l| {
                    let (target, rel) = l.split_once(';')?;
                    rel.contains("rel=\"next\"").then(|| {
                        target
                            .trim()
                            .trim_start_matches('<')
                            .trim_end_matches('>')
                            .to_string()
                    })
                });
            let body =
                read_capped(resp, MAX_TAG_LIST_BYTES).map_err(|e| ctx.transport("GET", what, e))?;
            #[derive(serde::Deserialize)]
            struct List {
                #[serde(default)]
                tags: Option<Vec<String>>,
            }
            let list: List = serde_json::from_slice(&body)
                .map_err(|e| ctx.invalid(what, format!("not JSON: {e}")))?;
            tags.extend(list.tags.unwrap_or_default());
            match next {
                Some(n) => {
                    let joined = url
                        .join(&n)
                        .map_err(|e| ctx.invalid(what, format!("bad next link {n:?}: {e}")))?;
                    // credentials go to the API origin only
                    if !self.is_api_origin(r, &joined) {
                        return Err(
                            ctx.invalid(what, format!("next link {n:?} leaves the registry"))
                        );
                    }
                    url = joined;
                }
                None => break,
            }
        }
        Ok(tags)
    }

    /// Deletes the manifest `digest` from `r`'s repository (and with it every tag naming it).
    /// The registry must allow deletes (distribution: `storage.delete.enabled`).
    pub fn delete_manifest(&self, r: &Reference, digest: &str) -> Result<()> {
        validate_digest(digest)?;
        let mut ctx = Ctx::push(r);
        ctx.scopes = vec![format!("repository:{}:pull,push,delete", r.repository)];
        let url = self.url(r, &format!("manifests/{digest}"))?;
        self.simple(
            &ctx,
            Method::DELETE,
            &url,
            &format!("manifest {digest}"),
            &[],
            &[200, 202],
        )?;
        Ok(())
    }
}
