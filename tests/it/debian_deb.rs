//! Debian packages without dpkg: `.deb` reading, extraction and the dpkg database entries,
//! checked against the real tools (`dpkg-deb`, `dpkg --root`, `update-alternatives --root`) on
//! packages built here with `dpkg-deb --build`.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use mlimg::sources::debian::deb::{self, DataEntry, DataKind, DebControl, DebError};
use mlimg::sources::debian::dpkg::{self, PackageFiles};

/// Runs a tool that these tests need; a missing tool is a failure, never a skip.
fn run(cmd: &mut Command) -> String {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let out = cmd.output().unwrap_or_else(|e| {
        panic!("{program} is needed by these tests (apt-get install dpkg): {e}")
    });
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn write(path: &Path, bytes: &[u8], mode: u32) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, bytes).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

const DEMO_CONTROL: &str = "\
Package: demo
Version: 1:1.0-2
Architecture: amd64
Maintainer: Test <t@example.org>
Installed-Size: 12
Homepage: https://example.org
Depends: libc6 (>=2.34),   foo|bar (<< 2), baz:any
Multi-Arch: foreign
Section: utils
Priority: optional
Essential: no
Source: demo-src
Built-Using: gcc (= 12)
Suggests: zzz
Breaks: old (< 1)
Conflicts: other
Provides: demo-virtual
Pre-Depends: dpkg (>= 1.15)
Recommends: r1,
 r2
Replaces: old
Description: a demo package 
 Its long description.\t
 .
 More of it.  
";

