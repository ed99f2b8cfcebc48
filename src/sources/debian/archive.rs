//! The network side of a Debian archive: `InRelease` (or `Release` + `Release.gpg`), the
//! `Packages` indexes it lists and the `.deb` files they name, each verified (the signature
//! with the base's keyring, every other file by the sha256 the signed text gives) and kept in
//! the cache by sha256, so an unchanged index or package is downloaded once.
//!
//! Layout under the cache folder: `debian/index/<sha256>` (a `Packages.xz` as published) and
//! `debian/debs/<sha256>.deb`.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use super::release::{self, Release, ReleaseError};
use crate::transport::{Retry, Transport, TransportError, redact_url};

/// Largest `InRelease` / `Release` accepted (bookworm's is 150 KB).
pub const MAX_RELEASE_BYTES: u64 = 16 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("GET {url}: HTTP {status}{hint}")]
    Http {
        url: String,
        status: u16,
        hint: String,
    },
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error("{url}: {source}")]
    Release { url: String, source: ReleaseError },
    #[error(
        "{url}: sha256 {got} does not match {expected} (from the signed Release file): refused"
    )]
    Digest {
        url: String,
        expected: String,
        got: String,
    },
    #[error(
        "{url}: the signed Release file expired ({valid_until}): refused (a stale or replayed mirror)"
    )]
    Expired { url: String, valid_until: String },
    #[error("{url}: {got} bytes, the signed Release file says {expected}: refused")]
    Size {
        url: String,
        expected: u64,
        got: u64,
    },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ArchiveError + '_ {
    move |source| ArchiveError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The signed `Release` of `suite` at `uri`, verified with `keyrings` (InRelease first, then
/// Release + Release.gpg).
pub fn fetch_release(
    t: &Transport,
    uri: &str,
    suite: &str,
    keyrings: &[Vec<u8>],
) -> Result<Release, ArchiveError> {
    let base = format!("{}/dists/{suite}", uri.trim_end_matches('/'));
    let inrelease = format!("{base}/InRelease");
    let text = match get_small(t, &inrelease)? {
        Some(signed) => release::verify_inrelease(&signed, keyrings).map_err(|source| {
            ArchiveError::Release {
                url: redact_url(&inrelease),
                source,
            }
        })?,
        None => {
            let url = format!("{base}/Release");
            let Some(data) = get_small(t, &url)? else {
                return Err(ArchiveError::Http {
                    url: redact_url(&inrelease),
                    status: 404,
                    hint: format!(
                        " (nor {url}): is {suite:?} a suite of this archive? Set [system] suite \
                         or mirror"
                    ),
                });
            };
            let sig_url = format!("{url}.gpg");
            let sig = get_small(t, &sig_url)?.ok_or_else(|| ArchiveError::Http {
                url: redact_url(&sig_url),
                status: 404,
                hint: ": the Release file is not signed".into(),
            })?;
            release::verify_detached(&data, &sig, keyrings).map_err(|source| {
                ArchiveError::Release {
                    url: redact_url(&url),
                    source,
                }
            })?;
            data
        }
    };
    let text = String::from_utf8_lossy(&text);
    let rel = release::parse_release(&text).map_err(|source| ArchiveError::Release {
        url: redact_url(&inrelease),
        source,
    })?;
    // a correctly signed but stale Release (replayed by a mirror) is refused, as apt does
    let expired = rel
        .expired(std::time::SystemTime::now())
        .map_err(|source| ArchiveError::Release {
            url: redact_url(&inrelease),
            source,
        })?;
    if expired {
        return Err(ArchiveError::Expired {
            url: redact_url(&inrelease),
            valid_until: rel.valid_until.clone().unwrap_or_default(),
        });
    }
    Ok(rel)
}

/// A small document, `None` on 404.
fn get_small(t: &Transport, url: &str) -> Result<Option<Vec<u8>>, ArchiveError> {
    let c = t.get_capped(|| t.client().get(url), MAX_RELEASE_BYTES)?;
    match c.status.as_u16() {
        200 => Ok(Some(c.body)),
        404 => Ok(None),
        s => Err(ArchiveError::Http {
            url: redact_url(url),
            status: s,
            hint: String::new(),
        }),
    }
}

/// A file of the archive by its sha256: the cached copy at `dir/<sha256><suffix>` (checked by
/// size; its name is its digest and it is only ever renamed into place after a full check;
/// its mtime is set to now, its last use for `mlimg cache prune`), else downloaded, verified
/// and renamed into place.
pub fn fetch_verified(
    t: &Transport,
    url: &str,
    size: u64,
    sha256: &str,
    dir: &Path,
    suffix: &str,
) -> Result<PathBuf, ArchiveError> {
    let sha256 = sha256.to_ascii_lowercase();
    let dest = dir.join(format!("{sha256}{suffix}"));
    if std::fs::metadata(&dest).is_ok_and(|m| m.is_file() && m.len() == size) {
        if let Ok(f) = std::fs::File::open(&dest) {
            let _ = f.set_modified(std::time::SystemTime::now()); // best effort
        }
        return Ok(dest);
    }
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    t.retry(
        &crate::transport::describe("GET", url),
        || download_once(t, url, size, &sha256, dir, &dest),
        |r| match r {
            Err(f) => f.1.clone(),
            Ok(_) => None,
        },
    )
    .map_err(|f| f.0)
}

type Attempt = Result<PathBuf, Box<(ArchiveError, Option<Retry>)>>;

fn download_once(
    t: &Transport,
    url: &str,
    size: u64,
    sha256: &str,
    dir: &Path,
    dest: &Path,
) -> Attempt {
    let fail = |e: ArchiveError| Box::new((e, None));
    let resp = match t.send_once(t.client().get(url).build().map_err(|e| {
        fail(ArchiveError::Http {
            url: redact_url(url),
            status: 0,
            hint: format!(": not a usable URL ({})", e.without_url()),
        })
    })?) {
        Ok(r) => r,
        Err(e) => {
            let retry = e.retry();
            return Err(Box::new((e.into(), retry)));
        }
    };
    let status = resp.status();
    if !status.is_success() {
        return Err(Box::new((
            ArchiveError::Http {
                url: redact_url(url),
                status: status.as_u16(),
                hint: String::new(),
            },
            Retry::for_status(status, resp.headers()),
        )));
    }
    let mut tmp = tempfile::Builder::new()
        .prefix(".partial-")
        .tempfile_in(dir)
        .map_err(|e| fail(io(dir)(e)))?;
    let mut h = Sha256::new();
    let mut body = resp.take(size.saturating_add(1));
    let mut buf = vec![0u8; 256 << 10];
    let mut n: u64 = 0;
    loop {
        let k = match body.read(&mut buf) {
            Ok(0) => break,
            Ok(k) => k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                let e = TransportError::body(url, &e);
                let retry = e.retry();
                return Err(Box::new((e.into(), retry)));
            }
        };
        h.update(&buf[..k]);
        tmp.write_all(&buf[..k])
            .map_err(|e| fail(io(tmp.path())(e)))?;
        n += k as u64;
    }
    if n != size {
        return Err(fail(ArchiveError::Size {
            url: redact_url(url),
            expected: size,
            got: n,
        }));
    }
    let got = hex::encode(h.finalize());
    if got != sha256 {
        return Err(fail(ArchiveError::Digest {
            url: redact_url(url),
            expected: sha256.to_string(),
            got,
        }));
    }
    tmp.persist(dest).map_err(|e| fail(io(dest)(e.error)))?;
    Ok(dest.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cached_file_is_reused_without_a_request_and_marked_used() {
        let d = tempfile::tempdir().unwrap();
        let sha = "ab".repeat(32);
        let dest = d.path().join(format!("{sha}.deb"));
        std::fs::write(&dest, b"12345").unwrap();
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(30 * 86400);
        std::fs::File::open(&dest)
            .unwrap()
            .set_modified(old)
            .unwrap();
        let t = Transport::from_defaults().unwrap();
        // nothing listens there: a hit makes no request
        let got = fetch_verified(&t, "http://127.0.0.1:9/x.deb", 5, &sha, d.path(), ".deb")
            .expect("a hit");
        assert_eq!(got, dest);
        let m = std::fs::metadata(&dest).unwrap().modified().unwrap();
        assert!(
            m > old + std::time::Duration::from_secs(29 * 86400),
            "touched"
        );
    }
}
