//! The HTTP core: URLs, auth negotiation, error mapping, retries.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Instant;

use reqwest::blocking::{Client, RequestBuilder, Response};
use reqwest::header::{AUTHORIZATION, WWW_AUTHENTICATE};

use super::auth::{Challenge, Credential, CredentialStore, Token, TokenRequest, fetch_token};
use super::error::{Direction, RegistryCode, RegistryError, Result};
use super::reference::Reference;
use crate::transport::{
    MAX_ERROR_BODY_BYTES, Retry, Transport, TransportOptions, describe, read_capped, retry_after,
    same_origin,
};

#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Hosts (`host[:port]` as written in references) reached over plain HTTP.
    /// Loopback hosts always are.
    pub insecure_registries: Vec<String>,
    /// Folder holding `config.json`; default `$DOCKER_CONFIG` or `~/.docker`.
    pub docker_config_dir: Option<PathBuf>,
    /// Folder searched for `docker-credential-*` before `$PATH`.
    pub credential_helper_dir: Option<PathBuf>,
    /// Blobs uploaded at once (default 4).
    pub max_parallel_uploads: usize,
    /// `None`: one streamed PATCH then PUT per blob (works on ECR and Artifact Registry).
    /// `Some(n)`: chunked PATCHes of `n` bytes.
    pub chunk_size: Option<u64>,
    /// `host=kind` pairs giving a registry under another name the upload rules of a known one
    /// (`registry::REGISTRY_KINDS`); default: `$MLIMG_REGISTRY_KIND`.
    pub registry_kinds: Option<String>,
    /// Retries (per request, and per blob upload), backoff, timeouts, user agent, retry
    /// reporting: the one policy every network client uses. Small requests (manifests, HEAD,
    /// tokens, session setup) get its whole-request timeout; blob bodies only its idle timeout.
    pub transport: TransportOptions,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            insecure_registries: Vec::new(),
            docker_config_dir: CredentialStore::default_config_dir(),
            credential_helper_dir: None,
            max_parallel_uploads: 4,
            chunk_size: None,
            registry_kinds: std::env::var("MLIMG_REGISTRY_KIND")
                .ok()
                .filter(|s| !s.is_empty()),
            transport: TransportOptions::default(),
        }
    }
}

#[derive(Default)]
struct HostState {
    challenge: Option<Challenge>,
    /// Looked up once per host; `Some(None)` = anonymous.
    credential: Option<Option<Credential>>,
    tokens: HashMap<String, Token>,
}

pub struct RegistryClient {
    pub(crate) http: Client,
    pub(crate) transport: Transport,
    pub(crate) opts: ClientOptions,
    creds: CredentialStore,
    hosts: Mutex<HashMap<String, HostState>>,
    /// Where blobs were pushed before (for cross-repository mounts); none by default.
    pub(crate) memory: std::sync::OnceLock<std::sync::Arc<dyn super::BlobMemory>>,
    /// `MLIMG_REGISTRY_KIND`, parsed.
    kinds: Vec<(String, String)>,
    /// Manifests and configs by digest from earlier builds; none by default.
    pub(crate) store: std::sync::OnceLock<std::sync::Arc<dyn super::ContentStore>>,
}

impl std::fmt::Debug for RegistryClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryClient")
            .field("opts", &self.opts)
            .finish_non_exhaustive()
    }
}

/// Who we are talking to and on whose behalf: used for auth scopes and error messages.
#[derive(Debug, Clone)]
pub(crate) struct Ctx<'a> {
    pub direction: Direction,
    pub reference: &'a Reference,
    /// Token scopes, e.g. `repository:acme/app:pull,push`.
    pub scopes: Vec<String>,
}