const ALT_POSTINST: &str = "#!/bin/sh
set -e
# Automatically added by dh_installalternatives/13.11
if [ \"$1\" = \"configure\" ] || [ \"$1\" = \"abort-upgrade\" ]; then
        update-alternatives --install /usr/bin/demo demo /usr/bin/tool 20 \\
            --slave /usr/share/man/man1/demo.1.gz demo.1.gz /usr/share/man/man1/tool.1.gz \\
            --slave /usr/bin/demo-extra demo-extra /usr/bin/tool-link
fi
# End automatically added section
# Automatically added by dh_installsystemd/13.11
if [ \"$1\" = \"configure\" ] || [ \"$1\" = \"abort-upgrade\" ] ; then
\tdeb-systemd-helper unmask 'demo.service' >/dev/null || true
\tif deb-systemd-helper --quiet was-enabled 'demo.service'; then
\t\tdeb-systemd-helper enable 'demo.service' >/dev/null || true
\telse
\t\tdeb-systemd-helper update-state 'demo.service' >/dev/null || true
\tfi
fi
# End automatically added section
exit 0
";

/// Lays out the demo package tree (control + data) under `pkg`.
fn demo_tree(pkg: &Path, control: &str, postinst: Option<&str>) {
    write(&pkg.join("DEBIAN/control"), control.as_bytes(), 0o644);
    write(
        &pkg.join("DEBIAN/conffiles"),
        b"/etc/demo/demo.conf\n",
        0o644,
    );
    write(
        &pkg.join("DEBIAN/triggers"),
        b"activate-noawait ldconfig\n",
        0o644,
    );
    write(
        &pkg.join("DEBIAN/shlibs"),
        b"libdemo 1 libdemo1 (>= 1.0)\n",
        0o644,
    );
    if let Some(p) = postinst {
        write(&pkg.join("DEBIAN/postinst"), p.as_bytes(), 0o755);
    }
    write(&pkg.join("usr/bin/tool"), b"#!/bin/sh\necho tool\n", 0o755);
    fs::hard_link(pkg.join("usr/bin/tool"), pkg.join("usr/bin/tool-hard")).unwrap();
    std::os::unix::fs::symlink("tool", pkg.join("usr/bin/tool-link")).unwrap();
    write(&pkg.join("usr/bin/suid"), b"setuid\n", 0o4755);
    write(&pkg.join("usr/bin/sgid"), b"setgid\n", 0o2755);
    write(&pkg.join("etc/demo/demo.conf"), b"key = value\n", 0o644);
    write(&pkg.join("usr/share/doc/demo/README"), b"read me\n", 0o644);
    write(&pkg.join("usr/share/man/man1/tool.1.gz"), b"man\n", 0o644);
    write(
        &pkg.join("usr/lib/x86_64-linux-gnu/libdemo.so.1.0.0"),
        &[0x7f, b'E', b'L', b'F', 0, 1, 2, 3],
        0o644,
    );
    std::os::unix::fs::symlink(
        "libdemo.so.1.0.0",
        pkg.join("usr/lib/x86_64-linux-gnu/libdemo.so.1"),
    )
    .unwrap();
    fs::create_dir_all(pkg.join("var/lib/demo/private")).unwrap();
    fs::set_permissions(pkg.join("var/lib/demo"), fs::Permissions::from_mode(0o1777)).unwrap();
    fs::set_permissions(
        pkg.join("var/lib/demo/private"),
        fs::Permissions::from_mode(0o700),
    )
    .unwrap();
    // md5sums of the data files, conffiles left out as debhelper does.
    let out = run(Command::new("sh")
        .current_dir(pkg)
        .arg("-c")
        .arg("find usr var -type f | LC_ALL=C sort | xargs md5sum"));
    write(&pkg.join("DEBIAN/md5sums"), out.as_bytes(), 0o644);
}

/// Builds `<name>.deb` in `dir` from a tree made by `fill`, compressed with `compression`
/// (`xz`, `gzip`, `zstd`, `none`).
fn build_deb(dir: &Path, name: &str, compression: &str, fill: impl FnOnce(&Path)) -> PathBuf {
    let pkg = dir.join(format!("{name}-tree"));
    fill(&pkg);
    let deb = dir.join(format!("{name}.deb"));
    run(Command::new("dpkg-deb")
        .arg("--root-owner-group")
        .arg(format!("-Z{compression}"))
        .arg("--build")
        .arg(&pkg)
        .arg(&deb));
    deb
}

/// A tree's contents by relative path: kind, mode, bytes or target, and for files the group of
/// paths sharing the inode.
fn snapshot(root: &Path) -> BTreeMap<String, String> {
    let mut inodes: HashMap<u64, Vec<String>> = HashMap::new();
    let mut out = BTreeMap::new();
    for e in walkdir::WalkDir::new(root).min_depth(1) {
        let e = e.unwrap();
        let rel = e
            .path()
            .strip_prefix(root)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let m = fs::symlink_metadata(e.path()).unwrap();
        let mode = m.mode() & 0o7777;
        let desc = if m.file_type().is_symlink() {
            format!("link -> {}", fs::read_link(e.path()).unwrap().display())
        } else if m.is_dir() {
            format!("dir {mode:o}")
        } else {
            inodes.entry(m.ino()).or_default().push(rel.clone());
            format!("file {mode:o} {:?}", fs::read(e.path()).unwrap())
        };
        out.insert(rel, desc);
    }
    for group in inodes.values().filter(|g| g.len() > 1) {
        for p in group {
            let d = out.get_mut(p).unwrap();
            d.push_str(&format!(" linked with {group:?}"));
        }
    }
    out
}

/// `dpkg-deb -c`'s listing as (type, mode, owner, path, link target).
fn dpkg_deb_listing(deb: &Path) -> Vec<(char, u32, String, String, Option<String>)> {
    let text = run(Command::new("dpkg-deb").arg("-c").arg(deb));
    let mut out = Vec::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.splitn(6, char::is_whitespace).collect();
        let perms = fields[0];
        let kind = perms.chars().next().unwrap();
        let mut mode = 0;
        for (i, c) in perms[1..].chars().enumerate() {
            let bit = 1 << (8 - i);
            match c {
                '-' => {}
                's' | 't' => mode |= bit,
                _ => mode |= bit,
            }
        }
        let special = |c: char, flag: u32, plain: char| -> u32 {
            if c == plain.to_ascii_lowercase() || c == plain {
                flag
            } else {
                0
            }
        };
        let p: Vec<char> = perms.chars().collect();
        mode |=
            special(p[3], 0o4000, 'S') | special(p[6], 0o2000, 'S') | special(p[9], 0o1000, 'T');
        // `S`/`T` mean the special bit without the execute bit.
        for (i, c) in [(3, p[3]), (6, p[6]), (9, p[9])] {
            if c == 'S' || c == 'T' {
                mode &= !(1 << (9 - i));
            }
        }
        let owner = line.split_whitespace().nth(1).unwrap().to_string();
        // The path starts after the time column (HH:MM).
        let rest = line
            .split_whitespace()
            .skip(5)
            .collect::<Vec<_>>()
            .join(" ");
        let (path, target) = if let Some((p, t)) = rest.split_once(" -> ") {
            (p.to_string(), Some(t.to_string()))
        } else if let Some((p, t)) = rest.split_once(" link to ") {
            (p.to_string(), Some(t.to_string()))
        } else {
            (rest, None)
        };
        out.push((kind, mode, owner, path, target));
    }
    out
}

#[test]
fn extract_matches_dpkg_deb_for_every_compression() {
    for compression in ["xz", "gzip", "zstd", "none"] {
        let tmp = tempfile::tempdir().unwrap();
        let deb = build_deb(tmp.path(), "demo", compression, |p| {
            demo_tree(p, DEMO_CONTROL, Some(ALT_POSTINST))
        });
        let ours = tmp.path().join("ours");
        fs::create_dir(&ours).unwrap();
        let entries = deb::extract_data(&deb, &ours).unwrap();
        let theirs = tmp.path().join("theirs");
        run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&theirs));
        let (a, b) = (snapshot(&ours), snapshot(&theirs));
        assert_eq!(a, b, "{compression}: extracted trees differ");
        assert!(a["usr/bin/suid"].starts_with("file 4755"), "{a:?}");
        assert!(a["usr/bin/tool"].contains("linked with"), "{a:?}");

        // The entries are dpkg-deb's listing, in the same order.
        let listing = dpkg_deb_listing(&deb);
        let expected: Vec<_> = listing
            .iter()
            .filter(|(_, _, _, path, _)| path != "./")
            .map(|(kind, mode, owner, path, target)| {
                let path = path
                    .trim_start_matches("./")
                    .trim_end_matches('/')
                    .to_string();
                let kind = match (kind, target) {
                    ('d', _) => "dir".to_string(),
                    ('-', _) => "file".to_string(),
                    ('l', Some(t)) => format!("symlink {t}"),
                    ('h', Some(t)) => format!("hardlink {}", t.trim_start_matches("./")),
                    other => panic!("unexpected listing entry {other:?}"),
                };
                (path, kind, *mode, owner.clone())
            })
            .collect();
        let got: Vec<_> = entries
            .iter()
            .map(|e| {
                let kind = match &e.kind {
                    DataKind::Dir => "dir".to_string(),
                    DataKind::File { .. } => "file".to_string(),
                    DataKind::Symlink(t) => format!("symlink {t}"),
                    DataKind::Hardlink(t) => format!("hardlink {t}"),
                };
                let owner = format!(
                    "{}/{}",
                    if e.uid == 0 { "root" } else { "?" },
                    if e.gid == 0 { "root" } else { "?" }
                );
                (e.path.clone(), kind, e.mode, owner)
            })
            .collect();
        assert_eq!(
            got, expected,
            "{compression}: entries differ from dpkg-deb -c"
        );
        let tool = entries.iter().find(|e| e.path == "usr/bin/tool").unwrap();
        assert_eq!(tool.kind, DataKind::File { size: 20 });
    }
}

