//! What a build tells its user while it runs: progress events (bars on a terminal, lines
//! otherwise) and warnings, which also end up in the `--json` report.

use std::sync::Mutex;

/// Progress events, for a progress bar or plain lines. Every stage that does I/O reports
/// through it; none prints on its own.
pub trait Progress: Sync {
    /// A byte transfer (an upload or download) identified by `key` moved to `done` of `total`.
    fn transfer(&self, _key: &str, _done: u64, _total: u64) {}
    /// The transfer `key` finished; `summary` says how.
    fn transfer_done(&self, _key: &str, _summary: &str) {}
    /// A layer is being written. `id` is stable and unique per layer (per-file weights layers
    /// share a `label`, never an `id`).
    fn layer_start(&self, _id: &str, _label: &str, _bytes: u64) {}
    fn layer_bytes(&self, _id: &str, _done: u64) {}
    fn layer_done(&self, _id: &str, _label: &str, _cached: bool) {}
    fn message(&self, _msg: &str) {}
    /// Something the user should know that does not stop the build.
    fn warning(&self, w: &Warning) {
        self.message(&format!("warning: {}", w.message));
    }
}

/// No progress output.
pub struct Quiet;
impl Progress for Quiet {}

/// A warning with a stable code (for CI to match on), a one-line message and, for lints, a
/// hint saying how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Warning {
    pub code: &'static str,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

impl Warning {
    pub fn new(code: &'static str, message: impl Into<String>) -> Warning {
        Warning {
            code,
            message: message.into(),
            hint: None,
        }
    }

    /// The same warning with a hint.
    pub fn with_hint(mut self, hint: impl Into<String>) -> Warning {
        self.hint = Some(hint.into());
        self
    }
}

/// Passes events on and keeps every warning for the report.
pub struct Recorder<'a> {
    pub inner: &'a dyn Progress,
    pub warnings: Mutex<Vec<Warning>>,
}

impl<'a> Recorder<'a> {
    pub fn new(inner: &'a dyn Progress) -> Self {
        Recorder {
            inner,
            warnings: Mutex::new(Vec::new()),
        }
    }

    pub fn take(&self) -> Vec<Warning> {
        self.warnings
            .lock()
            .map(|mut w| std::mem::take(&mut *w))
            .unwrap_or_default()
    }
}

impl Progress for Recorder<'_> {
    fn transfer(&self, key: &str, done: u64, total: u64) {
        self.inner.transfer(key, done, total)
    }
    fn transfer_done(&self, key: &str, summary: &str) {
        self.inner.transfer_done(key, summary)
    }
    fn layer_start(&self, id: &str, label: &str, bytes: u64) {
        self.inner.layer_start(id, label, bytes)
    }
    fn layer_bytes(&self, id: &str, done: u64) {
        self.inner.layer_bytes(id, done)
    }
    fn layer_done(&self, id: &str, label: &str, cached: bool) {
        self.inner.layer_done(id, label, cached)
    }
    fn message(&self, msg: &str) {
        self.inner.message(msg)
    }
    fn warning(&self, w: &Warning) {
        if let Ok(mut all) = self.warnings.lock()
            && !all.contains(w)
        {
            all.push(w.clone());
        }
        self.inner.warning(w)
    }
}

/// An observer for [`crate::transport::TransportOptions::on_retry`] that reports each retry of
/// any request (registry, Hub, Python index) as one [`Progress::message`] line.
pub fn retry_messages<P: Progress + Send + 'static>(
    progress: std::sync::Arc<P>,
) -> crate::transport::RetryObserver {
    std::sync::Arc::new(move |e| progress.message(&e.to_string()))
}
