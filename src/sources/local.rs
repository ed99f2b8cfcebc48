//! Local trees: walking a folder (or one file) into sorted layer entries, with include/exclude
//! filters and docker's ignore-file semantics, plus a fingerprint of what was seen (paths, sizes,
//! mtimes, ctimes, inodes, modes, link targets) so an unchanged tree is recognized without
//! reading it.

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use globset::{Glob, GlobBuilder, GlobMatcher, GlobSet, GlobSetBuilder};

use crate::layer::{Content, Entry};

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("{}: symlink to {target:?} points outside {}", link.display(), root.display())]
    EscapingLink {
        link: PathBuf,
        target: String,
        root: PathBuf,
    },
    #[error("{}: not valid UTF-8; image paths must be UTF-8", path.display())]
    NonUtf8 { path: PathBuf },
    #[error("{}: unsupported file type (only files, folders and symlinks go into layers)", path.display())]
    Special { path: PathBuf },
    #[error("{}: bad pattern {pattern:?}: {message}", file.display())]
    Pattern {
        file: PathBuf,
        pattern: String,
        message: String,
    },
}

/// The result of walking a source: entries (files, links) and their fingerprints.
#[derive(Debug, Default)]
pub struct Walked {
    pub entries: Vec<Entry>,
    /// One per entry, in the same order: the sha256 of a line with the kind, relative path,
    /// size, mtime and ctime (ns), inode, mode, link target. 32 bytes per file instead of the
    /// ~150 of the line: a tree of 100k files is held in a few MiB.
    pub fingerprint: Vec<[u8; 32]>,
}

impl Walked {
    pub fn total_size(&self) -> u64 {
        self.entries.iter().map(Entry::size).sum()
    }

    /// One fingerprint line for the whole tree (for a layer of all of it).
    pub fn tree_line(&self) -> String {
        use sha2::Digest as _;
        let mut h = sha2::Sha256::new();
        for f in &self.fingerprint {
            h.update(f);
        }
        format!(
            "tree {} entries {}",
            hex::encode(h.finalize()),
            self.fingerprint.len()
        )
    }

    /// The fingerprint line of entry `i` (for a layer of that entry alone).
    pub fn entry_line(fingerprint: &[u8; 32]) -> String {
        format!("entry {}", hex::encode(fingerprint))
    }

    fn push(&mut self, entry: Entry, line: &str) {
        use sha2::Digest as _;
        self.fingerprint
            .push(sha2::Sha256::digest(line.as_bytes()).into());
        self.entries.push(entry);
    }
}

/// Normalized permission bits: 0755 for folders and anything executable, else 0644.
pub fn normalize_mode(mode: u32, is_dir: bool) -> u32 {
    if is_dir || mode & 0o111 != 0 {
        0o755
    } else {
        0o644
    }
}

/// What to keep of a tree: include globs (empty = everything) and exclude globs, matched against
/// `/`-separated paths relative to the source root.
pub struct Filter {
    include: Option<GlobSet>,
    exclude: GlobSet,
    ignore: Option<IgnoreRules>,
    skip: Vec<PathBuf>,
}

impl Filter {
    pub fn globs(include: &[String], exclude: &[String]) -> Result<Filter, globset::Error> {
        let set = |pats: &[String]| -> Result<GlobSet, globset::Error> {
            let mut b = GlobSetBuilder::new();
            for p in pats {
                b.add(Glob::new(p)?);
                // A pattern naming a folder also names what is inside it.
                b.add(Glob::new(&format!("{}/**", p.trim_end_matches('/')))?);
            }
            b.build()
        };
        Ok(Filter {
            include: if include.is_empty() {
                None
            } else {
                Some(set(include)?)
            },
            exclude: set(exclude)?,
            ignore: None,
            skip: Vec::new(),
        })
    }

    /// Adds docker-style ignore rules (from the spec and from `.dockerignore` / `.mlimgignore`).
    pub fn with_ignore(mut self, rules: IgnoreRules) -> Self {
        self.ignore = Some(rules);
        self
    }

    /// Leaves out these absolute paths (e.g. a weights folder that lives inside the app folder).
    pub fn skipping(mut self, paths: Vec<PathBuf>) -> Self {
        self.skip = paths;
        self
    }

    fn keeps_file(&self, rel: &str) -> bool {
        if self.include.as_ref().is_some_and(|i| !i.is_match(rel)) {
            return false;
        }
        !self.exclude.is_match(rel) && !self.ignore.as_ref().is_some_and(|i| i.excludes(rel))
    }