#[test]
fn read_control_returns_every_member() {
    let tmp = tempfile::tempdir().unwrap();
    let deb = build_deb(tmp.path(), "demo", "xz", |p| {
        demo_tree(p, DEMO_CONTROL, Some(ALT_POSTINST))
    });
    let c = deb::read_control(&deb).unwrap();
    let tree = tmp.path().join("demo-tree/DEBIAN");
    assert_eq!(c.control, fs::read_to_string(tree.join("control")).unwrap());
    assert_eq!(
        c.md5sums.as_deref(),
        Some(fs::read_to_string(tree.join("md5sums")).unwrap().as_str())
    );
    assert!(c.md5sums.as_deref().unwrap().contains("usr/bin/tool\n"));
    assert_eq!(c.conffiles.as_deref(), Some("/etc/demo/demo.conf\n"));
    assert_eq!(c.conffile_paths(), vec!["etc/demo/demo.conf".to_string()]);
    let names: Vec<&str> = c.scripts.keys().map(String::as_str).collect();
    assert_eq!(names, ["postinst", "shlibs", "triggers"]);
    assert_eq!(c.scripts["postinst"], ALT_POSTINST.as_bytes());
}

/// A root that dpkg can install into, with an empty database.
fn dpkg_root(dir: &Path) -> PathBuf {
    let root = dir.join("root");
    fs::create_dir_all(root.join("var/lib/dpkg/info")).unwrap();
    fs::create_dir_all(root.join("var/lib/dpkg/updates")).unwrap();
    fs::write(root.join("var/lib/dpkg/status"), "").unwrap();
    root
}

fn dpkg_install(root: &Path, deb: &Path) {
    run(Command::new("dpkg")
        .arg(format!("--root={}", root.display()))
        .arg("--force-all")
        .arg("--log=/dev/null")
        .arg("-i")
        .arg(deb));
}

/// What our code records for a package: its status stanza and info files.
/// An info file (image path, bytes, mode).
type InfoFile = (String, Vec<u8>, u32);
/// ("package\tarch", status stanza, info files).
type Record = (String, String, Vec<InfoFile>);

fn our_records(deb: &Path, scratch: &Path) -> Record {
    let mut control = deb::read_control(deb).unwrap();
    fs::create_dir_all(scratch).unwrap();
    let entries = deb::extract_data(deb, scratch).unwrap();
    if control.md5sums.is_none() {
        control.md5sums = Some(dpkg::generate_md5sums(&entries, scratch).unwrap());
    }
    let fields = dpkg::parse_control(&control.control).unwrap();
    let package = dpkg::field(&fields, "Package").unwrap().to_string();
    let arch = dpkg::field(&fields, "Architecture").unwrap().to_string();
    let same = dpkg::field(&fields, "Multi-Arch") == Some("same");
    let conffiles = dpkg::conffile_md5s(&control, scratch).unwrap();
    let stanza = dpkg::status_stanza(&control.control, &conffiles).unwrap();
    let info = dpkg::info_files(&package, &arch, same, &control, &entries);
    (format!("{package}\t{arch}"), stanza, info)
}

