//! Credentials (docker config.json, credential helpers) and the auth challenge/token flow.
//!
//! Secrets live only in [`Secret`], whose `Debug` and `Display` print `<redacted>`.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::transport::{MAX_TOKEN_BYTES, Transport, error_chain, read_capped};

use base64::Engine as _;

use super::error::{RegistryError, Result};
use super::reference::DOCKER_HUB;

/// Docker's key for Docker Hub in config.json and for credential helpers.
pub const DOCKER_HUB_CONFIG_KEY: &str = "https://index.docker.io/v1/";

/// A string that never prints.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// What we can present to a registry or its token service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Credential {
    Basic {
        username: String,
        password: Secret,
    },
    /// A refresh token (`identitytoken` in config.json, or a helper answering `<token>`).
    IdentityToken(Secret),
}

impl Credential {
    pub fn basic_header(&self) -> Option<String> {
        match self {
            Credential::Basic { username, password } => Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD
                    .encode(format!("{username}:{}", password.expose()))
            )),
            Credential::IdentityToken(_) => None,
        }
    }
}

/// Where to look for credentials.
#[derive(Clone, Debug)]
pub struct CredentialStore {
    /// Folder holding `config.json`; `None` = no config file (anonymous unless helpers apply).
    pub config_dir: Option<PathBuf>,
    /// Folder to find `docker-credential-*` in before `$PATH` (tests; bundled helpers).
    pub helper_dir: Option<PathBuf>,
}

#[derive(serde::Deserialize, Default)]
struct DockerConfig {
    #[serde(default)]
    auths: HashMap<String, AuthEntry>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: HashMap<String, String>,
}

#[derive(serde::Deserialize, Default)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    identitytoken: Option<String>,
}

/// `https://host/v1/` → `host`; docker's Hub aliases → `docker.io`.
fn normalize_key(key: &str) -> String {
    let k = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let host = k.split('/').next().unwrap_or(k);
    match host {
        "index.docker.io" | "registry-1.docker.io" | "docker.io" => DOCKER_HUB.to_string(),
        h => h.to_string(),
    }
}

/// The server string docker hands to helpers for a registry.
pub fn helper_server_url(registry: &str) -> String {
    if registry == DOCKER_HUB {
        DOCKER_HUB_CONFIG_KEY.to_string()
    } else {
        registry.to_string()
    }
}

impl CredentialStore {
    /// `$DOCKER_CONFIG`, else `~/.docker`.
    pub fn default_config_dir() -> Option<PathBuf> {
        if let Some(d) = std::env::var_os("DOCKER_CONFIG") {
            return Some(PathBuf::from(d));
        }
        dirs::home_dir().map(|h| h.join(".docker"))
    }

    fn load(&self) -> Result<(Option<PathBuf>, DockerConfig)> {
        let Some(dir) = &self.config_dir else {
            return Ok((None, DockerConfig::default()));
        };
        let path = dir.join("config.json");
        match std::fs::read(&path) {
            Ok(bytes) => {
                let cfg = serde_json::from_slice(&bytes).map_err(|e| {
                    RegistryError::DockerConfig {
                        path: path.clone(),
                        // serde_json's message names line/column, never the value.
                        reason: e.to_string(),
                    }
                })?;
                Ok((Some(path), cfg))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Ok((None, DockerConfig::default()))
            }
            Err(e) => Err(RegistryError::Io { path, source: e }),
        }
    }

    /// Credentials for a registry (as written in references: `docker.io`, `host:port`).
    /// `Ok(None)` means anonymous.
    pub fn lookup(&self, registry: &str) -> Result<Option<Credential>> {
        let (path, cfg) = self.load()?;
        let want = normalize_key(registry);
        // 1. a per-registry helper
        if let Some((_, helper)) = cfg
            .cred_helpers
            .iter()
            .find(|(k, _)| normalize_key(k) == want)
        {
            return self.run_helper(helper, &want);
        }
        // 2. inline auths (exact key first, then normalized match)
        let entry = cfg.auths.get(registry).or_else(|| {
            cfg.auths
                .iter()
                .find(|(k, _)| normalize_key(k) == want)
                .map(|(_, v)| v)
        });
        if let Some(e) = entry {
            let path = path.clone().unwrap_or_default();
            if let Some(tok) = e.identitytoken.as_deref().filter(|t| !t.is_empty()) {
                return Ok(Some(Credential::IdentityToken(Secret::new(tok))));
            }
            if let Some(a) = e.auth.as_deref().filter(|a| !a.is_empty()) {
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(a.trim())
                    .map_err(|_| RegistryError::DockerConfig {
                        path: path.clone(),
                        reason: format!("auths[{registry:?}].auth is not valid base64"),
                    })?;
                let s = String::from_utf8(decoded).map_err(|_| RegistryError::DockerConfig {
                    path: path.clone(),
                    reason: format!("auths[{registry:?}].auth is not UTF-8"),
                })?;
                let (u, p) = s
                    .split_once(':')
                    .ok_or_else(|| RegistryError::DockerConfig {
                        path: path.clone(),
                        reason: format!("auths[{registry:?}].auth is not user:password"),
                    })?;
                return Ok(Some(Credential::Basic {
                    username: u.to_string(),
                    password: Secret::new(p),
                }));
            }
            if let (Some(u), Some(p)) = (&e.username, &e.password) {
                return Ok(Some(Credential::Basic {
                    username: u.clone(),
                    password: Secret::new(p.clone()),
                }));
            }
        }
        // 3. the default store
        if let Some(store) = cfg.creds_store.as_deref().filter(|s| !s.is_empty()) {
            return self.run_helper(store, &want);
        }
        Ok(None)
    }

