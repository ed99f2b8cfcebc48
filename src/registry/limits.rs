//! What a registry accepts per layer and per request, known before any byte is sent.
//!
//! Registries publish limits that the distribution protocol cannot express until an upload
//! fails, often after gigabytes: ECR refuses a layer over 52,000 MiB and chunks under 5 MiB,
//! GHCR a layer over 10 GB and PATCHes over 4 MiB, Quay requests over ~20 GB, and Google
//! Artifact Registry chunked uploads altogether. [`for_host`] knows them by host name; a
//! registry may also announce its chunk bounds in the `OCI-Chunk-Min-Length` /
//! `OCI-Chunk-Max-Length` headers of the answer that opens an upload session
//! ([`Limits::with_session_headers`]). A mirror or proxy of a known registry under another name
//! gets that registry's rules with `MLIMG_REGISTRY_KIND=host=kind[,host=kind…]` (kinds:
//! [`KINDS`]).

use reqwest::header::HeaderMap;

const MIB: u64 = 1 << 20;
const GB: u64 = 1_000_000_000;

/// The per-layer and per-request rules of one registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Limits {
    /// The registry's name in messages (e.g. "Amazon ECR").
    pub name: &'static str,
    /// Largest blob the registry stores.
    pub max_blob: Option<u64>,
    /// Smallest PATCH other than the last one of an upload.
    pub min_chunk: Option<u64>,
    /// Largest request body (one PATCH, or the PUT of a monolithic upload).
    pub max_chunk: Option<u64>,
    /// Only monolithic uploads (POST, then one PUT carrying the blob): no PATCH.
    pub monolithic: bool,
}

/// The known registries: kind (for `MLIMG_REGISTRY_KIND`), rules.
pub const KINDS: &[(&str, Limits)] = &[
    (
        "ecr",
        Limits {
            name: "Amazon ECR",
            max_blob: Some(52_000 * MIB),
            min_chunk: Some(5 * MIB),
            max_chunk: None,
            monolithic: false,
        },
    ),
    (
        "ecr-public",
        Limits {
            name: "Amazon ECR Public",
            max_blob: Some(10_000 * MIB),
            min_chunk: Some(5 * MIB),
            max_chunk: None,
            monolithic: false,
        },
    ),
    (
        "ghcr",
        Limits {
            name: "GitHub Container Registry",
            max_blob: Some(10 * GB),
            min_chunk: None,
            max_chunk: Some(4 * MIB),
            monolithic: false,
        },
    ),
    (
        "quay",
        Limits {
            name: "Quay",
            max_blob: None,
            min_chunk: None,
            max_chunk: Some(20 * GB),
            monolithic: false,
        },
    ),
    (
        "gar",
        Limits {
            name: "Google Artifact Registry",
            max_blob: None,
            min_chunk: None,
            max_chunk: None,
            monolithic: true,
        },
    ),
];

fn kind(name: &str) -> Option<Limits> {
    KINDS.iter().find(|(k, _)| *k == name).map(|(_, l)| *l)
}

/// The kind of a registry host by its name, if it is one mlimg knows.
fn kind_of_host(host: &str) -> Option<&'static str> {
    let h = host.split(':').next().unwrap_or(host).to_ascii_lowercase();
    if h == "public.ecr.aws" {
        Some("ecr-public")
    } else if h.contains(".dkr.ecr.")
        && (h.ends_with(".amazonaws.com") || h.ends_with(".amazonaws.com.cn"))
    {
        Some("ecr")
    } else if h == "ghcr.io" {
        Some("ghcr")
    } else if h == "quay.io" {
        Some("quay")
    } else if h.ends_with("-docker.pkg.dev") || h == "gcr.io" || h.ends_with(".gcr.io") {
        Some("gar")
    } else {
        None
    }
}

/// `MLIMG_REGISTRY_KIND`: `host=kind` pairs, comma-separated. An unknown kind is an error
/// naming the known ones.
pub fn parse_kinds(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((host, k)) = part.rsplit_once('=') else {
            return Err(format!("{part:?}: expected host=kind"));
        };
        if kind(k.trim()).is_none() {
            let known: Vec<&str> = KINDS.iter().map(|(k, _)| *k).collect();
            return Err(format!(
                "{part:?}: unknown registry kind {k:?} (known: {})",
                known.join(", ")
            ));
        }
        out.push((host.trim().to_string(), k.trim().to_string()));
    }
    Ok(out)
}

/// The rules for `host` (`host[:port]` as written in references): from `overrides` (host →
/// kind) first, else by its name; the default (no limits) for registries mlimg does not know.
pub fn for_host(host: &str, overrides: &[(String, String)]) -> Limits {
    overrides
        .iter()
        .find(|(h, _)| h == host)
        .and_then(|(_, k)| kind(k))
        .or_else(|| kind_of_host(host).and_then(kind))
        .unwrap_or_default()
}

