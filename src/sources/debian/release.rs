//! `InRelease` / `Release` + `Release.gpg`: OpenPGP verification against the base image's
//! keyring, and the parsed `Release` (suite, components, the SHA256 list of index files).
//!
//! OpenPGP is the `pgp` crate (rPGP): pure Rust, maintained, reads binary keyrings (`.gpg`,
//! concatenated transferable public keys, like `/usr/share/keyrings/debian-archive-keyring.gpg`)
//! and ASCII-armored ones (`.asc`), the cleartext signature framework of `InRelease`, and RSA
//! and Ed25519 signatures (Debian's archive keys are RSA-4096, its stable release keys Ed25519).
//!
//! Rules, the ones apt applies through gpgv/sqv for the plain case: a message is accepted when at
//! least one of its signatures verifies with a key or signing subkey held by the keyrings (a
//! subkey only with a valid binding signature from its primary key), made with a hash stronger
//! than SHA-1, by a key not expired at the signature's time (the primary key's expiry) and not
//! revoked (a revocation signature present in the keyring — the keyring is trusted as a whole, so
//! it is not checked further). Only the signed text is returned, so nothing outside the signature
//! can reach the `Release` parser.

use std::collections::BTreeMap;
use std::io::Cursor;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pgp::composed::{
    CleartextSignedMessage, Deserializable, DetachedSignature, SignedPublicKey, SignedPublicSubKey,
};
use pgp::crypto::hash::HashAlgorithm;
use pgp::packet::{Signature, SignatureType};
use pgp::types::{KeyDetails, KeyId};

use super::control::{ControlError, parse_paragraphs, value_lines};

/// Errors from verifying or parsing a `Release` file.
#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    #[error("keyring #{index} cannot be read: {message}")]
    Keyring { index: usize, message: String },
    #[error("the keyrings hold no OpenPGP public key")]
    NoKeys,
    #[error("not an OpenPGP cleartext-signed message (InRelease): {message}")]
    Malformed { message: String },
    #[error("the message carries no signature")]
    NoSignature,
    #[error(
        "signed by key {}, which the base image's keyring does not hold (add the archive's key to the base, e.g. /usr/share/keyrings or /etc/apt/trusted.gpg.d)",
        key_ids.join(", ")
    )]
    UnknownKey { key_ids: Vec<String> },
    #[error(
        "BAD signature by key {key_id}: the signed text was altered or the signature is corrupt ({message})"
    )]
    BadSignature { key_id: String, message: String },
    #[error("signature by key {key_id} uses the weak hash {hash}, refused as apt does")]
    WeakHash { key_id: String, hash: String },
    #[error("signature by key {key_id} was made after the key expired")]
    KeyExpired { key_id: String },
    #[error("key {key_id} is revoked in the keyring")]
    KeyRevoked { key_id: String },
    #[error("the signed text is not UTF-8")]
    NotUtf8,
    #[error("Release: {0}")]
    Control(#[from] ControlError),
    #[error("Release: expected one paragraph, found {0}")]
    Paragraphs(usize),
    #[error("Release: no {0} field")]
    MissingField(&'static str),
    #[error("Release line {line}: bad SHA256 entry {text:?} (expected `<sha256> <size> <path>`)")]
    BadSum { line: usize, text: String },
    #[error("Release: bad date {text:?} in field {field}")]
    BadDate { field: &'static str, text: String },
}

/// Size and sha256 of one index file listed by a `Release`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSum {
    pub size: u64,
    pub sha256: String,
}

/// A parsed `Release` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    pub origin: Option<String>,
    pub label: Option<String>,
    pub suite: Option<String>,
    pub version: Option<String>,
    pub codename: Option<String>,
    pub architectures: Vec<String>,
    pub components: Vec<String>,
    /// `Date`, as written (RFC 2822, e.g. `Sat, 11 Jul 2026 10:16:37 UTC`).
    pub date: Option<String>,
    /// `Valid-Until`, as written; see [`Release::expired`].
    pub valid_until: Option<String>,
    /// `Acquire-By-Hash: yes`: index files can be fetched as `…/by-hash/SHA256/<sha256>`.
    pub acquire_by_hash: bool,
    /// The `SHA256` list by path, e.g. `main/binary-amd64/Packages.xz`.
    pub files: BTreeMap<String, FileSum>,
}

