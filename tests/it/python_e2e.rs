//! Python deps sets end to end: a Debian CPython base made from Debian packages
//! (scripts/make-python-rootfs), real wheels committed under testdata/wheels, served by a local
//! simple index on 127.0.0.1 (no package index is reached); the image runs under docker. Needs docker, apt-get and pip: a missing
//! tool fails the test.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::pyindex::{PyIndex, testdata_wheels};
use crate::common::{TestContext, copy_tree, repo_root, run_ok, sha256_file, stdout};

/// The example's wheels (x86_64 and aarch64): the real ones committed under testdata/wheels
/// (see common/pyindex.rs for why they are committed), checked against their SHA256SUMS.
pub(crate) fn example_wheels() -> Vec<PathBuf> {
    let got = testdata_wheels();
    // every pinned hash of the example's requirements is among them
    let req = fs::read_to_string(repo_root().join("specs/python-app/requirements.txt"))
        .expect("requirements");
    let have: Vec<String> = got.iter().map(|w| sha256_file(w)).collect();
    for pin in req.split("--hash=sha256:").skip(1) {
        let h: String = pin.chars().take(64).collect();
        assert!(have.contains(&h), "no committed wheel has sha256 {h}");
    }
    got
}

/// A PEP 503 index on loopback serving `wheels` (plus fake file names listed but not served).
pub(crate) fn serve_index(wheels: &[PathBuf], listed_only: &[&str]) -> PyIndex {
    PyIndex::serve(wheels, listed_only)
}

/// Copies specs/python-app and specs/python-base into the context and builds the base
/// (rootfs from Debian packages, then an OCI layout). Returns the app's spec path.
fn python_app(cx: &TestContext) -> PathBuf {
    let specs = cx.path().join("project/specs");
    copy_tree(
        &repo_root().join("specs/python-app"),
        &specs.join("python-app"),
    );
    let base = specs.join("python-base");
    copy_tree(&repo_root().join("specs/python-base"), &base);
    run_ok(Command::new(repo_root().join("scripts/make-python-rootfs")).arg(base.join("rootfs")));
    run_ok(
        cx.mlimg()
            .arg("build")
            .arg("-f")
            .arg(base.join("mlimg.toml"))
            .arg("-o")
            .arg(format!("oci:{}", base.join("out").display())),
    );
    specs.join("python-app/mlimg.toml")
}

