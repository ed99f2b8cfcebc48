//! Hostile network peers (issue 9): each test runs a small loopback server that plays the
//! attacker — a blob CDN naming its own token realm, an upload host on another port, a token
//! service with absurd answers, an index linking local files, a Hub paginating elsewhere —
//! and checks that no secret reaches it and nothing panics or reads without bound.

use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use mlimg::registry::{
    BlobOrigin, ClientOptions, PushBlob, PushManifest, PushRequest, Reference, RegistryClient,
    sha256_digest,
};
use mlimg::transport::TransportOptions;

use crate::common::hostile::{Resp, Server};

// ---------------------------------------------------------------- registry

/// No retries (a hostile answer is not transient), no user config.
fn registry_client(config_dir: &Path) -> RegistryClient {
    RegistryClient::new(ClientOptions {
        docker_config_dir: Some(config_dir.to_path_buf()),
        transport: TransportOptions {
            retries: 0,
            backoff: Duration::from_millis(10),
            ..TransportOptions::default()
        },
        ..ClientOptions::default()
    })
    .expect("client")
}

/// config.json with a password for `host`; returns the secret bits to look for.
fn config_with_password(dir: &Path, host: &str) -> Vec<String> {
    let auth = base64::engine::general_purpose::STANDARD.encode("alice:s3cret-pw");
    std::fs::write(
        dir.join("config.json"),
        serde_json::json!({ "auths": { host: { "auth": auth } } }).to_string(),
    )
    .unwrap();
    vec!["s3cret-pw".into(), auth]
}

fn assert_no_secret(server: &Server, secrets: &[String], who: &str) {
    let seen = server.all_text();
    for s in secrets {
        assert!(
            !seen.contains(s.as_str()),
            "{who} received a secret:\n{seen}"
        );
    }
    for r in server.requests() {
        assert!(
            r.header("authorization").is_none(),
            "{who} received credentials:\n{seen}"
        );
    }
}

