//! One HTTP transport for every network client (registry, Hugging Face Hub, Python indexes).
//!
//! A [`Transport`] is a blocking `reqwest` client with mlimg's timeouts plus the one
//! [`RetryPolicy`]. Clients build their requests as before and hand them to
//! [`Transport::send`] (retried: idempotent requests and requests whose body can be replayed)
//! or [`Transport::send_once`] (one attempt, for callers with their own resume logic, which
//! still ask the policy how long to wait). Every retry is reported to the
//! [`TransportOptions::on_retry`] observer before the wait, so nothing waits silently.
//!
//! Timeouts:
//! - connect: [`TransportOptions::connect_timeout`];
//! - read (idle): [`TransportOptions::read_timeout`] bounds the wait for the response headers
//!   and for each read of a body, so a stalled server is an error (and retried), while a slow
//!   but moving download of any size is fine;
//! - overall, for metadata requests: [`Transport::metadata`] sets
//!   [`TransportOptions::request_timeout`] on the request (headers and body).
//!
//! Metadata bodies are read with [`read_capped`]: at most a named limit, never an unbounded
//! buffer. Blobs are streamed by the callers. URLs in errors and messages go through
//! [`redact_url`] (no `user:password@`).
//!
//! Modelled on go-containerregistry's `transport` package and uv's retrying client.

pub mod credentials;
pub(crate) use credentials::percent_decode;
mod policy;

use std::fmt;
use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::blocking::{Client, Request, RequestBuilder, Response};

pub use policy::{
    Retry, RetryPolicy, parse_http_date, parse_retry_after, retry_after, retryable_error,
    retryable_io, retryable_status,
};

/// Largest manifest or index accepted from a registry.
pub const MAX_MANIFEST_BYTES: u64 = 4 << 20;
/// Largest token-service answer.
pub const MAX_TOKEN_BYTES: u64 = 64 << 10;
/// Largest page of a listing: a Hub tree page, a Python index project page, repo info.
pub const MAX_LISTING_BYTES: u64 = 64 << 20;
/// Error bodies are read only for their message / error code.
pub const MAX_ERROR_BODY_BYTES: u64 = 64 << 10;

/// Per-request timeout for requests that stream a body *up* (blob uploads): the client's idle
/// timeout would otherwise bound the whole upload. Dead peers are caught by TCP keepalive and
/// the TCP user timeout instead.
pub const UPLOAD_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// Called once per retry, before the wait.
pub type RetryObserver = Arc<dyn Fn(&RetryEvent) + Send + Sync>;

/// One retry about to happen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryEvent {
    /// What is retried: `GET https://host/v2/…` (URL without credentials), or a description.
    pub what: String,
    /// The attempt about to be made (2 for the first retry).
    pub attempt: u32,
    /// Attempts in all.
    pub max_attempts: u32,
    /// Why: `503 Service Unavailable`, `connection closed before message completed`, ….
    pub cause: String,
    pub wait: Duration,
}

impl fmt::Display for RetryEvent {
    /// `retrying GET https://host/v2/…: 503 Service Unavailable; attempt 2 of 5 in 1.0s`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "retrying {}: {}; attempt {} of {} in {:.1}s",
            self.what,
            self.cause,
            self.attempt,
            self.max_attempts,
            self.wait.as_secs_f64()
        )
    }
}

/// Settings shared by every network client.
#[derive(Clone)]
pub struct TransportOptions {
    /// Retries after the first attempt, for every kind of request (default 4).
    pub retries: u32,
    /// First retry delay; doubles per retry (default 500 ms).
    pub backoff: Duration,
    /// Longest computed retry delay (default 30 s).
    pub max_backoff: Duration,
    /// Longest `Retry-After` honoured (default 60 s).
    pub max_retry_after: Duration,
    /// Default 30 s.
    pub connect_timeout: Duration,
    /// Longest wait for response headers or for more body bytes (default 60 s).
    pub read_timeout: Duration,
    /// Whole-request limit for metadata requests (manifests, tokens, listings; default 60 s).
    pub request_timeout: Duration,
    pub user_agent: String,
    /// Told about every retry (e.g. to print a line). `None`: retries are not reported.
    pub on_retry: Option<RetryObserver>,
}

