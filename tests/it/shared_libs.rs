//! `shared-lib-missing` end to end: wheels holding real ELF shared objects, compiled here with
//! gcc (`-Wl,--no-as-needed -lgomp` gives a `DT_NEEDED libgomp.so.1`), linted against small
//! bases built from folders (`tests/lints/shared-lib-missing/`): the missing library is named
//! with its Debian package; a base that has it, a library vendored in `<pkg>.libs/` behind
//! `$ORIGIN`, or one reached through `/etc/ld.so.conf.d` is no warning; a cold build that
//! downloads the wheel from an index warns after the download.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sha2::{Digest, Sha256};
use zip::write::SimpleFileOptions;

use crate::common::pyindex::{PyIndex, host_machine};
use crate::common::{TestContext, copy_tree, repo_root, run_ok};

const CODE: &str = "shared-lib-missing";

/// The OCI platform of this machine (the shared objects gcc builds here run on it).
pub fn platform() -> &'static str {
    match host_machine().as_str() {
        "aarch64" | "arm64" => "linux/arm64",
        _ => "linux/amd64",
    }
}

/// One shared object of a test wheel: its path in the wheel, C source, gcc link arguments.
pub struct Object<'a> {
    pub path: &'a str,
    pub code: &'a str,
    pub args: &'a [&'a str],
}

/// Compiles `obj` with `gcc -shared` (its `-L` folders relative to `work`).
fn compile(work: &Path, obj: &Object) -> Vec<u8> {
    let name = obj.path.replace('/', "_");
    let src = work.join(format!("{name}.c"));
    fs::write(&src, obj.code).unwrap();
    let out = work.join(&name);
    let o = Command::new("gcc")
        .current_dir(work)
        .args(["-shared", "-fPIC", "-o"])
        .arg(&out)
        .arg(&src)
        .args(obj.args)
        .output()
        .expect("gcc must be installed for these tests");
    assert!(
        o.status.success(),
        "gcc {}: {}",
        obj.path,
        String::from_utf8_lossy(&o.stderr)
    );
    // vendored libraries are linked by the next objects from the work folder
    if let Some(file) = obj.path.rsplit('/').next() {
        fs::copy(&out, work.join(file)).unwrap();
    }
    fs::read(out).unwrap()
}

/// Writes `<dist>-<version>-py3-none-manylinux_2_17_<machine>.whl` into `dir` with `objects`
/// compiled, an `__init__.py`, METADATA, WHEEL and a correct RECORD; returns (path, sha256).
pub fn native_wheel(
    dir: &Path,
    dist: &str,
    version: &str,
    objects: &[Object],
) -> (PathBuf, String) {
    let work = tempfile::tempdir().unwrap();
    let tag = format!("py3-none-manylinux_2_17_{}", host_machine());
    let info = format!("{dist}-{version}.dist-info");
    let mut files: Vec<(String, Vec<u8>)> = vec![(format!("{dist}/__init__.py"), Vec::new())];
    for o in objects {
        files.push((o.path.to_string(), compile(work.path(), o)));
    }
    files.push((
        format!("{info}/METADATA"),
        format!("Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n").into_bytes(),
    ));
    files.push((
        format!("{info}/WHEEL"),
        format!("Wheel-Version: 1.0\nGenerator: mlimg-test\nRoot-Is-Purelib: false\nTag: {tag}\n")
            .into_bytes(),
    ));
    let mut record = String::new();
    for (p, d) in &files {
        record.push_str(&format!(
            "{p},{},{}\n",
            mlimg::sources::python::install::record_hash(d),
            d.len()
        ));
    }
    record.push_str(&format!("{info}/RECORD,,\n"));
    files.push((format!("{info}/RECORD"), record.into_bytes()));
    fs::create_dir_all(dir).unwrap();
    let path = dir.join(format!("{dist}-{version}-{tag}.whl"));
    let mut zw = zip::ZipWriter::new(fs::File::create(&path).unwrap());
    for (p, d) in &files {
        let opts = SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .unix_permissions(0o755);
        zw.start_file(p.as_str(), opts).unwrap();
        zw.write_all(d).unwrap();
    }
    zw.finish().unwrap();
    let sha = hex::encode(Sha256::digest(fs::read(&path).unwrap()));
    (path, sha)
}

const NATIVE_C: &str = "int lint_native(void) { return 42; }\n";