impl Limits {
    /// Adds the bounds a registry announced when it opened an upload session (the stricter
    /// of those and the table's).
    pub fn with_session_headers(mut self, headers: &HeaderMap) -> Limits {
        let num = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .filter(|n| *n > 0)
        };
        if let Some(min) = num("oci-chunk-min-length") {
            self.min_chunk = Some(self.min_chunk.map_or(min, |m| m.max(min)));
        }
        if let Some(max) = num("oci-chunk-max-length") {
            self.max_chunk = Some(self.max_chunk.map_or(max, |m| m.min(max)));
        }
        self
    }

    /// Whether a layer of unknown size can go in one streamed PATCH here.
    pub fn allows_streaming(&self) -> bool {
        !self.monolithic && self.max_chunk.is_none()
    }

    /// The PATCH size for a blob of `size` bytes given the user's wish (`None`: one PATCH):
    /// `Ok(None)` one PATCH, `Ok(Some(n))` chunks of `n`; an error when no size satisfies both
    /// bounds.
    pub fn chunk_for(&self, size: u64, wish: Option<u64>) -> Result<Option<u64>, String> {
        let mut chunk = wish.filter(|c| *c > 0);
        if let Some(max) = self.max_chunk
            && size > max
            && chunk.is_none_or(|c| c > max)
        {
            chunk = Some(max);
        }
        if let Some(min) = self.min_chunk
            && let Some(c) = chunk
            && c < min
            && size > c
        {
            chunk = Some(min);
        }
        if let (Some(min), Some(max)) = (self.min_chunk, self.max_chunk)
            && min > max
        {
            return Err(format!(
                "the registry asks for chunks of at least {min} bytes and at most {max}"
            ));
        }
        Ok(chunk.filter(|c| *c < size))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_map_to_their_rules() {
        let none: &[(String, String)] = &[];
        let ecr = for_host("123456789012.dkr.ecr.eu-west-1.amazonaws.com", none);
        assert_eq!(ecr.max_blob, Some(52_000 * MIB));
        assert_eq!(ecr.min_chunk, Some(5 * MIB));
        assert_eq!(
            for_host("public.ecr.aws", none).max_blob,
            Some(10_000 * MIB)
        );
        assert_eq!(for_host("ghcr.io", none).max_chunk, Some(4 * MIB));
        assert_eq!(for_host("quay.io", none).max_chunk, Some(20 * GB));
        assert!(for_host("europe-west4-docker.pkg.dev", none).monolithic);
        assert!(for_host("eu.gcr.io", none).monolithic);
        assert_eq!(
            for_host("registry.example.com:5000", none),
            Limits::default()
        );
        // an override names a kind for any host
        let o = parse_kinds("127.0.0.1:5000=ghcr, mirror.local=gar").unwrap();
        assert_eq!(for_host("127.0.0.1:5000", &o).max_chunk, Some(4 * MIB));
        assert!(for_host("mirror.local", &o).monolithic);
        let err = parse_kinds("x=dockerhub").unwrap_err();
        assert!(
            err.contains("unknown registry kind") && err.contains("ghcr"),
            "{err}"
        );
        assert!(parse_kinds("nokind").is_err());
    }

    #[test]
    fn chunk_sizes_respect_both_bounds() {
        let ghcr = kind("ghcr").unwrap();
        assert_eq!(ghcr.chunk_for(3 * MIB, None), Ok(None));
        assert_eq!(ghcr.chunk_for(100 * MIB, None), Ok(Some(4 * MIB)));
        assert_eq!(ghcr.chunk_for(100 * MIB, Some(MIB)), Ok(Some(MIB)));
        let ecr = kind("ecr").unwrap();
        assert_eq!(ecr.chunk_for(100 * MIB, None), Ok(None));
        assert_eq!(ecr.chunk_for(100 * MIB, Some(MIB)), Ok(Some(5 * MIB)));
        assert_eq!(ecr.chunk_for(2 * MIB, Some(MIB)), Ok(None));
        let mut h = HeaderMap::new();
        h.insert("OCI-Chunk-Min-Length", "2000".parse().unwrap());
        h.insert("OCI-Chunk-Max-Length", "9000".parse().unwrap());
        let l = Limits::default().with_session_headers(&h);
        assert_eq!(l.chunk_for(100_000, None), Ok(Some(9000)));
        assert_eq!(l.chunk_for(100_000, Some(100)), Ok(Some(2000)));
        assert!(!l.allows_streaming());
        let mut bad = HeaderMap::new();
        bad.insert("OCI-Chunk-Min-Length", "9000".parse().unwrap());
        bad.insert("OCI-Chunk-Max-Length", "100".parse().unwrap());
        assert!(
            Limits::default()
                .with_session_headers(&bad)
                .chunk_for(1 << 20, None)
                .is_err()
        );
    }
}