/// The info folder of a dpkg root: (image path, bytes, mode), sorted; dpkg's own `format` file
/// left out.
fn real_info(root: &Path) -> Vec<(String, Vec<u8>, u32)> {
    let mut out = Vec::new();
    for e in fs::read_dir(root.join("var/lib/dpkg/info")).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        if name == "format" {
            continue;
        }
        let mode = e.metadata().unwrap().mode() & 0o7777;
        out.push((
            format!("var/lib/dpkg/info/{name}"),
            fs::read(e.path()).unwrap(),
            mode,
        ));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn readable(files: &[(String, Vec<u8>, u32)]) -> Vec<(String, String, String)> {
    files
        .iter()
        .map(|(p, b, m)| {
            (
                p.clone(),
                String::from_utf8_lossy(b).into_owned(),
                format!("{m:o}"),
            )
        })
        .collect()
}

fn merged(base: &str, records: &[Record]) -> String {
    let new: Vec<(String, String, String)> = records
        .iter()
        .map(|(key, stanza, _)| {
            let (p, a) = key.split_once('\t').unwrap();
            (p.to_string(), a.to_string(), stanza.clone())
        })
        .collect();
    dpkg::merge_status(base, &new)
}

#[test]
fn dpkg_database_matches_real_dpkg() {
    let tmp = tempfile::tempdir().unwrap();
    // No postinst: dpkg would run it chrooted into the empty root.
    let demo = build_deb(tmp.path(), "demo", "xz", |p| {
        demo_tree(p, DEMO_CONTROL, None)
    });
    let lib_control = "Package: aaa-libdemo1\nVersion: 2.0\nArchitecture: amd64\n\
        Multi-Arch: same\nEssential: yes\nMaintainer: T <t@example.org>\n\
        Description: a library\n";
    let lib = build_deb(tmp.path(), "lib", "zstd", |p| {
        write(&p.join("DEBIAN/control"), lib_control.as_bytes(), 0o644);
        write(
            &p.join("usr/lib/x86_64-linux-gnu/libdemo2.so.1"),
            b"ELF",
            0o644,
        );
        write(&p.join("usr/share/doc/aaa-libdemo1/copyright"), b"c", 0o644);
        fs::hard_link(
            p.join("usr/share/doc/aaa-libdemo1/copyright"),
            p.join("usr/share/doc/aaa-libdemo1/copyright.hard"),
        )
        .unwrap();
    });
    let root = dpkg_root(tmp.path());

    // One package into an empty database.
    dpkg_install(&root, &demo);
    let rec_demo = our_records(&demo, &tmp.path().join("x-demo"));
    let status_1 = fs::read_to_string(root.join("var/lib/dpkg/status")).unwrap();
    assert_eq!(merged("", std::slice::from_ref(&rec_demo)), status_1);
    assert!(
        status_1.contains("Conffiles:\n /etc/demo/demo.conf "),
        "{status_1}"
    );
    assert_eq!(readable(&rec_demo.2), readable(&real_info(&root)));
    let list = String::from_utf8(
        rec_demo
            .2
            .iter()
            .find(|f| f.0.ends_with("demo.list"))
            .unwrap()
            .1
            .clone(),
    )
    .unwrap();
    assert!(list.starts_with("/.\n/etc\n"), "{list}");

    // A second one, sorting before it, Multi-Arch: same.
    dpkg_install(&root, &lib);
    let rec_lib = our_records(&lib, &tmp.path().join("x-lib"));
    let status_2 = fs::read_to_string(root.join("var/lib/dpkg/status")).unwrap();
    assert_eq!(merged(&status_1, std::slice::from_ref(&rec_lib)), status_2);
    assert_eq!(merged("", &[rec_demo.clone(), rec_lib.clone()]), status_2);
    let mut ours: Vec<_> = rec_demo.2.iter().chain(&rec_lib.2).cloned().collect();
    ours.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(readable(&ours), readable(&real_info(&root)));
    assert!(
        ours.iter()
            .any(|f| f.0 == "var/lib/dpkg/info/aaa-libdemo1:amd64.list")
    );

    // A new version of demo replaces its stanza, the other kept byte for byte.
    let demo2 = build_deb(tmp.path(), "demo2", "gzip", |p| {
        demo_tree(p, &DEMO_CONTROL.replace("1:1.0-2", "1:1.1-1"), None)
    });
    dpkg_install(&root, &demo2);
    let rec_demo2 = our_records(&demo2, &tmp.path().join("x-demo2"));
    let status_3 = fs::read_to_string(root.join("var/lib/dpkg/status")).unwrap();
    assert!(status_3.contains("Version: 1:1.1-1"));
    assert_eq!(
        merged(&status_2, std::slice::from_ref(&rec_demo2)),
        status_3
    );
}

/// Runs a postinst against a root with the real update-alternatives (through a wrapper that
/// pins `--root`, so the host's alternatives are never touched).
fn run_postinst_in(root: &Path, postinst: &str, bin: &Path) {
    fs::create_dir_all(bin).unwrap();
    let real = run(Command::new("sh")
        .arg("-c")
        .arg("command -v update-alternatives"));
    let wrapper = format!(
        "#!/bin/sh\nexec {} --root '{}' --log /dev/null \"$@\"\n",
        real.trim(),
        root.display()
    );
    write(&bin.join("update-alternatives"), wrapper.as_bytes(), 0o755);
    // The unit helpers are stubs: they do not matter here.
    write(
        &bin.join("deb-systemd-helper"),
        b"#!/bin/sh\nexit 0\n",
        0o755,
    );
    let script = bin.join("postinst");
    write(&script, postinst.as_bytes(), 0o755);
    let path = format!("{}:/usr/bin:/bin:/usr/sbin:/sbin", bin.display());
    run(Command::new("sh")
        .arg(&script)
        .arg("configure")
        .env("PATH", path));
}

fn symlinks(root: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for e in walkdir::WalkDir::new(root).min_depth(1) {
        let e = e.unwrap();
        if e.path_is_symlink() {
            let rel = e
                .path()
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            out.push((rel, fs::read_link(e.path()).unwrap().display().to_string()));
        }
    }
    out.sort();
    out
}

#[test]
fn alternatives_match_update_alternatives() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    fs::create_dir_all(root.join("etc/alternatives")).unwrap();
    fs::create_dir_all(root.join("var/lib/dpkg/alternatives")).unwrap();
    let demo = build_deb(tmp.path(), "demo", "xz", |p| {
        demo_tree(p, DEMO_CONTROL, Some(ALT_POSTINST))
    });
    // A second provider with a higher priority and only one of the slaves.
    let other_postinst = "#!/bin/sh\nset -e\ncase \"$1\" in\n    configure)\n\
        update-alternatives --quiet --install /usr/bin/demo demo /usr/bin/other 50 \\\n\
        \t--slave /usr/bin/demo-extra demo-extra /usr/bin/other\n    ;;\nesac\n\nexit 0\n";
    let other = build_deb(tmp.path(), "other", "gzip", |p| {
        write(
            &p.join("DEBIAN/control"),
            b"Package: other\nVersion: 1\nArchitecture: all\nMaintainer: T <t@e.org>\nDescription: o\n",
            0o644,
        );
        write(&p.join("DEBIAN/postinst"), other_postinst.as_bytes(), 0o755);
        write(&p.join("usr/bin/other"), b"other", 0o755);
    });
    let mut all = Vec::new();
    let mut shipped = Vec::new();
    for (i, deb) in [&demo, &other].into_iter().enumerate() {
        let control = deb::read_control(deb).unwrap();
        let entries = deb::extract_data(deb, &root).unwrap();
        shipped.extend(entries.iter().map(|e| e.path.clone()));
        let fields = dpkg::parse_control(&control.control).unwrap();
        let package = dpkg::field(&fields, "Package").unwrap();
        let actions = dpkg::script_actions(package, &control, &entries);
        assert!(
            actions.unhandled.is_empty(),
            "{package}: {:?}",
            actions.unhandled
        );
        assert_eq!(actions.alternatives.len(), 1, "{package}: {actions:?}");
        all.extend(actions.alternatives);
        let postinst = String::from_utf8(control.scripts["postinst"].clone()).unwrap();
        run_postinst_in(&root, &postinst, &tmp.path().join(format!("bin{i}")));
    }
    assert_eq!(all[0].slaves.len(), 2);
    assert_eq!(all[0].priority, 20);
    assert_eq!(all[1].path, "/usr/bin/other");

    let exists = |p: &str| root.join(p.trim_start_matches('/')).exists();
    let links = dpkg::alternative_links(&BTreeMap::new(), &all, &exists);
    assert!(links.unhandled.is_empty(), "{:?}", links.unhandled);
    let real_admin = fs::read(root.join("var/lib/dpkg/alternatives/demo")).unwrap();
    assert_eq!(
        links.files,
        vec![("var/lib/dpkg/alternatives/demo".to_string(), real_admin)]
    );
    // The links update-alternatives made are ours.
    let made: Vec<_> = symlinks(&root)
        .into_iter()
        .filter(|l| !shipped.contains(&l.0))
        .collect();
    assert_eq!(made, links.symlinks);
    assert!(made.contains(&("etc/alternatives/demo".into(), "/usr/bin/other".into())));
    // The slave the winner lacks gets no link.
    assert!(
        !made.iter().any(|l| l.0 == "usr/share/man/man1/demo.1.gz"),
        "{made:?}"
    );

    // Merging with the base's admin file: the base's file is what update-alternatives wrote
    // after the first package; adding the second gives its final file again.
    let after_first = {
        let mut g = BTreeMap::new();
        let links = dpkg::alternative_links(&g, &all[..1], &exists);
        g.insert(
            "demo".to_string(),
            String::from_utf8(links.files[0].1.clone()).unwrap(),
        );
        g
    };
    let merged = dpkg::alternative_links(&after_first, &all[1..], &exists);
    assert_eq!(merged.files, links.files);
    assert_eq!(merged.symlinks, links.symlinks);
}

