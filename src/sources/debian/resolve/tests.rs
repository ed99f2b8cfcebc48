//! Resolver tests: small synthetic indexes for each rule, and a real bookworm excerpt.
use super::*;
use crate::sources::debian::packages::{parse_packages, parse_status};

const SHA: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// A `Packages` stanza: `spec` is `name version [arch]`, `extra` more fields.
fn st(spec: &str, extra: &str) -> String {
    let mut f = spec.split(' ');
    let (n, v) = (f.next().unwrap(), f.next().unwrap());
    let a = f.next().unwrap_or("amd64");
    format!(
        "Package: {n}\nVersion: {v}\nArchitecture: {a}\n{extra}Filename: pool/{n}_{v}_{a}.deb\nSize: 1\nSHA256: {SHA}\n\n"
    )
}

fn index(stanzas: &[String]) -> Index {
    Index::new([parse_packages(&stanzas.concat()).unwrap()])
}

/// A status stanza: `spec` is `name version [arch]`.
fn inst(spec: &str, extra: &str) -> String {
    let mut f = spec.split(' ');
    let (n, v) = (f.next().unwrap(), f.next().unwrap());
    let a = f.next().unwrap_or("amd64");
    format!(
        "Package: {n}\nStatus: install ok installed\nVersion: {v}\nArchitecture: {a}\n{extra}\n"
    )
}

fn status(stanzas: &[String]) -> Vec<InstalledPackage> {
    parse_status(&stanzas.concat()).unwrap()
}

fn req(s: &str) -> Request {
    Request::parse(s, None)
}

fn names(r: &Resolution) -> Vec<String> {
    r.packages
        .iter()
        .map(|p| format!("{} {}", p.name, p.version))
        .collect()
}

fn run(
    reqs: &[&str],
    idx: &Index,
    installed: &[InstalledPackage],
) -> Result<Resolution, ResolveError> {
    let reqs: Vec<Request> = reqs
        .iter()
        .enumerate()
        .map(|(i, s)| Request::parse(s, Some(i + 10)))
        .collect();
    resolve(&reqs, idx, installed, "amd64")
}

#[test]
fn candidate_is_the_highest_version_or_the_pinned_one() {
    let idx = index(&[
        st("foo 1.0-1", ""),
        st("foo 1.0-2~bpo1", ""),
        st("foo 1.0-10", ""),
        st("foo 2.0 arm64", ""),
    ]);
    assert_eq!(names(&run(&["foo"], &idx, &[]).unwrap()), ["foo 1.0-10"]);
    assert_eq!(
        names(&run(&["foo=1.0-1"], &idx, &[]).unwrap()),
        ["foo 1.0-1"]
    );
    let e = run(&["foo=3"], &idx, &[]).unwrap_err();
    assert_eq!(
        e,
        ResolveError::VersionNotFound {
            name: "foo".into(),
            version: "3".into(),
            available: vec!["1.0-10".into(), "1.0-2~bpo1".into(), "1.0-1".into()],
            line: Some(10)
        }
    );
    assert!(e.to_string().starts_with("line 10: "), "{e}");
    assert_eq!(req("tini=0.19.0-1").version.as_deref(), Some("0.19.0-1"));
}

#[test]
fn depends_and_pre_depends_are_followed_recommends_are_not() {
    let idx = index(&[
        st(
            "a 1",
            "Pre-Depends: c\nDepends: b (>= 1)\nRecommends: d\nSuggests: e\n",
        ),
        st("b 1", "Depends: c\n"),
        st("c 1 all", ""),
        st("d 1", ""),
        st("e 1", ""),
    ]);
    let r = run(&["a"], &idx, &[]).unwrap();
    assert_eq!(names(&r), ["c 1", "b 1", "a 1"]);
    assert!(r.upgrades.is_empty() && r.warnings.is_empty(), "{r:?}");
}