    fn helper_program(&self, helper: &str) -> PathBuf {
        let name = format!("docker-credential-{helper}");
        if let Some(dir) = &self.helper_dir {
            let p = dir.join(&name);
            if p.exists() {
                return p;
            }
        }
        PathBuf::from(name)
    }

    /// `docker-credential-<helper> get` with the server URL on stdin.
    fn run_helper(&self, helper: &str, registry: &str) -> Result<Option<Credential>> {
        let err = |reason: String| RegistryError::CredentialHelper {
            host: registry.to_string(),
            helper: helper.to_string(),
            reason,
        };
        if helper.contains('/') || helper.contains('\\') {
            return Err(err("helper names cannot contain path separators".into()));
        }
        let mut child = Command::new(self.helper_program(helper))
            .arg("get")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| err(format!("cannot run it: {e}")))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(helper_server_url(registry).as_bytes())
                .map_err(|e| err(format!("cannot write to it: {e}")))?;
        }
        let out = child
            .wait_with_output()
            .map_err(|e| err(format!("cannot wait for it: {e}")))?;
        if !out.status.success() {
            let msg = String::from_utf8_lossy(&out.stdout);
            if msg.contains("credentials not found") {
                return Ok(None);
            }
            // stderr is the helper's own diagnostic; keep it short and never echo stdout,
            // which might carry a secret on a half-failed run.
            let stderr = String::from_utf8_lossy(&out.stderr);
            let first = stderr
                .lines()
                .next()
                .unwrap_or("")
                .chars()
                .take(200)
                .collect::<String>();
            return Err(err(format!("{} ({first})", out.status)));
        }
        #[derive(serde::Deserialize)]
        struct HelperOut {
            #[serde(rename = "Username", default)]
            username: String,
            #[serde(rename = "Secret")]
            secret: String,
        }
        let parsed: HelperOut = serde_json::from_slice(&out.stdout)
            .map_err(|_| err("output is not {\"Username\",\"Secret\"} JSON".into()))?;
        if parsed.username == "<token>" {
            Ok(Some(Credential::IdentityToken(Secret::new(parsed.secret))))
        } else {
            Ok(Some(Credential::Basic {
                username: parsed.username,
                password: Secret::new(parsed.secret),
            }))
        }
    }
}

/// A parsed `WWW-Authenticate` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

impl Challenge {
    pub fn parse(header: &str) -> Option<Challenge> {
        let header = header.trim();
        let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
        if scheme.eq_ignore_ascii_case("basic") {
            return Some(Challenge::Basic);
        }
        if !scheme.eq_ignore_ascii_case("bearer") {
            return None;
        }
        let params = parse_params(rest);
        let realm = params.get("realm")?.clone();
        Some(Challenge::Bearer {
            realm,
            service: params.get("service").cloned(),
        })
    }
}

/// `k="v",k2=v2` with quoted values that may contain commas.
fn parse_params(s: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            break;
        }
        let mut val = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => {
                        if let Some(n) = chars.next() {
                            val.push(n)
                        }
                    }
                    '"' => break,
                    c => val.push(c),
                }
            }
        } else {
            while let Some(c) = chars.peek() {
                if *c == ',' {
                    break;
                }
                val.push(*c);
                chars.next();
            }
        }
        out.insert(key.trim().to_ascii_lowercase(), val.trim().to_string());
    }
    out
}

/// A bearer token with its expiry.
#[derive(Clone)]
pub struct Token {
    pub value: Secret,
    pub expires: Instant,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("value", &self.value)
            .field("expires", &self.expires)
            .finish()
    }
}