impl<'a> Ctx<'a> {
    pub fn pull(r: &'a Reference) -> Ctx<'a> {
        Ctx {
            direction: Direction::Pull,
            reference: r,
            scopes: vec![format!("repository:{}:pull", r.repository)],
        }
    }
    pub fn push(r: &'a Reference) -> Ctx<'a> {
        Ctx {
            direction: Direction::Push,
            reference: r,
            scopes: vec![format!("repository:{}:pull,push", r.repository)],
        }
    }
    pub fn http_error(
        &self,
        method: &str,
        what: &str,
        status: reqwest::StatusCode,
        code: Option<RegistryCode>,
    ) -> RegistryError {
        RegistryError::Http(Box::new(super::error::HttpFailure {
            direction: self.direction,
            host: self.reference.registry.clone(),
            repository: self.reference.repository.clone(),
            method: method.to_string(),
            what: what.to_string(),
            status: status.to_string(),
            status_code: status.as_u16(),
            retry_after: None,
            code,
        }))
    }
    pub fn transport(
        &self,
        method: &str,
        what: &str,
        e: crate::transport::TransportError,
    ) -> RegistryError {
        RegistryError::Transport {
            direction: self.direction,
            host: self.reference.registry.clone(),
            repository: self.reference.repository.clone(),
            method: method.to_string(),
            what: what.to_string(),
            source: Box::new(e),
        }
    }
    pub fn stream(&self, what: &str, e: std::io::Error) -> RegistryError {
        RegistryError::Stream {
            direction: self.direction,
            host: self.reference.registry.clone(),
            repository: self.reference.repository.clone(),
            what: what.to_string(),
            source: e,
        }
    }
    pub fn invalid(&self, what: &str, reason: impl Into<String>) -> RegistryError {
        RegistryError::InvalidResponse {
            direction: self.direction,
            host: self.reference.registry.clone(),
            repository: self.reference.repository.clone(),
            what: what.to_string(),
            reason: reason.into(),
        }
    }
}

/// Loopback hosts: `localhost`, 127.0.0.0/8, `[::1]`, with or without a port.
pub fn is_loopback(host: &str) -> bool {
    let h = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        host.rsplit_once(':').map_or(host, |(h, p)| {
            if p.bytes().all(|b| b.is_ascii_digit()) {
                h
            } else {
                host
            }
        })
    };
    h == "localhost" || h.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

impl RegistryClient {
    pub fn new(opts: ClientOptions) -> Result<Self> {
        let kinds = super::limits::parse_kinds(opts.registry_kinds.as_deref().unwrap_or(""))
            .map_err(RegistryError::RegistryKind)?;
        let transport = Transport::new(opts.transport.clone())
            .map_err(|e| RegistryError::ClientInit(Box::new(e)))?;
        let http = transport.client().clone();
        let creds = CredentialStore {
            config_dir: opts.docker_config_dir.clone(),
            helper_dir: opts.credential_helper_dir.clone(),
        };
        Ok(RegistryClient {
            http,
            transport,
            opts,
            creds,
            hosts: Mutex::new(HashMap::new()),
            memory: std::sync::OnceLock::new(),
            kinds,
            store: std::sync::OnceLock::new(),
        })
    }

    /// The upload rules mlimg knows for `host` (before any request).
    pub fn limits(&self, host: &str) -> super::Limits {
        super::limits::for_host(host, &self.kinds)
    }

    /// Whether a layer can be streamed to `target` in one PATCH of unknown length.
    pub fn allows_streaming(&self, target: &Reference) -> bool {
        self.limits(&target.registry).allows_streaming()
    }

    /// Remember where pushed blobs went, and mount from there in later pushes (set once).
    pub fn set_blob_memory(&self, memory: std::sync::Arc<dyn super::BlobMemory>) {
        let _ = self.memory.set(memory);
    }

    /// Keep manifests and configs fetched by digest, and answer from them next time (set once).
    pub fn set_content_store(&self, store: std::sync::Arc<dyn super::ContentStore>) {
        let _ = self.store.set(store);
    }

    /// Stored bytes for `digest` that still hash to it.
    pub(crate) fn stored(&self, digest: &str) -> Option<Vec<u8>> {
        let bytes = self.store.get()?.get(digest)?;
        (crate::digest::sha256_digest(&bytes) == digest).then_some(bytes)
    }

    pub(crate) fn keep(&self, bytes: &[u8]) {
        if let Some(s) = self.store.get() {
            s.put(bytes);
        }
    }

    /// Records that `target`'s repository holds `digest` (no-op without a memory).
    pub(crate) fn remember_blob(&self, target: &Reference, digest: &str) {
        if let Some(m) = self.memory.get() {
            m.remember(&target.registry, &target.repository, digest);
        }
    }

    pub fn options(&self) -> &ClientOptions {
        &self.opts
    }

    pub(crate) fn scheme(&self, registry: &str) -> &'static str {
        if is_loopback(registry) || self.opts.insecure_registries.iter().any(|h| h == registry) {
            "http"
        } else {
            "https"
        }
    }

    /// `scheme://api_host/v2/<repo>/<tail>`
    pub(crate) fn url(&self, r: &Reference, tail: &str) -> Result<reqwest::Url> {
        let s = format!(
            "{}://{}/v2/{}/{}",
            self.scheme(&r.registry),
            r.api_host(),
            r.repository,
            tail
        );
        reqwest::Url::parse(&s).map_err(|e| RegistryError::InvalidReference {
            input: r.to_string(),
            reason: format!("cannot form URL: {e}"),
        })
    }

    /// `scheme://api_host/`: the origin whose responses may set the auth challenge and that
    /// credentials may be sent to.
    pub(crate) fn api_origin(&self, r: &Reference) -> Option<reqwest::Url> {
        reqwest::Url::parse(&format!("{}://{}/", self.scheme(&r.registry), r.api_host())).ok()
    }

    /// Is `url` on the registry's API origin (same scheme, host and effective port)?
    pub(crate) fn is_api_origin(&self, r: &Reference, url: &reqwest::Url) -> bool {
        self.api_origin(r).is_some_and(|o| same_origin(&o, url))
    }

    /// Resolve a `Location` header (absolute or relative) against the registry.
    pub(crate) fn resolve_location(
        &self,
        ctx: &Ctx,
        what: &str,
        resp: &Response,
    ) -> Result<reqwest::Url> {
        let loc = resp
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| ctx.invalid(what, "no Location header"))?;
        resp.url()
            .join(loc)
            .map_err(|e| ctx.invalid(what, format!("bad Location {loc:?}: {e}")))
    }