    fn prunes_dir(&self, rel: &str, abs: &Path) -> bool {
        if self.skip.iter().any(|s| s == abs) {
            return true;
        }
        self.exclude.is_match(rel) || self.ignore.as_ref().is_some_and(|i| i.prunes(rel))
    }
}

/// Docker's `.dockerignore` semantics: patterns in order, `!` re-includes, the last match wins,
/// a pattern matching a folder excludes everything below it, `**` spans folders.
pub struct IgnoreRules {
    /// (pattern, `!` rule, the folder the pattern's paths start from relative to the tree
    /// walked: empty for the tree's own files, `app` for the build context's `.dockerignore`
    /// when the tree is the context's `app` folder).
    rules: Vec<(GlobMatcher, bool, String)>,
    has_negation: bool,
}

impl IgnoreRules {
    pub fn new(patterns: &[String], origin: &Path) -> Result<IgnoreRules, SourceError> {
        let mut rules = Vec::new();
        for raw in patterns {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (neg, pat) = match line.strip_prefix('!') {
                Some(p) => (true, p.trim()),
                None => (false, line),
            };
            let pat = clean_path(pat);
            if pat.is_empty() {
                continue;
            }
            let glob = GlobBuilder::new(&pat)
                .literal_separator(true)
                .backslash_escape(true)
                .build()
                .map_err(|e| SourceError::Pattern {
                    file: origin.to_path_buf(),
                    pattern: raw.clone(),
                    message: e.to_string(),
                })?;
            rules.push((glob.compile_matcher(), neg, String::new()));
        }
        let has_negation = rules.iter().any(|(_, n, _)| *n);
        Ok(IgnoreRules {
            rules,
            has_negation,
        })
    }

    /// The build context's `.dockerignore` (at `context`, as docker reads it), for a tree at
    /// `context/prefix`, followed by `rules`: the context's patterns match paths relative to
    /// the context, and the tree's own rules come after them (the last match wins).
    pub fn under_context(
        context: &Path,
        prefix: &str,
        rules: IgnoreRules,
    ) -> Result<IgnoreRules, SourceError> {
        let p = context.join(".dockerignore");
        let text = match fs::read_to_string(&p) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(rules),
            Err(source) => return Err(SourceError::Io { path: p, source }),
        };
        let pats: Vec<String> = text.lines().map(str::to_string).collect();
        let outer = IgnoreRules::new(&pats, &p)?;
        let mut all: Vec<(GlobMatcher, bool, String)> = outer
            .rules
            .into_iter()
            .map(|(m, n, _)| (m, n, prefix.to_string()))
            .collect();
        all.extend(rules.rules);
        Ok(IgnoreRules {
            has_negation: all.iter().any(|(_, n, _)| *n),
            rules: all,
        })
    }

    /// Reads `.dockerignore` and `.mlimgignore` in `dir` (in that order) plus extra patterns.
    pub fn load(dir: &Path, extra: &[String]) -> Result<IgnoreRules, SourceError> {
        let mut pats = Vec::new();
        for name in [".dockerignore", ".mlimgignore"] {
            let p = dir.join(name);
            match fs::read_to_string(&p) {
                Ok(t) => pats.extend(t.lines().map(str::to_string)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(source) => return Err(SourceError::Io { path: p, source }),
            }
        }
        pats.extend(extra.iter().cloned());
        IgnoreRules::new(&pats, dir)
    }

    /// Whether `rel` is excluded: the last rule matching it or one of its parents decides.
    pub fn excludes(&self, rel: &str) -> bool {
        let mut excluded = false;
        for (m, neg, prefix) in &self.rules {
            let hit = if prefix.is_empty() {
                matches_or_parent(m, rel)
            } else {
                matches_or_parent(m, &format!("{prefix}/{rel}"))
            };
            if hit {
                excluded = !neg;
            }
        }
        excluded
    }

    /// A folder can be skipped whole when it is excluded and no `!` rule could bring back
    /// something inside it.
    fn prunes(&self, rel: &str) -> bool {
        !self.has_negation && self.excludes(rel)
    }
}

fn matches_or_parent(m: &GlobMatcher, rel: &str) -> bool {
    if m.is_match(rel) {
        return true;
    }
    let mut p = rel;
    while let Some((parent, _)) = p.rsplit_once('/') {
        if m.is_match(parent) {
            return true;
        }
        p = parent;
    }
    false
}

