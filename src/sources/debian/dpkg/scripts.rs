//! Maintainer scripts, without running them: what a package's `preinst`/`postinst` and
//! `triggers` would do at install time, sorted into what an image needs and what it does not.
//!
//! The scripts are read as shell text: continuation lines are joined, comments dropped, and each
//! simple command (split at `;`, `&&`, `||`, `|`, `&`, `;;`, with `if`/`then`/`else`/`fi`/`!`,
//! `case` patterns, redirections and variable assignments stripped) is classified by its
//! command name. Handled:
//!
//! - **ldconfig** (a `ldconfig` call or an `activate[-noawait] ldconfig` trigger): nothing is
//!   needed when the package's versioned libraries (`*.so.*`) sit in the loader's default
//!   folders (`/usr/lib/<triplet>`, `/lib/<triplet>`, `/usr/lib`, `/lib`), which it searches
//!   without a cache; a library elsewhere or a shipped `/etc/ld.so.conf.d/*` file is reported.
//! - **`update-alternatives --install LINK NAME PATH PRIORITY [--slave LINK NAME PATH]...`** with
//!   literal arguments: returned as an [`Alternative`]; [`super::alternative_links`] turns the
//!   alternatives of all packages (and the base's `var/lib/dpkg/alternatives/*`) into the
//!   symlinks (`LINK -> /etc/alternatives/NAME -> PATH`, highest priority wins, ties to the
//!   smallest path, as update-alternatives' auto mode) and the admin files update-alternatives
//!   would write. `--remove`/`--remove-all` have nothing to remove in a fresh install.
//! - **Nothing to do in an image**: debconf (`. /usr/share/debconf/confmodule`, `db_*`), service
//!   management (`deb-systemd-helper`, `deb-systemd-invoke`, `systemctl`, `invoke-rc.d`,
//!   `update-rc.d`), `dpkg-maintscript-helper` (conffile moves on upgrade), Python byte
//!   compilation (`py3compile`, `pycompile`, `py3clean`, `pyclean`), `dpkg --compare-versions`,
//!   and shell plumbing (`set`, `true`, `:`, `exit`, `return`, `[`, `test`, `echo`, `printf`,
//!   `which`, `command -v`, `shift`, `unset`, `local`, assignments).
//!
//! Everything else (`adduser`/`useradd`/`groupadd`, `dpkg-divert`, `dpkg-statoverride`,
//! `systemd-sysusers`, `systemd-tmpfiles`, cache updates, `update-alternatives` with variables,
//! command substitutions, here-documents, loops, functions, other triggers...) is listed in
//! [`ScriptActions::unhandled`], one line per command, for a warning naming the package. `prerm`,
//! `postrm` and `config` never run at install time and are not read (debconf questions keep
//! their defaults). Trigger interests of the base's packages (e.g. man-db's) are not processed.

use std::collections::BTreeSet;

use super::alternatives::{Alternative, AlternativeSlave};

use super::super::deb::{DataEntry, DataKind, DebControl};

/// What a package's install-time scripts would do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScriptActions {
    /// `update-alternatives --install` calls, in script order.
    pub alternatives: Vec<Alternative>,
    /// The package asks for ldconfig (call or trigger); nothing more is needed unless
    /// `unhandled` says so.
    pub ldconfig: bool,
    /// What the scripts would do that is not reproduced, one line each
    /// (`postinst: adduser --system foo`).
    pub unhandled: Vec<String>,
}

/// Commands that change nothing an image needs.
const HARMLESS: &[&str] = &[
    "set",
    "true",
    "false",
    ":",
    "exit",
    "return",
    "[",
    "[[",
    "test",
    "echo",
    "printf",
    "which",
    "shift",
    "unset",
    "continue",
    "break",
    "grep",
    "local",
    "deb-systemd-helper",
    "deb-systemd-invoke",
    "systemctl",
    "invoke-rc.d",
    "update-rc.d",
    "dpkg-maintscript-helper",
    "py3compile",
    "pycompile",
    "py3clean",
    "pyclean",
];

/// Shell words that only shape control flow.
const KEYWORDS: &[&str] = &[
    "if", "then", "else", "elif", "fi", "!", "{", "}", "esac", "do", "done",
];