impl Release {
    /// The size and sha256 of `path` (relative to the `dists/<suite>/` folder).
    pub fn file(&self, path: &str) -> Option<&FileSum> {
        self.files.get(path)
    }

    /// The by-hash path of `path` (`main/binary-amd64/by-hash/SHA256/<sha256>`) when the archive
    /// offers it and lists `path`.
    pub fn by_hash_path(&self, path: &str) -> Option<String> {
        if !self.acquire_by_hash {
            return None;
        }
        let sum = self.files.get(path)?;
        let dir = path.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
        Some(if dir.is_empty() {
            format!("by-hash/SHA256/{}", sum.sha256)
        } else {
            format!("{dir}/by-hash/SHA256/{}", sum.sha256)
        })
    }

    /// The best index of a component and architecture that the Release lists:
    /// `Packages.xz`, else `Packages.gz`, else `Packages`.
    pub fn packages_path(&self, component: &str, arch: &str) -> Option<(String, &FileSum)> {
        ["Packages.xz", "Packages.gz", "Packages"]
            .iter()
            .map(|f| format!("{component}/binary-{arch}/{f}"))
            .find_map(|p| self.files.get(&p).map(|s| (p, s)))
    }

    /// Whether `Valid-Until` is before `now` (a replayed, stale Release). `false` without one.
    pub fn expired(&self, now: SystemTime) -> Result<bool, ReleaseError> {
        match &self.valid_until {
            None => Ok(false),
            Some(v) => Ok(parse_date(v).ok_or_else(|| ReleaseError::BadDate {
                field: "Valid-Until",
                text: v.clone(),
            })? < now),
        }
    }
}

