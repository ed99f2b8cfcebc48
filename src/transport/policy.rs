//! The retry policy: which failures are worth another attempt, and how long to wait first.
//!
//! Retried: 5xx (except 501 and 505, which will not change), 429 and 408, connection
//! failures (refused, reset, closed early), timeouts, and bodies that break off mid-read.
//! Not retried: any other 4xx, TLS/URL/builder errors. Waits grow exponentially from
//! [`RetryPolicy::backoff_base`] up to [`RetryPolicy::max_backoff`]; a server's `Retry-After`
//! (seconds or an HTTP date) replaces the computed wait, capped at
//! [`RetryPolicy::max_retry_after`].

use std::time::{Duration, SystemTime};

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, RETRY_AFTER};

/// How many times to retry and how long to wait in between.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt (0 = one attempt only).
    pub retries: u32,
    /// Wait before the first retry; doubles on each further retry.
    pub backoff_base: Duration,
    pub max_backoff: Duration,
    /// Longest `Retry-After` honoured; longer requests are cut to this.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            retries: 4,
            backoff_base: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            max_retry_after: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// Computed wait before retry number `retry` (1-based): base·2^(retry-1), capped.
    pub fn backoff(&self, retry: u32) -> Duration {
        let factor = 1u32 << retry.saturating_sub(1).min(20);
        self.backoff_base
            .saturating_mul(factor)
            .min(self.max_backoff)
    }

    /// The wait before retry number `retry`: the server's `Retry-After` when it sent one
    /// (capped), else [`RetryPolicy::backoff`].
    pub fn wait(&self, retry: u32, retry_after: Option<Duration>) -> Duration {
        match retry_after {
            Some(d) => d.min(self.max_retry_after),
            None => self.backoff(retry),
        }
    }

    /// Attempts in all (the first one plus the retries).
    pub fn max_attempts(&self) -> u32 {
        self.retries.saturating_add(1)
    }
}

/// Why an attempt failed in a way worth retrying, and what the server asked us to wait.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retry {
    /// Short cause for the retry message, e.g. "503 Service Unavailable" or "connection reset".
    pub cause: String,
    /// From a `Retry-After` header.
    pub after: Option<Duration>,
}

impl Retry {
    pub fn new(cause: impl Into<String>) -> Retry {
        Retry {
            cause: cause.into(),
            after: None,
        }
    }

    /// For a response: `Some` when its status is retryable (with its `Retry-After`).
    pub fn for_status(status: StatusCode, headers: &HeaderMap) -> Option<Retry> {
        retryable_status(status).then(|| Retry {
            cause: status.to_string(),
            after: retry_after(headers, SystemTime::now()),
        })
    }
}

/// 5xx (but 501 Not Implemented and 505 HTTP Version Not Supported), 429 and 408.
pub fn retryable_status(status: StatusCode) -> bool {
    let s = status.as_u16();
    (status.is_server_error() && s != 501 && s != 505) || s == 429 || s == 408
}

/// Errors without an HTTP answer that may go away: timeouts, refused or reset connections,
/// requests or bodies cut off. Not: invalid URLs, redirect loops, TLS certificate problems
/// (which look like connect errors but name a certificate).
pub fn retryable_error(e: &reqwest::Error) -> bool {
    if e.is_builder() || e.is_redirect() || e.is_status() {
        return false;
    }
    if e.is_timeout() || e.is_body() || e.is_request() || e.is_decode() {
        return !mentions_certificate(e);
    }
    e.is_connect() && !mentions_certificate(e)
}

/// An I/O error while reading a body: all of them are transient for a network stream
/// (reset, closed early, timed out), except a reader that refuses data it was given.
pub fn retryable_io(e: &std::io::Error) -> bool {
    !matches!(
        e.kind(),
        std::io::ErrorKind::InvalidInput | std::io::ErrorKind::Unsupported
    )
}

fn mentions_certificate(e: &dyn std::error::Error) -> bool {
    let mut cur: Option<&dyn std::error::Error> = Some(e);
    while let Some(c) = cur {
        let m = c.to_string().to_ascii_lowercase();
        if m.contains("certificate") || m.contains("invalid peer") {
            return true;
        }
        cur = c.source();
    }
    false
}