/// Classifies the install-time scripts of a package (`preinst`, `postinst`, `triggers`);
/// `entries` are its data entries (for the ldconfig check).
pub fn script_actions(package: &str, control: &DebControl, entries: &[DataEntry]) -> ScriptActions {
    let mut out = ScriptActions::default();
    for script in ["preinst", "postinst"] {
        let Some(bytes) = control.scripts.get(script) else {
            continue;
        };
        let Ok(text) = std::str::from_utf8(bytes) else {
            out.unhandled
                .push(format!("{script}: not UTF-8 text, cannot be read"));
            continue;
        };
        if !text.starts_with("#!/bin/sh")
            && !text.starts_with("#! /bin/sh")
            && !text.starts_with("#!/bin/bash")
            && !text.starts_with("#!/usr/bin/env sh")
        {
            let first = text.lines().next().unwrap_or_default();
            out.unhandled
                .push(format!("{script}: not a shell script ({first})"));
            continue;
        }
        classify_script(package, script, text, &mut out);
    }
    if let Some(bytes) = control.scripts.get("triggers") {
        for line in String::from_utf8_lossy(bytes).lines() {
            let line = line.split('#').next().unwrap_or_default().trim();
            let mut words = line.split_whitespace();
            match (words.next(), words.next()) {
                (None, _) => {}
                (Some("activate" | "activate-noawait" | "activate-await"), Some("ldconfig")) => {
                    out.ldconfig = true;
                }
                // This package's interest in others' files: processing for files of packages
                // installed later, not now.
                (Some(w), Some(_)) if w.starts_with("interest") => {}
                _ => out.unhandled.push(format!("triggers: {line}")),
            }
        }
    }
    if out.ldconfig {
        ldconfig_check(entries, &mut out);
    }
    out
}

fn ldconfig_check(entries: &[DataEntry], out: &mut ScriptActions) {
    let mut dirs = BTreeSet::new();
    for e in entries {
        if let Some(conf) = e.path.strip_prefix("etc/ld.so.conf.d/")
            && e.kind != DataKind::Dir
        {
            // libc6's `<triplet>.conf` lists the multiarch folders, which are defaults anyway.
            let parts: Vec<&str> = conf.trim_end_matches(".conf").split('-').collect();
            if parts.len() == 3 && parts[1] == "linux" {
                continue;
            }
            out.unhandled.push(format!(
                "ldconfig: /{} adds library folders that need ld.so's cache",
                e.path
            ));
            continue;
        }
        let (dir, name) = e.path.rsplit_once('/').unwrap_or(("", &e.path));
        // Versioned libraries only (plugins are unversioned `.so` files loaded by path), and not
        // the dynamic loader itself (`/lib64/ld-linux-x86-64.so.2`).
        let loader = name.starts_with("ld-linux") || name.starts_with("ld64.so");
        if !name.contains(".so.") || loader || e.kind == DataKind::Dir {
            continue;
        }
        if !default_lib_dir(dir) {
            dirs.insert(dir.to_string());
        }
    }
    for dir in dirs {
        out.unhandled.push(format!(
            "ldconfig: libraries in /{dir}, outside the loader's default folders"
        ));
    }
}

fn default_lib_dir(dir: &str) -> bool {
    let triplet = |rest: &str| !rest.contains('/') && rest.contains("-linux-");
    match dir {
        "lib" | "usr/lib" => true,
        _ => dir
            .strip_prefix("usr/lib/")
            .or_else(|| dir.strip_prefix("lib/"))
            .is_some_and(triplet),
    }
}

/// A word of a shell command line: its unquoted text, and whether it had expansions (`$`,
/// backquotes) that make its value unknown.
#[derive(Debug, Clone)]
struct Word {
    text: String,
    dynamic: bool,
    op: bool,
}

/// Splits a logical line into words and operators; `None` for what this reader does not follow
/// (unterminated quotes).
fn tokenize(line: &str) -> Option<Vec<Word>> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut dynamic = false;
    let mut in_word = false;
    let mut chars = line.chars().peekable();
    let flush =
        |words: &mut Vec<Word>, cur: &mut String, dynamic: &mut bool, in_word: &mut bool| {
            if *in_word {
                words.push(Word {
                    text: std::mem::take(cur),
                    dynamic: *dynamic,
                    op: false,
                });
            }
            *dynamic = false;
            *in_word = false;
        };
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                loop {
                    match chars.next()? {
                        '\'' => break,
                        c => cur.push(c),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next()? {
                        '"' => break,
                        '\\' => cur.push(chars.next()?),
                        c => {
                            if c == '$' || c == '`' {
                                dynamic = true;
                            }
                            cur.push(c)
                        }
                    }
                }
            }
            '\\' => {
                in_word = true;
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            '#' if !in_word => break,
            c if c.is_whitespace() => flush(&mut words, &mut cur, &mut dynamic, &mut in_word),
            '&' if cur.ends_with('>') || cur.ends_with('<') => cur.push(c),
            ';' | '&' | '|' | '(' | ')' => {
                flush(&mut words, &mut cur, &mut dynamic, &mut in_word);
                let mut op = c.to_string();
                if let Some(&n) = chars.peek()
                    && ((c == ';' && n == ';') || (c == '&' && n == '&') || (c == '|' && n == '|'))
                {
                    op.push(n);
                    chars.next();
                }
                words.push(Word {
                    text: op,
                    dynamic: false,
                    op: true,
                });
            }
            '$' if chars.peek() == Some(&'(') => {
                // A command substitution: kept whole in the word.
                in_word = true;
                dynamic = true;
                cur.push('$');
                let mut depth = 0;
                loop {
                    let c = chars.next()?;
                    cur.push(c);
                    match c {
                        '(' => depth += 1,
                        ')' if depth == 1 => break,
                        ')' => depth -= 1,
                        _ => {}
                    }
                }
            }
            c => {
                if c == '$' || c == '`' {
                    dynamic = true;
                }
                in_word = true;
                cur.push(c);
            }
        }
    }
    flush(&mut words, &mut cur, &mut dynamic, &mut in_word);
    Some(words)
}