/// A `/`-separated path with `.`, `..` and empty components resolved, without a leading `/`
/// (`..` above the top stays at the top): Go's `filepath.Clean` as docker applies it to ignore
/// patterns, and the lints to paths in a base.
pub fn clean_path(p: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    parts.join("/")
}

/// Walks `src` (a folder, or a single file) into entries under the image folder `dest`
/// (absolute, normalized). A single file lands at `dest/<its name>`.
pub fn walk(src: &Path, dest: &str, filter: &Filter) -> Result<Walked, SourceError> {
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| SourceError::Io { path, source }
    };
    let dest = dest.trim_start_matches('/');
    let meta = fs::symlink_metadata(src).map_err(io_err(src))?;
    let mut out = Walked::default();
    if meta.is_file() {
        let name =
            src.file_name()
                .and_then(|n| n.to_str())
                .ok_or_else(|| SourceError::NonUtf8 {
                    path: src.to_path_buf(),
                })?;
        push_file(&mut out, src, name, &join(dest, name), &meta);
        return Ok(out);
    }
    let root = src;
    let mut it = walkdir::WalkDir::new(root)
        .follow_links(false)
        .sort_by_file_name()
        .min_depth(1)
        .into_iter();
    while let Some(item) = it.next() {
        let item = item.map_err(|e| {
            let path = e.path().unwrap_or(root).to_path_buf();
            SourceError::Io {
                path,
                source: e.into(),
            }
        })?;
        let abs = item.path();
        let rel_path = abs.strip_prefix(root).map_err(|_| SourceError::NonUtf8 {
            path: abs.to_path_buf(),
        })?;
        let rel = rel_path.to_str().ok_or_else(|| SourceError::NonUtf8 {
            path: abs.to_path_buf(),
        })?;
        let meta = item.metadata().map_err(|e| SourceError::Io {
            path: abs.to_path_buf(),
            source: e.into(),
        })?;
        let ft = meta.file_type();
        if ft.is_dir() {
            if filter.prunes_dir(rel, abs) {
                it.skip_current_dir();
            }
            // Folders come from the files in them (parents are added by the layer writer), so an
            // empty or fully excluded folder leaves no entry.
            continue;
        }
        if !filter.keeps_file(rel) {
            continue;
        }
        let image_path = join(dest, rel);
        if ft.is_file() {
            push_file(&mut out, abs, rel, &image_path, &meta);
        } else if ft.is_symlink() {
            let target = fs::read_link(abs).map_err(io_err(abs))?;
            let t = target
                .to_str()
                .ok_or_else(|| SourceError::NonUtf8 {
                    path: abs.to_path_buf(),
                })?
                .to_string();
            if escapes(rel_path, &target) {
                return Err(SourceError::EscapingLink {
                    link: abs.to_path_buf(),
                    target: t,
                    root: root.to_path_buf(),
                });
            }
            let line = format!("L {rel:?} {t:?} {}", meta.mtime());
            out.push(
                Entry {
                    path: image_path,
                    mode: 0o777,
                    content: Content::Symlink(t),
                },
                &line,
            );
        } else {
            return Err(SourceError::Special {
                path: abs.to_path_buf(),
            });
        }
    }
    Ok(out)
}

fn push_file(out: &mut Walked, abs: &Path, rel: &str, image_path: &str, meta: &fs::Metadata) {
    let mode = normalize_mode(meta.mode(), false);
    // ctime too: a same-size edit with the mtime put back (`touch -r`, `rsync -t`, a
    // restored backup, a hostile co-worker) changes nothing else, and only the kernel sets it.
    let line = format!(
        "F {rel:?} {} {}.{} {}.{} {}:{} {:o}",
        meta.len(),
        meta.mtime(),
        meta.mtime_nsec(),
        meta.ctime(),
        meta.ctime_nsec(),
        meta.dev(),
        meta.ino(),
        mode
    );
    out.push(
        Entry {
            path: image_path.to_string(),
            mode,
            content: Content::File {
                path: abs.to_path_buf(),
                size: meta.len(),
            },
        },
        &line,
    );
}

fn join(dest: &str, rel: &str) -> String {
    if dest.is_empty() {
        rel.to_string()
    } else {
        format!("{dest}/{rel}")
    }
}

