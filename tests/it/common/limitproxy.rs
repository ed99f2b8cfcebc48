//! A proxy in front of the real registry that enforces one registry's upload rules, as the
//! hosted registries do, by refusing requests that break them:
//! - `max_body`: a request body over N bytes → 413 (GHCR's 4 MiB PATCH, Quay's per-PUT limit),
//! - `min_chunk`: a PATCH under N bytes followed by another PATCH in the same session → 400
//!   (ECR: only an upload's last chunk may be small),
//! - `no_patch`: any PATCH → 405 (Google Artifact Registry: no chunked uploads),
//! - `announce`: `OCI-Chunk-Min-Length` / `OCI-Chunk-Max-Length` added to the answer that opens
//!   an upload session (the distribution spec's way to say it).
//!
//! One request per connection (`Connection: close` both ways); bodies framed by
//! `Content-Length` or `Transfer-Encoding: chunked` (a streamed upload), forwarded with a length.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone, Default)]
pub struct Rules {
    pub max_body: Option<u64>,
    pub min_chunk: Option<u64>,
    pub no_patch: bool,
    pub announce: Option<(u64, u64)>,
}

/// What the proxy saw: one line per request ("PATCH /v2/… 4194304"), and what it refused.
#[derive(Default)]
struct Log {
    requests: Vec<String>,
    refused: Vec<String>,
    /// Upload session path → size of its last PATCH.
    last_patch: HashMap<String, u64>,
}

pub struct LimitProxy {
    port: u16,
    log: Arc<Mutex<Log>>,
}

impl LimitProxy {
    pub fn start(upstream_port: u16, rules: Rules) -> LimitProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let port = listener.local_addr().expect("addr").port();
        let log = Arc::new(Mutex::new(Log::default()));
        let l = log.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(client) = conn else { continue };
                let (l, rules) = (l.clone(), rules.clone());
                std::thread::spawn(move || {
                    let _ = serve(client, upstream_port, &rules, &l);
                });
            }
        });
        LimitProxy { port, log }
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// "METHOD path body-bytes" per request, in arrival order.
    pub fn requests(&self) -> Vec<String> {
        self.log.lock().unwrap().requests.clone()
    }

    /// The requests it refused, with the rule.
    pub fn refused(&self) -> Vec<String> {
        self.log.lock().unwrap().refused.clone()
    }

    /// Body sizes of the PATCH requests.
    pub fn patch_sizes(&self) -> Vec<u64> {
        self.requests()
            .iter()
            .filter(|r| r.starts_with("PATCH "))
            .filter_map(|r| r.rsplit(' ').next()?.parse().ok())
            .collect()
    }
}

fn read_body(r: &mut BufReader<TcpStream>, head: &[String]) -> std::io::Result<Vec<u8>> {
    let header = |name: &str| {
        head.iter().find_map(|h| {
            let (k, v) = h.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    };
    let mut body = Vec::new();
    if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        loop {
            let mut line = String::new();
            r.read_line(&mut line)?;
            let n = usize::from_str_radix(line.trim().split(';').next().unwrap_or("0"), 16)
                .map_err(std::io::Error::other)?;
            let mut chunk = vec![0u8; n + 2];
            r.read_exact(&mut chunk)?;
            body.extend_from_slice(&chunk[..n]);
            if n == 0 {
                break;
            }
        }
    } else if let Some(n) = header("content-length").and_then(|v| v.parse::<usize>().ok()) {
        body.resize(n, 0);
        r.read_exact(&mut body)?;
    }
    Ok(body)
}

fn answer(c: &mut TcpStream, status: &str, msg: &str) -> std::io::Result<()> {
    let body = format!("{{\"errors\":[{{\"code\":\"UNSUPPORTED\",\"message\":\"{msg}\"}}]}}");
    write!(
        c,
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

fn serve(client: TcpStream, upstream: u16, rules: &Rules, log: &Mutex<Log>) -> std::io::Result<()> {
    let mut r = BufReader::new(client.try_clone()?);
    let mut line = String::new();
    r.read_line(&mut line)?;
    let mut head = Vec::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h)?;
        if h.trim().is_empty() {
            break;
        }
        head.push(h.trim_end().to_string());
    }
    let body = read_body(&mut r, &head)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let target = parts.next().unwrap_or("").to_string();
    let path = target.split('?').next().unwrap_or("").to_string();
    let mut c = client;
    let refuse = {
        let mut l = log.lock().unwrap();
        l.requests.push(format!("{method} {path} {}", body.len()));
        let mut refuse = None;
        if method == "PATCH" && rules.no_patch {
            refuse = Some((
                "405 Method Not Allowed",
                "chunked uploads are not supported",
            ));
        } else if let Some(max) = rules.max_body
            && body.len() as u64 > max
        {
            refuse = Some(("413 Payload Too Large", "request body over the limit"));
        } else if method == "PATCH"
            && let Some(min) = rules.min_chunk
        {
            if l.last_patch.get(&path).is_some_and(|n| *n < min) {
                refuse = Some(("400 Bad Request", "a chunk before this one was too small"));
            }
            l.last_patch.insert(path.clone(), body.len() as u64);
        }
        if let Some((_, why)) = refuse {
            l.refused
                .push(format!("{method} {path} {}: {why}", body.len()));
        }
        refuse
    };
    if let Some((status, why)) = refuse {
        return answer(&mut c, status, why);
    }

    let mut up = TcpStream::connect(("127.0.0.1", upstream))?;
    write!(up, "{method} {target} HTTP/1.1\r\n")?;
    for h in &head {
        let name = h
            .split(':')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if ["content-length", "transfer-encoding", "connection"].contains(&name.as_str()) {
            continue;
        }
        write!(up, "{h}\r\n")?;
    }
    write!(
        up,
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    up.write_all(&body)?;
    let mut resp = Vec::new();
    up.read_to_end(&mut resp)?;
    // the upstream answer, with the announced chunk bounds on a new upload session
    let end = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(resp.len(), |p| p + 2);
    let (resp_head, rest) = resp.split_at(end);
    c.write_all(resp_head)?;
    if let Some((min, max)) = rules.announce
        && method == "POST"
        && path.ends_with("/blobs/uploads/")
    {
        write!(
            c,
            "OCI-Chunk-Min-Length: {min}\r\nOCI-Chunk-Max-Length: {max}\r\n"
        )?;
    }
    c.write_all(rest)?;
    Ok(())
}
