//! Errors of the Hugging Face Hub source. Every variant names the repo and, where it
//! applies, the revision (or commit), the file and the HTTP status. Tokens never appear.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error("hf://{repo}: invalid source: {reason}")]
    InvalidSource { repo: String, reason: String },

    #[error(
        "hf://{repo}: repository not found on {endpoint} (HTTP {status}); if it is private, set HF_TOKEN to a token that can read it"
    )]
    RepoNotFound {
        repo: String,
        endpoint: String,
        status: u16,
    },

    #[error("hf://{repo}: revision {revision:?} not found (HTTP {status})")]
    RevisionNotFound {
        repo: String,
        revision: String,
        status: u16,
    },

    #[error("hf://{repo}@{revision}: file {file:?} not found (HTTP {status})")]
    FileNotFound {
        repo: String,
        revision: String,
        file: String,
        status: u16,
    },

    #[error(
        "hf://{repo}@{revision}: {what} needs authentication (HTTP {status}): the repository is gated or private and no token is set. Accept its terms on the Hub, then set HF_TOKEN (or log in so that $HF_HOME/token exists)"
    )]
    AuthRequired {
        repo: String,
        revision: String,
        what: String,
        status: u16,
    },

    #[error(
        "hf://{repo}@{revision}: the Hub refused the token for {what} (HTTP {status}): check that HF_TOKEN can read this repository and that its account has accepted the repository's terms"
    )]
    AccessDenied {
        repo: String,
        revision: String,
        what: String,
        status: u16,
    },

    #[error("hf://{repo}@{revision}: {what}: HTTP {status}{}", detail.as_deref().map(|d| format!(": {d}")).unwrap_or_default())]
    Http {
        repo: String,
        revision: String,
        what: String,
        status: u16,
        detail: Option<String>,
    },

    #[error(
        "hf://{repo}@{revision}: {file}: download failed after {attempts} attempts, at byte {offset} of {size}: {message}"
    )]
    Network {
        repo: String,
        revision: String,
        file: String,
        attempts: u32,
        offset: u64,
        size: u64,
        message: String,
    },

    #[error("hf://{repo}@{revision}: {what}: {message}")]
    Transport {
        repo: String,
        revision: String,
        what: String,
        message: String,
    },

    #[error("hf://{repo}@{revision}: {file}: sha256 mismatch: expected {expected}, got {actual}")]
    Sha256Mismatch {
        repo: String,
        revision: String,
        file: String,
        expected: String,
        actual: String,
    },

    #[error(
        "hf://{repo}@{revision}: {file}: content does not match the Hub's git blob id: expected {expected}, got {actual}"
    )]
    GitOidMismatch {
        repo: String,
        revision: String,
        file: String,
        expected: String,
        actual: String,
    },

    #[error(
        "hf://{repo}@{revision}: {file}: size mismatch: expected {expected} bytes, got {actual}"
    )]
    SizeMismatch {
        repo: String,
        revision: String,
        file: String,
        expected: u64,
        actual: u64,
    },

    /// `selection` describes the subfolder and globs.
    #[error("hf://{repo}@{revision}: no files selected ({selection})")]
    NoFiles {
        repo: String,
        revision: String,
        selection: String,
    },

    #[error("hf://{repo}@{revision}: unexpected response from the Hub: {message}")]
    Protocol {
        repo: String,
        revision: String,
        message: String,
    },

    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl HubError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        HubError::Io {
            path: path.into(),
            source,
        }
    }
}

/// What a request was about, to build errors that name repo, revision and file.
#[derive(Debug, Clone)]
pub(crate) struct Ctx<'a> {
    pub repo: &'a str,
    pub endpoint: &'a str,
    pub revision: &'a str,
    pub file: Option<&'a str>,
    pub has_token: bool,
}

impl Ctx<'_> {
    pub fn what(&self) -> String {
        match self.file {
            Some(f) => format!("file {f:?}"),
            None => "listing".to_string(),
        }
    }

    /// Map a status code (and the Hub's `X-Error-Code`) to an error.
    pub fn status(
        &self,
        status: u16,
        error_code: Option<&str>,
        detail: Option<String>,
    ) -> HubError {
        let repo = self.repo.to_string();
        let revision = self.revision.to_string();
        match (error_code, status) {
            // The Hub answers 401 for a repo that does not exist or is private (when anonymous).
            (Some("RepoNotFound"), _) => HubError::RepoNotFound {
                repo,
                endpoint: self.endpoint.to_string(),
                status,
            },
            (Some("RevisionNotFound"), _) => HubError::RevisionNotFound {
                repo,
                revision,
                status,
            },
            (Some("EntryNotFound"), _) => HubError::FileNotFound {
                repo,
                revision,
                file: self.file.unwrap_or("").to_string(),
                status,
            },
            (_, 401 | 403) if !self.has_token => HubError::AuthRequired {
                repo,
                revision,
                what: self.what(),
                status,
            },
            (_, 401 | 403) => HubError::AccessDenied {
                repo,
                revision,
                what: self.what(),
                status,
            },
            (_, 404) => match self.file {
                Some(f) => HubError::FileNotFound {
                    repo,
                    revision,
                    file: f.to_string(),
                    status,
                },
                None => HubError::RepoNotFound {
                    repo,
                    endpoint: self.endpoint.to_string(),
                    status,
                },
            },
            _ => HubError::Http {
                repo,
                revision,
                what: self.what(),
                status,
                detail,
            },
        }
    }
}

/// `e: cause: cause…` — reqwest's top-level message alone ("error decoding response body")
/// hides the useful part.
pub(crate) use crate::transport::error_chain;