/// What a token request needs.
pub struct TokenRequest<'a> {
    /// Registry host, for error messages.
    pub host: &'a str,
    pub realm: &'a str,
    pub service: Option<&'a str>,
    pub scopes: &'a [String],
    pub cred: Option<&'a Credential>,
    /// May credentials go to this realm over plain HTTP (loopback / insecure registries)?
    pub plain_http_ok: &'a dyn Fn(&reqwest::Url) -> bool,
}

/// Longest token lifetime believed (a day); a token claiming more is asked for again then.
const MAX_TOKEN_LIFETIME_SECS: u64 = 24 * 3600;

/// Fetch a token from the realm for the given scopes (retried like any request: the GET is
/// idempotent and the refresh-token POST's small body is replayed). The answer is read up to
/// [`MAX_TOKEN_BYTES`].
pub fn fetch_token(transport: &Transport, tr: &TokenRequest) -> Result<Token> {
    let TokenRequest {
        host,
        realm,
        service,
        scopes,
        cred,
        plain_http_ok,
    } = *tr;
    let http = transport.client();
    let auth_err = |reason: String| RegistryError::Auth {
        host: host.to_string(),
        reason,
    };
    let mut url = reqwest::Url::parse(realm)
        .map_err(|e| auth_err(format!("token realm {realm:?} is not a URL: {e}")))?;
    if cred.is_some() && url.scheme() != "https" && !plain_http_ok(&url) {
        return Err(auth_err(format!(
            "refusing to send credentials to token realm {realm} over plain HTTP"
        )));
    }
    let resp = match cred {
        Some(Credential::IdentityToken(tok)) => {
            let mut form: Vec<(&str, &str)> = vec![
                ("grant_type", "refresh_token"),
                ("refresh_token", tok.expose()),
                ("client_id", "mlimg"),
            ];
            if let Some(s) = service {
                form.push(("service", s));
            }
            let joined = scopes.join(" ");
            if !scopes.is_empty() {
                form.push(("scope", &joined));
            }
            // application/x-www-form-urlencoded, encoded by Url's query serializer.
            let mut enc = url.clone();
            enc.set_query(None);
            enc.query_pairs_mut().extend_pairs(form.iter());
            let body = enc.query().unwrap_or("").to_string();
            transport.send(|| {
                transport.metadata(
                    http.post(url.clone())
                        .header(
                            reqwest::header::CONTENT_TYPE,
                            "application/x-www-form-urlencoded",
                        )
                        .body(body.clone()),
                )
            })
        }
        _ => {
            {
                let mut q = url.query_pairs_mut();
                if let Some(s) = service {
                    q.append_pair("service", s);
                }
                for s in scopes {
                    q.append_pair("scope", s);
                }
            }
            let basic = match cred.and_then(|c| c.basic_header()) {
                Some(h) => {
                    let mut v = reqwest::header::HeaderValue::from_str(&h).map_err(|_| {
                        auth_err("credential contains characters not allowed in a header".into())
                    })?;
                    v.set_sensitive(true);
                    Some(v)
                }
                None => None,
            };
            transport.send(|| {
                let req = transport.metadata(http.get(url.clone()));
                match &basic {
                    Some(v) => req.header(reqwest::header::AUTHORIZATION, v.clone()),
                    None => req,
                }
            })
        }
    };
    let resp = resp.map_err(|e| auth_err(format!("token request failed: {}", error_chain(&e))))?;
    let status = resp.status();
    if !status.is_success() {
        return Err(auth_err(format!(
            "token service answered {status}{}",
            if cred.is_some() {
                " (check the credentials for this registry)"
            } else {
                " (no credentials found for this registry)"
            }
        )));
    }
    #[derive(serde::Deserialize)]
    struct TokenResp {
        #[serde(default)]
        token: Option<String>,
        #[serde(default)]
        access_token: Option<String>,
        #[serde(default)]
        expires_in: Option<u64>,
    }
    let bytes = read_capped(resp, MAX_TOKEN_BYTES)
        .map_err(|e| auth_err(format!("token service: {}", error_chain(&e))))?;
    let body: TokenResp = serde_json::from_slice(&bytes)
        .map_err(|_| auth_err("token service answered with invalid JSON".into()))?;
    let value = body
        .token
        .filter(|t| !t.is_empty())
        .or(body.access_token)
        .ok_or_else(|| auth_err("token service answered without a token".into()))?;
    // Docker's default lifetime is 60 s; refresh a little early. The lifetime is the
    // server's word: keep it within a day, so any number (up to u64::MAX) is fine.
    let life = body
        .expires_in
        .unwrap_or(60)
        .clamp(10, MAX_TOKEN_LIFETIME_SECS);
    let now = Instant::now();
    Ok(Token {
        value: Secret::new(value),
        expires: now
            .checked_add(Duration::from_secs(life - 5))
            .unwrap_or(now),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let c = Credential::Basic {
            username: "bob".into(),
            password: Secret::new("hunter2-very-secret"),
        };
        let dbg = format!(
            "{c:?} {:?}",
            Credential::IdentityToken(Secret::new("tok-xyz"))
        );
        assert!(!dbg.contains("hunter2"), "{dbg}");
        assert!(!dbg.contains("tok-xyz"), "{dbg}");
        assert!(dbg.contains("bob"));
        let t = Token {
            value: Secret::new("bearer-abc"),
            expires: Instant::now(),
        };
        assert!(!format!("{t:?}").contains("bearer-abc"));
    }

    #[test]
    fn credentials_never_go_to_a_plain_http_realm() {
        let http = Transport::new(Default::default()).unwrap();
        let cred = Credential::Basic {
            username: "u".into(),
            password: Secret::new("pw-123"),
        };
        let err = fetch_token(
            &http,
            &TokenRequest {
                host: "reg.example.com",
                realm: "http://auth.example.com/token",
                service: None,
                scopes: &[],
                cred: Some(&cred),
                plain_http_ok: &|_| false,
            },
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("plain HTTP") && msg.contains("reg.example.com"),
            "{msg}"
        );
        assert!(!msg.contains("pw-123"));
    }

    #[test]
    fn challenge_parsing() {
        assert_eq!(
            Challenge::parse(
                r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/python:pull,push""#
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into())
            })
        );
        assert_eq!(
            Challenge::parse(r#"Basic realm="x""#),
            Some(Challenge::Basic)
        );
        assert_eq!(
            Challenge::parse("bearer realm=http://a/t"),
            Some(Challenge::Bearer {
                realm: "http://a/t".into(),
                service: None
            })
        );
        assert_eq!(Challenge::parse("Negotiate"), None);
    }

    #[test]
    fn config_lookup() {
        let dir = tempfile::tempdir().unwrap();
        let auth = base64::engine::general_purpose::STANDARD.encode("alice:pa:ss");
        std::fs::write(
            dir.path().join("config.json"),
            format!(
                r#"{{"auths":{{"https://index.docker.io/v1/":{{"auth":"{auth}"}},
                    "ghcr.io":{{"identitytoken":"idt"}},
                    "http://127.0.0.1:5000":{{"username":"u","password":"p"}}}}}}"#
            ),
        )
        .unwrap();
        let store = CredentialStore {
            config_dir: Some(dir.path().to_path_buf()),
            helper_dir: None,
        };
        assert_eq!(
            store.lookup("docker.io").unwrap(),
            Some(Credential::Basic {
                username: "alice".into(),
                password: Secret::new("pa:ss")
            })
        );
        assert_eq!(
            store.lookup("ghcr.io").unwrap(),
            Some(Credential::IdentityToken(Secret::new("idt")))
        );
        assert_eq!(
            store.lookup("127.0.0.1:5000").unwrap(),
            Some(Credential::Basic {
                username: "u".into(),
                password: Secret::new("p")
            })
        );
        assert_eq!(store.lookup("quay.io").unwrap(), None);
        let none = CredentialStore {
            config_dir: Some(dir.path().join("missing")),
            helper_dir: None,
        };
        assert_eq!(none.lookup("docker.io").unwrap(), None);
    }
}