/// A minimal `ar` writer (the common format that dpkg-deb writes).
fn ar(members: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut out = b"!<arch>\n".to_vec();
    for (name, data) in members {
        out.extend(
            format!(
                "{:<16}{:<12}{:<6}{:<6}{:<8}{:<10}`\n",
                name,
                0,
                0,
                0,
                "100644",
                data.len()
            )
            .as_bytes(),
        );
        out.extend(data);
        if data.len() % 2 == 1 {
            out.push(b'\n');
        }
    }
    out
}

enum Raw<'a> {
    File(&'a str, &'a [u8]),
    Symlink(&'a str, &'a str),
    Hardlink(&'a str, &'a str),
    Fifo(&'a str),
    Dir(&'a str, u32),
}

/// A tar with names written raw (the `tar` crate's path setters refuse `..`).
fn raw_tar(entries: &[Raw<'_>]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_gnu();
        let (name, data): (&str, &[u8]) = match e {
            Raw::File(n, d) => {
                h.set_entry_type(tar::EntryType::Regular);
                (n, d)
            }
            Raw::Symlink(n, t) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_link_name(t).unwrap();
                (n, b"")
            }
            Raw::Hardlink(n, t) => {
                h.set_entry_type(tar::EntryType::Link);
                let bytes = t.as_bytes();
                h.as_old_mut().linkname[..bytes.len()].copy_from_slice(bytes);
                (n, b"")
            }
            Raw::Fifo(n) => {
                h.set_entry_type(tar::EntryType::Fifo);
                (n, b"")
            }
            Raw::Dir(n, _) => {
                h.set_entry_type(tar::EntryType::Directory);
                (n, b"")
            }
        };
        let bytes = name.as_bytes();
        h.as_old_mut().name[..bytes.len()].copy_from_slice(bytes);
        h.set_size(data.len() as u64);
        h.set_mode(match e {
            Raw::Dir(_, mode) => *mode,
            _ => 0o644,
        });
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_cksum();
        b.append(&h, data).unwrap();
    }
    b.into_inner().unwrap()
}

