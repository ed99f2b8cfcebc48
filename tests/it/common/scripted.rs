//! A scripted HTTP/1.1 server on 127.0.0.1: answers the n-th request with the n-th [`Reply`]
//! (the last one repeats), one connection per request, and logs request lines. It stops when
//! dropped, and on its own after two minutes; stalled replies give up after 30 s.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
pub enum Reply {
    /// Status, extra headers, body (with its Content-Length).
    Full(u16, Vec<(String, String)>, Vec<u8>),
    /// 200 with no Content-Length: `len` bytes of `x`, then close. Stops early when the client
    /// goes away.
    Endless(u64),
    /// 200 with `Content-Length: 100`, 10 bytes, then nothing until the client gives up.
    Stall,
}

impl Reply {
    pub fn status(code: u16) -> Reply {
        Reply::Full(code, vec![], format!("status {code}\n").into_bytes())
    }
    pub fn ok(body: &[u8]) -> Reply {
        Reply::Full(200, vec![], body.to_vec())
    }
    pub fn header(self, k: &str, v: &str) -> Reply {
        match self {
            Reply::Full(s, mut h, b) => {
                h.push((k.to_string(), v.to_string()));
                Reply::Full(s, h, b)
            }
            r => r,
        }
    }
}

pub struct Scripted {
    addr: std::net::SocketAddr,
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<Vec<String>>>,
    /// Bytes written for `Endless` replies.
    sent: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Scripted {
    pub fn start(script: Vec<Reply>) -> Scripted {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(Mutex::new(Vec::new()));
        let sent = Arc::new(AtomicU64::new(0));
        let (st, lg, sn) = (stop.clone(), log.clone(), sent.clone());
        let thread = std::thread::spawn(move || {
            let born = Instant::now();
            let mut n = 0usize;
            while !st.load(Ordering::Relaxed) && born.elapsed() < Duration::from_secs(120) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let reply = script[n.min(script.len() - 1)].clone();
                        n += 1;
                        let (st, lg, sn) = (st.clone(), lg.clone(), sn.clone());
                        std::thread::spawn(move || serve(conn, reply, &st, &lg, &sn));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Scripted {
            addr,
            stop,
            log,
            sent,
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

    /// Request lines received, e.g. `GET /x HTTP/1.1`.
    pub fn requests(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    pub fn endless_bytes_sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }
}

impl Drop for Scripted {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(
    conn: TcpStream,
    reply: Reply,
    stop: &AtomicBool,
    log: &Mutex<Vec<String>>,
    sent: &AtomicU64,
) {
    let _ = conn.set_nonblocking(false);
    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
    let mut reader = BufReader::new(conn.try_clone().expect("clone"));
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    log.lock().unwrap().push(line.trim_end().to_string());
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
            break;
        }
    }
    let mut w = conn;
    match reply {
        Reply::Full(status, headers, body) => {
            let mut head = format!(
                "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n",
                body.len()
            );
            for (k, v) in headers {
                head.push_str(&format!("{k}: {v}\r\n"));
            }
            head.push_str("\r\n");
            let _ = w.write_all(head.as_bytes());
            let _ = w.write_all(&body);
        }
        Reply::Endless(len) => {
            let _ = w.write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n");
            let chunk = vec![b'x'; 64 * 1024];
            let mut left = len;
            while left > 0 && !stop.load(Ordering::Relaxed) {
                let k = left.min(chunk.len() as u64) as usize;
                if w.write_all(&chunk[..k]).is_err() {
                    break;
                }
                sent.fetch_add(k as u64, Ordering::Relaxed);
                left -= k as u64;
            }
        }
        Reply::Stall => {
            let _ = w.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789");
            let _ = w.flush();
            let t = Instant::now();
            while !stop.load(Ordering::Relaxed) && t.elapsed() < Duration::from_secs(30) {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
    let _ = w.flush();
    let _ = w.shutdown(Shutdown::Both);
}