/// The `Retry-After` of a response, as a wait from `now`.
pub fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    headers
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, now))
}

/// `Retry-After: 120` or `Retry-After: Wed, 21 Oct 2015 07:28:00 GMT` (a date in the past
/// means no wait). `None` when the value is neither.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let v = value.trim();
    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        return Some(Duration::from_secs(v.parse::<u64>().unwrap_or(u64::MAX)));
    }
    let at = parse_http_date(v)?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// An IMF-fixdate (RFC 9110 §5.6.7), the only HTTP date format senders may generate:
/// `Sun, 06 Nov 1994 08:49:37 GMT`.
pub fn parse_http_date(s: &str) -> Option<SystemTime> {
    let (_weekday, rest) = s.split_once(", ")?;
    let parts: Vec<&str> = rest.split(' ').collect();
    let [day, month, year, time, "GMT"] = parts.as_slice() else {
        return None;
    };
    let day: u32 = day.parse().ok().filter(|d| (1..=31).contains(d))?;
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ]
    .iter()
    .position(|m| m == month)? as u32
        + 1;
    let year: i64 = year.parse().ok().filter(|y| *y >= 1970)?;
    let hms: Vec<u64> = time
        .split(':')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    let [h, m, sec] = hms.as_slice() else {
        return None;
    };
    if *h > 23 || *m > 59 || *sec > 60 {
        return None;
    }
    let days = days_from_civil(year, month, day);
    let secs = u64::try_from(days).ok()? * 86_400 + h * 3600 + m * 60 + sec;
    SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(secs))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        let p = RetryPolicy {
            retries: 5,
            backoff_base: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            max_retry_after: Duration::from_secs(10),
        };
        assert_eq!(p.backoff(1), Duration::from_millis(100));
        assert_eq!(p.backoff(2), Duration::from_millis(200));
        assert_eq!(p.backoff(4), Duration::from_millis(800));
        assert_eq!(p.backoff(5), Duration::from_secs(1));
        assert_eq!(p.backoff(500), Duration::from_secs(1));
        assert_eq!(p.max_attempts(), 6);
        // Retry-After replaces the backoff, capped.
        assert_eq!(
            p.wait(1, Some(Duration::from_secs(3))),
            Duration::from_secs(3)
        );
        assert_eq!(
            p.wait(1, Some(Duration::from_secs(3600))),
            Duration::from_secs(10)
        );
        assert_eq!(p.wait(2, None), Duration::from_millis(200));
    }

    #[test]
    fn which_statuses_are_retried() {
        for s in [500, 502, 503, 504, 429, 408, 599] {
            assert!(retryable_status(StatusCode::from_u16(s).unwrap()), "{s}");
        }
        for s in [200, 301, 400, 401, 403, 404, 409, 416, 501, 505] {
            assert!(!retryable_status(StatusCode::from_u16(s).unwrap()), "{s}");
        }
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777); // 1994-11-06 08:49:37
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:50:07 GMT", now),
            Some(Duration::from_secs(30))
        );
        // In the past: no wait.
        assert_eq!(
            parse_retry_after("Sat, 05 Nov 1994 08:49:37 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(
            parse_http_date("Thu, 01 Jan 1970 00:00:00 GMT"),
            Some(SystemTime::UNIX_EPOCH)
        );
        assert_eq!(
            parse_http_date("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_480))
        );
        for bad in [
            "",
            "-1",
            "1.5",
            "soon",
            "Sun, 06 Nov 1994 08:49:37 UTC",
            "Sun, 32 Nov 1994 08:49:37 GMT",
        ] {
            assert_eq!(parse_retry_after(bad, now), None, "{bad:?}");
        }
    }

    #[test]
    fn status_retry_reads_retry_after() {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, "7".parse().unwrap());
        let r = Retry::for_status(StatusCode::TOO_MANY_REQUESTS, &h).unwrap();
        assert_eq!(r.cause, "429 Too Many Requests");
        assert_eq!(r.after, Some(Duration::from_secs(7)));
        assert_eq!(Retry::for_status(StatusCode::NOT_FOUND, &h), None);
    }
}