fn hostile_deb(dir: &Path, name: &str, data: &[Raw<'_>]) -> PathBuf {
    let control = {
        let mut b = tar::Builder::new(Vec::new());
        let text = b"Package: evil\nVersion: 1\nArchitecture: all\nDescription: e\n";
        let mut h = tar::Header::new_gnu();
        h.set_path("./control").unwrap();
        h.set_size(text.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append(&h, &text[..]).unwrap();
        b.into_inner().unwrap()
    };
    let bytes = ar(&[
        ("debian-binary", b"2.0\n".to_vec()),
        ("control.tar", control),
        ("data.tar", raw_tar(data)),
    ]);
    let path = dir.join(format!("{name}.deb"));
    fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn hostile_debs_are_refused_without_writing_outside() {
    let tmp = tempfile::tempdir().unwrap();
    let outside = tmp.path().join("outside");
    fs::create_dir(&outside).unwrap();
    let outside_s = outside.display().to_string();
    let cases: Vec<(&str, Vec<Raw<'_>>, &str)> = vec![
        ("dotdot", vec![Raw::File("./../evil", b"x")], "`..`"),
        (
            "dotdot-deep",
            vec![Raw::File("./usr/../../evil", b"x")],
            "`..`",
        ),
        (
            "abs-symlink",
            vec![Raw::Symlink("./a", &outside_s), Raw::File("./a/evil", b"x")],
            "symlink",
        ),
        (
            "rel-symlink",
            vec![
                Raw::Symlink("./b", "../outside"),
                Raw::File("./b/evil", b"x"),
            ],
            "symlink",
        ),
        (
            "symlink-then-dir",
            vec![
                Raw::Symlink("./c", "../outside"),
                Raw::File("./c/d/evil", b"x"),
            ],
            "symlink",
        ),
        (
            "replace-with-file",
            vec![
                Raw::Symlink("./e", "../outside/evil"),
                Raw::File("./e", b"x"),
            ],
            "twice",
        ),
        (
            "hardlink-out",
            vec![Raw::Hardlink("./h", "../outside/target")],
            "`..`",
        ),
        (
            "hardlink-abs",
            vec![Raw::Hardlink("./h", "/etc/passwd")],
            "not an earlier regular file",
        ),
        ("fifo", vec![Raw::Fifo("./run/fifo")], "fifo"),
    ];
    fs::write(outside.join("target"), b"keep").unwrap();
    for (name, entries, reason) in cases {
        let deb = hostile_deb(tmp.path(), name, &entries);
        let dest = tmp.path().join(format!("dest-{name}"));
        fs::create_dir(&dest).unwrap();
        let err = deb::extract_data(&deb, &dest).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, DebError::Entry { .. }), "{name}: {msg}");
        assert!(msg.contains(reason), "{name}: {msg}");
        assert!(msg.contains(&format!("{name}.deb")), "{name}: {msg}");
        assert!(msg.contains("data.tar"), "{name}: {msg}");
        let left: Vec<_> = fs::read_dir(&outside)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, vec![std::ffi::OsString::from("target")], "{name}");
        assert_eq!(fs::read(outside.join("target")).unwrap(), b"keep", "{name}");
        assert!(!tmp.path().join("evil").exists(), "{name}");
    }
    // The same reader takes a well-formed hand-made package.
    let deb = hostile_deb(
        tmp.path(),
        "fine",
        &[
            Raw::File("./usr/x", b"x"),
            Raw::Hardlink("./usr/y", "./usr/x"),
        ],
    );
    let dest = tmp.path().join("dest-fine");
    fs::create_dir(&dest).unwrap();
    let entries = deb::extract_data(&deb, &dest).unwrap();
    assert_eq!(entries.len(), 2);
    // A folder listed after its contents is recorded, with its mode.
    let late = hostile_deb(
        tmp.path(),
        "late-dir",
        &[
            Raw::File("./opt/x", b"x"),
            Raw::Dir("./opt/", 0o750),
            Raw::Dir("./opt/", 0o700),
        ],
    );
    let late_dest = tmp.path().join("dest-late");
    fs::create_dir(&late_dest).unwrap();
    let late_entries = deb::extract_data(&late, &late_dest).unwrap();
    let paths: Vec<_> = late_entries
        .iter()
        .map(|e| (e.path.as_str(), e.mode))
        .collect();
    assert_eq!(paths, [("opt/x", 0o644), ("opt", 0o700)]);
    let mode = fs::metadata(late_dest.join("opt")).unwrap().mode() & 0o7777;
    assert_eq!(mode, 0o700, "the last listing's mode wins");
    assert_eq!(entries[1].kind, DataKind::Hardlink("usr/x".to_string()));
    assert_eq!(fs::read(dest.join("usr/y")).unwrap(), b"x");
    assert_eq!(
        deb::read_control(&deb).unwrap().control.lines().next(),
        Some("Package: evil")
    );
}

#[test]
fn broken_packages_are_errors_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let not_ar = tmp.path().join("junk.deb");
    fs::write(&not_ar, b"hello").unwrap();
    let msg = deb::read_control(&not_ar).unwrap_err().to_string();
    assert!(
        msg.contains("junk.deb") && msg.contains("not a Debian binary package"),
        "{msg}"
    );
    let wrong_first = tmp.path().join("first.deb");
    fs::write(&wrong_first, ar(&[("control.tar", vec![0; 10])])).unwrap();
    let msg = deb::read_control(&wrong_first).unwrap_err().to_string();
    assert!(msg.contains("debian-binary"), "{msg}");
    let no_data = tmp.path().join("nodata.deb");
    fs::write(
        &no_data,
        ar(&[
            ("debian-binary", b"2.0\n".to_vec()),
            ("control.tar.lz4", vec![0; 10]),
        ]),
    )
    .unwrap();
    let msg = deb::read_control(&no_data).unwrap_err().to_string();
    assert!(
        msg.contains("control.tar.lz4") && msg.contains("compression"),
        "{msg}"
    );
    // A truncated xz data member.
    let full = build_deb(tmp.path(), "demo", "xz", |p| {
        demo_tree(p, DEMO_CONTROL, None)
    });
    let bytes = fs::read(&full).unwrap();
    let cut = tmp.path().join("cut.deb");
    fs::write(&cut, &bytes[..bytes.len() - 200]).unwrap();
    let dest = tmp.path().join("dest");
    fs::create_dir(&dest).unwrap();
    let msg = deb::extract_data(&cut, &dest).unwrap_err().to_string();
    assert!(msg.contains("cut.deb") && msg.contains("data.tar"), "{msg}");
}

fn control_with(scripts: &[(&str, &str)]) -> DebControl {
    DebControl {
        control: "Package: p\n".into(),
        scripts: scripts
            .iter()
            .map(|(n, s)| (n.to_string(), s.as_bytes().to_vec()))
            .collect(),
        ..DebControl::default()
    }
}

fn entry(path: &str, kind: DataKind) -> DataEntry {
    DataEntry {
        path: path.into(),
        kind,
        mode: 0o644,
        uid: 0,
        gid: 0,
    }
}

