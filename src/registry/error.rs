//! One error type for everything the registry client does.
//!
//! Every message names the registry host and repository it concerns, and for HTTP
//! failures the method, what was being done, the status and the registry's error code.
//! No variant ever carries a credential or token.

use std::path::PathBuf;
use std::time::Duration;

use crate::transport::{Retry, TransportError};

/// Where an operation was heading: used as the message prefix ("push to …", "pull from …").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Pull,
    Push,
}

impl std::fmt::Display for Direction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Direction::Pull => "pull from",
            Direction::Push => "push to",
        })
    }
}

/// The registry's error envelope, reduced to its first entry: `{"errors":[{"code","message"}]}`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RegistryCode {
    pub code: String,
    pub message: String,
}

impl RegistryCode {
    /// Parse the distribution error envelope; `None` when the body is not one.
    pub fn parse(body: &[u8]) -> Option<RegistryCode> {
        #[derive(serde::Deserialize)]
        struct Envelope {
            errors: Vec<Entry>,
        }
        #[derive(serde::Deserialize)]
        struct Entry {
            #[serde(default)]
            code: String,
            #[serde(default)]
            message: String,
        }
        let env: Envelope = serde_json::from_slice(body).ok()?;
        let first = env.errors.into_iter().next()?;
        Some(RegistryCode {
            code: first.code,
            message: first.message,
        })
    }
}

fn fmt_code(code: &Option<RegistryCode>) -> String {
    match code {
        Some(c) if c.message.is_empty() => format!(" ({})", c.code),
        Some(c) => format!(" ({}: {})", c.code, c.message),
        None => String::new(),
    }
}

/// An unexpected HTTP status, with everything needed to act on it.
#[derive(Debug, Clone)]
pub struct HttpFailure {
    pub direction: Direction,
    pub host: String,
    pub repository: String,
    pub method: String,
    /// What was requested: "manifest sha256:…", "blob sha256:…", "upload".
    pub what: String,
    /// Status code and canonical reason, e.g. "401 Unauthorized".
    pub status: String,
    pub status_code: u16,
    pub code: Option<RegistryCode>,
    /// The registry's `Retry-After`, if it sent one.
    pub retry_after: Option<Duration>,
}

impl std::fmt::Display for HttpFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}/{}: {} {}: {}{}",
            self.direction,
            self.host,
            self.repository,
            self.method,
            self.what,
            self.status,
            fmt_code(&self.code)
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("invalid image reference {input:?}: {reason}")]
    InvalidReference { input: String, reason: String },

    #[error("invalid platform {input:?}: expected os/arch[/variant], e.g. linux/arm64/v8")]
    InvalidPlatform { input: String },

    /// The registry answered with an unexpected status.
    #[error("{0}")]
    Http(Box<HttpFailure>),

    /// The request never got an HTTP answer (connection refused/reset, TLS, timeout).
    #[error("{direction} {host}/{repository}: {method} {what}: {source}")]
    Transport {
        direction: Direction,
        host: String,
        repository: String,
        method: String,
        what: String,
        #[source]
        source: Box<TransportError>,
    },

    /// A body broke off mid-stream (reading a download, or the source of an upload).
    #[error("{direction} {host}/{repository}: streaming {what}: {source}")]
    Stream {
        direction: Direction,
        host: String,
        repository: String,
        what: String,
        #[source]
        source: std::io::Error,
    },

    /// Content did not hash to the digest it was addressed by.
    #[error(
        "{direction} {host}/{repository}: content of {digest} does not match its digest (got {actual})"
    )]
    DigestMismatch {
        direction: Direction,
        host: String,
        repository: String,
        digest: String,
        actual: String,
    },

    #[error("{direction} {host}/{repository}: {digest} has {actual} bytes, expected {expected}")]
    SizeMismatch {
        direction: Direction,
        host: String,
        repository: String,
        digest: String,
        expected: u64,
        actual: u64,
    },

    #[error("unsupported digest {digest:?}: only sha256:<64 hex> is supported")]
    UnsupportedDigest { digest: String },

    /// The registry sent something we cannot use (bad JSON, missing Location header, ...).
    #[error("{direction} {host}/{repository}: {what}: {reason}")]
    InvalidResponse {
        direction: Direction,
        host: String,
        repository: String,
        what: String,
        reason: String,
    },

    #[error(
        "pull from {host}/{repository}: no manifest for platform {platform} (available: {available})"
    )]
    PlatformNotFound {
        host: String,
        repository: String,
        platform: String,
        available: String,
    },

    #[error("{host}: authentication failed: {reason}")]
    Auth { host: String, reason: String },

    #[error("{host}: credential helper docker-credential-{helper} failed: {reason}")]
    CredentialHelper {
        host: String,
        helper: String,
        reason: String,
    },

    #[error("docker config {}: {reason}", path.display())]
    DockerConfig { path: PathBuf, reason: String },

    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("push to {target}: invalid push request: {reason}")]
    InvalidPushRequest { target: String, reason: String },

    /// A blob over the target registry's per-layer limit: refused before any upload.
    #[error(
        "push to {host}/{repository}: {what} is {size} bytes, over {registry}'s limit of {limit} \
         bytes per layer; nothing was uploaded. Split it: a weights entry with \
         `layers = \"per-file\"` gets one layer per file (a single file over the limit must be \
         split itself, e.g. into safetensors shards)"
    )]
    OverLimit {
        host: String,
        repository: String,
        registry: String,
        what: String,
        size: u64,
        limit: u64,
    },

    /// A registry's announced upload rules that no chunk size can satisfy.
    #[error("push to {host}/{repository}: {reason}")]
    UploadRules {
        host: String,
        repository: String,
        reason: String,
    },

    #[error("MLIMG_REGISTRY_KIND: {0}")]
    RegistryKind(String),

    #[error("{0}")]
    ClientInit(#[source] Box<TransportError>),
}