/// Prepares a copied lint fixture for this machine: `@PLATFORM@` in its specs, and the wheels
/// its `native-wheels` file lists (`DIST VERSION gcc-link-args…` lines, one module
/// `DIST/_native.so` each) built into `wheels/`, their hashes put in `requirements.txt` for
/// `@SHA256:DIST@`. Does nothing for a fixture without `native-wheels`.
pub fn prepare_fixture(dir: &Path) {
    for spec in [dir.join("mlimg.toml"), dir.join("base/mlimg.toml")] {
        if let Ok(text) = fs::read_to_string(&spec) {
            fs::write(&spec, text.replace("@PLATFORM@", platform())).unwrap();
        }
    }
    let Ok(list) = fs::read_to_string(dir.join("native-wheels")) else {
        return;
    };
    let req = dir.join("requirements.txt");
    let mut text = fs::read_to_string(&req).unwrap_or_default();
    for line in list
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
    {
        let mut words = line.split_whitespace();
        let (dist, version) = (words.next().unwrap(), words.next().unwrap());
        let args: Vec<&str> = words.collect();
        let path = format!("{dist}/_native.so");
        let (_, sha) = native_wheel(
            &dir.join("wheels"),
            dist,
            version,
            &[Object {
                path: &path,
                code: NATIVE_C,
                args: &args,
            }],
        );
        text = text.replace(&format!("@SHA256:{dist}@"), &sha);
    }
    fs::write(req, text).unwrap();
}

/// The fixture copied into the context and prepared; its base not built yet.
fn fixture(cx: &TestContext, name: &str) -> PathBuf {
    let dir = cx.path().join(name);
    copy_tree(&repo_root().join("tests/lints").join(CODE), &dir);
    prepare_fixture(&dir);
    dir
}

fn build_base(cx: &TestContext, dir: &Path) {
    run_ok(
        cx.mlimg()
            .args(["build", "--no-sbom", "--no-provenance", "-f"])
            .arg(dir.join("base/mlimg.toml"))
            .arg("-o")
            .arg(format!("oci:{}", dir.join("base/out").display())),
    );
}