#[test]
fn maintainer_scripts_are_classified() {
    let lib = [entry(
        "usr/lib/x86_64-linux-gnu/libz.so.1.3",
        DataKind::File { size: 1 },
    )];
    // Only ldconfig, libraries in the default folder: nothing to do.
    let a = dpkg::script_actions(
        "zlib1g",
        &control_with(&[("triggers", "activate-noawait ldconfig\n")]),
        &lib,
    );
    assert!(a.ldconfig);
    assert!(a.unhandled.is_empty(), "{a:?}");
    // A library outside the default folders.
    let odd = [entry(
        "opt/vendor/lib/libv.so.2",
        DataKind::File { size: 1 },
    )];
    let a = dpkg::script_actions(
        "v",
        &control_with(&[("postinst", "#!/bin/sh\nset -e\nldconfig\n")]),
        &odd,
    );
    assert_eq!(a.unhandled.len(), 1, "{a:?}");
    assert!(a.unhandled[0].contains("/opt/vendor/lib"), "{a:?}");
    // libc6's own: the loader in /lib64 and the multiarch ld.so.conf.d file need nothing; a
    // conf file that adds folders does.
    let libc = [
        entry("lib64/ld-linux-x86-64.so.2", DataKind::Symlink("x".into())),
        entry(
            "etc/ld.so.conf.d/x86_64-linux-gnu.conf",
            DataKind::File { size: 1 },
        ),
    ];
    let trig = control_with(&[("triggers", "activate-noawait ldconfig\n")]);
    let a = dpkg::script_actions("libc6", &trig, &libc);
    assert!(a.ldconfig && a.unhandled.is_empty(), "{a:?}");
    let fake = [entry(
        "etc/ld.so.conf.d/fakeroot-x86_64-linux-gnu.conf",
        DataKind::File { size: 1 },
    )];
    let a = dpkg::script_actions("libfakeroot", &trig, &fake);
    assert_eq!(a.unhandled.len(), 1, "{a:?}");
    // Debconf, invoke-rc.d, maintscript helper: nothing.
    let quiet = "#!/bin/sh\nset -e\n. /usr/share/debconf/confmodule\ndb_get foo/bar || true\n\
        dpkg-maintscript-helper rm_conffile /etc/old 1.0~ -- \"$@\"\n\
        if [ -x \"/etc/init.d/foo\" ]; then\n\tupdate-rc.d foo defaults >/dev/null\n\
        \tinvoke-rc.d foo start || exit 1\nfi\n\
        if dpkg --compare-versions \"$2\" lt 1.0; then\n  _x=1\nfi\nexit 0\n";
    let a = dpkg::script_actions("foo", &control_with(&[("postinst", quiet)]), &[]);
    assert!(a.unhandled.is_empty(), "{a:?}");
    // Users, diversions, arbitrary code, a file written by redirection: unhandled, each named.
    let busy = "#!/bin/sh\nset -e\nadduser --system --group svc\n\
        dpkg-divert --package busy --rename /usr/bin/x\necho 'x' > /etc/busy.conf\n\
        for f in a b; do\n  rm -f /tmp/$f\ndone\n\
        update-alternatives --install /usr/bin/x x $TARGET 10\n";
    let a = dpkg::script_actions("busy", &control_with(&[("preinst", busy)]), &[]);
    let text = a.unhandled.join("\n");
    for needle in [
        "adduser",
        "dpkg-divert",
        "writes a file",
        "for f",
        "rm -f",
        "with variables",
    ] {
        assert!(text.contains(needle), "{needle} missing in {text}");
    }
    assert!(
        a.unhandled.iter().all(|u| u.starts_with("preinst: ")),
        "{text}"
    );
    assert!(a.alternatives.is_empty());
    // prerm/postrm never run at install time.
    let a = dpkg::script_actions(
        "r",
        &control_with(&[("postrm", "#!/bin/sh\ndeluser svc\n")]),
        &[],
    );
    assert!(a.unhandled.is_empty(), "{a:?}");
    // Not a shell script.
    let a = dpkg::script_actions(
        "pl",
        &control_with(&[("postinst", "#!/usr/bin/perl\nsystem('x');\n")]),
        &[],
    );
    assert!(a.unhandled[0].contains("not a shell script"), "{a:?}");
}