/// Parses a `Release` text (already verified, see [`verify_inrelease`]).
pub fn parse_release(text: &str) -> Result<Release, ReleaseError> {
    let ps = parse_paragraphs(text)?;
    let [p] = ps.as_slice() else {
        return Err(ReleaseError::Paragraphs(ps.len()));
    };
    let s = |name: &str| p.get(name).map(str::to_string);
    let list = |name: &str| {
        p.get(name)
            .map(|v| v.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default()
    };
    let sums = p
        .get("SHA256")
        .ok_or(ReleaseError::MissingField("SHA256"))?;
    let first_line = p.field_line("SHA256").unwrap_or(0);
    let mut files = BTreeMap::new();
    // `value_lines` drops blank lines, which continuation lines never are.
    let first_is_own_line = !sums.starts_with([' ', '\t']);
    for (i, entry) in value_lines(sums).enumerate() {
        let line = first_line + i + usize::from(!first_is_own_line);
        let bad = || ReleaseError::BadSum {
            line,
            text: entry.to_string(),
        };
        let mut parts = entry.split_whitespace();
        let (Some(sha), Some(size), Some(path), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        let size = size.parse::<u64>().map_err(|_| bad())?;
        files.insert(
            path.to_string(),
            FileSum {
                size,
                sha256: sha.to_ascii_lowercase(),
            },
        );
    }
    let date = s("Date");
    if let Some(d) = &date
        && parse_date(d).is_none()
    {
        return Err(ReleaseError::BadDate {
            field: "Date",
            text: d.clone(),
        });
    }
    Ok(Release {
        origin: s("Origin"),
        label: s("Label"),
        suite: s("Suite"),
        version: s("Version"),
        codename: s("Codename"),
        architectures: list("Architectures"),
        components: list("Components"),
        date,
        valid_until: s("Valid-Until"),
        acquire_by_hash: p
            .get("Acquire-By-Hash")
            .is_some_and(|v| v.eq_ignore_ascii_case("yes")),
        files,
    })
}

/// Parses the RFC 2822 dates of Release files: `Sat, 11 Jul 2026 10:16:37 UTC` (also `GMT`,
/// `+0000`, `Z`; the weekday is optional and not checked).
pub fn parse_date(text: &str) -> Option<SystemTime> {
    let t = text.trim();
    let t = t.split_once(',').map(|(_, r)| r.trim()).unwrap_or(t);
    let mut f = t.split_whitespace();
    let (day, mon, year, time) = (f.next()?, f.next()?, f.next()?, f.next()?);
    let offset = match f.next() {
        None | Some("UTC" | "GMT" | "Z" | "UT") => 0i64,
        Some(z) if z.len() == 5 && (z.starts_with('+') || z.starts_with('-')) => {
            let h: i64 = z[1..3].parse().ok()?;
            let m: i64 = z[3..5].parse().ok()?;
            let s = (h * 60 + m) * 60;
            if z.starts_with('-') { -s } else { s }
        }
        Some(_) => return None,
    };
    if f.next().is_some() {
        return None;
    }
    let day: u32 = day.parse().ok()?;
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ]
    .iter()
    .position(|m| m.eq_ignore_ascii_case(mon))? as u32
        + 1;
    let year: i64 = year.parse().ok()?;
    let mut hms = time.split(':');
    let (h, m, s): (i64, i64, i64) = (
        hms.next()?.parse().ok()?,
        hms.next()?.parse().ok()?,
        hms.next()?.parse().ok()?,
    );
    if hms.next().is_some() || !(1..=31).contains(&day) || h > 23 || m > 59 || s > 60 {
        return None;
    }
    let secs = days_from_civil(year, month, day) * 86400 + h * 3600 + m * 60 + s - offset;
    u64::try_from(secs)
        .ok()
        .map(|s| UNIX_EPOCH + Duration::from_secs(s))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = m as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

/// Reads every public key of the keyrings (binary `.gpg` or ASCII-armored `.asc`).
pub fn load_keyrings(keyrings: &[Vec<u8>]) -> Result<Vec<SignedPublicKey>, ReleaseError> {
    let mut keys = Vec::new();
    for (i, bytes) in keyrings.iter().enumerate() {
        let err = |e: pgp::errors::Error| ReleaseError::Keyring {
            index: i + 1,
            message: e.to_string(),
        };
        if bytes.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let (iter, _) =
            SignedPublicKey::from_reader_many(Cursor::new(bytes.as_slice())).map_err(err)?;
        for key in iter {
            keys.push(key.map_err(err)?);
        }
    }
    if keys.is_empty() {
        return Err(ReleaseError::NoKeys);
    }
    Ok(keys)
}

/// Verifies an `InRelease` file and returns the signed text (the `Release` content, `\n` line
/// ends, ending in a newline). Nothing outside the signed part is returned.
pub fn verify_inrelease(signed: &[u8], keyrings: &[Vec<u8>]) -> Result<Vec<u8>, ReleaseError> {
    let keys = load_keyrings(keyrings)?;
    let text = std::str::from_utf8(signed).map_err(|_| ReleaseError::NotUtf8)?;
    let (msg, _) =
        CleartextSignedMessage::from_string(text).map_err(|e| ReleaseError::Malformed {
            message: e.to_string(),
        })?;
    let signed_text = msg.signed_text();
    verify_any(msg.signatures(), signed_text.as_bytes(), &keys)?;
    let mut out = signed_text.replace("\r\n", "\n");
    if !out.ends_with('\n') {
        out.push('\n');
    }
    Ok(out.into_bytes())
}

/// Verifies a detached signature (`Release.gpg`, armored or binary) over `data` (`Release`).
pub fn verify_detached(data: &[u8], sig: &[u8], keyrings: &[Vec<u8>]) -> Result<(), ReleaseError> {
    let keys = load_keyrings(keyrings)?;
    let malformed = |e: pgp::errors::Error| ReleaseError::Malformed {
        message: format!("detached signature: {e}"),
    };
    let (iter, _) = DetachedSignature::from_reader_many(Cursor::new(sig)).map_err(malformed)?;
    let sigs = iter
        .map(|s| s.map(|s| s.signature))
        .collect::<Result<Vec<Signature>, _>>()
        .map_err(malformed)?;
    verify_any(&sigs, data, &keys)
}

/// A key or subkey able to check a signature, with the id we report.
enum Candidate<'a> {
    Primary(&'a SignedPublicKey),
    Subkey(&'a SignedPublicKey, &'a SignedPublicSubKey),
}

fn issuer_ids(sig: &Signature) -> Vec<String> {
    let mut ids: Vec<String> = sig
        .issuer_fingerprint()
        .iter()
        .map(|f| format!("{f:X}"))
        .collect();
    if ids.is_empty() {
        ids = sig
            .issuer_key_id()
            .iter()
            .map(|k| k.to_string().to_ascii_uppercase())
            .collect();
    }
    ids
}

fn matches(sig: &Signature, key: &impl KeyDetails) -> bool {
    let id: KeyId = key.legacy_key_id();
    let fp = key.fingerprint();
    sig.issuer_key_id().iter().any(|k| **k == id)
        || sig.issuer_fingerprint().iter().any(|f| **f == fp)
}

fn candidates<'a>(sig: &Signature, keys: &'a [SignedPublicKey]) -> Vec<Candidate<'a>> {
    let mut out = Vec::new();
    for k in keys {
        if matches(sig, &k.primary_key) {
            out.push(Candidate::Primary(k));
        }
        for sk in &k.public_subkeys {
            if matches(sig, &sk.key) {
                out.push(Candidate::Subkey(k, sk));
            }
        }
    }
    out
}

