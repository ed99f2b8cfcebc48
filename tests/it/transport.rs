//! The shared transport (`mlimg::transport`) against a scripted server on 127.0.0.1: retries
//! and their reporting, Retry-After, `--retries 0`, size caps, the idle timeout.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mlimg::registry::{ClientOptions, Reference, RegistryClient};
use mlimg::transport::{RetryEvent, Transport, TransportError, TransportOptions, read_capped};

use crate::common::scripted::{Reply, Scripted};
use crate::hub_build::HubProject;

/// Options that record every retry event; waits start at 10 ms.
fn recording(retries: u32) -> (TransportOptions, Arc<Mutex<Vec<RetryEvent>>>) {
    let events = Arc::new(Mutex::new(Vec::new()));
    let e = events.clone();
    let opts = TransportOptions {
        retries,
        backoff: Duration::from_millis(10),
        on_retry: Some(Arc::new(move |ev: &RetryEvent| {
            e.lock().unwrap().push(ev.clone())
        })),
        ..TransportOptions::default()
    };
    (opts, events)
}

const MANIFEST: &str = r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[]}"#;

#[test]
fn registry_503_then_200_succeeds_and_the_retry_is_reported() {
    let server = Scripted::start(vec![Reply::status(503), Reply::ok(MANIFEST.as_bytes())]);
    let (transport, events) = recording(4);
    let c = RegistryClient::new(ClientOptions {
        docker_config_dir: None,
        transport,
        ..ClientOptions::default()
    })
    .unwrap();
    let r = Reference::parse(&format!("{}/acme/app:v1", server.host())).unwrap();
    let m = c.fetch_manifest(&r).expect("second attempt succeeds");
    assert_eq!(m.bytes, MANIFEST.as_bytes());
    assert_eq!(server.requests().len(), 2, "{:?}", server.requests());
    let events = events.lock().unwrap();
    assert_eq!(events.len(), 1, "{events:?}");
    let line = events[0].to_string();
    assert_eq!(
        line,
        format!(
            "retrying GET http://{}/v2/acme/app/manifests/v1: 503 Service Unavailable; attempt 2 of 5 in 0.0s",
            server.host()
        )
    );
}

#[test]
fn retry_after_is_honoured() {
    let server = Scripted::start(vec![
        Reply::status(429).header("Retry-After", "1"),
        Reply::ok(b"fine"),
    ]);
    let (opts, events) = recording(3);
    let t = Transport::new(opts).unwrap();
    let started = Instant::now();
    let url = format!("{}/x", server.url());
    let resp = t.send(|| t.client().get(&url)).expect("answered");
    assert_eq!(resp.status().as_u16(), 200);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "waited only {:?}",
        started.elapsed()
    );
    let events = events.lock().unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].wait, Duration::from_secs(1));
    assert_eq!(events[0].cause, "429 Too Many Requests");
}

#[test]
fn other_client_errors_are_not_retried() {
    let server = Scripted::start(vec![Reply::status(404), Reply::ok(b"never")]);
    let (opts, events) = recording(3);
    let t = Transport::new(opts).unwrap();
    let url = format!("{}/missing", server.url());
    let resp = t.send(|| t.client().get(&url)).expect("answered");
    assert_eq!(resp.status().as_u16(), 404);
    assert_eq!(server.requests().len(), 1);
    assert!(events.lock().unwrap().is_empty());
}

#[test]
fn no_retries_fails_at_once_naming_host_and_status() {
    let p = HubProject::new("revision = \"main\"");
    let server = Scripted::start(vec![Reply::status(503)]);
    let out = p
        .mlimg()
        .env("HF_ENDPOINT", server.url())
        .args(["lock", "--retries", "0"])
        .output()
        .expect("run mlimg");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert_eq!(server.requests().len(), 1, "{:?}", server.requests());
    assert!(stderr.contains(&server.host()), "{stderr}");
    assert!(stderr.contains("503"), "{stderr}");
    assert!(!stderr.contains("retrying"), "{stderr}");
}

#[test]
fn cli_prints_one_line_per_retry() {
    let p = HubProject::new("revision = \"main\"");
    let server = Scripted::start(vec![Reply::status(502)]);
    let out = p
        .mlimg()
        .env("HF_ENDPOINT", server.url())
        .args(["lock", "--retries", "2"])
        .output()
        .expect("run mlimg");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert_eq!(server.requests().len(), 3, "{:?}", server.requests());
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("retrying "))
        .collect();
    assert_eq!(lines.len(), 2, "{stderr}");
    assert!(
        lines[0].contains("502 Bad Gateway; attempt 2 of 3 in 0.5s"),
        "{stderr}"
    );
    assert!(lines[1].contains("attempt 3 of 3 in 1.0s"), "{stderr}");
    assert!(lines[0].contains(&server.host()), "{stderr}");
}

#[test]
fn a_body_over_the_cap_is_refused_with_bounded_memory() {
    // No Content-Length: the cap is enforced while reading.
    let server = Scripted::start(vec![Reply::Endless(1 << 30)]);
    let t = Transport::new(TransportOptions {
        retries: 0,
        ..TransportOptions::default()
    })
    .unwrap();
    let url = format!(
        "{}/huge",
        server.url().replace("http://", "http://user:secret@")
    );
    let resp = t.send_once(t.client().get(&url).build().unwrap()).unwrap();
    let err = read_capped(resp, 1 << 20).unwrap_err();
    assert!(matches!(err, TransportError::TooLarge { limit, .. } if limit == 1 << 20));
    let msg = err.to_string();
    assert!(msg.contains(&format!("{}/huge", server.url())), "{msg}");
    assert!(msg.contains("1 MiB"), "{msg}");
    assert!(!msg.contains("secret"), "{msg}");
    // The client stopped reading: the server could not push much more than the cap.
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        server.endless_bytes_sent() < 64 << 20,
        "server sent {} bytes",
        server.endless_bytes_sent()
    );

    // With a Content-Length over the cap, nothing is read.
    let big = vec![b'{'; (4 << 20) + 1];
    let server = Scripted::start(vec![Reply::ok(&big)]);
    let c = RegistryClient::new(ClientOptions {
        docker_config_dir: None,
        transport: TransportOptions {
            retries: 0,
            ..TransportOptions::default()
        },
        ..ClientOptions::default()
    })
    .unwrap();
    let r = Reference::parse(&format!("{}/acme/app:v1", server.host())).unwrap();
    let err = c.fetch_manifest(&r).unwrap_err().to_string();
    assert!(
        err.contains(&server.host()) && err.contains("acme/app") && err.contains("4 MiB"),
        "{err}"
    );
}

#[test]
fn a_stalled_server_hits_the_read_timeout() {
    let p = HubProject::new("revision = \"main\"");
    let server = Scripted::start(vec![Reply::Stall]);
    let started = Instant::now();
    let out = p
        .mlimg()
        .env("HF_ENDPOINT", server.url())
        .args(["lock", "--retries", "0", "--timeout", "1"])
        .output()
        .expect("run mlimg");
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(took < Duration::from_secs(15), "took {took:?}: {stderr}");
    assert!(stderr.contains("timed out"), "{stderr}");
    assert!(stderr.contains(&server.host()), "{stderr}");
}