    fn credential_for(&self, st: &mut HostState, registry: &str) -> Result<Option<Credential>> {
        if let Some(c) = &st.credential {
            return Ok(c.clone());
        }
        let c = self.creds.lookup(registry)?;
        st.credential = Some(c.clone());
        Ok(c)
    }

    /// Add the Authorization header the host's last challenge calls for.
    /// Build the request, adding credentials only when it goes to the registry's own API
    /// host (never to a foreign upload `Location` or anything else).
    fn authorize(
        &self,
        ctx: &Ctx,
        method: &str,
        what: &str,
        rb: RequestBuilder,
    ) -> Result<reqwest::blocking::Request> {
        let mut req = rb.build().map_err(|e| {
            ctx.invalid(
                what,
                format!("cannot build the {method} request: {}", e.without_url()),
            )
        })?;
        if self.is_api_origin(ctx.reference, req.url())
            && let Some(h) = self.auth_header(ctx)?
        {
            let v =
                reqwest::header::HeaderValue::from_str(&h).map_err(|_| RegistryError::Auth {
                    host: ctx.reference.registry.clone(),
                    reason: "credential contains characters not allowed in a header".into(),
                })?;
            req.headers_mut().insert(AUTHORIZATION, v);
        }
        Ok(req)
    }

    /// The Authorization header value the host's last challenge calls for, if any.
    fn auth_header(&self, ctx: &Ctx) -> Result<Option<String>> {
        let registry = &ctx.reference.registry;
        let mut hosts = self.hosts.lock().unwrap_or_else(|p| p.into_inner());
        let st = hosts.entry(registry.clone()).or_default();
        let Some(ch) = st.challenge.clone() else {
            return Ok(None);
        };
        let cred = self.credential_for(st, registry)?;
        match ch {
            Challenge::Basic => Ok(cred.as_ref().and_then(|c| c.basic_header())),
            Challenge::Bearer { realm, service } => {
                let key = ctx.scopes.join(" ");
                let now = Instant::now();
                let tok = match st.tokens.get(&key) {
                    Some(t) if t.expires > now => t.clone(),
                    _ => {
                        let plain_ok = |u: &reqwest::Url| {
                            let host = match (u.host_str(), u.port()) {
                                (Some(h), Some(p)) => format!("{h}:{p}"),
                                (Some(h), None) => h.to_string(),
                                _ => return false,
                            };
                            self.scheme(&host) == "http"
                        };
                        let t = fetch_token(
                            &self.transport,
                            &TokenRequest {
                                host: registry,
                                realm: &realm,
                                service: service.as_deref(),
                                scopes: &ctx.scopes,
                                cred: cred.as_ref(),
                                plain_http_ok: &plain_ok,
                            },
                        )?;
                        st.tokens.insert(key, t.clone());
                        t
                    }
                };
                Ok(Some(format!("Bearer {}", tok.value.expose())))
            }
        }
    }

