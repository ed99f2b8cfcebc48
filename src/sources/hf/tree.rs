//! The recursive tree listing, with plain `reqwest`.
//!
//! `hf-hub` 1.0.0's `list_tree` cannot be used for this: its `BlobLfsInfo` reads the LFS hash
//! from a field named `sha256`, but the Hub sends `lfs.oid`, so every sha256 comes back empty.

use reqwest::Url;
use reqwest::header::{AUTHORIZATION, HeaderValue, LINK};

use super::HubError;
use super::HubOptions;
use super::cache::{is_hex, is_safe_rel_path};
use super::error::{Ctx, error_chain};

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
/// Follows `Link: <…>; rel="next"` pagination.
pub(crate) async fn list(
    http: &reqwest::Client,
    opts: &HubOptions,
    ctx: &Ctx<'_>,
    subfolder: Option<&str>,
) -> Result<Vec<Entry>, HubError> {
    let protocol = |message: String| HubError::Protocol {
        repo: ctx.repo.to_string(),
        revision: ctx.revision.to_string(),
        message,
    };
    let transport = |message: String| HubError::Transport {
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

    let auth = match &opts.token {
        Some(t) => Some(HeaderValue::from_str(&format!("Bearer {t}")).map_err(|_| {
            transport("the token contains characters not allowed in a header".into())
        })?),
        None => None,
    };

    let mut out = Vec::new();
    let mut next = Some(url);
    let mut pages = 0;
    while let Some(url) = next.take() {
        pages += 1;
        if pages > 10_000 {
            return Err(protocol("tree listing does not end".into()));
        }
        let mut req = http.get(url.clone());
        if let Some(a) = &auth {
            let mut a = a.clone();
            a.set_sensitive(true);
            req = req.header(AUTHORIZATION, a);
        }
        let resp = send_with_retry(req).await.map_err(&transport)?;
        let status = resp.status();
        if !status.is_success() {
            let code = resp
                .headers()
                .get("x-error-code")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let msg = resp
                .headers()
                .get("x-error-message")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            // A missing subfolder is reported as EntryNotFound: name it.
            let ctx = Ctx {
                file: subfolder.filter(|_| code.as_deref() == Some("EntryNotFound")),
                ..ctx.clone()
            };
            return Err(ctx.status(status.as_u16(), code.as_deref(), msg));
        }
        next = resp
            .headers()
            .get_all(LINK)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(next_link)
            .and_then(|l| url.join(&l).ok());
        let raw: Vec<RawEntry> = resp
            .json()
            .await
            .map_err(|e| protocol(format!("tree listing: {}", error_chain(&e))))?;
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

/// Send, retrying connection errors and 5xx/429 a few times with backoff.
async fn send_with_retry(req: reqwest::RequestBuilder) -> Result<reqwest::Response, String> {
    let mut delay = std::time::Duration::from_millis(200);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let Some(r) = req.try_clone() else {
            return Err("request cannot be retried".into());
        };
        match r.send().await {
            Ok(resp)
                if attempt < 4
                    && (resp.status().is_server_error() || resp.status().as_u16() == 429) => {}
            Ok(resp) => return Ok(resp),
            Err(e) if attempt < 4 && !e.is_builder() => {}
            Err(e) => return Err(error_chain(&e)),
        }
        tokio::time::sleep(delay).await;
        delay *= 2;
    }
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