impl RegistryError {
    /// True for failures worth retrying (the transport policy's: connection errors,
    /// timeouts, broken bodies, 5xx, 429, 408).
    pub fn is_transient(&self) -> bool {
        self.retry_hint().is_some()
    }

    /// For the retry loop: the cause to report and the registry's `Retry-After`; `None` when
    /// retrying cannot help.
    pub fn retry_hint(&self) -> Option<Retry> {
        match self {
            RegistryError::Transport { source, .. } => source.retry(),
            RegistryError::Stream { source, .. } => {
                crate::transport::retryable_io(source).then(|| Retry::new(source.to_string()))
            }
            RegistryError::Http(h) => {
                let status = reqwest::StatusCode::from_u16(h.status_code).ok()?;
                crate::transport::retryable_status(status).then(|| Retry {
                    cause: format!("{}{}", h.status, fmt_code(&h.code)),
                    after: h.retry_after,
                })
            }
            _ => None,
        }
    }

    /// The HTTP status, when the registry answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            RegistryError::Http(h) => Some(h.status_code),
            _ => None,
        }
    }

    /// The registry's error code (e.g. `BLOB_UPLOAD_UNKNOWN`), when it sent one.
    pub fn registry_code(&self) -> Option<&str> {
        match self {
            RegistryError::Http(h) => h.code.as_ref().map(|c| c.code.as_str()),
            _ => None,
        }
    }
}

pub type Result<T, E = RegistryError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_error_message_names_everything() {
        let e = RegistryError::Http(Box::new(HttpFailure {
            direction: Direction::Push,
            host: "127.0.0.1:5000".into(),
            repository: "acme/app".into(),
            method: "PUT".into(),
            what: "manifest".into(),
            status: "401 Unauthorized".into(),
            status_code: 401,
            retry_after: None,
            code: RegistryCode::parse(
                br#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required","detail":null}]}"#,
            ),
        }));
        assert_eq!(
            e.to_string(),
            "push to 127.0.0.1:5000/acme/app: PUT manifest: 401 Unauthorized (UNAUTHORIZED: authentication required)"
        );
        assert!(!e.is_transient());
    }

    #[test]
    fn envelope_parse_rejects_non_envelopes() {
        assert_eq!(RegistryCode::parse(b"<html>"), None);
        assert_eq!(RegistryCode::parse(br#"{"errors":[]}"#), None);
    }
}