#[test]
fn installed_or_chosen_packages_meet_requirements() {
    let idx = index(&[
        st("a 1", "Depends: libc6 (>= 2.30), b\n"),
        st("b 1", "Depends: a\n"),
        st("libc6 2.38", ""),
    ]);
    let base = status(&[inst("libc6 2.36", "")]);
    let r = run(&["a"], &idx, &base).unwrap();
    assert_eq!(names(&r), ["b 1", "a 1"]);
    assert!(r.upgrades.is_empty());
    // A package not fully installed in the base does not count.
    let half = parse_status(
        "Package: libc6\nStatus: install ok unpacked\nVersion: 2.36\nArchitecture: amd64\n",
    )
    .unwrap();
    assert_eq!(
        names(&run(&["a"], &idx, &half).unwrap()),
        ["b 1", "libc6 2.38", "a 1"]
    );
}

#[test]
fn too_old_installed_package_is_upgraded_or_refused() {
    let idx = index(&[
        st("a 1", "Depends: libc6 (>= 2.37)\n"),
        st("libc6 2.38", ""),
    ]);
    let base = status(&[inst("libc6 2.36", "")]);
    let r = run(&["a"], &idx, &base).unwrap();
    assert_eq!(names(&r), ["libc6 2.38", "a 1"]);
    assert_eq!(r.upgrades, ["libc6"]);
    let idx = index(&[
        st("a 1", "Depends: libc6 (>= 2.37)\n"),
        st("libc6 2.36", ""),
    ]);
    let e = run(&["a"], &idx, &base).unwrap_err();
    let msg = e.to_string();
    assert!(
        matches!(&e, ResolveError::Unsatisfiable { needed_by, dep, line: Some(10), .. } if needed_by == "a 1" && dep == "libc6 (>= 2.37)"),
        "{msg}"
    );
    assert!(msg.contains("candidate is libc6 2.36"), "{msg}");
}

#[test]
fn upgrade_that_breaks_an_installed_package_upgrades_it_too() {
    let idx = index(&[
        st("a 1", "Depends: libc6 (>= 2.37)\n"),
        st("libc6 2.37-2", ""),
        st(
            "libc-bin 2.37-2",
            "Depends: libc6 (>> 2.37), libc6 (<< 2.38)\n",
        ),
    ]);
    let base = status(&[
        inst("libc6 2.36-1", ""),
        inst(
            "libc-bin 2.36-1",
            "Depends: libc6 (>> 2.36), libc6 (<< 2.37)\n",
        ),
    ]);
    let r = run(&["a"], &idx, &base).unwrap();
    assert_eq!(names(&r), ["libc6 2.37-2", "a 1", "libc-bin 2.37-2"]);
    assert_eq!(r.upgrades, ["libc-bin", "libc6"]);
    let idx = index(&[
        st("a 1", "Depends: libc6 (>= 2.37)\n"),
        st("libc6 2.37-2", ""),
    ]);
    let e = run(&["a"], &idx, &base).unwrap_err();
    assert!(
        matches!(&e, ResolveError::BrokenInstalled { package, upgraded, .. } if package == "libc-bin 2.36-1" && upgraded == "libc6"),
        "{e}"
    );
}