fn dry_run(cx: &TestContext, dir: &Path, strict: bool) -> Output {
    let mut c = cx.mlimg();
    c.env("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
        .env_remove("PIP_EXTRA_INDEX_URL")
        .args(["build", "--dry-run", "--json", "-f"])
        .arg(dir.join("mlimg.toml"));
    if strict {
        c.arg("--strict");
    }
    c.output().expect("run mlimg")
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// The messages of the `shared-lib-missing` warnings of a `--json` output.
fn messages(v: &serde_json::Value) -> Vec<String> {
    v["warnings"]
        .as_array()
        .unwrap_or_else(|| panic!("no warnings array in {v}"))
        .iter()
        .filter(|w| w["code"] == CODE)
        .filter_map(|w| w["message"].as_str().map(str::to_string))
        .collect()
}

/// Rebuilds `wheels/` and `requirements.txt` with one wheel `lintgomp` made of `objects`.
fn replace_wheel(dir: &Path, objects: &[Object]) {
    fs::remove_dir_all(dir.join("wheels")).unwrap();
    let (_, sha) = native_wheel(&dir.join("wheels"), "lintgomp", "1.0", objects);
    fs::write(
        dir.join("requirements.txt"),
        format!("lintgomp==1.0 --hash=sha256:{sha}\n"),
    )
    .unwrap();
}

#[test]
fn a_missing_library_is_named_with_its_debian_package() {
    let cx = TestContext::new();
    let dir = fixture(&cx, "missing");
    build_base(&cx, &dir);
    let out = dry_run(&cx, &dir, false);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m = messages(&json(&out));
    assert_eq!(m.len(), 1, "{m:?}");
    let wheel = format!(
        "lintgomp-1.0-py3-none-manylinux_2_17_{}.whl",
        host_machine()
    );
    assert_eq!(
        m[0],
        format!(
            "deps native: {wheel} needs libgomp.so.1 (from lintgomp/_native.so), which the image \
             lacks; add \"libgomp1\" to [system] packages"
        ),
        "libc.so.6 and libm.so.6 are in the base: only libgomp is missing"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("warning[shared-lib-missing]"), "{stderr}");

    // --strict: an error, exit code 2, before anything is written
    let strict = dry_run(&cx, &dir, true);
    assert_eq!(strict.status.code(), Some(2));
    let e = json(&strict);
    assert_eq!(e["error"]["code"], "lint", "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("[shared-lib-missing]") && m.contains("libgomp1")),
        "{e}"
    );
}

#[test]
fn a_base_with_the_library_is_no_warning() {
    let cx = TestContext::new();
    // in a default folder
    let dir = fixture(&cx, "in-usr-lib");
    fs::write(dir.join("base/fs/usr/lib/libgomp.so.1"), "stand-in\n").unwrap();
    build_base(&cx, &dir);
    let v = json(&dry_run(&cx, &dir, false));
    assert_eq!(messages(&v), Vec::<String>::new(), "{v}");

    // in a folder that /etc/ld.so.conf.d names
    let dir = fixture(&cx, "in-ld-so-conf");
    fs::create_dir_all(dir.join("base/fs/opt/omp/lib")).unwrap();
    fs::create_dir_all(dir.join("base/fs/etc/ld.so.conf.d")).unwrap();
    fs::write(dir.join("base/fs/opt/omp/lib/libgomp.so.1"), "stand-in\n").unwrap();
    fs::write(
        dir.join("base/fs/etc/ld.so.conf.d/omp.conf"),
        "# OpenMP\n/opt/omp/lib\n",
    )
    .unwrap();
    build_base(&cx, &dir);
    let v = json(&dry_run(&cx, &dir, false));
    assert_eq!(messages(&v), Vec::<String>::new(), "{v}");

    // in a folder nothing points the loader at: still missing
    let dir = fixture(&cx, "elsewhere");
    fs::create_dir_all(dir.join("base/fs/opt/omp/lib")).unwrap();
    fs::write(dir.join("base/fs/opt/omp/lib/libgomp.so.1"), "stand-in\n").unwrap();
    build_base(&cx, &dir);
    let v = json(&dry_run(&cx, &dir, false));
    assert_eq!(messages(&v).len(), 1, "{v}");
}

#[test]
fn a_library_vendored_behind_origin_is_no_warning() {
    let cx = TestContext::new();
    let dir = fixture(&cx, "vendored");
    build_base(&cx, &dir);
    // auditwheel's layout: the library renamed into lintgomp.libs/, the module's RUNPATH
    // pointing there from its own folder
    let vendored = Object {
        path: "lintgomp.libs/libgomp-a34b3233.so.1",
        code: "int omp_stand_in(void) { return 1; }\n",
        args: &["-Wl,-soname,libgomp-a34b3233.so.1"],
    };
    replace_wheel(
        &dir,
        &[
            vendored,
            Object {
                path: "lintgomp/_native.so",
                code: NATIVE_C,
                args: &[
                    "-Wl,--no-as-needed",
                    "-L.",
                    "-l:libgomp-a34b3233.so.1",
                    "-Wl,-rpath,$ORIGIN/../lintgomp.libs",
                ],
            },
        ],
    );
    let v = json(&dry_run(&cx, &dir, false));
    assert_eq!(messages(&v), Vec::<String>::new(), "{v}");

    // the same wheel without the run path: the loader would not find it
    replace_wheel(
        &dir,
        &[
            Object {
                path: "lintgomp.libs/libgomp-a34b3233.so.1",
                code: "int omp_stand_in(void) { return 1; }\n",
                args: &["-Wl,-soname,libgomp-a34b3233.so.1"],
            },
            Object {
                path: "lintgomp/_native.so",
                code: NATIVE_C,
                args: &["-Wl,--no-as-needed", "-L.", "-l:libgomp-a34b3233.so.1"],
            },
        ],
    );
    let v = json(&dry_run(&cx, &dir, false));
    let m = messages(&v);
    assert_eq!(m.len(), 1, "{v}");
    assert!(
        m[0].contains("needs libgomp-a34b3233.so.1 (from lintgomp/_native.so)")
            && m[0].contains("no Debian package is known for libgomp-a34b3233.so.1"),
        "{}",
        m[0]
    );

    // numpy's layout: the module's DT_RPATH (old tags) reaches the vendored openblas stand-in,
    // which has no run path and needs the vendored gfortran stand-in: found through the
    // module's DT_RPATH, passed down; with DT_RUNPATH (new tags) it is not
    let chain = |tags: &'static str| {
        [
            Object {
                path: "lintgomp.libs/libgfortran-040039e1.so.5",
                code: "int gf(void) { return 1; }\n",
                args: &["-Wl,-soname,libgfortran-040039e1.so.5"],
            },
            Object {
                path: "lintgomp.libs/libblas-0cf96a72.so",
                code: "int blas(void) { return 2; }\n",
                args: &[
                    "-Wl,-soname,libblas-0cf96a72.so",
                    "-Wl,--no-as-needed",
                    "-L.",
                    "-l:libgfortran-040039e1.so.5",
                ],
            },
            Object {
                path: "lintgomp/_native.so",
                code: NATIVE_C,
                args: if tags == "old" {
                    &[
                        "-Wl,--no-as-needed",
                        "-L.",
                        "-l:libblas-0cf96a72.so",
                        "-Wl,--disable-new-dtags",
                        "-Wl,-rpath,$ORIGIN/../lintgomp.libs",
                    ]
                } else {
                    &[
                        "-Wl,--no-as-needed",
                        "-L.",
                        "-l:libblas-0cf96a72.so",
                        "-Wl,--enable-new-dtags",
                        "-Wl,-rpath,$ORIGIN/../lintgomp.libs",
                    ]
                },
            },
        ]
    };
    replace_wheel(&dir, &chain("old"));
    let v = json(&dry_run(&cx, &dir, false));
    assert_eq!(messages(&v), Vec::<String>::new(), "{v}");
    replace_wheel(&dir, &chain("new"));
    let v = json(&dry_run(&cx, &dir, false));
    let m = messages(&v);
    assert_eq!(m.len(), 1, "{v}");
    assert!(
        m[0].contains("needs libgfortran-040039e1.so.5 (from lintgomp.libs/libblas-0cf96a72.so)")
            && !m[0].contains("libblas-0cf96a72.so (from lintgomp/_native.so)"),
        "{}",
        m[0]
    );
}

#[test]
fn a_base_without_glibc_lacks_libc_too() {
    let cx = TestContext::new();
    let dir = fixture(&cx, "no-glibc");
    for f in ["libc.so.6", "libm.so.6"] {
        fs::remove_file(dir.join("base/fs/usr/lib").join(f)).unwrap();
    }
    fs::write(dir.join("base/fs/usr/lib/libz.so.1"), "stand-in\n").unwrap();
    build_base(&cx, &dir);
    let v = json(&dry_run(&cx, &dir, false));
    let m = messages(&v);
    assert_eq!(m.len(), 1, "{v}");
    assert!(
        m[0].contains("libc.so.6 (from lintgomp/_native.so)")
            && m[0].contains("libm.so.6 (from")
            && m[0].contains("add \"libc6\", \"libgomp1\" to [system] packages"),
        "{}",
        m[0]
    );
}

/// A cold build whose wheel comes from an index (not on this machine before the fetch stage)
/// warns after the download, once; so does the next build, from the cache.
#[test]
fn a_downloaded_wheel_is_checked_after_the_fetch() {
    let cx = TestContext::new();
    let dir = fixture(&cx, "index");
    build_base(&cx, &dir);
    let wheel = fs::read_dir(dir.join("wheels"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let index = PyIndex::serve(&[wheel], &[]);
    let spec = dir.join("mlimg.toml");
    let text = fs::read_to_string(&spec)
        .unwrap()
        .replace("find_links = [\"wheels\"]\n", "");
    fs::write(&spec, text).unwrap();
    fs::remove_dir_all(dir.join("wheels")).unwrap();
    let build = |out: &str, strict: bool| {
        let mut c = cx.mlimg();
        c.env("PIP_INDEX_URL", &index.url)
            .env_remove("PIP_EXTRA_INDEX_URL")
            .args(["build", "--json", "--no-sbom", "--no-provenance", "-f"])
            .arg(&spec)
            .arg("-o")
            .arg(format!("oci:{}", dir.join(out).display()));
        if strict {
            c.arg("--strict");
        }
        c.output().expect("run mlimg")
    };
    // cold, then warm (the wheel in the cache): one warning each time
    for _ in 0..2 {
        let out = build("out", false);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let m = messages(&json(&out));
        assert_eq!(m.len(), 1, "{m:?}");
        assert!(m[0].contains("add \"libgomp1\""), "{}", m[0]);
    }
    // a dry run reads the wheel from the wheel cache (the facts it left are dropped first)
    fs::remove_dir_all(cx.cache.join("facts")).unwrap();
    let out = cx
        .mlimg()
        .env("PIP_INDEX_URL", &index.url)
        .env_remove("PIP_EXTRA_INDEX_URL")
        .args(["build", "--dry-run", "--json", "-f"])
        .arg(&spec)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(messages(&json(&out)).len(), 1);
    // --strict on a cold cache: stops after the download, nothing written
    fs::remove_dir_all(&cx.cache).unwrap();
    let out = build("strict", true);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!dir.join("strict/index.json").exists());
    let e = json(&out);
    assert_eq!(e["error"]["code"], "lint", "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("libgomp1")),
        "{e}"
    );
}

/// On the Python test base (`scripts/make-python-rootfs`: Debian's CPython and the libraries
/// it needs, without libgomp1), MarkupSafe's extension (it needs only glibc) is found and
/// lintgomp's libgomp.so.1 is not: the base's real library folders are read.
#[test]
fn the_python_test_base_lacks_libgomp_only() {
    let cx = TestContext::new();
    let base = cx.path().join("python-base");
    copy_tree(&repo_root().join("specs/python-base"), &base);
    let arch = platform().rsplit('/').next().unwrap().to_string();
    run_ok(
        Command::new(repo_root().join("scripts/make-python-rootfs"))
            .arg(base.join("rootfs"))
            .arg(&arch),
    );
    let spec = base.join("mlimg.toml");
    let text = fs::read_to_string(&spec)
        .unwrap()
        .replace("linux/amd64", platform());
    fs::write(&spec, text).unwrap();
    run_ok(
        cx.mlimg()
            .args(["build", "--no-sbom", "--no-provenance", "-f"])
            .arg(&spec)
            .arg("-o")
            .arg(format!("oci:{}", base.join("out").display())),
    );

    let dir = fixture(&cx, "python-base");
    let markupsafe = crate::common::pyindex::testdata_wheel(&format!(
        "MarkupSafe-2.1.5-cp311-cp311-manylinux_2_17_{}",
        host_machine()
    ));
    fs::copy(
        &markupsafe,
        dir.join("wheels")
            .join(crate::common::pyindex::file_name(&markupsafe)),
    )
    .unwrap();
    let sha = hex::encode(Sha256::digest(fs::read(&markupsafe).unwrap()));
    let mut req = fs::read_to_string(dir.join("requirements.txt")).unwrap();
    req.push_str(&format!("markupsafe==2.1.5 --hash=sha256:{sha}\n"));
    fs::write(dir.join("requirements.txt"), req).unwrap();
    let spec = dir.join("mlimg.toml");
    let text = fs::read_to_string(&spec).unwrap().replace(
        "base = \"oci:base/out\"",
        &format!("base = \"oci:{}\"", base.join("out").display()),
    );
    fs::write(&spec, text).unwrap();
    let out = dry_run(&cx, &dir, false);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m = messages(&json(&out));
    assert_eq!(m.len(), 1, "{m:?}");
    assert!(
        m[0].contains("lintgomp-1.0-")
            && m[0].contains("needs libgomp.so.1 (from lintgomp/_native.so), which the image lacks; add \"libgomp1\"")
            && !m[0].contains("libc.so.6")
            && !m[0].contains("libm.so.6"),
        "{}",
        m[0]
    );
}

/// The NVIDIA driver's `libcuda.so.1` is no Debian package: without `[config] gpu` the message
/// says to set it; with it, the container runtime provides the library.
#[test]
fn libcuda_comes_from_the_nvidia_runtime() {
    let cx = TestContext::new();
    let dir = fixture(&cx, "gpu");
    build_base(&cx, &dir);
    // a stand-in driver library to link against (not shipped in the wheel)
    let stub = tempfile::tempdir().unwrap();
    fs::write(
        stub.path().join("cuda.c"),
        "int cuInit(int f) { return f; }\n",
    )
    .unwrap();
    run_ok(
        Command::new("gcc")
            .current_dir(stub.path())
            .args(["-shared", "-fPIC", "-o", "libcuda.so.1", "cuda.c"])
            .arg("-Wl,-soname,libcuda.so.1"),
    );
    let link = format!("-L{}", stub.path().display());
    replace_wheel(
        &dir,
        &[Object {
            path: "lintgomp/_native.so",
            code: NATIVE_C,
            args: &["-Wl,--no-as-needed", &link, "-l:libcuda.so.1"],
        }],
    );
    let v = json(&dry_run(&cx, &dir, false));
    let m = messages(&v);
    assert_eq!(m.len(), 1, "{v}");
    assert!(
        m[0].contains("needs libcuda.so.1 (from lintgomp/_native.so)")
            && m[0].contains("libcuda.so.1 comes with the NVIDIA driver: set [config] gpu = true"),
        "{}",
        m[0]
    );
    let spec = dir.join("mlimg.toml");
    let text = fs::read_to_string(&spec)
        .unwrap()
        .replace("[config]\n", "[config]\ngpu = true\n");
    fs::write(&spec, text).unwrap();
    let out = dry_run(&cx, &dir, false);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = json(&out);
    assert_eq!(messages(&v), Vec::<String>::new(), "{v}");
}