/// Whether a link at `link_rel` (relative to the root) pointing at `target` leaves the root.
fn escapes(link_rel: &Path, target: &Path) -> bool {
    if target.is_absolute() {
        return true;
    }
    let mut depth: i64 = link_rel.components().count() as i64 - 1; // the link's folder
    for c in target.components() {
        match c {
            Component::ParentDir => {
                depth -= 1;
                if depth < 0 {
                    return true;
                }
            }
            Component::Normal(_) => depth += 1,
            _ => {}
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(p: &[&str]) -> IgnoreRules {
        IgnoreRules::new(
            &p.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            Path::new(".dockerignore"),
        )
        .unwrap()
    }

    #[test]
    fn dockerignore_semantics() {
        let r = rules(&[
            "# comment",
            "*.pyc",
            "tests/",
            "!tests/keep.py",
            "**/__pycache__",
            "/build",
        ]);
        assert!(r.excludes("a.pyc"));
        assert!(!r.excludes("pkg/a.pyc"), "* does not cross folders");
        assert!(r.excludes("tests/x.py"));
        assert!(!r.excludes("tests/keep.py"));
        assert!(r.excludes("pkg/sub/__pycache__/m.cpython-311.pyc"));
        assert!(r.excludes("build/out.o"));
        assert!(!r.excludes("main.py"));
        let r = rules(&["docs", "!docs/README.md", "docs/*.md"]);
        assert!(r.excludes("docs/README.md"), "the last match wins");
    }

    #[test]
    fn link_escape() {
        assert!(escapes(Path::new("a/link"), Path::new("../../x")));
        assert!(!escapes(Path::new("a/link"), Path::new("../x")));
        assert!(escapes(Path::new("link"), Path::new("/etc/passwd")));
        assert!(!escapes(Path::new("a/b/link"), Path::new("../c/./d")));
    }

    #[test]
    fn walk_filters_and_keeps_links() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        fs::create_dir_all(root.join("m/sub")).unwrap();
        fs::write(root.join("m/a.safetensors"), b"aa").unwrap();
        fs::write(root.join("m/sub/b.bin"), b"bb").unwrap();
        fs::write(root.join("m/notes.txt"), b"n").unwrap();
        std::os::unix::fs::symlink("a.safetensors", root.join("m/latest.safetensors")).unwrap();
        let f = Filter::globs(&["*.safetensors".into(), "sub".into()], &[]).unwrap();
        let w = walk(&root.join("m"), "/models/x", &f).unwrap();
        let paths: Vec<_> = w.entries.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "models/x/a.safetensors",
                "models/x/latest.safetensors",
                "models/x/sub/b.bin"
            ]
        );
        assert_eq!(
            w.entries[1].content,
            Content::Symlink("a.safetensors".into())
        );
        std::os::unix::fs::symlink("../../etc", root.join("m/bad")).unwrap();
        let f = Filter::globs(&[], &[]).unwrap();
        assert!(matches!(
            walk(&root.join("m"), "/x", &f),
            Err(SourceError::EscapingLink { .. })
        ));
    }

    /// A same-size edit in place with the mtime put back shipped the old layer: the
    /// fingerprint (and so the layer selector) must change.
    #[test]
    fn in_place_edit_with_restored_mtime_changes_the_fingerprint() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("app.py");
        fs::write(&f, b"print(1)\n").unwrap();
        let filter = Filter::globs(&[], &[]).unwrap();
        let before = walk(d.path(), "/app", &filter).unwrap().fingerprint;
        let meta = fs::metadata(&f).unwrap();
        let mtime = filetime::FileTime::from_last_modification_time(&meta);
        // Past the file system's timestamp granularity (coarse clocks tick every few ms).
        std::thread::sleep(std::time::Duration::from_millis(50));
        fs::write(&f, b"print(2)\n").unwrap();
        filetime::set_file_mtime(&f, mtime).unwrap();
        let after_meta = fs::metadata(&f).unwrap();
        assert_eq!(
            (
                after_meta.len(),
                after_meta.mtime(),
                after_meta.mtime_nsec(),
                after_meta.ino()
            ),
            (meta.len(), meta.mtime(), meta.mtime_nsec(), meta.ino())
        );
        let after = walk(d.path(), "/app", &filter).unwrap().fingerprint;
        assert_ne!(before, after);
        // Nothing touched: the same fingerprint.
        assert_eq!(after, walk(d.path(), "/app", &filter).unwrap().fingerprint);
    }
}