#[test]
fn upgrading_a_package_upgrades_its_source_siblings() {
    let idx = index(&[
        st("a 1", "Depends: libc6 (>= 2.37)\n"),
        st("libc6 2.37-2", "Source: glibc\n"),
        st(
            "libc-bin 2.37-2",
            "Source: glibc\nDepends: libc6 (>> 2.37)\n",
        ),
        st("libc-l10n 2.37-3 all", "Source: glibc (2.37-3)\n"),
        st("other 2", "Source: glibc-extra\n"),
    ]);
    let base = status(&[
        inst("libc6 2.36-1", "Source: glibc\n"),
        // No `Source` in the status: the candidate's decides.
        inst("libc-bin 2.36-1", "Depends: libc6 (>> 2.36)\n"),
        inst("libc-l10n 2.36-1 all", "Source: glibc\n"),
        inst("other 1", "Source: glibc-extra\n"),
    ]);
    let r = run(&["a"], &idx, &base).unwrap();
    // libc-bin comes along (same source version); libc-l10n's candidate is another build of the
    // source, and `other` another source: both stay.
    assert_eq!(names(&r), ["libc6 2.37-2", "a 1", "libc-bin 2.37-2"]);
    assert_eq!(r.upgrades, ["libc-bin", "libc6"]);
    // A new package of a source brings the base's packages of that source to its version.
    let idx = index(&[
        st("libpcre2-16-0 10.42-2", "Source: pcre2\n"),
        st("libpcre2-8-0 10.42-2", "Source: pcre2\n"),
    ]);
    let base = status(&[inst("libpcre2-8-0 10.42-1", "")]);
    let r = run(&["libpcre2-16-0"], &idx, &base).unwrap();
    assert_eq!(names(&r), ["libpcre2-16-0 10.42-2", "libpcre2-8-0 10.42-2"]);
    assert_eq!(r.upgrades, ["libpcre2-8-0"]);
}

#[test]
fn alternatives() {
    let stanzas = [st("a 1", "Depends: x | y\n"), st("x 1", ""), st("y 1", "")];
    let idx = index(&stanzas);
    // Neither is there: the first one.
    assert_eq!(names(&run(&["a"], &idx, &[]).unwrap()), ["x 1", "a 1"]);
    // The second is installed: it meets the requirement.
    let base = status(&[inst("y 1", "")]);
    assert_eq!(names(&run(&["a"], &idx, &base).unwrap()), ["a 1"]);
    // The second is chosen by an earlier request.
    assert_eq!(names(&run(&["y", "a"], &idx, &[]).unwrap()), ["y 1", "a 1"]);
    // The first does not exist: the next that can be chosen.
    let idx = index(&[st("a 1", "Depends: x | y\n"), st("y 1", "")]);
    assert_eq!(names(&run(&["a"], &idx, &[]).unwrap()), ["y 1", "a 1"]);
    // None can: the first alternative's reason.
    let idx = index(&[st("a 1", "Depends: x | y\n")]);
    let e = run(&["a"], &idx, &[]).unwrap_err();
    assert!(
        matches!(&e, ResolveError::Unsatisfiable { dep, .. } if dep == "x"),
        "{e}"
    );
}

#[test]
fn virtual_packages() {
    let one = index(&[st("a 1", "Depends: mta\n"), st("exim 4", "Provides: mta\n")]);
    assert_eq!(names(&run(&["a"], &one, &[]).unwrap()), ["exim 4", "a 1"]);
    let two = index(&[
        st("a 1", "Depends: mta\n"),
        st("postfix 3", "Provides: mta\n"),
        st("exim 4", "Provides: mta\n"),
    ]);
    let e = run(&["a"], &two, &[]).unwrap_err();
    assert_eq!(
        e,
        ResolveError::AmbiguousVirtual {
            name: "mta".into(),
            providers: vec!["exim".into(), "postfix".into()],
            needed_by: "a 1".into(),
            line: Some(10)
        }
    );
    // One of them installed or chosen: no question.
    let base = status(&[inst("postfix 2", "Provides: mta\n")]);
    assert_eq!(names(&run(&["a"], &two, &base).unwrap()), ["a 1"]);
    assert_eq!(
        names(&run(&["exim", "a"], &two, &[]).unwrap()),
        ["exim 4", "a 1"]
    );
    // A real package of the name wins over providers.
    let real = index(&[
        st("a 1", "Depends: mta\n"),
        st("exim 4", "Provides: mta\n"),
        st("mta 1", ""),
    ]);
    assert_eq!(names(&run(&["a"], &real, &[]).unwrap()), ["mta 1", "a 1"]);
    // Versioned provides: only a provider whose version fits; unversioned ones never do.
    let ver = index(&[
        st("a 1", "Depends: libv (>= 2)\n"),
        st("p1 1", "Provides: libv (= 1)\n"),
        st("p2 1", "Provides: libv (= 2.1)\n"),
        st("p3 1", "Provides: libv\n"),
    ]);
    assert_eq!(names(&run(&["a"], &ver, &[]).unwrap()), ["p2 1", "a 1"]);
    // Requesting a virtual name with one provider installs it, with a warning.
    let r = run(&["mta"], &one, &[]).unwrap();
    assert_eq!(names(&r), ["exim 4"]);
    assert!(r.warnings[0].contains("virtual"), "{:?}", r.warnings);
}

