//! A seeded, fault-injecting TCP proxy between the client and a registry.
//!
//! Per accepted connection it draws one fate from a seeded generator: pass through, drop the
//! connection after N request bytes, stall after N bytes and then drop, or answer `503`.
//! With `strip_mount`, it rewrites `?mount=` to `?nomnt=` in requests (same length), so the
//! real registry ignores the mount and opens an upload session: a registry without
//! cross-repo mounting, answering 202 (as ECR does).

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct FaultConfig {
    pub seed: u64,
    /// Probability that a connection is cut after a random number of request bytes.
    pub drop_prob: f64,
    /// Cut points are uniform in `[1, max_drop_after]`.
    pub max_drop_after: u64,
    /// Probability that a connection stalls (then is cut) after a random number of bytes.
    pub stall_prob: f64,
    pub stall: Duration,
    /// Probability that a connection's first request is answered `503` without forwarding.
    pub error_prob: f64,
    /// Connections before this many are always passed through (let auth/HEAD settle).
    pub clean_first: usize,
    pub strip_mount: bool,
}

impl FaultConfig {
    pub fn clean() -> FaultConfig {
        FaultConfig {
            seed: 0,
            drop_prob: 0.0,
            max_drop_after: 0,
            stall_prob: 0.0,
            stall: Duration::ZERO,
            error_prob: 0.0,
            clean_first: 0,
            strip_mount: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    Pass,
    DropAfter(u64),
    StallAfter(u64),
    Error503,
}

/// splitmix64: tiny, seeded, good enough for choosing faults.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

pub struct FaultProxy {
    port: u16,
    stop: Arc<AtomicBool>,
    fates: Arc<Mutex<Vec<Fate>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FaultProxy {
    pub fn start(upstream_port: u16, cfg: FaultConfig) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let port = listener.local_addr().expect("addr").port();
        let stop = Arc::new(AtomicBool::new(false));
        let fates = Arc::new(Mutex::new(Vec::new()));
        let (st, fa) = (stop.clone(), fates.clone());
        let thread = std::thread::spawn(move || {
            let mut rng = Rng(cfg.seed);
            let count = AtomicUsize::new(0);
            for conn in listener.incoming() {
                if st.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(client) = conn else { continue };
                let n = count.fetch_add(1, Ordering::Relaxed);
                let r = rng.unit();
                let at = 1 + rng.next() % cfg.max_drop_after.max(1);
                let fate = if n < cfg.clean_first {
                    Fate::Pass
                } else if r < cfg.drop_prob {
                    Fate::DropAfter(at)
                } else if r < cfg.drop_prob + cfg.stall_prob {
                    Fate::StallAfter(at)
                } else if r < cfg.drop_prob + cfg.stall_prob + cfg.error_prob {
                    Fate::Error503
                } else {
                    Fate::Pass
                };
                fa.lock().unwrap().push(fate);
                let cfg = cfg.clone();
                std::thread::spawn(move || serve(client, upstream_port, fate, &cfg));
            }
        });
        FaultProxy {
            port,
            stop,
            fates,
            thread: Some(thread),
        }
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Fates drawn so far, one per connection.
    pub fn fates(&self) -> Vec<Fate> {
        self.fates.lock().unwrap().clone()
    }

    pub fn faults(&self) -> usize {
        self.fates().iter().filter(|f| **f != Fate::Pass).count()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(mut client: TcpStream, upstream_port: u16, fate: Fate, cfg: &FaultConfig) {
    if fate == Fate::Error503 {
        let mut buf = [0u8; 4096];
        let _ = client.set_read_timeout(Some(Duration::from_secs(2)));
        let _ = client.read(&mut buf);
        let body = r#"{"errors":[{"code":"UNAVAILABLE","message":"injected fault"}]}"#;
        let _ = write!(
            client,
            "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = client.shutdown(Shutdown::Both);
        return;
    }
    let Ok(upstream) = TcpStream::connect(("127.0.0.1", upstream_port)) else {
        return;
    };
    let (Ok(c2), Ok(u2)) = (client.try_clone(), upstream.try_clone()) else {
        return;
    };
    // upstream → client: plain copy.
    let back = std::thread::spawn(move || {
        let (mut from, mut to) = (u2, c2);
        let _ = std::io::copy(&mut from, &mut to);
        let _ = to.shutdown(Shutdown::Both);
        let _ = from.shutdown(Shutdown::Both);
    });
    // client → upstream: count bytes, apply the fate.
    let (mut from, mut to) = (client, upstream);
    let limit = match fate {
        Fate::DropAfter(n) | Fate::StallAfter(n) => n,
        _ => u64::MAX,
    };
    let mut sent = 0u64;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if cfg.strip_mount {
            rewrite(&mut buf[..n], b"/blobs/uploads/?mount=", b"/blobs/uploads/?nomnt=");
        }
        let allowed = (limit - sent).min(n as u64) as usize;
        if to.write_all(&buf[..allowed]).is_err() {
            break;
        }
        sent += allowed as u64;
        if sent >= limit {
            if let Fate::StallAfter(_) = fate {
                std::thread::sleep(cfg.stall);
            }
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
    let _ = back.join();
}

fn rewrite(buf: &mut [u8], from: &[u8], to: &[u8]) {
    debug_assert_eq!(from.len(), to.len());
    let mut i = 0;
    while i + from.len() <= buf.len() {
        if &buf[i..i + from.len()] == from {
            buf[i..i + from.len()].copy_from_slice(to);
            i += from.len();
        } else {
            i += 1;
        }
    }
}
