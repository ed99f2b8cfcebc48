//! Shell completions, man pages and `--help` examples (issue 13, item 6).

use std::process::Command;

use crate::common::snapshot::render;
use crate::common::{TestContext, repo_root, run_ok, stdout};

/// The subcommands `mlimg --help` lists (without `help`).
fn subcommands(cx: &TestContext) -> Vec<String> {
    let help = stdout(&run_ok(cx.mlimg().arg("--help")));
    let section = help
        .split("Commands:\n")
        .nth(1)
        .and_then(|s| s.split("\n\n").next())
        .expect("a Commands section");
    let names: Vec<String> = section
        .lines()
        .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .filter(|n| n != "help")
        .collect();
    assert!(names.len() >= 12, "{names:?}");
    names
}

#[test]
fn every_subcommand_help_ends_with_examples() {
    let cx = TestContext::new();
    for sub in subcommands(&cx) {
        for flag in ["--help", "-h"] {
            let out = stdout(&run_ok(cx.mlimg().args([&sub, flag])));
            let (_, tail) = out
                .rsplit_once("\nExamples:\n")
                .unwrap_or_else(|| panic!("`mlimg {sub} {flag}` has no Examples section:\n{out}"));
            let lines: Vec<&str> = tail.lines().filter(|l| !l.trim().is_empty()).collect();
            assert!(!lines.is_empty(), "`mlimg {sub} {flag}`: empty Examples");
            for l in lines {
                assert!(
                    l.starts_with("  ") && l.contains("mlimg "),
                    "`mlimg {sub} {flag}` ends with something other than examples: {l:?}"
                );
            }
        }
    }
}

#[test]
fn bash_completion_loads_and_knows_the_commands() {
    let cx = TestContext::new();
    let script = cx.path().join("mlimg.bash");
    let out = run_ok(cx.mlimg().args(["completions", "bash"]));
    std::fs::write(&script, &out.stdout).expect("write");
    let text = stdout(&out);
    for sub in subcommands(&cx) {
        assert!(text.contains(&sub), "bash completion lacks {sub}");
    }
    // the script loads in bash and registers a completion for mlimg; completing `mlimg in`
    // offers `inspect` and `init`-like words, never an error
    let check = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "set -e; source {}; complete -p mlimg; COMP_WORDS=(mlimg insp); COMP_CWORD=1; \
             COMP_LINE='mlimg insp'; COMP_POINT=10; _mlimg mlimg insp mlimg; echo \"${{COMPREPLY[@]}}\"",
            script.display()
        ))
        .output()
        .expect("run bash");
    assert!(check.status.success(), "{}", render(&check));
    let o = stdout(&check);
    assert!(o.contains("-F _mlimg mlimg"), "{o}");
    assert!(
        o.lines().last().unwrap_or_default().contains("inspect"),
        "{o}"
    );
}

#[test]
fn zsh_and_fish_completions_name_every_command() {
    let cx = TestContext::new();
    let zsh = stdout(&run_ok(cx.mlimg().args(["completions", "zsh"])));
    assert!(zsh.starts_with("#compdef mlimg"), "{zsh}");
    let fish = stdout(&run_ok(cx.mlimg().args(["completions", "fish"])));
    for sub in subcommands(&cx) {
        assert!(zsh.contains(&format!("'{sub}:")), "zsh lacks {sub}");
        assert!(fish.contains(&format!("-a \"{sub}\"")), "fish lacks {sub}");
    }
    let bad = cx
        .mlimg()
        .args(["completions", "tcsh"])
        .output()
        .expect("run");
    assert_eq!(bad.status.code(), Some(2), "{}", render(&bad));
}

/// docs/man/ holds `mlimg man` and `mlimg man COMMAND` for every command; with
/// MLIMG_UPDATE_MAN=1 this test rewrites them instead of failing.
#[test]
fn man_pages_in_docs_are_up_to_date() {
    let cx = TestContext::new();
    let dir = repo_root().join("docs/man");
    let update = std::env::var_os("MLIMG_UPDATE_MAN").is_some();
    let mut pages = vec![(None, "mlimg.1".to_string())];
    for sub in subcommands(&cx) {
        pages.push((Some(sub.clone()), format!("mlimg-{sub}.1")));
    }
    let mut stale = Vec::new();
    for (sub, file) in &pages {
        let mut c = cx.mlimg();
        c.arg("man");
        if let Some(s) = sub {
            c.arg(s);
        }
        let page = run_ok(&mut c).stdout;
        assert!(page.starts_with(b".ie \\n(.g .ds Aq"), "{file} is not roff");
        let text = String::from_utf8_lossy(&page);
        if sub.is_some() {
            assert!(text.contains("Examples:"), "{file} has no examples");
        }
        let path = dir.join(file);
        if std::fs::read(&path).ok().as_deref() != Some(&page[..]) {
            if update {
                std::fs::create_dir_all(&dir).expect("mkdir");
                std::fs::write(&path, &page).expect("write");
            } else {
                stale.push(file.clone());
            }
        }
    }
    // no page for a command that is gone
    for e in std::fs::read_dir(&dir).expect("docs/man") {
        let name = e.expect("entry").file_name().to_string_lossy().to_string();
        if !pages.iter().any(|(_, f)| *f == name) {
            stale.push(format!("{name} (no such command)"));
        }
    }
    assert!(
        stale.is_empty(),
        "docs/man is out of date: {stale:?}; run MLIMG_UPDATE_MAN=1 cargo test --test it man_pages"
    );
    let bad = cx.mlimg().args(["man", "nosuch"]).output().expect("run");
    assert_eq!(bad.status.code(), Some(1), "{}", render(&bad));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("commands: build"));
}