    /// Record a 401's challenge and drop the token that failed. Returns false when the
    /// challenge is unusable (then the 401 is final). Only the registry's own API origin may
    /// set the challenge: a 401 from a redirect target (a blob CDN, an upload host) naming
    /// some realm must not make us send the registry's credentials there.
    fn on_unauthorized(&self, ctx: &Ctx, resp: &Response) -> bool {
        if !self.is_api_origin(ctx.reference, resp.url()) {
            return false;
        }
        let Some(ch) = resp
            .headers()
            .get(WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .and_then(Challenge::parse)
        else {
            return false;
        };
        let mut hosts = self.hosts.lock().unwrap_or_else(|p| p.into_inner());
        let st = hosts.entry(ctx.reference.registry.clone()).or_default();
        st.tokens.remove(&ctx.scopes.join(" "));
        st.challenge = Some(ch);
        true
    }

    /// Send a request built by `build` with auth; on 401 learn the challenge (or refresh the
    /// token) and send once more. Returns the response whatever its status.
    pub(crate) fn send(
        &self,
        ctx: &Ctx,
        method: &str,
        what: &str,
        build: &mut dyn FnMut() -> Result<RequestBuilder>,
    ) -> Result<Response> {
        let mut tried_auth = false;
        loop {
            let req = self.authorize(ctx, method, what, build()?)?;
            let resp = self
                .transport
                .send_once(req)
                .map_err(|e| ctx.transport(method, what, e))?;
            if resp.status() == reqwest::StatusCode::UNAUTHORIZED
                && !tried_auth
                && self.on_unauthorized(ctx, &resp)
            {
                tried_auth = true;
                continue;
            }
            return Ok(resp);
        }
    }

    /// Like [`RegistryClient::send`] but never re-sends (for requests with streamed bodies):
    /// a 401 still updates the challenge / drops the stale token so the caller's next
    /// attempt authenticates afresh.
    pub(crate) fn send_once(
        &self,
        ctx: &Ctx,
        method: &str,
        what: &str,
        req: RequestBuilder,
    ) -> Result<Response> {
        let req = self.authorize(ctx, method, what, req)?;
        let resp = self
            .transport
            .send_once(req)
            .map_err(|e| ctx.transport(method, what, e))?;
        if resp.status() == reqwest::StatusCode::UNAUTHORIZED {
            self.on_unauthorized(ctx, &resp);
        }
        Ok(resp)
    }

    /// Turn a response whose status is not in `ok` into an error with the registry's code.
    pub(crate) fn expect(
        &self,
        ctx: &Ctx,
        method: &str,
        what: &str,
        resp: Response,
        ok: &[u16],
    ) -> Result<Response> {
        let status = resp.status();
        if ok.contains(&status.as_u16()) {
            return Ok(resp);
        }
        let after = retry_after(resp.headers(), std::time::SystemTime::now());
        // Error bodies are small; read at most the cap, and only for the registry's code.
        let body = read_capped(resp, MAX_ERROR_BODY_BYTES).unwrap_or_default();
        let mut err = ctx.http_error(method, what, status, RegistryCode::parse(&body));
        if let RegistryError::Http(h) = &mut err {
            h.retry_after = after;
        }
        Err(err)
    }

    /// The shared retry loop, for an operation on the registry: runs `f` again on transient
    /// failures ([`RegistryError::retry_hint`]), reporting each retry as `what`.
    pub(crate) fn retrying<T>(&self, what: &str, f: impl FnMut() -> Result<T>) -> Result<T> {
        self.transport.retry(what, f, |r| {
            r.as_ref().err().and_then(RegistryError::retry_hint)
        })
    }

    /// Tell the retry observer about a retry made by a caller's own loop (blob uploads).
    pub(crate) fn report_retry(
        &self,
        what: &str,
        retry: u32,
        cause: &RegistryError,
    ) -> std::time::Duration {
        let policy = self.transport.policy();
        let hint = cause
            .retry_hint()
            .unwrap_or_else(|| Retry::new(cause.to_string()));
        let wait = policy.wait(retry, hint.after);
        self.transport
            .options()
            .report(&crate::transport::RetryEvent {
                what: what.to_string(),
                attempt: retry + 1,
                max_attempts: policy.max_attempts(),
                cause: hint.cause,
                wait,
            });
        wait
    }

    /// One small request (no streamed body) with auth and status check; no retries.
    pub(crate) fn request_once(
        &self,
        ctx: &Ctx,
        method: &reqwest::Method,
        url: &reqwest::Url,
        what: &str,
        headers: &[(&str, &str)],
        ok: &[u16],
    ) -> Result<Response> {
        let m = method.to_string();
        let resp = self.send(ctx, &m, what, &mut || {
            let mut rb = self
                .transport
                .metadata(self.http.request(method.clone(), url.clone()));
            for (k, v) in headers {
                rb = rb.header(*k, *v);
            }
            Ok(rb)
        })?;
        self.expect(ctx, &m, what, resp, ok)
    }

    /// [`RegistryClient::request_once`] retried on transient failures.
    pub(crate) fn simple(
        &self,
        ctx: &Ctx,
        method: reqwest::Method,
        url: &reqwest::Url,
        what: &str,
        headers: &[(&str, &str)],
        ok: &[u16],
    ) -> Result<Response> {
        self.retrying(&describe(method.as_str(), url.as_str()), || {
            self.request_once(ctx, &method, url, what, headers, ok)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_only_for_the_api_origin() {
        let c = RegistryClient::new(ClientOptions {
            insecure_registries: vec!["reg.internal:5000".into()],
            docker_config_dir: None,
            ..ClientOptions::default()
        })
        .unwrap();
        let u = |s: &str| reqwest::Url::parse(s).unwrap();
        let r = |s: &str| Reference::parse(s).unwrap();
        let local = r("127.0.0.1:5000/a:1");
        assert!(c.is_api_origin(&local, &u("http://127.0.0.1:5000/v2/x")));
        assert!(!c.is_api_origin(&local, &u("http://127.0.0.1:5001/v2/x")));
        assert!(!c.is_api_origin(&local, &u("https://127.0.0.1:5000/v2/x")));
        let gcr = r("gcr.io/a/b:1");
        assert!(c.is_api_origin(&gcr, &u("https://gcr.io/v2/x")));
        assert!(c.is_api_origin(&gcr, &u("https://GCR.io:443/v2/x")));
        // Another port or plain HTTP on the same host is another origin.
        assert!(!c.is_api_origin(&gcr, &u("https://gcr.io:8443/v2/x")));
        assert!(!c.is_api_origin(&gcr, &u("http://gcr.io/v2/x")));
        assert!(!c.is_api_origin(&gcr, &u("https://storage.googleapis.com/up?x")));
        assert!(!c.is_api_origin(&gcr, &u("https://evil.example/gcr.io")));
        let v6 = r("[::1]:5000/a:1");
        assert!(c.is_api_origin(&v6, &u("http://[::1]:5000/v2/")));
        let insecure = r("reg.internal:5000/a:1");
        assert!(c.is_api_origin(&insecure, &u("http://reg.internal:5000/v2/")));
        assert!(!c.is_api_origin(&insecure, &u("https://reg.internal:5000/v2/")));
    }

    #[test]
    fn loopback_detection() {
        for h in [
            "localhost",
            "localhost:5000",
            "127.0.0.1",
            "127.3.4.5:80",
            "[::1]:5000",
            "[::1]",
        ] {
            assert!(is_loopback(h), "{h}");
        }
        for h in [
            "docker.io",
            "10.0.0.1:5000",
            "localhost.example.com",
            "[::2]:1",
            "gcr.io",
        ] {
            assert!(!is_loopback(h), "{h}");
        }
    }

    #[test]
    fn scheme_choice() {
        let c = RegistryClient::new(ClientOptions {
            insecure_registries: vec!["reg.internal:5000".into()],
            docker_config_dir: None,
            ..ClientOptions::default()
        })
        .unwrap();
        assert_eq!(c.scheme("127.0.0.1:5000"), "http");
        assert_eq!(c.scheme("reg.internal:5000"), "http");
        assert_eq!(c.scheme("reg.internal"), "https");
        assert_eq!(c.scheme("docker.io"), "https");
        let r = Reference::parse("python:3").unwrap();
        assert_eq!(
            c.url(&r, "manifests/3").unwrap().as_str(),
            "https://registry-1.docker.io/v2/library/python/manifests/3"
        );
    }
}