#[test]
fn multi_arch_rules() {
    let allowed = index(&[
        st("a 1", "Depends: python3:any\n"),
        st("python3 3.11", "Multi-Arch: allowed\n"),
    ]);
    assert_eq!(
        names(&run(&["a"], &allowed, &[]).unwrap()),
        ["python3 3.11", "a 1"]
    );
    let plain = index(&[st("a 1", "Depends: python3:any\n"), st("python3 3.11", "")]);
    assert!(matches!(
        run(&["a"], &plain, &[]),
        Err(ResolveError::Unsatisfiable { .. })
    ));
    // A foreign package of another architecture meets a plain requirement; others do not.
    let foreign = index(&[
        st("a 1", "Depends: tool\n"),
        st("tool 1 i386", "Multi-Arch: foreign\n"),
    ]);
    assert_eq!(
        names(&run(&["a"], &foreign, &[]).unwrap()),
        ["tool 1", "a 1"]
    );
    let other = index(&[st("a 1", "Depends: tool\n"), st("tool 1 i386", "")]);
    assert!(run(&["a"], &other, &[]).is_err());
    assert!(matches!(
        run(&["tool"], &other, &[]),
        Err(ResolveError::UnknownPackage { .. })
    ));
    // `all` packages and an installed python3:any.
    let base = status(&[inst("python3 3.11 amd64", "Multi-Arch: allowed\n")]);
    assert_eq!(names(&run(&["a"], &plain, &base).unwrap()), ["a 1"]);
    let all = index(&[st("a 1 all", "Depends: b\n"), st("b 1 all", "")]);
    assert_eq!(names(&run(&["a"], &all, &[]).unwrap()), ["b 1", "a 1"]);
}

#[test]
fn conflicts_and_breaks() {
    let base = status(&[inst("b 1", "")]);
    let idx = index(&[st("a 1", "Conflicts: b\n"), st("b 2", "")]);
    let e = run(&["a"], &idx, &base).unwrap_err();
    assert_eq!(
        e.to_string(),
        "line 10: a 1 conflicts with b, matched by b 1 (installed in the base)"
    );
    // Breaks an old installed version: upgraded when the candidate is not broken.
    let idx = index(&[st("a 1", "Breaks: b (<< 2)\n"), st("b 2", "")]);
    let r = run(&["a"], &idx, &base).unwrap();
    assert_eq!(names(&r), ["a 1", "b 2"]);
    assert_eq!(r.upgrades, ["b"]);
    let idx = index(&[st("a 1", "Breaks: b (<< 2)\n"), st("b 1", "")]);
    assert!(matches!(
        run(&["a"], &idx, &base),
        Err(ResolveError::Conflict {
            other_installed: true,
            ..
        })
    ));
    // Between two chosen packages, naming the request's line.
    let idx = index(&[
        st("a 1", ""),
        st("c 1", "Depends: d\n"),
        st("d 1", "Conflicts: a\n"),
    ]);
    let e = run(&["a", "c"], &idx, &[]).unwrap_err();
    assert!(
        matches!(&e, ResolveError::Conflict { package, other, other_installed: false, line: Some(11), .. } if package == "d 1" && other == "a 1"),
        "{e}"
    );
    // An installed package's own Conflicts, through a provided name.
    let base = status(&[inst("q 1", "Conflicts: mta\n")]);
    let idx = index(&[st("exim 4", "Provides: mta\n")]);
    let e = run(&["exim"], &idx, &base).unwrap_err();
    assert!(
        matches!(&e, ResolveError::Conflict { package, other, .. } if package == "q 1 (base)" && other == "exim 4"),
        "{e}"
    );
    // A package that conflicts with what it provides (a common pattern) is fine.
    let idx = index(&[st(
        "exim 4",
        "Provides: mta\nConflicts: mta\nReplaces: mta\n",
    )]);
    assert_eq!(names(&run(&["exim"], &idx, &[]).unwrap()), ["exim 4"]);
}