/// Joins continuation lines (`\` at the end).
fn logical_lines(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in text.lines() {
        if let Some(head) = line.strip_suffix('\\') {
            cur.push_str(head);
            cur.push(' ');
            continue;
        }
        cur.push_str(line);
        out.push(std::mem::take(&mut cur));
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

fn is_assignment(word: &str) -> bool {
    word.split_once('=').is_some_and(|(name, _)| {
        !name.is_empty()
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !name.starts_with(|c: char| c.is_ascii_digit())
    })
}

/// A redirection word (`>/dev/null`, `2>&1`, `>`, `<`...): `Some((takes the next word as its
/// target, output, inline target))`.
fn redirection(word: &Word) -> Option<(bool, bool, &str)> {
    if word.op {
        return None;
    }
    let rest = word.text.trim_start_matches(|c: char| c.is_ascii_digit());
    if !(rest.starts_with('>') || rest.starts_with('<')) {
        return None;
    }
    let output = rest.starts_with('>');
    let body = rest.trim_start_matches(['>', '<']);
    if let Some(fd) = body.strip_prefix('&') {
        // `>&2`, `2>&1`: another descriptor, not a file.
        return Some((false, false, fd));
    }
    Some((body.is_empty(), output, body))
}

/// An output redirection that writes a file (anything but `/dev/null`).
fn writes_file(output: bool, target: &str) -> bool {
    output && target != "/dev/null"
}

fn classify_script(package: &str, script: &str, text: &str, out: &mut ScriptActions) {
    let mut in_heredoc: Option<String> = None;
    for line in logical_lines(text) {
        if let Some(end) = &in_heredoc {
            if line.trim() == end {
                in_heredoc = None;
            }
            continue;
        }
        let mut trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        // A case pattern: `configure)`, `abort-upgrade|abort-remove)`, `*)`.
        if let Some(i) = trimmed.find(')') {
            let pattern = trimmed[..i].trim_start_matches('(');
            if !pattern.is_empty()
                && !pattern.contains(char::is_whitespace)
                && !pattern.contains('(')
                && !pattern.contains('=')
            {
                trimmed = trimmed[i + 1..].trim();
                if trimmed.is_empty() {
                    continue;
                }
            }
        }
        if let Some(i) = trimmed.find("<<") {
            let tag = trimmed[i + 2..]
                .trim_start_matches('-')
                .trim()
                .trim_matches(|c| c == '\'' || c == '"');
            let tag: String = tag
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !tag.is_empty() {
                in_heredoc = Some(tag);
            }
            out.unhandled
                .push(format!("{script}: here-document: {trimmed}"));
            continue;
        }
        let Some(words) = tokenize(trimmed) else {
            out.unhandled
                .push(format!("{script}: unreadable shell: {trimmed}"));
            continue;
        };
        for command in words.split(|w| w.op && w.text != "(" && w.text != ")") {
            classify_command(package, script, command, out);
        }
    }
}

fn classify_command(package: &str, script: &str, command: &[Word], out: &mut ScriptActions) {
    // Strip keywords, assignments and redirections.
    let mut words: Vec<&Word> = Vec::new();
    let mut pending_output = None;
    let mut leading = true;
    for w in command {
        if let Some(output) = pending_output.take() {
            if writes_file(output, &w.text) || w.dynamic {
                out.unhandled
                    .push(format!("{script}: writes a file: {}", render(command)));
                return;
            }
            continue;
        }
        if let Some((takes_target, output, target)) = redirection(w) {
            if takes_target {
                pending_output = Some(output);
            } else if writes_file(output, target) || (output && w.dynamic) {
                out.unhandled
                    .push(format!("{script}: writes a file: {}", render(command)));
                return;
            }
            continue;
        }
        if leading && !w.dynamic && KEYWORDS.contains(&w.text.as_str()) {
            continue;
        }
        if leading && is_assignment(&w.text) {
            if w.text.contains("$(") || w.text.contains('`') {
                out.unhandled.push(format!(
                    "{script}: command substitution: {}",
                    render(command)
                ));
                return;
            }
            continue;
        }
        leading = false;
        words.push(w);
    }
    let Some(first) = words.first() else {
        return;
    };
    if words.iter().any(|w| w.op) {
        out.unhandled.push(format!(
            "{script}: subshell or function: {}",
            render(command)
        ));
        return;
    }
    let name = first.text.as_str();
    let args: Vec<&str> = words[1..].iter().map(|w| w.text.as_str()).collect();
    let has_subst = words
        .iter()
        .any(|w| w.text.contains("$(") || w.text.contains('`'));
    if first.dynamic {
        out.unhandled
            .push(format!("{script}: computed command: {}", render(command)));
        return;
    }
    if has_subst && !matches!(name, "[" | "test" | "echo" | "printf") {
        out.unhandled.push(format!(
            "{script}: command substitution: {}",
            render(command)
        ));
        return;
    }
    match name {
        "case" | "in" => {}
        n if HARMLESS.contains(&n) => {}
        n if n.starts_with("db_") => {}
        "." | "source" if args == ["/usr/share/debconf/confmodule"] => {}
        "command" if args.first() == Some(&"-v") => {}
        "dpkg" if args.first() == Some(&"--compare-versions") => {}
        "ldconfig" => out.ldconfig = true,
        "update-alternatives" => alternatives_call(package, script, &words[1..], command, out),
        _ => out.unhandled.push(format!("{script}: {}", render(command))),
    }
}

fn render(command: &[Word]) -> String {
    command
        .iter()
        .map(|w| w.text.as_str())
        .collect::<Vec<_>>()
        .join(" ")
}

fn alternatives_call(
    package: &str,
    script: &str,
    args: &[&Word],
    command: &[Word],
    out: &mut ScriptActions,
) {
    let unhandled = |out: &mut ScriptActions, why: &str| {
        out.unhandled
            .push(format!("{script}: {why}: {}", render(command)))
    };
    if args.iter().any(|w| w.dynamic) {
        return unhandled(out, "update-alternatives with variables");
    }
    let args: Vec<&str> = args.iter().map(|w| w.text.as_str()).collect();
    // Options that do not change what is installed.
    let args: Vec<&str> = args
        .into_iter()
        .filter(|a| !matches!(*a, "--quiet" | "--verbose" | "--force" | "--debug"))
        .collect();
    match args.first().copied() {
        Some("--remove" | "--remove-all") => {}
        Some("--install") => {
            let [_, link, name, path, priority, rest @ ..] = args.as_slice() else {
                return unhandled(out, "update-alternatives --install needs 4 arguments");
            };
            let Ok(priority) = priority.parse::<i64>() else {
                return unhandled(out, "update-alternatives priority is not a number");
            };
            let mut slaves = Vec::new();
            let mut rest = rest;
            while let [flag, slink, sname, spath, more @ ..] = rest {
                if *flag != "--slave" {
                    break;
                }
                slaves.push(AlternativeSlave {
                    link: slink.to_string(),
                    name: sname.to_string(),
                    path: spath.to_string(),
                });
                rest = more;
            }
            if !rest.is_empty() {
                return unhandled(out, "update-alternatives with arguments not understood");
            }
            let all_abs = std::iter::once((*link, *path))
                .chain(slaves.iter().map(|s| (s.link.as_str(), s.path.as_str())))
                .all(|(l, p)| l.starts_with('/') && p.starts_with('/'));
            let names_ok = std::iter::once(*name)
                .chain(slaves.iter().map(|s| s.name.as_str()))
                .all(|n| !n.is_empty() && !n.contains('/') && n != "." && n != "..");
            if !all_abs || !names_ok {
                return unhandled(out, "update-alternatives with relative paths or bad names");
            }
            out.alternatives.push(Alternative {
                package: package.to_string(),
                link: link.to_string(),
                name: name.to_string(),
                path: path.to_string(),
                priority,
                slaves,
            });
        }
        _ => unhandled(out, "update-alternatives"),
    }
}