#[test]
fn overwrites_name_both_packages() {
    let a = [
        entry("usr", DataKind::Dir),
        entry("usr/bin/tool", DataKind::File { size: 1 }),
        entry("usr/bin/sh", DataKind::Symlink("dash".into())),
    ];
    let b = [
        entry("usr", DataKind::Dir),
        entry("usr/bin/sh", DataKind::Symlink("dash".into())),
        entry("usr/bin/other", DataKind::File { size: 1 }),
    ];
    let none = HashMap::new();
    let pkgs = |x: &'static str, y: &'static str| {
        vec![
            PackageFiles {
                package: x,
                entries: &a,
            },
            PackageFiles {
                package: y,
                entries: &b,
            },
        ]
    };
    dpkg::check_overwrites(&none, &pkgs("a", "b")).unwrap();
    let c = [entry("usr/bin/tool", DataKind::File { size: 2 })];
    let err = dpkg::check_overwrites(
        &none,
        &[
            PackageFiles {
                package: "a",
                entries: &a,
            },
            PackageFiles {
                package: "c",
                entries: &c,
            },
        ],
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("usr/bin/tool") && err.contains(" a ") && err.contains(" c "),
        "{err}"
    );
    // Against the base, from its .list files.
    let base_list = "/.\n/usr\n/usr/bin\n/usr/bin/other\n";
    let existing: HashMap<String, String> = dpkg::list_paths(base_list)
        .into_iter()
        .map(|p| (p, "coreutils".to_string()))
        .collect();
    assert!(!existing.contains_key(""));
    let err = dpkg::check_overwrites(&existing, &pkgs("a", "b"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("usr/bin/other") && err.contains("coreutils") && err.contains(" b "),
        "{err}"
    );
    // The same package again (an upgrade of a base package) is no conflict.
    dpkg::check_overwrites(
        &existing,
        &[PackageFiles {
            package: "coreutils",
            entries: &b,
        }],
    )
    .unwrap();
}

#[test]
fn status_stanza_follows_dpkg_and_merge_keeps_the_base() {
    let control = "Package: zed\nVersion: 1\nProtected: yes\nArchitecture: all\nX-Custom: y\n\
        Multi-Arch: no\nDescription: z\n";
    let s = dpkg::status_stanza(control, &[]).unwrap();
    assert_eq!(
        s,
        "Package: zed\nProtected: yes\nStatus: install ok installed\nArchitecture: all\n\
         Version: 1\nDescription: z\nX-Custom: y\n"
    );
    let err = dpkg::status_stanza("Package: a\nnot a field\n", &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("line 2"), "{err}");
    // A base with odd spacing kept byte for byte; new stanzas sorted in.
    let base = "Package: b\nStatus: install ok installed\nArchitecture: all\nVersion: 1\n\n\
                Package: d\nStatus: install ok installed\nArchitecture: amd64\nVersion:  2 \n\n";
    let new = vec![
        (
            "c".to_string(),
            "all".to_string(),
            "Package: c\nArchitecture: all\n".to_string(),
        ),
        (
            "a".to_string(),
            "all".to_string(),
            "Package: a\nArchitecture: all\n".to_string(),
        ),
    ];
    let out = dpkg::merge_status(base, &new);
    assert_eq!(
        out,
        "Package: a\nArchitecture: all\n\n\
         Package: b\nStatus: install ok installed\nArchitecture: all\nVersion: 1\n\n\
         Package: c\nArchitecture: all\n\n\
         Package: d\nStatus: install ok installed\nArchitecture: amd64\nVersion:  2 \n\n"
    );
    assert_eq!(
        dpkg::merge_status(&out, &new),
        out,
        "merging twice changes nothing"
    );
    // A package that changed architecture replaces its old stanza; Multi-Arch: same packages of
    // two architectures stand side by side.
    let base = "Package: foo\nArchitecture: all\n\n\
                Package: libx\nArchitecture: i386\nMulti-Arch: same\n\n";
    let new = vec![
        (
            "foo".to_string(),
            "amd64".to_string(),
            "Package: foo\nArchitecture: amd64\n".to_string(),
        ),
        (
            "libx".to_string(),
            "amd64".to_string(),
            "Package: libx\nArchitecture: amd64\nMulti-Arch: same\n".to_string(),
        ),
    ];
    assert_eq!(
        dpkg::merge_status(base, &new),
        "Package: foo\nArchitecture: amd64\n\n\
         Package: libx\nArchitecture: amd64\nMulti-Arch: same\n\n\
         Package: libx\nArchitecture: i386\nMulti-Arch: same\n\n"
    );
}

#[test]
fn merged_usr_paths_follow_the_base_links() {
    let links: HashMap<String, String> = [
        ("lib", "usr/lib"),
        ("bin", "usr/bin"),
        ("usr/lib/odd", "opt/odd"),
        ("loop-a", "loop-b"),
        ("loop-b", "loop-a"),
    ]
    .into_iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    let f = |p: &str, dir: bool| dpkg::through_dir_links(p, dir, &links);
    assert_eq!(
        f("lib/x86_64-linux-gnu/libz.so.1", false),
        "usr/lib/x86_64-linux-gnu/libz.so.1"
    );
    assert_eq!(f("lib", true), "usr/lib");
    assert_eq!(f("lib", false), "lib");
    assert_eq!(f("bin/sh", false), "usr/bin/sh");
    assert_eq!(f("lib/odd/x", false), "opt/odd/x");
    assert_eq!(f("usr/share/doc/x", false), "usr/share/doc/x");
    assert_eq!(f("binary/x", false), "binary/x");
    // A cycle ends instead of looping.
    assert!(["loop-a/x", "loop-b/x"].contains(&f("loop-a/x", false).as_str()));
}

/// The members of an `ar` archive, in order.
fn ar_members(deb: &Path) -> Vec<(String, Vec<u8>)> {
    use std::io::Read;
    let mut archive = ::ar::Archive::new(fs::File::open(deb).unwrap());
    let mut out = Vec::new();
    while let Some(entry) = archive.next_entry() {
        let mut entry = entry.unwrap();
        let name = String::from_utf8(entry.header().identifier().to_vec()).unwrap();
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).unwrap();
        out.push((name, bytes));
    }
    out
}

#[test]
fn bzip2_and_lzma_data_members_are_read() {
    use std::io::{Read, Write};
    let tmp = tempfile::tempdir().unwrap();
    // dpkg-deb no longer writes these compressors: recompress its xz data member.
    let deb = build_deb(tmp.path(), "demo", "xz", |p| {
        demo_tree(p, DEMO_CONTROL, None)
    });
    let members = ar_members(&deb);
    let names: Vec<&str> = members.iter().map(|m| m.0.as_str()).collect();
    assert_eq!(names, ["debian-binary", "control.tar.xz", "data.tar.xz"]);
    let mut tar = Vec::new();
    liblzma::read::XzDecoder::new(&members[2].1[..])
        .read_to_end(&mut tar)
        .unwrap();
    let bz2 = {
        let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::default());
        e.write_all(&tar).unwrap();
        e.finish().unwrap()
    };
    let lzma = {
        let opts = liblzma::stream::LzmaOptions::new_preset(6).unwrap();
        let stream = liblzma::stream::Stream::new_lzma_encoder(&opts).unwrap();
        let mut e = liblzma::write::XzEncoder::new_stream(Vec::new(), stream);
        e.write_all(&tar).unwrap();
        e.finish().unwrap()
    };
    let reference_dir = tmp.path().join("reference");
    fs::create_dir(&reference_dir).unwrap();
    let reference = deb::extract_data(&deb, &reference_dir).unwrap();
    for (member, data) in [
        ("data.tar.bz2", bz2),
        ("data.tar.lzma", lzma),
        ("data.tar", tar),
    ] {
        let path = tmp.path().join(format!("{member}.deb"));
        fs::write(
            &path,
            ar(&[
                ("debian-binary", members[0].1.clone()),
                ("control.tar.xz", members[1].1.clone()),
                (member, data),
            ]),
        )
        .unwrap();
        let dest = tmp.path().join(member);
        fs::create_dir(&dest).unwrap();
        let entries = deb::extract_data(&path, &dest).unwrap();
        assert_eq!(entries, reference, "{member}");
        assert_eq!(snapshot(&dest), snapshot(&reference_dir), "{member}");
        assert_eq!(
            deb::read_control(&path).unwrap(),
            deb::read_control(&deb).unwrap()
        );
    }
}