impl Default for TransportOptions {
    fn default() -> Self {
        let p = RetryPolicy::default();
        TransportOptions {
            retries: p.retries,
            backoff: p.backoff_base,
            max_backoff: p.max_backoff,
            max_retry_after: p.max_retry_after,
            connect_timeout: Duration::from_secs(30),
            read_timeout: Duration::from_secs(60),
            request_timeout: Duration::from_secs(60),
            user_agent: concat!("mlimg/", env!("CARGO_PKG_VERSION")).to_string(),
            on_retry: None,
        }
    }
}

impl TransportOptions {
    /// `--timeout SECS`: connect, idle-read and metadata-request timeouts all set to `t`.
    pub fn with_timeout(mut self, t: Duration) -> Self {
        self.connect_timeout = t;
        self.read_timeout = t;
        self.request_timeout = t;
        self
    }

    pub fn policy(&self) -> RetryPolicy {
        RetryPolicy {
            retries: self.retries,
            backoff_base: self.backoff,
            max_backoff: self.max_backoff,
            max_retry_after: self.max_retry_after,
        }
    }

    /// Tell the observer (if any) about a retry.
    pub fn report(&self, event: &RetryEvent) {
        if let Some(f) = &self.on_retry {
            f(event);
        }
    }

    /// Everything but the observer: what the HTTP client is built from.
    fn client_key(&self) -> (Duration, Duration, &str) {
        (self.connect_timeout, self.read_timeout, &self.user_agent)
    }
}

impl fmt::Debug for TransportOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TransportOptions")
            .field("retries", &self.retries)
            .field("backoff", &self.backoff)
            .field("max_backoff", &self.max_backoff)
            .field("max_retry_after", &self.max_retry_after)
            .field("connect_timeout", &self.connect_timeout)
            .field("read_timeout", &self.read_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("user_agent", &self.user_agent)
            .field("on_retry", &self.on_retry.as_ref().map(|_| "<observer>"))
            .finish()
    }
}

/// Equal settings; observers are equal when they are the same one.
impl PartialEq for TransportOptions {
    fn eq(&self, o: &Self) -> bool {
        self.policy() == o.policy()
            && self.client_key() == o.client_key()
            && self.request_timeout == o.request_timeout
            && match (&self.on_retry, &o.on_retry) {
                (None, None) => true,
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                _ => false,
            }
    }
}

impl Eq for TransportOptions {}

/// A failure without a usable HTTP answer, or a body we refused. Messages name the method and
/// the URL (never its credentials), and never a header value.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("cannot initialise the HTTP client: {0}")]
    Init(String),

    /// No response: connect, TLS, timeout, reset, or the request could not be built.
    #[error("{method} {url}: {message}")]
    Request {
        method: String,
        url: String,
        message: String,
        retryable: bool,
        timeout: bool,
    },

    /// The body broke off or stalled while reading it.
    #[error("{url}: reading the response: {message}")]
    Body {
        url: String,
        message: String,
        timeout: bool,
    },

    /// A metadata body larger than its limit (nothing beyond the limit was read).
    #[error("{url}: response is larger than the {limit}-byte limit ({})", human_bytes(*limit))]
    TooLarge { url: String, limit: u64 },
}

impl TransportError {
    fn from_reqwest(method: &str, url: &str, e: reqwest::Error) -> TransportError {
        let retryable = retryable_error(&e);
        let timeout = e.is_timeout();
        TransportError::Request {
            method: method.to_string(),
            url: redact_url(url),
            message: error_chain(&e.without_url()),
            retryable,
            timeout,
        }
    }

    /// A failed read of a response body.
    pub fn body(url: &str, e: &std::io::Error) -> TransportError {
        TransportError::Body {
            url: redact_url(url),
            message: error_chain(e),
            timeout: is_timeout_io(e),
        }
    }

    /// What to tell the retry loop: `Some` for failures worth another attempt.
    pub fn retry(&self) -> Option<Retry> {
        match self {
            TransportError::Request {
                retryable: true,
                message,
                ..
            }
            | TransportError::Body { message, .. } => Some(Retry::new(message.clone())),
            _ => None,
        }
    }

