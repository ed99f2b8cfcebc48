//! `[[deps]] layers = "per-package" | "auto"`: adding one package to a wheel set ships about
//! that package, where one layer per set re-ships the whole set.

use std::fs;
use std::path::{Path, PathBuf};

use crate::common::registry::TestRegistry;
use crate::common::*;

const SUMS: &str = include_str!("../../testdata/wheels/SHA256SUMS");

/// A scratch project whose wheel set `py` pins `pkgs` (from testdata/wheels, as find-links).
fn project(dir: &Path, layers: &str, pkgs: &[&str]) -> PathBuf {
    fs::create_dir_all(dir.join("wheels")).unwrap();
    let mut req = String::new();
    for line in SUMS.lines() {
        let Some((hash, file)) = line.split_once("  ") else {
            continue;
        };
        let name = file.split('-').next().unwrap().to_lowercase();
        if !pkgs.contains(&name.as_str()) {
            continue;
        }
        fs::copy(
            repo_root().join("testdata/wheels").join(file),
            dir.join("wheels").join(file),
        )
        .unwrap();
        let version = file.split('-').nth(1).unwrap();
        req.push_str(&format!("{name}=={version} --hash=sha256:{hash}\n"));
    }
    fs::write(dir.join("requirements.txt"), req).unwrap();
    let spec = dir.join("mlimg.toml");
    fs::write(
        &spec,
        format!(
            "[image]\nname = \"localhost/deps-layers\"\nbase = \"scratch\"\n\n\
             [python]\nversion = \"3.11\"\nprefix = \"/usr/local\"\nlibc = \"glibc 2.36\"\n\n\
             [[deps]]\nname = \"py\"\nrequirements = \"requirements.txt\"\nfind_links = [\"wheels\"]\n\
             layers = \"{layers}\"\n\n\
             [config]\nentrypoint = [\"python3\"]\n"
        ),
    )
    .unwrap();
    spec
}

fn build(cx: &TestContext, spec: &Path, extra: &[&str]) -> serde_json::Value {
    let out = run_ok(
        cx.mlimg()
            .env("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
            .env_remove("PIP_EXTRA_INDEX_URL")
            .args(["build", "--json", "--no-sbom", "--no-provenance", "-f"])
            .arg(spec)
            .args(extra),
    );
    serde_json::from_slice(&out.stdout).expect("json")
}

/// role → (digest, size, push action) of the deps layers.
fn deps(report: &serde_json::Value) -> Vec<(String, String, u64, String)> {
    report["layers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["role"].as_str().is_some_and(|r| r.starts_with("deps ")))
        .map(|l| {
            (
                l["role"].as_str().unwrap().to_string(),
                l["digest"].as_str().unwrap().to_string(),
                l["size"].as_u64().unwrap(),
                l["push"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

#[test]
fn per_package_layers_ship_only_the_added_package() {
    let reg = TestRegistry::start();
    let cx = TestContext::new();
    let dir = cx.path().join("p");
    let to = format!("registry:{}/acme/deps:v1", reg.host());
    let spec = project(&dir, "per-package", &["idna", "packaging", "six"]);
    let first = deps(&build(&cx, &spec, &["-o", &to]));
    let roles: Vec<&str> = first.iter().map(|d| d.0.as_str()).collect();
    assert_eq!(roles, ["deps py/idna", "deps py/packaging", "deps py/six"]);

    // add `wheel`: three layers are found in the registry, one is uploaded
    project(&dir, "per-package", &["idna", "packaging", "six", "wheel"]);
    let second = deps(&build(&cx, &spec, &["-o", &to]));
    assert_eq!(second.len(), 4);
    for (old, new) in first.iter().zip(&second) {
        assert_eq!(old.0, new.0);
        assert_eq!(old.1, new.1, "{} unchanged", old.0);
        assert_eq!(new.3, "skipped", "{} is not sent again", new.0);
    }
    let added = &second[3];
    assert_eq!(added.0, "deps py/wheel");
    assert_eq!(added.3, "uploaded");
    assert_eq!(reg.uploads_of(&added.1), 1);
    for d in &first {
        assert_eq!(reg.uploads_of(&d.1), 1, "{} uploaded once", d.0);
    }

    // the same change with one layer per set re-ships everything
    let one = cx.path().join("one");
    let spec1 = project(&one, "one", &["idna", "packaging", "six"]);
    let a = deps(&build(&cx, &spec1, &[]));
    project(&one, "one", &["idna", "packaging", "six", "wheel"]);
    let b = deps(&build(&cx, &spec1, &[]));
    assert_eq!((a.len(), b.len()), (1, 1));
    assert_ne!(a[0].1, b[0].1, "the one layer changed");
    assert!(
        b[0].2 > added.2 * 2,
        "one layer re-ships {} bytes, per-package {}",
        b[0].2,
        added.2
    );
}

#[test]
fn auto_layers_change_one_group_when_a_small_package_is_added() {
    let cx = TestContext::new();
    let dir = cx.path().join("p");
    let spec = project(&dir, "auto", &["idna", "packaging", "six"]);
    let a = deps(&build(&cx, &spec, &[]));
    project(&dir, "auto", &["idna", "packaging", "six", "wheel"]);
    let b = deps(&build(&cx, &spec, &[]));
    assert!(a.iter().all(|d| d.0.starts_with("deps py/group-")), "{a:?}");
    let changed: Vec<&str> = b
        .iter()
        .filter(|d| !a.iter().any(|o| o.0 == d.0 && o.1 == d.1))
        .map(|d| d.0.as_str())
        .collect();
    assert_eq!(
        changed.len(),
        1,
        "exactly one group layer is new or changed: {changed:?}"
    );
    // reproducible: a fresh cache gives the same layers
    let other = TestContext::new();
    assert_eq!(
        deps(&build(&other, &spec, &[])),
        b.iter()
            .map(|d| (d.0.clone(), d.1.clone(), d.2, String::new()))
            .collect::<Vec<_>>()
    );
}
