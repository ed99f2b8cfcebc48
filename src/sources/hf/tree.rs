//! The recursive tree listing, through the shared transport (retries, idle timeout, each
//! page capped at [`MAX_LISTING_BYTES`]).
//!
//! `hf-hub` 1.0.0's `list_tree` cannot be used for this: its `BlobLfsInfo` reads the LFS hash
//! from a field named `sha256`, but the Hub sends `lfs.oid`, so every sha256 comes back empty.

use reqwest::Url;
use reqwest::header::LINK;

use super::HubError;
use super::HubOptions;
use super::cache::{is_hex, is_safe_rel_path};
use super::error::{Ctx, error_chain};
use crate::transport::{MAX_LISTING_BYTES, Transport, redact_url, same_origin};

/// One file in the tree at a commit.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub path: String,
    pub size: u64,
    /// Git blob id (sha1) — for LFS files the id of the pointer file.
    pub oid: String,
    /// LFS oid = sha256 of the content, for LFS files.
    pub lfs_sha256: Option<String>,
}

#[derive(serde::Deserialize)]
struct RawEntry {
    #[serde(rename = "type")]
    kind: String,
    path: String,
    #[serde(default)]
    size: u64,
    #[serde(default)]
    oid: Option<String>,
    #[serde(default)]
    lfs: Option<RawLfs>,
}

#[derive(serde::Deserialize)]
struct RawLfs {
    oid: String,
    #[serde(default)]
    size: Option<u64>,
}

/// Every file at `ctx.revision` (a commit sha) under `subfolder` (or the whole repo).
/// Follows `Link: <…>; rel="next"` pagination, on the endpoint's origin only: the token goes
/// with every page, so a next link elsewhere is an error, never a request.
pub(crate) fn list(
    transport: &Transport,
    opts: &HubOptions,
    ctx: &Ctx<'_>,
    subfolder: Option<&str>,
) -> Result<Vec<Entry>, HubError> {
    let protocol = |message: String| HubError::Protocol {
        repo: ctx.repo.to_string(),
        revision: ctx.revision.to_string(),
        message,
    };
    let transport_err = |message: String| HubError::Transport {
        repo: ctx.repo.to_string(),
        revision: ctx.revision.to_string(),
        what: "tree listing".into(),
        message,
    };
    let mut url = Url::parse(&format!("{}/api/models/", opts.endpoint))
        .map_err(|e| protocol(format!("bad endpoint {:?}: {e}", opts.endpoint)))?;
    {
        let mut segs = url
            .path_segments_mut()
            .map_err(|()| protocol(format!("bad endpoint {:?}", opts.endpoint)))?;
        segs.pop_if_empty();
        segs.extend(ctx.repo.split('/'));
        segs.push("tree");
        segs.push(ctx.revision);
        if let Some(sub) = subfolder {
            segs.extend(sub.split('/'));
        }
    }
    url.query_pairs_mut().append_pair("recursive", "true");

    let auth = super::auth_header(opts).map_err(&transport_err)?;

    let origin = url.clone();
    let mut out = Vec::new();
    let mut next = Some(url);
    let mut pages = 0;
    while let Some(url) = next.take() {
        pages += 1;
        if pages > 10_000 {
            return Err(protocol("tree listing does not end".into()));
        }
        let page = transport
            .get_capped(
                || super::with_auth(transport.client().get(url.clone()), auth.as_ref()),
                MAX_LISTING_BYTES,
            )
            .map_err(|e| transport_err(error_chain(&e)))?;
        let status = page.status;
        if !status.is_success() {
            let header = |n: &str| {
                page.headers
                    .get(n)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
            };
            let code = header("x-error-code");
            let msg = header("x-error-message");
            // A missing subfolder is reported as EntryNotFound: name it.
            let ctx = Ctx {
                file: subfolder.filter(|_| code.as_deref() == Some("EntryNotFound")),
                ..ctx.clone()
            };
            let detail = super::status_detail(msg, page.url.as_str());
            return Err(ctx.status(status.as_u16(), code.as_deref(), Some(detail)));
        }
        next = page
            .headers
            .get_all(LINK)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(next_link)
            .and_then(|l| page.url.join(&l).ok());
        if let Some(n) = &next
            && !same_origin(n, &origin)
        {
            return Err(protocol(format!(
                "tree listing: the next page is on another origin ({}, not {}); not followed",
                redact_url(n.as_str()),
                redact_url(&format!("{}://{}", origin.scheme(), origin.authority())),
            )));
        }
        let raw: Vec<RawEntry> = serde_json::from_slice(&page.body)
            .map_err(|e| protocol(format!("tree listing: {e}")))?;
        for e in raw {
            if e.kind != "file" {
                continue;
            }
            if !is_safe_rel_path(&e.path) {
                return Err(protocol(format!(
                    "unsafe path in tree listing: {:?}",
                    e.path
                )));
            }
            let oid = e.oid.unwrap_or_default().to_ascii_lowercase();
            let lfs_sha256 = match &e.lfs {
                Some(l) if is_hex(&l.oid, 64) => Some(l.oid.to_ascii_lowercase()),
                Some(l) => {
                    return Err(protocol(format!(
                        "{}: LFS oid {:?} is not a sha256",
                        e.path, l.oid
                    )));
                }
                None if is_hex(&oid, 40) => None,
                None => {
                    return Err(protocol(format!(
                        "{}: git oid {oid:?} is not a sha1",
                        e.path
                    )));
                }
            };
            out.push(Entry {
                size: e.lfs.as_ref().and_then(|l| l.size).unwrap_or(e.size),
                path: e.path,
                oid,
                lfs_sha256,
            });
        }
    }
    Ok(out)
}

/// `<url>; rel="next"` → url.
fn next_link(header: &str) -> Option<String> {
    header.split(',').find_map(|part| {
        let (url, params) = part.split_once(';')?;
        params
            .split(';')
            .any(|p| matches!(p.trim(), "rel=\"next\"" | "rel=next"))
            .then(|| {
                url.trim()
                    .trim_start_matches('<')
                    .trim_end_matches('>')
                    .to_string()
            })
    })
}

#[cfg(test)]
mod tests {
    use super::next_link;

    #[test]
    fn parses_link_header() {
        assert_eq!(
            next_link("<https://hf.co/api/models/a/b/tree/x?cursor=abc>; rel=\"next\"").as_deref(),
            Some("https://hf.co/api/models/a/b/tree/x?cursor=abc")
        );
        assert_eq!(next_link("<https://x>; rel=\"prev\""), None);
    }
}