/// The expiry of a primary key from its newest self-signature carrying one, if any.
fn key_expiry(key: &SignedPublicKey) -> Option<SystemTime> {
    let created =
        UNIX_EPOCH + Duration::from_secs(u64::from(key.primary_key.created_at().as_secs()));
    let newest = key
        .details
        .users
        .iter()
        .flat_map(|u| u.signatures.iter())
        .chain(key.details.direct_signatures.iter())
        .filter_map(|s| Some((s.created()?, s)))
        .max_by_key(|(t, _)| t.as_secs())?;
    newest
        .1
        .key_expiration_time()
        .filter(|d| d.as_secs() > 0)
        .map(|d| created + Duration::from_secs(u64::from(d.as_secs())))
}

fn sig_time(sig: &Signature) -> Option<SystemTime> {
    sig.created()
        .map(|t| UNIX_EPOCH + Duration::from_secs(u64::from(t.as_secs())))
}

/// Accepts when one signature verifies; otherwise reports the most telling failure: a bad
/// signature by a known key beats an expired key, a weak hash, and an unknown key.
fn verify_any(
    sigs: &[Signature],
    data: &[u8],
    keys: &[SignedPublicKey],
) -> Result<(), ReleaseError> {
    if sigs.is_empty() {
        return Err(ReleaseError::NoSignature);
    }
    let mut unknown = Vec::new();
    let mut failure: Option<ReleaseError> = None;
    for sig in sigs {
        let cands = candidates(sig, keys);
        if cands.is_empty() {
            unknown.extend(issuer_ids(sig));
            continue;
        }
        for c in cands {
            let (primary, id) = match c {
                Candidate::Primary(k) => (k, format!("{:X}", k.primary_key.fingerprint())),
                Candidate::Subkey(k, sk) => (k, format!("{:X}", sk.key.fingerprint())),
            };
            if let Some(h) = sig.hash_alg()
                && matches!(
                    h,
                    HashAlgorithm::None
                        | HashAlgorithm::Md5
                        | HashAlgorithm::Sha1
                        | HashAlgorithm::Ripemd160
                )
            {
                failure.get_or_insert(ReleaseError::WeakHash {
                    key_id: id,
                    hash: h.to_string(),
                });
                continue;
            }
            let revoked = match c {
                Candidate::Primary(k) => !k.details.revocation_signatures.is_empty(),
                Candidate::Subkey(k, sk) => {
                    !k.details.revocation_signatures.is_empty()
                        || sk
                            .signatures
                            .iter()
                            .any(|s| s.typ() == Some(SignatureType::SubkeyRevocation))
                }
            };
            if revoked {
                failure.get_or_insert(ReleaseError::KeyRevoked { key_id: id });
                continue;
            }
            let result = match c {
                Candidate::Primary(k) => sig.verify(&k.primary_key, data),
                Candidate::Subkey(k, sk) => match sk.verify_bindings(&k.primary_key) {
                    Ok(()) => sig.verify(&sk.key, data),
                    Err(e) => Err(e),
                },
            };
            match result {
                Ok(()) => {
                    if let (Some(exp), Some(at)) = (key_expiry(primary), sig_time(sig))
                        && at > exp
                    {
                        failure = Some(ReleaseError::KeyExpired { key_id: id });
                        continue;
                    }
                    return Ok(());
                }
                Err(e) => {
                    failure = Some(ReleaseError::BadSignature {
                        key_id: id,
                        message: e.to_string(),
                    });
                }
            }
        }
    }
    if let Some(f) = failure {
        return Err(f);
    }
    unknown.sort();
    unknown.dedup();
    Err(ReleaseError::UnknownKey { key_ids: unknown })
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgp::composed::{KeyType, SecretKeyParamsBuilder, SignedSecretKey};
    use pgp::types::Password;

    const INRELEASE: &[u8] = include_bytes!("../../../testdata/debian/bookworm-InRelease");
    const RELEASE_GPG: &[u8] = include_bytes!("../../../testdata/debian/bookworm-Release.gpg");
    const KEYRING: &[u8] = include_bytes!("../../../testdata/debian/debian-archive-keyring.gpg");
    /// Holds only the Ed25519 "Debian Stable Release Key (12/bookworm)".
    const STABLE_KEY: &[u8] =
        include_bytes!("../../../testdata/debian/debian-archive-bookworm-stable.gpg");
    /// Keys that did not sign the bookworm InRelease.
    const BULLSEYE_KEY: &[u8] =
        include_bytes!("../../../testdata/debian/debian-archive-bullseye-automatic.gpg");

    fn fresh_key() -> SignedSecretKey {
        let params = SecretKeyParamsBuilder::default()
            .key_type(KeyType::Ed25519Legacy)
            .can_certify(true)
            .can_sign(true)
            .primary_user_id("Test Archive <archive@example.org>".into())
            .build()
            .unwrap();
        params.generate(rand::thread_rng()).unwrap()
    }

    #[test]
    fn real_bookworm_inrelease_verifies_and_parses() {
        let text = verify_inrelease(INRELEASE, &[KEYRING.to_vec()]).unwrap();
        let text = String::from_utf8(text).unwrap();
        assert!(text.starts_with("Origin: Debian\n"), "{}", &text[..40]);
        assert!(text.ends_with("\n") && !text.contains("PGP"));
        let r = parse_release(&text).unwrap();
        assert_eq!(r.codename.as_deref(), Some("bookworm"));
        assert_eq!(r.origin.as_deref(), Some("Debian"));
        assert!(r.architectures.iter().any(|a| a == "amd64"));
        assert!(r.architectures.iter().any(|a| a == "arm64"));
        assert_eq!(r.components[0], "main");
        assert!(r.acquire_by_hash);
        assert_eq!(r.valid_until, None);
        assert!(!r.expired(SystemTime::now()).unwrap());
        let (path, sum) = r.packages_path("main", "amd64").unwrap();
        assert_eq!(path, "main/binary-amd64/Packages.xz");
        assert_eq!(sum.sha256.len(), 64);
        assert!(sum.size > 1_000_000, "{}", sum.size);
        assert_eq!(
            r.by_hash_path(&path).unwrap(),
            format!("main/binary-amd64/by-hash/SHA256/{}", sum.sha256)
        );
        // Every SHA256 line became an entry (MD5Sum lines are not read).
        let n = text
            .split("\nSHA256:\n")
            .nth(1)
            .unwrap()
            .lines()
            .take_while(|l| l.starts_with(' '))
            .count();
        assert_eq!(r.files.len(), n);
        let date = parse_date(r.date.as_deref().unwrap()).unwrap();
        assert!(date > UNIX_EPOCH + Duration::from_secs(1_700_000_000));
    }

    #[test]
    fn ed25519_signature_alone_verifies() {
        // The stable release key is Ed25519; it is one of the three signers.
        verify_inrelease(INRELEASE, &[STABLE_KEY.to_vec()]).unwrap();
    }

    #[test]
    fn detached_release_gpg_verifies() {
        let release = verify_inrelease(INRELEASE, &[KEYRING.to_vec()]).unwrap();
        verify_detached(&release, RELEASE_GPG, &[KEYRING.to_vec()]).unwrap();
        let mut tampered = release.clone();
        let i = tampered.iter().position(|&b| b == b'7').unwrap();
        tampered[i] = b'8';
        let e = verify_detached(&tampered, RELEASE_GPG, &[KEYRING.to_vec()]).unwrap_err();
        assert!(matches!(e, ReleaseError::BadSignature { .. }), "{e}");
    }

    #[test]
    fn tampered_byte_is_refused() {
        let text = std::str::from_utf8(INRELEASE).unwrap();
        let tampered = text.replacen("Codename: bookworm", "Codename: bookwork", 1);
        assert_ne!(tampered, text);
        let e = verify_inrelease(tampered.as_bytes(), &[KEYRING.to_vec()]).unwrap_err();
        assert!(matches!(e, ReleaseError::BadSignature { .. }), "{e}");
        assert!(e.to_string().contains("BAD signature"), "{e}");
        // One changed hex digit in the SHA256 list, far from the top.
        let pos = text.rfind(" main/binary-amd64/Packages.xz").unwrap() - 20;
        let mut bytes = INRELEASE.to_vec();
        bytes[pos] = if bytes[pos] == b'0' { b'1' } else { b'0' };
        assert!(matches!(
            verify_inrelease(&bytes, &[KEYRING.to_vec()]),
            Err(ReleaseError::BadSignature { .. })
        ));
    }

    #[test]
    fn keys_the_keyring_lacks_are_named() {
        let e = verify_inrelease(INRELEASE, &[BULLSEYE_KEY.to_vec()]).unwrap_err();
        let ReleaseError::UnknownKey { key_ids } = &e else {
            panic!("{e}");
        };
        assert_eq!(key_ids.len(), 3, "{key_ids:?}");
        assert!(key_ids.contains(&"4CB50190207B4758A3F73A796ED0E7B82643E131".to_string()));
        assert!(key_ids.contains(&"4D64FEC119C2029067D6E791F8D2585B8783D481".to_string()));
        let msg = e.to_string();
        assert!(
            msg.contains("4CB50190207B4758A3F73A796ED0E7B82643E131"),
            "{msg}"
        );
        assert!(msg.contains("base image's keyring does not hold"), "{msg}");
    }

    #[test]
    fn release_signed_by_a_fresh_key() {
        let key = fresh_key();
        let public = SignedPublicKey::from(key.clone());
        let release = "Origin: Test\nSuite: stable\nCodename: test\nDate: Sat, 11 Jul 2026 10:16:37 UTC\nArchitectures: amd64\nComponents: main\nSHA256:\n 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef 42 main/binary-amd64/Packages\n";
        let msg = CleartextSignedMessage::sign(
            rand::thread_rng(),
            release,
            &key.primary_key,
            &Password::empty(),
        )
        .unwrap();
        let armored = msg.to_armored_string(None.into()).unwrap();
        // Against Debian's keyring: unknown key, named by its fingerprint.
        let e = verify_inrelease(armored.as_bytes(), &[KEYRING.to_vec()]).unwrap_err();
        let fp = format!("{:X}", key.primary_key.fingerprint());
        assert!(
            matches!(&e, ReleaseError::UnknownKey { key_ids } if key_ids == &vec![fp.clone()]),
            "{e}"
        );
        // Against its own public key, binary and armored: the Release text comes back.
        let binary = {
            use pgp::ser::Serialize;
            public.to_bytes().unwrap()
        };
        let asc = public.to_armored_string(None.into()).unwrap().into_bytes();
        for ring in [binary.clone(), asc] {
            let text = verify_inrelease(armored.as_bytes(), &[KEYRING.to_vec(), ring]).unwrap();
            assert_eq!(String::from_utf8(text).unwrap(), release);
        }
        let r = parse_release(release).unwrap();
        assert_eq!(r.files["main/binary-amd64/Packages"].size, 42);
        // A detached signature by the same key.
        let sig = DetachedSignature::sign_binary_data(
            rand::thread_rng(),
            &key.primary_key,
            &Password::empty(),
            HashAlgorithm::Sha256,
            release.as_bytes(),
        )
        .unwrap();
        let sig = sig.to_armored_bytes(None.into()).unwrap();
        verify_detached(release.as_bytes(), &sig, std::slice::from_ref(&binary)).unwrap();
        assert!(matches!(
            verify_detached(release.as_bytes(), &sig, &[KEYRING.to_vec()]),
            Err(ReleaseError::UnknownKey { .. })
        ));
        assert!(matches!(
            verify_detached(b"Origin: Evil\n", &sig, &[binary]),
            Err(ReleaseError::BadSignature { .. })
        ));
    }

    #[test]
    fn signing_subkeys_need_their_binding_and_no_revocation() {
        use pgp::composed::{EncryptionCaps, SubkeyParamsBuilder};
        use pgp::ser::Serialize;
        let sub = SubkeyParamsBuilder::default()
            .key_type(KeyType::Ed25519Legacy)
            .can_sign(true)
            .can_encrypt(EncryptionCaps::None)
            .build()
            .unwrap();
        let key = SecretKeyParamsBuilder::default()
            .key_type(KeyType::Ed25519Legacy)
            .can_certify(true)
            .can_sign(false)
            .primary_user_id("Sub Signer <sub@example.org>".into())
            .subkeys(vec![sub])
            .build()
            .unwrap()
            .generate(rand::thread_rng())
            .unwrap();
        let signer = &key.secret_subkeys[0].key;
        let text = "Origin: Sub\nSHA256:\n";
        let msg =
            CleartextSignedMessage::sign(rand::thread_rng(), text, signer, &Password::empty())
                .unwrap()
                .to_armored_bytes(None.into())
                .unwrap();
        let public = SignedPublicKey::from(key.clone());
        let ok = verify_inrelease(&msg, &[public.to_bytes().unwrap()]).unwrap();
        assert_eq!(ok, text.as_bytes());
        // Without a binding signature the parser drops the subkey: unknown.
        let mut unbound = public.clone();
        unbound.public_subkeys[0].signatures.clear();
        let e = verify_inrelease(&msg, &[unbound.to_bytes().unwrap()]).unwrap_err();
        assert!(matches!(e, ReleaseError::UnknownKey { .. }), "{e}");
        // With a binding signature that is not the primary key's (taken from another key's
        // subkey): the subkey is present but refused.
        let other = SecretKeyParamsBuilder::default()
            .key_type(KeyType::Ed25519Legacy)
            .can_certify(true)
            .primary_user_id("Other <other@example.org>".into())
            .subkeys(vec![
                SubkeyParamsBuilder::default()
                    .key_type(KeyType::Ed25519Legacy)
                    .can_sign(true)
                    .can_encrypt(EncryptionCaps::None)
                    .build()
                    .unwrap(),
            ])
            .build()
            .unwrap()
            .generate(rand::thread_rng())
            .unwrap();
        let foreign = SignedPublicKey::from(other).public_subkeys[0].signatures[0].clone();
        let mut misbound = public.clone();
        misbound.public_subkeys[0].signatures = vec![foreign];
        let e = verify_inrelease(&msg, &[misbound.to_bytes().unwrap()]).unwrap_err();
        assert!(matches!(e, ReleaseError::BadSignature { .. }), "{e}");
        // A revocation in the keyring: refused, naming the subkey. (The check only looks for a
        // revocation signature's presence, so a stand-in signature object is enough; it is
        // built in memory because the parser files a stand-in elsewhere.)
        let mut revoked = public.clone();
        let binding = revoked.public_subkeys[0].signatures[0].clone();
        revoked.details.revocation_signatures.push(binding);
        let (parsed, _) =
            CleartextSignedMessage::from_string(std::str::from_utf8(&msg).unwrap()).unwrap();
        let signed = parsed.signed_text();
        verify_any(
            parsed.signatures(),
            signed.as_bytes(),
            std::slice::from_ref(&public),
        )
        .unwrap();
        let e = verify_any(parsed.signatures(), signed.as_bytes(), &[revoked]).unwrap_err();
        let fp = format!("{:X}", signer.fingerprint());
        assert!(
            matches!(&e, ReleaseError::KeyRevoked { key_id } if *key_id == fp),
            "{e}"
        );
    }

    #[test]
    fn unsigned_and_garbage_inputs() {
        let e = verify_inrelease(b"Origin: Debian\nSuite: x\n", &[KEYRING.to_vec()]).unwrap_err();
        assert!(matches!(e, ReleaseError::Malformed { .. }), "{e}");
        let e = verify_inrelease(INRELEASE, &[b"not a key".to_vec()]).unwrap_err();
        assert!(matches!(e, ReleaseError::Keyring { index: 1, .. }), "{e}");
        let e = verify_inrelease(INRELEASE, &[]).unwrap_err();
        assert!(matches!(e, ReleaseError::NoKeys), "{e}");
        // Text after the signature block is refused, not silently ignored.
        let mut extra = INRELEASE.to_vec();
        extra.extend_from_slice(b"\nOrigin: Evil\n");
        assert!(verify_inrelease(&extra, &[KEYRING.to_vec()]).is_err());
    }

    #[test]
    fn release_parse_errors() {
        let e = parse_release("Origin: x\n").unwrap_err();
        assert!(matches!(e, ReleaseError::MissingField("SHA256")), "{e}");
        let e = parse_release("Origin: x\nSHA256:\n abc 12 main/x\n").unwrap_err();
        assert!(matches!(e, ReleaseError::BadSum { line: 3, .. }), "{e}");
        let sha = "a".repeat(64);
        let e = parse_release(&format!("SHA256:\n {sha} 1 a\n {sha} x b\n")).unwrap_err();
        assert!(matches!(e, ReleaseError::BadSum { line: 3, .. }), "{e}");
        let e = parse_release(&format!("Date: yesterday\nSHA256:\n {sha} 1 a\n")).unwrap_err();
        assert!(
            matches!(e, ReleaseError::BadDate { field: "Date", .. }),
            "{e}"
        );
        let e = parse_release(&format!("SHA256:\n {sha} 1 a\n\nOrigin: x\n")).unwrap_err();
        assert!(matches!(e, ReleaseError::Paragraphs(2)), "{e}");
        let r = parse_release(&format!(
            "Valid-Until: Sat, 01 Jan 2000 00:00:00 UTC\nSHA256:\n {sha} 1 a\n"
        ))
        .unwrap();
        assert!(r.expired(SystemTime::now()).unwrap());
        assert!(r.by_hash_path("a").is_none());
    }

    #[test]
    fn dates() {
        let t = |s| parse_date(s).map(|t| t.duration_since(UNIX_EPOCH).unwrap().as_secs());
        assert_eq!(t("Thu, 01 Jan 1970 00:00:00 UTC"), Some(0));
        assert_eq!(t("Sat, 10 Jun 2023 08:55:32 UTC"), Some(1_686_387_332));
        assert_eq!(t("10 Jun 2023 08:55:32 +0200"), Some(1_686_387_332 - 7200));
        assert_eq!(t("Tue, 29 Feb 2028 12:00:00 GMT"), Some(1_835_438_400));
        assert_eq!(t("Sat, 10 Foo 2023 08:55:32 UTC"), None);
        assert_eq!(t("Sat, 10 Jun 2023 25:55:32 UTC"), None);
        assert_eq!(t("Sat, 10 Jun 2023 08:55:32 CEST"), None);
    }
}
