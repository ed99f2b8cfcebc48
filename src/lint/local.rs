//! What the lints read of the layers we build: small local files only, within fixed budgets.

use std::collections::BTreeSet;
use std::io::Read;

use crate::layer::{Content, Entry};
use crate::plan::{BuildPlan, LayerRole};

/// Files larger than this are not searched for tokens (weights, archives).
const MAX_SCANNED_FILE: u64 = 1 << 20;
/// Most bytes searched for tokens in one build.
const MAX_SCANNED_BYTES: u64 = 64 << 20;
/// Most files searched for tokens in one build.
const MAX_SCANNED_FILES: usize = 20_000;
/// Most bytes read of one `RECORD` or account file.
const MAX_RECORD: u64 = 8 << 20;

/// What the layers we build hold, beyond their entry list.
#[derive(Debug, Clone, Default)]
pub struct LocalFacts {
    /// Image paths (relative to `/`) of text files holding what looks like a Hugging Face
    /// token (the token itself is never kept).
    pub tokens: Vec<String>,
    /// Image paths that an installed distribution's `RECORD` lists (a prepared `dir` tree's
    /// packages): files packages ship are not stray weights or secrets.
    pub recorded: BTreeSet<String>,
    /// `/etc/passwd` and `/etc/group` as our layers write them (the last layer wins).
    pub passwd: Option<String>,
    pub group: Option<String>,
}

fn read_entry(e: &Entry, cap: u64) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    match &e.content {
        Content::File { path, .. } => {
            std::fs::File::open(path)
                .ok()?
                .take(cap)
                .read_to_end(&mut buf)
                .ok()?;
        }
        Content::Inline(b) => buf.extend(b.iter().take(cap as usize)),
        _ => return None,
    }
    Some(buf)
}

/// Whether `text` holds `hf_` followed by at least 30 letters and digits, at a word start.
pub(super) fn has_hf_token(text: &[u8]) -> bool {
    let mut i = 0;
    while let Some(pos) = text[i..].windows(3).position(|w| w == b"hf_") {
        let at = i + pos;
        let word_start = at == 0 || !(text[at - 1].is_ascii_alphanumeric() || text[at - 1] == b'_');
        let run = text[at + 3..]
            .iter()
            .take_while(|c| c.is_ascii_alphanumeric())
            .count();
        if word_start && run >= 30 {
            return true;
        }
        i = at + 3;
    }
    false
}

/// Joins a `RECORD` path onto the folder that holds the `.dist-info` (both relative to `/`),
/// resolving `..`.
fn join_record(site: &str, rel: &str) -> String {
    crate::sources::local::clean_path(&format!("{site}/{rel}"))
}

/// Reads what the checks need of the plan's layers (each distinct layer once).
pub fn read(plan: &BuildPlan) -> LocalFacts {
    let mut facts = LocalFacts::default();
    let mut seen = BTreeSet::new();
    let mut bytes = 0u64;
    let mut files = 0usize;
    for lp in plan.platforms.iter().flat_map(|p| &p.layers) {
        if !seen.insert(lp.selector.clone()) {
            continue;
        }
        for e in &lp.entries {
            let name = e.path.rsplit('/').next().unwrap_or(&e.path);
            if matches!(lp.role, LayerRole::Deps(_))
                && name == "RECORD"
                && e.path
                    .rsplit('/')
                    .nth(1)
                    .is_some_and(|d| d.ends_with(".dist-info"))
                && let Some(text) = read_entry(e, MAX_RECORD)
            {
                let dist_info = e.path.rsplit_once('/').map_or("", |(d, _)| d);
                let site = dist_info.rsplit_once('/').map_or("", |(d, _)| d);
                for line in String::from_utf8_lossy(&text).lines() {
                    if let Some(rel) = line.split(',').next().filter(|r| !r.is_empty()) {
                        facts.recorded.insert(join_record(site, rel));
                    }
                }
            }
            if matches!(e.path.as_str(), "etc/passwd" | "etc/group")
                && let Some(text) = read_entry(e, MAX_RECORD)
            {
                let text = String::from_utf8_lossy(&text).into_owned();
                if e.path == "etc/passwd" {
                    facts.passwd = Some(text);
                } else {
                    facts.group = Some(text);
                }
            }
            if e.size() > MAX_SCANNED_FILE
                || files >= MAX_SCANNED_FILES
                || bytes + e.size() > MAX_SCANNED_BYTES
            {
                continue;
            }
            let Some(data) = read_entry(e, MAX_SCANNED_FILE) else {
                continue;
            };
            files += 1;
            bytes += data.len() as u64;
            // text files only: a NUL in the first 8 KiB marks a binary
            if data.iter().take(8192).any(|&b| b == 0) {
                continue;
            }
            if has_hf_token(&data) {
                facts.tokens.push(e.path.clone());
            }
        }
    }
    facts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_found_at_word_starts_only() {
        let tok = format!("hf_{}", "a1B2".repeat(9));
        assert!(has_hf_token(format!("HF_TOKEN={tok}\n").as_bytes()));
        assert!(has_hf_token(tok.as_bytes()));
        assert!(!has_hf_token(format!("xhf_{}", "a".repeat(40)).as_bytes()));
        assert!(!has_hf_token(b"hf_hub_download(repo)"));
        assert!(!has_hf_token(format!("hf_{}", "a".repeat(29)).as_bytes()));
    }

    #[test]
    fn record_paths_resolve_dot_dot() {
        assert_eq!(
            join_record("usr/lib/python3/site-packages", "numpy/tests/data/x.pkl"),
            "usr/lib/python3/site-packages/numpy/tests/data/x.pkl"
        );
        assert_eq!(
            join_record("usr/lib/site", "../../bin/f2py"),
            "usr/bin/f2py"
        );
    }
}
