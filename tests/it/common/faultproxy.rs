//! A seeded, fault-injecting HTTP/1.1 proxy between the client and a registry.
//!
//! It frames requests (head + `Content-Length` body; our client never sends chunked bodies)
//! and draws one fate per request from a seeded generator: pass, cut the connection after N
//! bytes of the request, stall after N bytes and then cut, or answer `503` without
//! forwarding (like a load balancer shedding load). With `strip_mount`, `?mount=` becomes
//! `?nomnt=` on request lines, so the real registry ignores the mount and opens an upload
//! session: a registry without cross-repo mounting, answering 202 (as ECR does).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct FaultConfig {
    pub seed: u64,
    /// Probability that a request is cut after a random number of request bytes.
    pub drop_prob: f64,
    /// Cut points are uniform in `[1, max_drop_after]`.
    pub max_drop_after: u64,
    /// Probability that a request stalls (then is cut) after a random number of bytes.
    pub stall_prob: f64,
    pub stall: Duration,
    /// Probability that a request is answered `503` without being forwarded.
    pub error_prob: f64,
    /// The first this-many requests always pass.
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

struct Shared {
    rng: Mutex<Rng>,
    count: AtomicUsize,
    fates: Arc<Mutex<Vec<Fate>>>,
    cfg: FaultConfig,
}

impl Shared {
    fn draw(&self) -> Fate {
        let n = self.count.fetch_add(1, Ordering::Relaxed);
        let (r, at) = {
            let mut rng = self.rng.lock().unwrap();
            let r = rng.unit();
            (r, 1 + rng.next() % self.cfg.max_drop_after.max(1))
        };
        let c = &self.cfg;
        let fate = if n < c.clean_first {
            Fate::Pass
        } else if r < c.drop_prob {
            Fate::DropAfter(at)
        } else if r < c.drop_prob + c.stall_prob {
            Fate::StallAfter(at)
        } else if r < c.drop_prob + c.stall_prob + c.error_prob {
            Fate::Error503
        } else {
            Fate::Pass
        };
        self.fates.lock().unwrap().push(fate);
        fate
    }
}

impl FaultProxy {
    pub fn start(upstream_port: u16, cfg: FaultConfig) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let port = listener.local_addr().expect("addr").port();
        let stop = Arc::new(AtomicBool::new(false));
        let fates = Arc::new(Mutex::new(Vec::new()));
        let shared = Arc::new(Shared {
            rng: Mutex::new(Rng(cfg.seed)),
            count: AtomicUsize::new(0),
            fates: fates.clone(),
            cfg,
        });
        let st = stop.clone();
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if st.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(client) = conn else { continue };
                let shared = shared.clone();
                std::thread::spawn(move || serve(client, upstream_port, &shared));
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

    /// Fates drawn so far, one per request.
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

fn serve(client: TcpStream, upstream_port: u16, shared: &Shared) {
    let Ok(upstream) = TcpStream::connect(("127.0.0.1", upstream_port)) else {
        return;
    };
    let (Ok(c2), Ok(u2), Ok(c3)) = (client.try_clone(), upstream.try_clone(), client.try_clone())
    else {
        return;
    };
    // upstream → client: plain copy (responses are never faulted; requests are).
    let back = std::thread::spawn(move || {
        let (mut from, mut to) = (u2, c2);
        let _ = std::io::copy(&mut from, &mut to);
        let _ = to.shutdown(Shutdown::Both);
        let _ = from.shutdown(Shutdown::Both);
    });
    let _ = forward_requests(BufReader::new(client), c3, upstream.try_clone(), shared);
    let _ = upstream.shutdown(Shutdown::Both);
    let _ = back.join();
}

/// Forward requests one at a time, applying a fate to each. Returns when a side closes
/// or a fate cuts the connection.
fn forward_requests(
    mut from: BufReader<TcpStream>,
    mut client_w: TcpStream,
    upstream: std::io::Result<TcpStream>,
    shared: &Shared,
) -> std::io::Result<()> {
    let mut to = upstream?;
    let cfg = &shared.cfg;
    loop {
        // Request head.
        let mut head = Vec::new();
        let mut content_length = 0u64;
        loop {
            let mut line = Vec::new();
            if from.read_until(b'\n', &mut line)? == 0 {
                return Ok(());
            }
            if head.is_empty() && cfg.strip_mount {
                rewrite(
                    &mut line,
                    b"/blobs/uploads/?mount=",
                    b"/blobs/uploads/?nomnt=",
                );
            }
            let text = String::from_utf8_lossy(&line).to_ascii_lowercase();
            if let Some(v) = text.strip_prefix("content-length:") {
                content_length = v.trim().parse().unwrap_or(0);
            }
            let end = line == b"\r\n";
            head.extend_from_slice(&line);
            if end {
                break;
            }
        }
        let fate = shared.draw();
        if fate == Fate::Error503 {
            std::io::copy(&mut (&mut from).take(content_length), &mut std::io::sink())?;
            let body = r#"{"errors":[{"code":"UNAVAILABLE","message":"injected fault"}]}"#;
            write!(
                client_w,
                "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )?;
            continue;
        }
        let limit = match fate {
            Fate::DropAfter(n) | Fate::StallAfter(n) => n,
            _ => u64::MAX,
        };
        // Head then body, cut at `limit` bytes of this request.
        let total = head.len() as u64 + content_length;
        let mut body = (&mut from).take(content_length);
        let mut sent = 0u64;
        let mut pending: Vec<u8> = head;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            if pending.is_empty() {
                let n = body.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                pending.extend_from_slice(&buf[..n]);
            }
            let allowed = (limit - sent).min(pending.len() as u64) as usize;
            to.write_all(&pending[..allowed])?;
            sent += allowed as u64;
            pending.drain(..allowed);
            if sent >= limit && sent < total {
                if let Fate::StallAfter(_) = fate {
                    std::thread::sleep(cfg.stall);
                }
                let _ = client_w.shutdown(Shutdown::Both);
                return Ok(());
            }
        }
    }
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
