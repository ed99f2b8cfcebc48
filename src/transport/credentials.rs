//! Credentials for Python package indexes, kept out of URLs.
//!
//! An index URL may carry them (`https://user:token@host/simple`, from `PIP_INDEX_URL` or a
//! spec's `index_url`). [`remember_userinfo`] takes them out and files them under the URL's
//! origin (scheme, host, effective port); the URL goes on without them, so errors, logs,
//! `--json` and the lock never show them. A request is given them with [`authorize`] only when
//! it goes to that same origin: the index's pages and the wheel files they link there.
//! Entries of `~/.netrc` (or `$NETRC`) apply to the hosts they name, as pip does.

use std::fmt;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

use reqwest::Url;
use reqwest::blocking::RequestBuilder;

use super::same_origin;

/// A user name and password for HTTP Basic auth. `Debug` hides the password.
#[derive(Clone, PartialEq, Eq)]
pub struct BasicAuth {
    pub username: String,
    pub password: Option<String>,
}

impl fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BasicAuth")
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Origins with credentials taken from URLs (first one wins per origin).
static BY_ORIGIN: Mutex<Vec<(Url, BasicAuth)>> = Mutex::new(Vec::new());

/// `url` without its userinfo. Credentials it carried are remembered for its origin (unless
/// that origin has some already). Text that is not a URL comes back redacted, unremembered.
pub fn remember_userinfo(url: &str) -> String {
    let Ok(mut u) = Url::parse(url) else {
        return super::redact_url(url);
    };
    if u.username().is_empty() && u.password().is_none() {
        return url.to_string();
    }
    let auth = BasicAuth {
        username: percent_decode(u.username()),
        password: u.password().map(percent_decode),
    };
    let _ = u.set_username("");
    let _ = u.set_password(None);
    if matches!(u.scheme(), "http" | "https") {
        let mut store = BY_ORIGIN.lock().unwrap_or_else(|p| p.into_inner());
        if !store.iter().any(|(o, _)| same_origin(o, &u)) {
            store.push((u.clone(), auth));
        }
    }
    u.to_string()
}

/// The credentials for a request to `url`: those remembered for its origin, else the netrc
/// entry for its host.
pub fn for_url(url: &Url) -> Option<BasicAuth> {
    if !matches!(url.scheme(), "http" | "https") {
        return None;
    }
    let remembered = BY_ORIGIN
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .find(|(o, _)| same_origin(o, url))
        .map(|(_, a)| a.clone());
    remembered.or_else(|| netrc().and_then(|n| n.lookup(url.host_str()?)))
}

/// `rb` (a request to `url`) with the credentials for `url`'s origin, if any.
pub fn authorize(rb: RequestBuilder, url: &Url) -> RequestBuilder {
    match for_url(url) {
        Some(a) => rb.basic_auth(a.username, a.password),
        None => rb,
    }
}

/// `%XX` escapes decoded (what a URL's user and password hold).
pub(crate) fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// A parsed netrc file: `machine NAME login USER password PASS`, and `default`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Netrc {
    machines: Vec<(Option<String>, BasicAuth)>,
}