#[test]
fn unknown_names_suggest_close_ones() {
    let idx = index(&[st("curl 7", ""), st("libgomp1 12", ""), st("tini 0.19", "")]);
    let e = run(&["tini", "libgomp"], &idx, &[]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "line 11: unknown package \"libgomp\": not in the index for amd64 (did you mean libgomp1?)"
    );
    let e = run(&["crul"], &idx, &[]).unwrap_err();
    assert!(
        matches!(&e, ResolveError::UnknownPackage { suggestions, line: Some(10), .. } if suggestions == &vec!["curl".to_string()]),
        "{e}"
    );
    assert_eq!(edit_distance("crul", "curl"), 1);
    assert_eq!(edit_distance("kitten", "sitting"), 3);
    assert_eq!(edit_distance("", "abc"), 3);
    let e = run(&["zzzzzz"], &idx, &[]).unwrap_err();
    assert!(!e.to_string().contains("did you mean"), "{e}");
}

#[test]
fn cycles_are_not_errors_and_order_is_deterministic() {
    let stanzas = vec![
        st("libc6 2.36", "Depends: libgcc-s1\n"),
        st(
            "libgcc-s1 12",
            "Depends: gcc-12-base (= 12), libc6 (>= 2.35)\n",
        ),
        st("gcc-12-base 12", ""),
        st("app 1", "Depends: libc6, zlib1g\n"),
        st("zlib1g 1", "Depends: libc6\n"),
    ];
    let r = run(&["app"], &index(&stanzas), &[]).unwrap();
    assert_eq!(
        names(&r),
        [
            "gcc-12-base 12",
            "libgcc-s1 12",
            "libc6 2.36",
            "zlib1g 1",
            "app 1"
        ]
    );
    let mut rev = stanzas.clone();
    rev.reverse();
    let again = run(&["app"], &index(&rev), &[]).unwrap();
    assert_eq!(names(&again), names(&r));
}

#[test]
fn installed_request_is_a_warning() {
    let idx = index(&[st("curl 7", "")]);
    let base = status(&[inst("curl 7", "")]);
    let r = run(&["curl"], &idx, &base).unwrap();
    assert!(r.packages.is_empty());
    assert_eq!(r.warnings, ["curl 7 is already installed in the base"]);
}

#[test]
fn the_base_is_never_downgraded_unless_pinned() {
    let idx = index(&[
        st("a 1", "Depends: b (<< 3)\n"),
        st("b 2", ""),
        st("c 1", ""),
    ]);
    let base = status(&[inst("b 3", ""), inst("c 2", "")]);
    let e = run(&["a"], &idx, &base).unwrap_err();
    assert_eq!(
        e.to_string(),
        "line 10: a 1 needs b 3 of the base downgraded to 2, which apt would not do (pin the version to force it)"
    );
    let r = run(&["c"], &idx, &base).unwrap();
    assert!(r.packages.is_empty());
    assert_eq!(r.warnings, ["c 2 is already installed in the base"]);
    let r = run(&["c=1"], &idx, &base).unwrap();
    assert_eq!(names(&r), ["c 1"]);
    assert_eq!(r.upgrades, ["c"]);
    assert_eq!(r.warnings, ["c is downgraded from 2 (base) to 1"]);
}