    /// Did the server stall past a timeout?
    pub fn is_timeout(&self) -> bool {
        matches!(
            self,
            TransportError::Request { timeout: true, .. }
                | TransportError::Body { timeout: true, .. }
        )
    }
}

fn is_timeout_io(e: &std::io::Error) -> bool {
    if e.kind() == std::io::ErrorKind::TimedOut {
        return true;
    }
    let mut cur = e.get_ref().map(|r| r as &(dyn std::error::Error + 'static));
    while let Some(c) = cur {
        if let Some(r) = c.downcast_ref::<reqwest::Error>()
            && r.is_timeout()
        {
            return true;
        }
        if c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
        {
            return true;
        }
        cur = c.source();
    }
    false
}

/// The HTTP client plus the retry policy. Cheap to clone (one connection pool).
#[derive(Clone)]
pub struct Transport {
    client: Client,
    opts: TransportOptions,
}

impl fmt::Debug for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transport")
            .field("opts", &self.opts)
            .finish_non_exhaustive()
    }
}

/// Clients built so far, by their settings: a blocking `reqwest` client owns a runtime thread
/// and a connection pool, so calls with the same settings share one.
static CLIENTS: Mutex<Vec<(ClientKey, Client)>> = Mutex::new(Vec::new());

/// Connect timeout, read timeout, user agent.
type ClientKey = (Duration, Duration, String);

/// Options set by the command line for code that is not handed options explicitly.
static DEFAULTS: Mutex<Option<TransportOptions>> = Mutex::new(None);

/// Make `opts` what [`default_options`] returns (the CLI calls this once, from its flags).
pub fn set_default_options(opts: TransportOptions) {
    *DEFAULTS.lock().unwrap_or_else(|p| p.into_inner()) = Some(opts);
}

/// The options given to [`set_default_options`], else [`TransportOptions::default`].
pub fn default_options() -> TransportOptions {
    DEFAULTS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone()
        .unwrap_or_default()
}