#[test]
fn wheels_on_a_detected_debian_python_run_in_docker() {
    let cx = TestContext::new();
    let wheels = example_wheels();
    let index = serve_index(&wheels, &[]);
    let spec = python_app(&cx);
    let text = fs::read_to_string(&spec).expect("spec");
    assert!(
        !text.lines().any(|l| l.trim_start().starts_with("[python]")),
        "the example must exercise detection"
    );
    let tag = format!("t{}", std::process::id());
    fs::write(
        &spec,
        text.replace("tags = [\"latest\"]", &format!("tags = [\"{tag}\"]")),
    )
    .expect("write spec");

    // The dry run explains where the target came from.
    let plan = stdout(&run_ok(
        cx.mlimg()
            .env("PIP_INDEX_URL", &index.url)
            .args(["build", "--dry-run", "-f"])
            .arg(&spec),
    ));
    for want in [
        "found /usr/lib/python3.11/os.py",
        "glibc 2.36: package libc6 2.36",
        // where pip puts packages on Debian, not Debian's own /usr/lib/python3/dist-packages
        "packages go to /usr/local/lib/python3.11/dist-packages",
        "CPython 3.11 on linux x86_64 (glibc 2.36)",
        // the plan names each wheel chosen for the target (it opens none of them)
        "into /usr/local/lib/python3.11/dist-packages for CPython 3.11",
        "x86_64.whl sha256:",
        "py3-none-any.whl sha256:",
    ] {
        assert!(plan.contains(want), "dry run lacks {want:?}:\n{plan}");
    }

    let tar = cx.path().join("image.tar");
    run_ok(
        cx.mlimg()
            .env("PIP_INDEX_URL", &index.url)
            .args(["build", "-f"])
            .arg(&spec)
            .arg("-o")
            .arg(format!("docker-archive:{}", tar.display())),
    );
    let image = format!("localhost/python-app:{tag}");
    let load = stdout(&run_ok(
        Command::new("docker").arg("load").arg("-i").arg(&tar),
    ));
    assert!(load.contains(&image), "{load}");
    let run = |args: &[&str]| {
        Command::new("docker")
            .args(["run", "--rm", &image])
            .args(args)
            .output()
            .expect("docker run")
    };
    let outs = [
        run(&[
            "python3",
            "-c",
            "import markupsafe, six, idna, packaging.version; \
             from markupsafe import _speedups; \
             print(markupsafe.escape('<a>'), six.__version__, idna.encode('ascii.example').decode())",
        ]),
        run(&["wheel", "version"]),
        run(&[]),
    ];
    let _ = Command::new("docker").args(["rmi", "-f", &image]).output();
    for o in &outs {
        assert!(
            o.status.success(),
            "docker run failed: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let py = String::from_utf8_lossy(&outs[0].stdout);
    assert_eq!(py.trim(), "&lt;a&gt; 1.16.0 ascii.example");
    let script = String::from_utf8_lossy(&outs[1].stdout);
    assert!(script.contains("wheel 0.43.0"), "{script}");
    let app = String::from_utf8_lossy(&outs[2].stdout);
    assert!(app.contains("&lt;a&gt; six 1.16.0"), "{app}");
}

/// A copy of the example for platform tests: [python] given (with Debian's site-packages), so
/// no base is needed; both platforms listed.
pub(crate) fn table_spec(cx: &TestContext, requirements: &str) -> PathBuf {
    let dir = cx.path().join("tables");
    fs::create_dir_all(&dir).expect("mkdir");
    fs::write(dir.join("requirements.txt"), requirements).expect("write");
    let spec = dir.join("mlimg.toml");
    fs::write(
        &spec,
        r#"[image]
platforms = ["linux/amd64", "linux/arm64"]

[python]
version = "3.11"
prefix = "/usr"
site_packages = "/usr/lib/python3/dist-packages"
libc = "glibc 2.36"

[[deps]]
name = "pypi"
requirements = "requirements.txt"
"#,
    )
    .expect("write spec");
    spec
}

fn layer_members(blob: &Path) -> Vec<String> {
    let f = fs::File::open(blob).expect("blob");
    let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(f));
    ar.entries()
        .expect("tar")
        .map(|e| {
            e.expect("entry")
                .path()
                .expect("path")
                .to_string_lossy()
                .into_owned()
        })
        .collect()
}

#[test]
fn arm64_deps_are_selected_and_installed_on_amd64() {
    let cx = TestContext::new();
    let wheels = example_wheels();
    let index = serve_index(&wheels, &[]);
    let req = fs::read_to_string(repo_root().join("specs/python-app/requirements.txt"))
        .expect("requirements");
    let spec = table_spec(&cx, &req);
    let out = cx.path().join("oci");
    let report = {
        let o = run_ok(
            cx.mlimg()
                .env("PIP_INDEX_URL", &index.url)
                .args(["build", "--json", "--platform", "linux/arm64", "-f"])
                .arg(&spec)
                .arg("-o")
                .arg(format!("oci:{}", out.display())),
        );
        serde_json::from_slice::<serde_json::Value>(&o.stdout).expect("json report")
    };
    assert_eq!(
        report["platforms"][0]["platform"], "linux/arm64",
        "{report}"
    );
    let digest = crate::common::layer_digest(&report, "deps pypi");
    let blob = out
        .join("blobs/sha256")
        .join(digest.trim_start_matches("sha256:"));
    let members = layer_members(&blob);
    let sp = "usr/lib/python3/dist-packages/markupsafe/";
    assert!(
        members
            .iter()
            .any(|m| m == &format!("{sp}_speedups.cpython-311-aarch64-linux-gnu.so")),
        "{members:?}"
    );
    assert!(!members.iter().any(|m| m.contains("x86_64")), "{members:?}");
    assert!(members.iter().any(|m| m == "usr/bin/wheel"), "{members:?}");
    // The aarch64 extension really is an aarch64 ELF file (e_machine 183).
    let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(
        fs::File::open(&blob).expect("blob"),
    ));
    let mut so = Vec::new();
    for e in ar.entries().expect("tar") {
        let mut e = e.expect("entry");
        if e.path()
            .expect("path")
            .to_string_lossy()
            .ends_with("aarch64-linux-gnu.so")
        {
            e.read_to_end(&mut so).expect("read");
        }
    }
    assert!(so.starts_with(b"\x7fELF"), "not ELF");
    assert_eq!(u16::from_le_bytes([so[18], so[19]]), 183, "e_machine");
}

#[test]
fn bad_requirements_files_name_line_and_package() {
    let cx = TestContext::new();
    let wheels = example_wheels();
    let index = serve_index(&wheels, &["winonly-1.0-cp311-cp311-win_amd64.whl"]);
    let good_six = "six==1.16.0 --hash=sha256:8abb2f1d86890a2dfb989f9a77cfcfd3e47c2a354b01111771326f8aa26e0254\n";
    let cases: [(&str, String, &[&str]); 5] = [
        (
            "unpinned",
            format!("{good_six}idna>=3.0 --hash=sha256:{}\n", "1".repeat(64)),
            &["requirements.txt:2", "`idna`", "not pinned"],
        ),
        (
            "missing hash",
            format!("# header\n{good_six}\npackaging==24.1\n"),
            &["requirements.txt:4", "`packaging`", "no `--hash"],
        ),
        (
            "wrong hash",
            format!(
                "{good_six}markupsafe==2.1.5 --hash=sha256:{}\n",
                "ab".repeat(32)
            ),
            &[
                "requirements.txt:2",
                "`markupsafe`",
                "not among the pinned hashes",
            ],
        ),
        (
            "unknown package",
            format!(
                "nosuchpkg-xyz==1.0 --hash=sha256:{}\n{good_six}",
                "2".repeat(64)
            ),
            &["requirements.txt:1", "`nosuchpkg-xyz`", "not found"],
        ),
        (
            "no compatible wheel",
            format!("{good_six}winonly==1.0 --hash=sha256:{}\n", "0".repeat(64)),
            &[
                "requirements.txt:2",
                "`winonly`",
                "no wheel compatible",
                "win_amd64",
            ],
        ),
    ];
    for (what, text, wants) in cases {
        let spec = table_spec(&cx, &text);
        let out = cx
            .mlimg()
            .env("PIP_INDEX_URL", &index.url)
            .args(["build", "--dry-run", "--platform", "linux/amd64", "-f"])
            .arg(&spec)
            .output()
            .expect("run mlimg");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{what}: {err}");
        for w in wants {
            assert!(err.contains(w), "{what}: {w:?} not in: {err}");
        }
    }
}
