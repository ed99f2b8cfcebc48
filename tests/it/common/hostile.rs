//! A loopback HTTP/1.1 server driven by a closure, for tests that play the attacker (or the
//! honest server next to one): it logs every request with its headers, so a test can assert
//! that a secret never reached it. One connection per request. It stops when dropped, and on
//! its own after two minutes.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A request as received.
#[derive(Clone, Debug)]
pub struct Req {
    pub method: String,
    /// Path and query, e.g. `/simple/six/?x=1`.
    pub path: String,
    pub headers: Vec<(String, String)>,
}

impl Req {
    /// A header's value (name matched case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The whole request head as text, to search for leaked secrets.
    pub fn text(&self) -> String {
        let mut s = format!("{} {}\n", self.method, self.path);
        for (k, v) in &self.headers {
            s.push_str(&format!("{k}: {v}\n"));
        }
        s
    }
}

/// What to answer.
#[derive(Clone, Debug)]
pub enum Resp {
    /// Status, headers, body (sent with its Content-Length).
    Full(u16, Vec<(String, String)>, Vec<u8>),
    /// 200 with no Content-Length: up to `n` bytes of `x`, until the client goes away.
    Endless(u64),
}

impl Resp {
    pub fn ok(body: impl Into<Vec<u8>>) -> Resp {
        Resp::Full(200, vec![], body.into())
    }
    pub fn status(code: u16) -> Resp {
        Resp::Full(code, vec![], format!("status {code}\n").into_bytes())
    }
    pub fn header(self, k: &str, v: &str) -> Resp {
        match self {
            Resp::Full(s, mut h, b) => {
                h.push((k.to_string(), v.to_string()));
                Resp::Full(s, h, b)
            }
            r => r,
        }
    }
}

type Handler = Arc<dyn Fn(&Req) -> Resp + Send + Sync>;

pub struct Server {
    addr: std::net::SocketAddr,
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<Vec<Req>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    pub fn start(handler: impl Fn(&Req) -> Resp + Send + Sync + 'static) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");
        let stop = Arc::new(AtomicBool::new(false));
        let log: Arc<Mutex<Vec<Req>>> = Arc::default();
        let handler: Handler = Arc::new(handler);
        let (st, lg) = (stop.clone(), log.clone());
        let thread = std::thread::spawn(move || {
            let born = Instant::now();
            while !st.load(Ordering::Relaxed) && born.elapsed() < Duration::from_secs(120) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let (st, lg, h) = (st.clone(), lg.clone(), handler.clone());
                        std::thread::spawn(move || serve(conn, &*h, &st, &lg));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Server {
            addr,
            stop,
            log,
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:port`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `127.0.0.1:port`
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn requests(&self) -> Vec<Req> {
        self.log.lock().unwrap().clone()
    }

    /// Every request head, as one text.
    pub fn all_text(&self) -> String {
        self.requests().iter().map(Req::text).collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A port nothing listens on (bound, then closed).
pub fn closed_port_url() -> String {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    drop(l);
    format!("http://{addr}")
}

fn serve(
    conn: TcpStream,
    handler: &(dyn Fn(&Req) -> Resp + Send + Sync),
    stop: &AtomicBool,
    log: &Mutex<Vec<Req>>,
) {
    let _ = conn.set_nonblocking(false);
    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
    let mut reader = BufReader::new(conn.try_clone().expect("clone"));
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let path = parts.next().unwrap_or("").to_string();
    let mut headers = Vec::new();
    let mut content_length = 0usize;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
            break;
        }
        if let Some((k, v)) = h.trim_end().split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                content_length = v.trim().parse().unwrap_or(0);
            }
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    if content_length > 0 {
        let mut body = vec![0u8; content_length.min(1 << 20)];
        let _ = std::io::Read::read_exact(&mut reader, &mut body);
    }
    let req = Req {
        method,
        path,
        headers,
    };
    log.lock().unwrap().push(req.clone());
    let mut w = conn;
    match handler(&req) {
        Resp::Full(status, headers, body) => {
            let mut head = format!(
                "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n",
                body.len()
            );
            for (k, v) in headers {
                head.push_str(&format!("{k}: {v}\r\n"));
            }
            head.push_str("\r\n");
            let _ = w.write_all(head.as_bytes());
            if method_has_body(&req.method) {
                let _ = w.write_all(&body);
            }
        }
        Resp::Endless(len) => {
            let _ = w.write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n");
            let chunk = vec![b'x'; 64 * 1024];
            let mut left = len;
            while left > 0 && !stop.load(Ordering::Relaxed) {
                let k = left.min(chunk.len() as u64) as usize;
                if w.write_all(&chunk[..k]).is_err() {
                    break;
                }
                left -= k as u64;
            }
        }
    }
    let _ = w.flush();
    let _ = w.shutdown(Shutdown::Both);
}

fn method_has_body(m: &str) -> bool {
    m != "HEAD"
}