impl Transport {
    /// A transport with these options; the HTTP client is shared with every other transport
    /// of the same timeouts and user agent.
    pub fn new(opts: TransportOptions) -> Result<Transport, TransportError> {
        let (connect, read, ua) = opts.client_key();
        let mut clients = CLIENTS.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, c)) = clients
            .iter()
            .find(|(k, _)| k.0 == connect && k.1 == read && k.2 == ua)
        {
            return Ok(Transport {
                client: c.clone(),
                opts,
            });
        }
        let client = Client::builder()
            .user_agent(ua)
            .connect_timeout(connect)
            // The blocking client applies this to the wait for headers and to each body read:
            // an idle timeout, not a limit on the whole transfer.
            .timeout(read)
            .tcp_keepalive(Duration::from_secs(30))
            .tcp_user_timeout(Duration::from_secs(120))
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| TransportError::Init(error_chain(&e)))?;
        clients.push(((connect, read, ua.to_string()), client.clone()));
        Ok(Transport { client, opts })
    }

    /// A transport with [`default_options`].
    pub fn from_defaults() -> Result<Transport, TransportError> {
        Transport::new(default_options())
    }

    /// To build requests with (`transport.client().get(url)`).
    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn options(&self) -> &TransportOptions {
        &self.opts
    }

    pub fn policy(&self) -> RetryPolicy {
        self.opts.policy()
    }

    /// Set the metadata (whole-request) timeout on a request.
    pub fn metadata(&self, rb: RequestBuilder) -> RequestBuilder {
        rb.timeout(self.opts.request_timeout)
    }

    /// The retry loop every client uses. Runs `op`; when `classify` says its result is worth
    /// retrying and retries are left, reports the retry, waits, and runs it again. Returns the
    /// last result otherwise (a retryable failure once retries are used up).
    pub fn retry<T, E>(
        &self,
        what: &str,
        mut op: impl FnMut() -> Result<T, E>,
        classify: impl Fn(&Result<T, E>) -> Option<Retry>,
    ) -> Result<T, E> {
        let policy = self.policy();
        let mut retries = 0;
        loop {
            let r = op();
            match classify(&r) {
                Some(retry) if retries < policy.retries => {
                    drop(r); // release a connection before sleeping
                    retries += 1;
                    let wait = policy.wait(retries, retry.after);
                    self.opts.report(&RetryEvent {
                        what: what.to_string(),
                        attempt: retries + 1,
                        max_attempts: policy.max_attempts(),
                        cause: retry.cause,
                        wait,
                    });
                    std::thread::sleep(wait);
                }
                _ => return r,
            }
        }
    }

    /// One attempt, no retry.
    pub fn send_once(&self, req: Request) -> Result<Response, TransportError> {
        let method = req.method().to_string();
        let url = req.url().to_string();
        self.client
            .execute(req)
            .map_err(|e| TransportError::from_reqwest(&method, &url, e))
    }

    /// Send the request `build` makes, retrying failures without an answer and retryable
    /// statuses (honouring `Retry-After`). `build` is called for each attempt, so bodies are
    /// replayed; only use it for idempotent requests or replayable bodies. Returns the final
    /// response whatever its status (a 503 once retries are used up, a 404, …).
    pub fn send(
        &self,
        mut build: impl FnMut() -> RequestBuilder,
    ) -> Result<Response, TransportError> {
        let first = build_request(build())?;
        let what = describe(first.method().as_str(), first.url().as_str());
        let mut pending = Some(first);
        self.retry(
            &what,
            || {
                let req = match pending.take() {
                    Some(r) => r,
                    None => build_request(build())?,
                };
                self.send_once(req)
            },
            classify_response,
        )
    }

    /// GET a metadata document: retried, whole-request timeout, body capped at `limit`.
    /// Returns the status, headers, final URL and body; the caller judges the status.
    pub fn get_capped(
        &self,
        mut build: impl FnMut() -> RequestBuilder,
        limit: u64,
    ) -> Result<Capped, TransportError> {
        let probe = build_request(build())?;
        let what = describe(probe.method().as_str(), probe.url().as_str());
        drop(probe);
        self.retry(
            &what,
            || {
                let resp = self.send_once(build_request(self.metadata(build()))?)?;
                let status = resp.status();
                let headers = resp.headers().clone();
                let url = resp.url().clone();
                let cap = if status.is_success() {
                    limit
                } else {
                    MAX_ERROR_BODY_BYTES
                };
                let body = read_capped(resp, cap)?;
                Ok(Capped {
                    status,
                    headers,
                    url,
                    body,
                })
            },
            |r: &Result<Capped, TransportError>| match r {
                Ok(c) => Retry::for_status(c.status, &c.headers),
                Err(e) => e.retry(),
            },
        )
    }
}

fn build_request(rb: RequestBuilder) -> Result<Request, TransportError> {
    rb.build().map_err(|e| {
        let url = e.url().map(|u| u.to_string()).unwrap_or_default();
        TransportError::from_reqwest("request", &url, e)
    })
}

/// A metadata response read into memory by [`Transport::get_capped`].
#[derive(Debug, Clone)]
pub struct Capped {
    pub status: reqwest::StatusCode,
    pub headers: reqwest::header::HeaderMap,
    /// After redirects.
    pub url: reqwest::Url,
    pub body: Vec<u8>,
}

/// The standard classification of one attempt: retryable status or retryable failure.
pub fn classify_response(r: &Result<Response, TransportError>) -> Option<Retry> {
    match r {
        Ok(resp) => Retry::for_status(resp.status(), resp.headers()),
        Err(e) => e.retry(),
    }
}

/// `GET https://host/path` (credentials removed), for messages.
pub fn describe(method: &str, url: &str) -> String {
    format!("{method} {}", redact_url(url))
}

/// Read a metadata body: at most `limit` bytes. A body that is larger (by its
/// `Content-Length`, or once `limit` bytes have been read) is refused with an error naming
/// the URL and the limit; memory stays bounded by `limit`.
pub fn read_capped(resp: Response, limit: u64) -> Result<Vec<u8>, TransportError> {
    let url = resp.url().to_string();
    let too_large = || TransportError::TooLarge {
        url: redact_url(&url),
        limit,
    };
    if resp.content_length().is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let hint = resp.content_length().unwrap_or(0).min(limit).min(1 << 20);
    let mut buf = Vec::with_capacity(usize::try_from(hint).unwrap_or(0));
    resp.take(limit.saturating_add(1))
        .read_to_end(&mut buf)
        .map_err(|e| TransportError::body(&url, &e))?;
    if buf.len() as u64 > limit {
        return Err(too_large());
    }
    Ok(buf)
}