impl Netrc {
    /// Parses netrc text (`macdef` bodies are skipped; unknown tokens ignored).
    pub fn parse(text: &str) -> Netrc {
        let mut machines: Vec<(Option<String>, BasicAuth)> = Vec::new();
        let mut lines = text.lines();
        let mut tokens: Vec<String> = Vec::new();
        // macdef bodies run to the next empty line: handle line by line.
        while let Some(line) = lines.next() {
            let words = line.split_whitespace();
            for w in words {
                if w == "macdef" {
                    for l in lines.by_ref() {
                        if l.trim().is_empty() {
                            break;
                        }
                    }
                    break;
                }
                if w.starts_with('#') && tokens.last().is_none_or(|t| t != "password") {
                    break;
                }
                tokens.push(w.to_string());
            }
        }
        let mut it = tokens.into_iter();
        while let Some(t) = it.next() {
            match t.as_str() {
                "machine" => {
                    let Some(name) = it.next() else { break };
                    machines.push((
                        Some(name.to_ascii_lowercase()),
                        BasicAuth {
                            username: String::new(),
                            password: None,
                        },
                    ));
                }
                "default" => machines.push((
                    None,
                    BasicAuth {
                        username: String::new(),
                        password: None,
                    },
                )),
                "login" | "password" | "account" => {
                    let Some(v) = it.next() else { break };
                    if let Some((_, a)) = machines.last_mut() {
                        match t.as_str() {
                            "login" => a.username = v,
                            "password" => a.password = Some(v),
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        Netrc { machines }
    }

    /// The entry for `host`, else the `default` entry.
    pub fn lookup(&self, host: &str) -> Option<BasicAuth> {
        let host = host.to_ascii_lowercase();
        let host = host.trim_start_matches('[').trim_end_matches(']');
        self.machines
            .iter()
            .find(|(m, _)| m.as_deref() == Some(host))
            .or_else(|| self.machines.iter().find(|(m, _)| m.is_none()))
            .map(|(_, a)| a.clone())
            .filter(|a| !a.username.is_empty() || a.password.is_some())
    }
}

/// `$NETRC`, else `~/.netrc`.
fn netrc_path() -> Option<PathBuf> {
    match std::env::var_os("NETRC") {
        Some(p) if !p.is_empty() => Some(PathBuf::from(p)),
        _ => dirs::home_dir().map(|h| h.join(".netrc")),
    }
}

/// The netrc file, read once (at most 1 MiB; a missing or unreadable file is no entries).
fn netrc() -> Option<&'static Netrc> {
    static NETRC: OnceLock<Option<Netrc>> = OnceLock::new();
    NETRC
        .get_or_init(|| {
            let path = netrc_path()?;
            let meta = std::fs::metadata(&path).ok()?;
            if !meta.is_file() || meta.len() > 1 << 20 {
                return None;
            }
            let text = std::fs::read_to_string(&path).ok()?;
            Some(Netrc::parse(&text))
        })
        .as_ref()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userinfo_is_taken_out_and_kept_for_its_origin_only() {
        let clean = remember_userinfo("https://bob:t%40ken@idx.creds-test.example/simple");
        assert_eq!(clean, "https://idx.creds-test.example/simple");
        let u = |s: &str| Url::parse(s).unwrap();
        let got = for_url(&u("https://idx.creds-test.example/files/a.whl")).unwrap();
        assert_eq!(got.username, "bob");
        assert_eq!(got.password.as_deref(), Some("t@ken"));
        assert!(!format!("{got:?}").contains("t@ken"));
        for other in [
            "http://idx.creds-test.example/files/a.whl",
            "https://idx.creds-test.example:8443/files/a.whl",
            "https://files.creds-test.example/a.whl",
        ] {
            assert_eq!(
                BY_ORIGIN
                    .lock()
                    .unwrap()
                    .iter()
                    .find(|(o, _)| same_origin(o, &u(other)))
                    .map(|(_, a)| a.username.clone()),
                None,
                "{other}"
            );
        }
        assert_eq!(
            remember_userinfo("https://x.example/s"),
            "https://x.example/s"
        );
        assert_eq!(remember_userinfo("not a url"), "not a url");
    }

    #[test]
    fn netrc_entries() {
        let n = Netrc::parse(
            "# comment\nmachine idx.example login alice password p#1\n\
             macdef init\ncd /\n\nmachine other.example\n  login bob\n  password pw2\n\
             default login anon password anon-pw\n",
        );
        let a = n.lookup("IDX.example").unwrap();
        assert_eq!(
            (a.username.as_str(), a.password.as_deref()),
            ("alice", Some("p#1"))
        );
        let b = n.lookup("other.example").unwrap();
        assert_eq!(
            (b.username.as_str(), b.password.as_deref()),
            ("bob", Some("pw2"))
        );
        assert_eq!(n.lookup("third.example").unwrap().username, "anon");
        assert_eq!(Netrc::parse("machine a login x").lookup("b"), None);
    }
}