#[test]
fn two_pins_of_one_package_clash() {
    let idx = index(&[
        st("a 1", "Depends: b (= 1)\n"),
        st("b 1", ""),
        st("b 2", ""),
    ]);
    let e = run(&["b", "a"], &idx, &[]).unwrap_err();
    assert!(
        matches!(
            e,
            ResolveError::Unsatisfiable { .. } | ResolveError::VersionClash { .. }
        ),
        "{e}"
    );
}

/// Every chosen package's requirements are met by the result plus the base, and each one
/// comes after the packages meeting its requirements unless they form a cycle.
fn check_closed(r: &Resolution, base: &[InstalledPackage]) {
    let pos = |name: &str| r.packages.iter().position(|p| p.name == name);
    for (i, p) in r.packages.iter().enumerate() {
        for group in p.pre_depends.iter().chain(&p.depends) {
            let chosen = r.packages.iter().find(|q| {
                group
                    .iter()
                    .any(|d| meets(&View::of_record(q), d, "amd64", false))
            });
            let installed = base.iter().any(|q| {
                !r.upgrades.contains(&q.name)
                    && group
                        .iter()
                        .any(|d| meets(&View::of_installed(q), d, "amd64", false))
            });
            assert!(chosen.is_some() || installed, "{} {group:?} unmet", p.name);
            if let Some(q) = chosen
                && !installed
            {
                let j = pos(&q.name).unwrap();
                let back = q.depends.iter().flatten().any(|d| d.name == p.name);
                assert!(j < i || back, "{} before its dependency {}", p.name, q.name);
            }
        }
    }
}

#[test]
fn real_bookworm_excerpt_curl_tini_libgomp1() {
    let text = include_str!("../../../../testdata/debian/Packages.curl");
    let idx = Index::new([parse_packages(text).unwrap()]);
    assert_eq!(idx.len(), 34);
    let version = |n: &str| idx.versions(n).next().unwrap().version.clone();
    let base = status(&[
        inst(
            &format!("libc6 {}", version("libc6")),
            "Multi-Arch: same\nDepends: libgcc-s1\n",
        ),
        inst(
            &format!("libgcc-s1 {}", version("libgcc-s1")),
            "Multi-Arch: same\n",
        ),
        inst(
            &format!("gcc-12-base {}", version("gcc-12-base")),
            "Multi-Arch: same\n",
        ),
        inst("zlib1g 1:1.2.13.dfsg-1", "Multi-Arch: same\n"),
    ]);
    let r = run(&["curl", "tini", "libgomp1"], &idx, &base).unwrap();
    check_closed(&r, &base);
    let got: Vec<&str> = r.packages.iter().map(|p| p.name.as_str()).collect();
    for want in [
        "curl",
        "libcurl4",
        "libssl3",
        "libnghttp2-14",
        "libkrb5-3",
        "tini",
        "libgomp1",
    ] {
        assert!(got.contains(&want), "{want} missing from {got:?}");
    }
    for base_pkg in ["libc6", "libgcc-s1", "gcc-12-base", "zlib1g"] {
        assert!(!got.contains(&base_pkg), "{base_pkg} is installed: {got:?}");
    }
    // Everything in the excerpt except the base's four packages.
    assert_eq!(got.len(), 30, "{got:?}");
    assert!(r.upgrades.is_empty(), "{:?}", r.upgrades);
    assert_eq!(got.last(), Some(&"tini"));
    // Same again from a fresh index: same order.
    let idx2 = Index::new([parse_packages(text).unwrap()]);
    let again = run(&["curl", "tini", "libgomp1"], &idx2, &base).unwrap();
    assert_eq!(names(&again), names(&r));
    // Without a base: libc6 and friends come in, libc6's cycle with libgcc-s1 included.
    let r = run(&["curl"], &idx, &[]).unwrap();
    check_closed(&r, &[]);
    assert!(r.packages.iter().any(|p| p.name == "libc6"));
}