/// `url` without `user:password@`. Text that is not a URL is returned with anything between
/// `://` and an `@` in its authority removed.
pub fn redact_url(url: &str) -> String {
    if let Ok(mut u) = reqwest::Url::parse(url) {
        if !u.username().is_empty() || u.password().is_some() {
            let _ = u.set_username("");
            let _ = u.set_password(None);
        }
        return u.to_string();
    }
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
            match rest[..end].rfind('@') {
                Some(at) => format!("{scheme}://{}", &rest[at + 1..]),
                None => url.to_string(),
            }
        }
        None => url.to_string(),
    }
}

/// Same origin: scheme, host and effective port (the scheme's default when none is written)
/// all equal. Credentials, auth challenges and pagination links are only trusted within one.
pub fn same_origin(a: &reqwest::Url, b: &reqwest::Url) -> bool {
    a.scheme().eq_ignore_ascii_case(b.scheme())
        && a.host_str().is_some()
        && a.host_str().map(str::to_ascii_lowercase) == b.host_str().map(str::to_ascii_lowercase)
        && a.port_or_known_default().is_some()
        && a.port_or_known_default() == b.port_or_known_default()
}

/// `e: cause: cause…`, skipping causes already in the text.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

fn human_bytes(n: u64) -> String {
    if n >= 1 << 20 && n.is_multiple_of(1 << 20) {
        format!("{} MiB", n >> 20)
    } else if n >= 1 << 10 && n.is_multiple_of(1 << 10) {
        format!("{} KiB", n >> 10)
    } else {
        format!("{n} bytes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_strips_userinfo_only() {
        assert_eq!(
            redact_url("https://bob:hunter2@idx.example/simple/six/?a=1"),
            "https://idx.example/simple/six/?a=1"
        );
        assert_eq!(
            redact_url("https://token@idx.example/x"),
            "https://idx.example/x"
        );
        assert_eq!(
            redact_url("http://127.0.0.1:5000/v2/"),
            "http://127.0.0.1:5000/v2/"
        );
        // Not parseable as a URL: still no userinfo.
        assert_eq!(redact_url("https://u:p@[bad/path@x"), "https://[bad/path@x");
        assert_eq!(redact_url("not a url"), "not a url");
    }

    #[test]
    fn retry_event_line() {
        let e = RetryEvent {
            what: describe("GET", "https://u:p@host/v2/a/manifests/1"),
            attempt: 2,
            max_attempts: 5,
            cause: "503 Service Unavailable".into(),
            wait: Duration::from_millis(1000),
        };
        assert_eq!(
            e.to_string(),
            "retrying GET https://host/v2/a/manifests/1: 503 Service Unavailable; attempt 2 of 5 in 1.0s"
        );
    }

    #[test]
    fn retry_loop_reports_and_stops() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let t = Transport::new(TransportOptions {
            retries: 2,
            backoff: Duration::from_millis(1),
            on_retry: Some(Arc::new(move |e: &RetryEvent| {
                s.lock().unwrap().push(e.clone())
            })),
            ..TransportOptions::default()
        })
        .unwrap();
        let mut calls = 0;
        let r: Result<(), &str> = t.retry(
            "op",
            || {
                calls += 1;
                Err("down")
            },
            |r| r.as_ref().err().map(|e| Retry::new(*e)),
        );
        assert_eq!(r, Err("down"));
        assert_eq!(calls, 3);
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[0].attempt, 2);
        assert_eq!(seen[1].attempt, 3);
        assert_eq!(seen[1].max_attempts, 3);
        assert_eq!(seen[1].wait, Duration::from_millis(2));
        // Not retryable: one call.
        let mut calls = 0;
        let _: Result<(), &str> = t.retry(
            "op",
            || {
                calls += 1;
                Err("404")
            },
            |_| None,
        );
        assert_eq!(calls, 1);
    }

    #[test]
    fn sizes_print_readably() {
        assert_eq!(human_bytes(4 << 20), "4 MiB");
        assert_eq!(human_bytes(64 << 10), "64 KiB");
        assert_eq!(human_bytes(1000), "1000 bytes");
    }
}