#[cfg(test)]
mod proptests {
    //! `WWW-Authenticate` comes from whatever server answers: any header parses without a
    //! panic, into at most what it says, and a well-formed Bearer challenge round-trips.
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::default())]

        #[test]
        fn any_header_parses_without_panicking(h in "\\PC{0,400}") {
            if let Some(Challenge::Bearer { realm, service }) = Challenge::parse(&h) {
                prop_assert!(realm.len() <= h.len());
                prop_assert!(service.map_or(0, |s| s.len()) <= h.len());
            }
        }

        #[test]
        fn quoted_params_round_trip(
            realm in "https://[a-z]{1,12}\\.example/[a-z,= ]{0,20}",
            service in "[a-zA-Z0-9.,: =]{0,30}",
            extra in prop::collection::vec(("[a-z]{1,8}", "[a-z0-9 ,]{0,12}"), 0..6),
        ) {
            let mut h = format!("Bearer realm=\"{realm}\",service=\"{service}\"");
            for (k, v) in &extra {
                if k != "realm" && k != "service" {
                    h.push_str(&format!(",{k}=\"{v}\""));
                }
            }
            prop_assert_eq!(
                Challenge::parse(&h),
                Some(Challenge::Bearer {
                    realm: realm.trim().to_string(),
                    service: Some(service.trim().to_string()),
                })
            );
        }
    }
}