/// (item 6) A blob GET redirected to a CDN that answers 401 with its own Bearer realm: the
/// challenge must not replace the registry's, so no token request (with the registry's
/// password) goes to the attacker's realm.
#[test]
fn a_redirect_targets_401_cannot_hijack_the_auth_challenge() {
    let attacker = Server::start(|_| Resp::ok(r#"{"token":"attacker-token"}"#));
    let realm = format!("{}/token", attacker.url());
    let cdn = Server::start(move |_| {
        Resp::status(401).header(
            "WWW-Authenticate",
            &format!(r#"Bearer realm="{realm}",service="cdn""#),
        )
    });
    let cdn_url = cdn.url();
    let registry = Server::start(move |req| {
        if req.path.starts_with("/v2/app/blobs/") {
            Resp::Full(307, vec![], vec![]).header("Location", &format!("{cdn_url}/blob"))
        } else {
            Resp::status(404)
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let secrets = config_with_password(dir.path(), &registry.host());
    let client = registry_client(dir.path());
    let r = Reference::parse(&format!("{}/app:1", registry.host())).unwrap();
    let digest = format!("sha256:{}", "a".repeat(64));
    let err = client
        .blob_to_file(&r, &digest, 10, &dir.path().join("blob"))
        .expect_err("a 401 from the CDN is an error");
    assert!(err.to_string().contains("401"), "{err}");
    assert!(
        attacker.requests().is_empty(),
        "a token was asked of the CDN's realm:\n{}",
        attacker.all_text()
    );
    assert_no_secret(&cdn, &secrets, "the CDN");
}

/// (item 7) An upload `Location` on another port of the same host is another origin: the
/// session there gets no credentials. (The scheme and default-port cases — `http://` or
/// `:8443` for an `https` registry — are in the client's unit tests: they need TLS or port
/// 443 to play on loopback.)
#[test]
fn an_upload_location_on_another_origin_gets_no_credentials() {
    let attacker = Server::start(|req| match req.method.as_str() {
        "PUT" => Resp::Full(201, vec![], vec![]),
        _ => Resp::Full(202, vec![], vec![]).header("Range", "0-0"),
    });
    let loc = format!("{}/upload/1?state=x", attacker.url());
    let registry = Server::start(move |req| {
        if req.header("authorization").is_none() {
            return Resp::status(401).header("WWW-Authenticate", r#"Basic realm="reg""#);
        }
        match (req.method.as_str(), req.path.as_str()) {
            ("POST", p) if p.starts_with("/v2/app/blobs/uploads/") => {
                Resp::Full(202, vec![], vec![]).header("Location", &loc)
            }
            _ => Resp::status(404),
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let secrets = config_with_password(dir.path(), &registry.host());
    let blob = b"layer bytes".to_vec();
    let blob_path = dir.path().join("layer");
    std::fs::write(&blob_path, &blob).unwrap();
    let manifest = br#"{"schemaVersion":2}"#.to_vec();
    let req = PushRequest {
        target: Reference::parse(&format!("{}/app:1", registry.host())).unwrap(),
        tags: vec!["1".into()],
        blobs: vec![PushBlob {
            digest: sha256_digest(&blob),
            size: blob.len() as u64,
            media_type: "application/vnd.oci.image.layer.v1.tar".into(),
            origin: BlobOrigin::File(blob_path),
        }],
        manifests: vec![PushManifest {
            digest: sha256_digest(&manifest),
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            bytes: manifest,
        }],
    };
    let _ = registry_client(dir.path()).push(&req, &|_| {});
    assert!(
        !attacker.requests().is_empty(),
        "the upload never reached the Location (test set-up)"
    );
    assert_no_secret(&attacker, &secrets, "the upload host on another port");
    // The registry itself did get them (the credentials work).
    assert!(registry.all_text().contains(&secrets[1]));
}

/// A token service and a registry that asks for its token.
fn token_flow(token_reply: Resp) -> (Server, Server) {
    let tokens = Server::start(move |_| token_reply.clone());
    let realm = format!("{}/token", tokens.url());
    let manifest = r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000","size":2},"layers":[]}"#;
    let registry = Server::start(move |req| {
        if req.header("authorization").is_none() {
            return Resp::status(401).header(
                "WWW-Authenticate",
                &format!(r#"Bearer realm="{realm}",service="reg""#),
            );
        }
        Resp::ok(manifest).header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
    });
    (tokens, registry)
}

/// (item 16) `expires_in` near `u64::MAX` is accepted without overflow (no panic).
#[test]
fn a_token_that_never_expires_does_not_overflow() {
    let (_tokens, registry) = token_flow(Resp::ok(
        r#"{"token":"t0k","expires_in":18446744073709551615}"#,
    ));
    let dir = tempfile::tempdir().unwrap();
    let client = registry_client(dir.path());
    let r = Reference::parse(&format!("{}/app:1", registry.host())).unwrap();
    let got = std::thread::spawn(move || client.fetch_manifest(&r).map(|m| m.digest))
        .join()
        .expect("fetching with a huge expires_in panicked");
    got.expect("manifest");
    assert!(registry.all_text().contains("Bearer t0k"));
}

/// (item 16) A token service that streams without end is cut at the cap.
#[test]
fn an_endless_token_answer_is_capped() {
    let (tokens, registry) = token_flow(Resp::Endless(1 << 30));
    let dir = tempfile::tempdir().unwrap();
    let client = registry_client(dir.path());
    let r = Reference::parse(&format!("{}/app:1", registry.host())).unwrap();
    let err = client.fetch_manifest(&r).expect_err("no token");
    let msg = err.to_string();
    assert!(msg.contains("token"), "{msg}");
    assert!(msg.contains("KiB") || msg.contains("limit"), "{msg}");
    drop(tokens);
}

// ---------------------------------------------------------------- Hugging Face Hub

/// (item 9) A tree listing whose `Link: rel=next` points at another origin: the token must
/// not follow it (the listing fails instead).
#[test]
fn hub_pagination_to_another_origin_is_not_followed() {
    use mlimg::sources::hf::{self, HubOptions, HubSource};
    let attacker = Server::start(|_| Resp::ok("[]"));
    let next = format!(
        "<{}/api/models/acme/tiny/tree/x?cursor=2>; rel=\"next\"",
        attacker.url()
    );
    let oid = "1".repeat(40);
    let hub = Server::start(move |req| {
        if req.path.starts_with("/api/models/acme/tiny/tree/") {
            Resp::ok(format!(
                r#"[{{"type":"file","path":"config.json","size":2,"oid":"{oid}"}}]"#
            ))
            .header("Content-Type", "application/json")
            .header("Link", &next)
        } else {
            Resp::status(404)
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let opts = HubOptions {
        endpoint: hub.url(),
        token: Some("hf_s3cret_token".into()),
        cache_dir: dir.path().to_path_buf(),
        transport: TransportOptions {
            retries: 0,
            ..TransportOptions::default()
        },
    };
    let src = HubSource {
        repo: "acme/tiny".into(),
        revision: "2".repeat(40),
        subfolder: None,
        include: vec![],
        exclude: vec![],
    };
    let err = hf::resolve(&opts, &src).expect_err("next page on another origin");
    let msg = err.to_string();
    assert!(msg.contains("another origin"), "{msg}");
    assert!(!msg.contains("hf_s3cret_token"), "{msg}");
    assert!(
        hub.all_text().contains("hf_s3cret_token"),
        "the Hub itself gets the token (test set-up)"
    );
    assert!(
        !attacker.all_text().contains("hf_s3cret_token"),
        "the token followed the next link:\n{}",
        attacker.all_text()
    );
}

// ---------------------------------------------------------------- terminal escapes

/// What a hostile server puts in its error text: an OSC that retitles the terminal (ending in
/// BEL) and a CSI that clears the screen.
const EVIL: &str = "\u{1b}]0;pwned\u{7} \u{1b}[2J gotcha";

/// A registry answer carrying [`EVIL`]: a JSON error body (the escapes as `\u001b` escapes,
/// which decode to the raw bytes) or a plain-text body with the raw bytes.
fn evil_answer(status: u16, json: bool) -> Resp {
    if json {
        let body = serde_json::json!({
            "errors": [{"code": "DENIED", "message": EVIL, "detail": EVIL}],
        });
        Resp::Full(status, vec![], body.to_string().into_bytes())
            .header("Content-Type", "application/json")
    } else {
        Resp::Full(status, vec![], EVIL.as_bytes().to_vec()).header("Content-Type", "text/plain")
    }
}

/// HEAD of a blob: "not there" (so a push goes on to the upload, whose answer has a body).
fn missing_blob_or(req: &crate::common::hostile::Req, answer: Resp) -> Resp {
    if req.method == "HEAD" {
        Resp::Full(404, vec![], vec![])
    } else {
        answer
    }
}

fn assert_no_control_bytes(what: &str, bytes: &[u8]) {
    let text = String::from_utf8_lossy(bytes);
    assert!(
        !bytes.iter().any(|b| *b == 0x1b || *b == 0x07),
        "{what} carries terminal control bytes: {text:?}"
    );
}

/// (item 5) Registries answering 401 (with a token realm that answers 401 or 500) or 500,
/// their error text full of escape sequences, to a push and to a base image lookup (by
/// `build`, and by `lock` with its retry lines): neither stderr nor the `--json` output
/// carries an ESC or BEL byte, while the server's words are still shown (escaped).
#[test]
fn server_error_text_cannot_drive_the_terminal() {
    use crate::common::TestContext;
    let cx = TestContext::new();
    let app = cx.path().join("app");
    std::fs::create_dir_all(&app).unwrap();
    std::fs::write(app.join("serve.py"), "print('hi')\n").unwrap();
    type Handler = Box<dyn Fn(&crate::common::hostile::Req, &str) -> Resp + Send + Sync>;
    let scenarios: Vec<(&str, Handler)> = vec![
        (
            "500 with a JSON body",
            Box::new(|req, _| missing_blob_or(req, evil_answer(500, true))),
        ),
        (
            "500 with a text body",
            Box::new(|req, _| missing_blob_or(req, evil_answer(500, false))),
        ),
        (
            "401, then the token endpoint 401",
            Box::new(|req, me| {
                if req.path.starts_with("/token") {
                    evil_answer(401, true)
                } else {
                    evil_answer(401, true).header(
                        "WWW-Authenticate",
                        &format!("Bearer realm=\"{me}/token\",service=\"evil\""),
                    )
                }
            }),
        ),
        (
            "401 with a JSON body after a token was granted",
            Box::new(|req, me| {
                if req.path.starts_with("/token") {
                    Resp::ok(r#"{"token":"t"}"#).header("Content-Type", "application/json")
                } else {
                    missing_blob_or(
                        req,
                        evil_answer(401, true).header(
                            "WWW-Authenticate",
                            &format!("Bearer realm=\"{me}/token\",service=\"evil\""),
                        ),
                    )
                }
            }),
        ),
        (
            "401, then 500 from the token endpoint",
            Box::new(|req, me| {
                if req.path.starts_with("/token") {
                    evil_answer(500, false)
                } else {
                    evil_answer(401, false).header(
                        "WWW-Authenticate",
                        &format!("Bearer realm=\"{me}/token\",service=\"evil\""),
                    )
                }
            }),
        ),
    ];
    for (label, handler) in scenarios {
        let me: std::sync::Arc<std::sync::OnceLock<String>> = Default::default();
        let me2 = me.clone();
        let server = Server::start(move |req| handler(req, me2.get().map_or("", String::as_str)));
        me.set(server.url()).unwrap();
        for (kind, base) in [
            ("push", "scratch".to_string()),
            ("base", format!("{}/acme/base:1", server.host())),
        ] {
            let spec = cx.path().join(format!("{kind}.toml"));
            std::fs::write(
                &spec,
                format!(
                    "[image]\nname = \"{}/acme/app\"\ntags = [\"latest\"]\nbase = \"{base}\"\nplatforms = [\"linux/amd64\"]\n\n\
                     [app]\nsrc = \"app\"\ndest = \"/app\"\n",
                    server.host()
                ),
            )
            .unwrap();
            for json in [false, true] {
                let mut cmd = cx.mlimg();
                cmd.args(["build", "--push", "--retries", "0", "-f"])
                    .arg(&spec)
                    .env("DOCKER_CONFIG", cx.path().join("docker"));
                if json {
                    cmd.arg("--json");
                }
                let out = cmd.output().expect("run mlimg");
                let what = format!("{label}, {kind}, json={json}");
                assert_eq!(out.status.code(), Some(1), "{what}: {out:?}");
                assert_no_control_bytes(&format!("{what}: stderr"), &out.stderr);
                assert_no_control_bytes(&format!("{what}: stdout"), &out.stdout);
                // the server's words do reach the user, escaped
                let shown = if json {
                    let v: serde_json::Value =
                        serde_json::from_slice(&out.stdout).expect("a JSON error");
                    v["error"]["message"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string()
                } else {
                    String::from_utf8_lossy(&out.stderr).into_owned()
                };
                if label.contains("JSON body") {
                    assert!(shown.contains("pwned"), "{what}: {shown}");
                }
            }
        }
        assert!(
            !server.requests().is_empty(),
            "{label}: the server was asked"
        );
    }
}
