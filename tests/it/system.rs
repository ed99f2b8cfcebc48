//! `[system]`: Debian packages from the real archive (deb.debian.org, reached through a local
//! mirror proxy that counts and can tamper with what it forwards), installed into a Debian
//! bookworm base made from Debian's packages (scripts/make-debian-rootfs: a real dpkg
//! database, the archive keyring, deb822 sources), run in Docker.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::common::hostile::{Resp, Server};
use crate::common::registry::TestRegistry;
use crate::common::{TestContext, copy_missing, repo_root, run_ok};
use crate::service_e2e::{docker, made_rootfs, push_rootfs_base};

const UPSTREAM: &str = "http://deb.debian.org/debian";

pub(crate) fn debian_rootfs(arch: &str) -> PathBuf {
    made_rootfs("make-debian-rootfs", "debian-rootfs", arch)
}

/// Pushes the Debian base for `arches` to `reg` (`mlimg-debian:3.11-ARCH`).
pub(crate) fn push_debian_base(
    cx: &TestContext,
    reg: &TestRegistry,
    arches: &[&str],
) -> Vec<String> {
    push_rootfs_base(cx, reg, arches, "mlimg-debian", &debian_rootfs)
}

/// Where archive indexes and .debs downloaded by these tests are kept between runs.
fn store() -> PathBuf {
    repo_root().join("target/mlimg-test/debian-cache")
}

/// Links what earlier runs downloaded into `cache` (`debian/index`, `debian/debs`): files are
/// named by their sha256 and checked against it by mlimg, so a stale copy cannot pass.
fn seed(cache: &Path, what: &[&str]) {
    for sub in what {
        copy_missing(&store().join(sub), &cache.join("debian").join(sub), &|_| {
            true
        });
    }
}

fn keep(cache: &Path) {
    for sub in ["index", "debs"] {
        copy_missing(&cache.join("debian").join(sub), &store().join(sub), &|n| {
            !n.starts_with('.')
        });
    }
}

type Tamper = Arc<dyn Fn(&str, Vec<u8>) -> Vec<u8> + Send + Sync>;

/// A local mirror of deb.debian.org: forwards `GET /debian/...`, logs every path, and passes
/// each answer through `tamper` (the path, the real bytes).
struct Mirror {
    server: Server,
    seen: Arc<Mutex<Vec<String>>>,
}

impl Mirror {
    fn start(tamper: Tamper) -> Mirror {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let memo: Arc<Mutex<BTreeMap<String, Vec<u8>>>> = Arc::default();
        let server = Server::start(move |req| {
            let Some(rest) = req.path.strip_prefix("/debian/") else {
                return Resp::status(404);
            };
            log.lock().expect("log").push(rest.to_string());
            let cached = memo.lock().expect("memo").get(rest).cloned();
            let body = match cached {
                Some(b) => b,
                None => {
                    let r = match reqwest::blocking::get(format!("{UPSTREAM}/{rest}")) {
                        Ok(r) => r,
                        Err(_) => return Resp::status(502),
                    };
                    if !r.status().is_success() {
                        return Resp::status(r.status().as_u16());
                    }
                    let Ok(b) = r.bytes() else {
                        return Resp::status(502);
                    };
                    let b = b.to_vec();
                    if !rest.starts_with("pool/") {
                        memo.lock()
                            .expect("memo")
                            .insert(rest.to_string(), b.clone());
                    }
                    b
                }
            };
            Resp::ok(tamper(rest, body))
        });
        Mirror { server, seen }
    }

    fn url(&self) -> String {
        format!("{}/debian", self.server.url().trim_end_matches('/'))
    }

    fn paths(&self) -> Vec<String> {
        self.seen.lock().expect("log").clone()
    }
}

fn untouched() -> Tamper {
    Arc::new(|_, b| b)
}

/// A spec in a fresh folder: the Debian base, `[system]` with `packages` and `extra` lines.
fn system_spec(cx: &TestContext, name: &str, base: &str, packages: &str, extra: &str) -> PathBuf {
    let dir = cx.path().join(name);
    fs::create_dir_all(&dir).expect("mkdir");
    let reg_host = base.split('/').next().unwrap_or_default();
    fs::write(
        dir.join("mlimg.toml"),
        format!(
            "[image]\nname = \"{reg_host}/{name}\"\ntags = [\"1\"]\nbase = \"{base}\"\n\n\
             [system]\npackages = {packages}\n{extra}\n\n[config]\ncmd = [\"/bin/sh\"]\n"
        ),
    )
    .expect("write spec");
    dir.join("mlimg.toml")
}

/// One test's world on the amd64 Debian base: a registry holding the base, a mirror proxy with
/// `tamper` in front of deb.debian.org, and a spec in a fresh folder asking `[system]` for
/// `packages` from that mirror's bookworm, plus `extra` lines after it.
struct World {
    cx: TestContext,
    reg: TestRegistry,
    mirror: Mirror,
    spec: PathBuf,
}

fn world(name: &str, packages: &str, tamper: Tamper, extra: &str) -> World {
    let cx = TestContext::new();
    let reg = TestRegistry::start();
    let base = push_debian_base(&cx, &reg, &["amd64"]).remove(0);
    let mirror = Mirror::start(tamper);
    let spec = system_spec(
        &cx,
        name,
        &base,
        packages,
        &format!("mirror = \"{}\"\nsuite = \"bookworm\"{extra}", mirror.url()),
    );
    World {
        cx,
        reg,
        mirror,
        spec,
    }
}

fn build_fails(cx: &TestContext, spec: &Path, extra: &[&str]) -> String {
    let out = cx
        .mlimg()
        .args(["build", "-f"])
        .arg(spec)
        .args([
            "-o",
            &format!("oci:{}", cx.path().join("out-fail").display()),
        ])
        .args(extra)
        .output()
        .expect("run mlimg");
    assert!(
        !out.status.success(),
        "the build should fail; stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn curl_tini_libgomp_installed_without_apt_run_in_docker_and_reproducible() {
    let World {
        cx,
        reg,
        mirror,
        spec,
    } = world(
        "tools",
        "[\"curl\", \"tini\", \"libgomp1\"]",
        untouched(),
        "",
    );
    seed(&cx.cache, &["index", "debs"]);
    run_ok(cx.mlimg().args(["lock", "-f"]).arg(&spec));
    let report = cx.build_json(&spec, &["--push"]);
    keep(&cx.cache);
    let digest = report["manifest_digest"]
        .as_str()
        .expect("image digest")
        .to_string();

    // The lock names every package with version, size, sha256 and URL: the requested ones and
    // a dependency chain several levels deep (curl → libcurl4 → libgnutls30 → libnettle8 …).
    let lock: toml::Value =
        toml::from_str(&fs::read_to_string(spec.with_extension("lock")).expect("lock"))
            .expect("toml");
    let sys = &lock["system"][0];
    assert_eq!(sys["architecture"].as_str(), Some("amd64"));
    let pkgs: BTreeMap<String, &toml::Value> = sys["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .map(|p| (p["name"].as_str().expect("name").to_string(), p))
        .collect();
    for want in [
        "curl",
        "tini",
        "libgomp1",
        "libcurl4",
        "libgnutls30",
        "libnghttp2-14",
    ] {
        let p = pkgs
            .get(want)
            .unwrap_or_else(|| panic!("{want} not locked: {:?}", pkgs.keys()));
        assert_eq!(p["sha256"].as_str().map(str::len), Some(64), "{want}");
        assert!(
            p["url"].as_str().is_some_and(|u| u.ends_with(".deb")),
            "{want}"
        );
    }
    // what the base has (libc6, zlib1g) is not installed again
    assert!(
        !pkgs.contains_key("libc6") && !pkgs.contains_key("zlib1g"),
        "{:?}",
        pkgs.keys()
    );

    // an unchanged list with the same cache: a selector hit, no .deb downloaded or read again
    let before = mirror.paths().len();
    let again = cx.build_json(
        &spec,
        &["-o", &format!("oci:{}", cx.path().join("again").display())],
    );
    assert!(crate::common::layer_cached(&again, "system"), "{again}");
    assert_eq!(
        mirror.paths().len(),
        before,
        "{:?}",
        &mirror.paths()[before..]
    );

    // docker runs them; dpkg knows them
    let image = format!("{}/tools:1", reg.host());
    docker(&["pull", "-q", &image]);
    let run = |cmd: &[&str]| {
        let mut args = vec!["run", "--rm", "--entrypoint", cmd[0], image.as_str()];
        args.extend(&cmd[1..]);
        docker(&args)
    };
    assert!(
        run(&["curl", "--version"]).starts_with("curl 7."),
        "curl --version"
    );
    assert!(
        run(&["tini", "--version"]).contains("tini version"),
        "tini --version"
    );
    let listed = run(&["dpkg", "-l", "curl", "tini", "libgomp1", "libcurl4"]);
    for p in ["curl", "tini", "libgomp1", "libcurl4"] {
        assert!(
            listed.lines().any(|l| l.starts_with("ii")
                && l.split_whitespace()
                    .nth(1)
                    .is_some_and(|n| n.split(':').next() == Some(p))),
            "dpkg -l does not list {p} as installed:\n{listed}"
        );
    }
    let files = run(&["dpkg", "-L", "curl"]);
    assert!(files.lines().any(|l| l == "/usr/bin/curl"), "{files}");
    // the dynamic loader finds libgomp (the library LightGBM and XGBoost wheels need)
    let gomp = run(&[
        "python3",
        "-c",
        "import ctypes; l = ctypes.CDLL('libgomp.so.1'); print('omp', l.omp_get_max_threads() > 0)",
    ]);
    assert_eq!(gomp, "omp True");
    // merged /usr survived: /lib is still the base's link
    let lib = run(&["ls", "-ld", "/lib"]);
    assert!(lib.ends_with("/lib -> usr/lib"), "{lib}");

    // Reproducible and locked: a fresh cache and `--locked` ask no index (only pool/ files
    // are fetched) and give the same digest.
    let before = mirror.paths().len();
    let cx2 = TestContext::new();
    let spec2 = cx2.path().join("tools/mlimg.toml");
    fs::create_dir_all(spec2.parent().expect("dir")).expect("mkdir");
    fs::copy(&spec, &spec2).expect("copy spec");
    fs::copy(spec.with_extension("lock"), spec2.with_extension("lock")).expect("copy lock");
    let report2 = cx2.build_json(
        &spec2,
        &[
            "--locked",
            "-o",
            &format!("oci:{}", cx2.path().join("out").display()),
        ],
    );
    let digest2 = report2["manifest_digest"].as_str().expect("digest");
    assert_eq!(digest2, digest, "two cold builds of the same lock differ");
    let asked: Vec<String> = mirror.paths()[before..].to_vec();
    assert!(
        !asked.is_empty() && asked.iter().all(|p| p.starts_with("pool/")),
        "{asked:?}"
    );
}

#[test]
fn a_tampered_packages_index_is_refused() {
    let World {
        cx,
        reg: _reg,
        mirror: _mirror,
        spec,
    } = world(
        "tampered",
        "[\"tini\"]",
        Arc::new(|path: &str, mut b: Vec<u8>| {
            if path.ends_with("binary-amd64/Packages.xz") {
                let n = b.len();
                b[n / 2] ^= 1;
            }
            b
        }),
        "",
    );
    let err = build_fails(&cx, &spec, &[]);
    assert!(
        err.contains("Packages.xz") && err.contains("sha256") && err.contains("refused"),
        "{err}"
    );
}

#[test]
fn a_tampered_deb_is_refused() {
    let World {
        cx,
        reg: _reg,
        mirror: _mirror,
        spec,
    } = world(
        "tampered-deb",
        "[\"tini\"]",
        Arc::new(|path: &str, mut b: Vec<u8>| {
            if path.starts_with("pool/") && path.contains("/tini_") {
                let n = b.len();
                b[n - 10] ^= 0x55;
            }
            b
        }),
        "",
    );
    seed(&cx.cache, &["index"]);
    let err = build_fails(&cx, &spec, &[]);
    assert!(
        err.contains("tini") && err.contains("sha256") && err.contains("refused"),
        "{err}"
    );
    assert!(
        !cx.path().join("out-fail/index.json").exists(),
        "no image on a failed build"
    );
}

/// A fresh OpenPGP key (gpg in a temporary home) clear-signs the real Release text: the base's
/// Debian keyring does not hold it.
fn resign_with_unknown_key(real: &[u8]) -> Vec<u8> {
    let home = tempfile::tempdir().expect("tmp");
    let gpg = |args: &[&str], input: Option<&[u8]>| {
        let mut c = std::process::Command::new("gpg");
        c.arg("--homedir")
            .arg(home.path())
            .args([
                "--batch",
                "--yes",
                "--pinentry-mode",
                "loopback",
                "--passphrase",
                "",
            ])
            .args(args);
        if let Some(i) = input {
            let dir = home.path().join("in");
            fs::write(&dir, i).expect("write");
            c.arg(&dir);
        }
        run_ok(&mut c)
    };
    gpg(
        &[
            "--quick-gen-key",
            "Mallory <mallory@example.invalid>",
            "rsa2048",
            "sign",
            "never",
        ],
        None,
    );
    // the text between the signed-message header and the signature
    let text = String::from_utf8_lossy(real);
    let body = text
        .split_once("\n\n")
        .and_then(|(_, rest)| rest.split_once("\n-----BEGIN PGP SIGNATURE-----"))
        .map(|(b, _)| b.to_string())
        .expect("clear-signed InRelease");
    gpg(
        &[
            "--clearsign",
            "--digest-algo",
            "SHA256",
            "-o",
            &home.path().join("out").display().to_string(),
        ],
        Some(body.as_bytes()),
    );
    fs::read(home.path().join("out")).expect("signed")
}

#[test]
fn a_release_signed_by_an_unknown_key_is_refused() {
    let World {
        cx,
        reg: _reg,
        mirror,
        spec,
    } = world(
        "unknown-key",
        "[\"tini\"]",
        Arc::new(|path: &str, b: Vec<u8>| {
            if path.ends_with("/InRelease") {
                resign_with_unknown_key(&b)
            } else {
                b
            }
        }),
        "",
    );
    let err = build_fails(&cx, &spec, &[]);
    assert!(err.contains("InRelease"), "{err}");
    assert!(err.to_lowercase().contains("key"), "{err}");
    // no index was read after the refusal
    assert!(
        !mirror.paths().iter().any(|p| p.contains("Packages")),
        "{:?}",
        mirror.paths()
    );
}

#[test]
fn an_unknown_package_names_the_spec_line() {
    let World {
        cx,
        reg: _reg,
        mirror: _mirror,
        spec,
    } = world(
        "unknown",
        "[\n  \"tini\",\n  \"no-such-package-mlimg\",\n]",
        untouched(),
        "",
    );
    seed(&cx.cache, &["index"]);
    let err = build_fails(&cx, &spec, &[]);
    let line = fs::read_to_string(&spec)
        .expect("spec")
        .lines()
        .position(|l| l.contains("no-such-package-mlimg"))
        .expect("line")
        + 1;
    assert!(err.contains("no-such-package-mlimg"), "{err}");
    assert!(
        err.contains(&format!("mlimg.toml:{line}")) || err.contains(&format!("line {line}")),
        "line {line} not named: {err}"
    );
}

/// The first `len` bytes of `path` in the image for `arch` of the OCI layout `out`.
fn file_head_in_layout(out: &Path, arch: &str, path: &str, len: usize) -> Option<Vec<u8>> {
    use std::io::Read as _;
    let json = |d: &str| -> serde_json::Value {
        let b = fs::read(
            out.join("blobs/sha256")
                .join(d.trim_start_matches("sha256:")),
        )
        .expect("blob");
        serde_json::from_slice(&b).expect("json")
    };
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(out.join("index.json")).expect("index.json"))
            .expect("json");
    let mut manifests: Vec<serde_json::Value> =
        index["manifests"].as_array().cloned().unwrap_or_default();
    // an index inside the layout: its manifests
    if let Some(inner) = manifests
        .iter()
        .find(|m| m["mediaType"].as_str().is_some_and(|t| t.contains("index")))
    {
        manifests = json(inner["digest"].as_str().expect("digest"))["manifests"]
            .as_array()
            .cloned()
            .unwrap_or_default();
    }
    let m = manifests
        .iter()
        .find(|m| m["platform"]["architecture"].as_str() == Some(arch))?;
    let manifest = json(m["digest"].as_str().expect("digest"));
    for l in manifest["layers"].as_array()? {
        let d = l["digest"].as_str()?;
        let Ok(f) = fs::File::open(
            out.join("blobs/sha256")
                .join(d.trim_start_matches("sha256:")),
        ) else {
            continue;
        };
        let r: Box<dyn std::io::Read> =
            if l["mediaType"].as_str().is_some_and(|t| t.ends_with("gzip")) {
                Box::new(flate2::read::GzDecoder::new(f))
            } else {
                Box::new(f)
            };
        let mut a = tar::Archive::new(r);
        for e in a.entries().ok()? {
            let mut e = e.ok()?;
            if e.path().ok()?.to_string_lossy().trim_start_matches("./") == path
                && e.header().entry_type().is_file()
            {
                let mut buf = vec![0u8; len];
                e.read_exact(&mut buf).ok()?;
                return Some(buf);
            }
        }
    }
    None
}

#[test]
fn arm64_packages_for_a_two_platform_build() {
    let cx = TestContext::new();
    let reg = TestRegistry::start();
    let bases = push_debian_base(&cx, &reg, &["amd64", "arm64"]);
    crate::two_platform::push_index(
        &reg,
        "mlimg-debian",
        "multi",
        &[(bases[0].clone(), "amd64"), (bases[1].clone(), "arm64")],
    );
    let mirror = Mirror::start(untouched());
    let spec = system_spec(
        &cx,
        "two",
        &format!("{}/mlimg-debian:multi", reg.host()),
        "[\"tini\"]",
        &format!("mirror = \"{}\"\nsuite = \"bookworm\"", mirror.url()),
    );
    let text = fs::read_to_string(&spec).expect("spec").replace(
        "[image]\n",
        "[image]\nplatforms = [\"linux/amd64\", \"linux/arm64\"]\n",
    );
    fs::write(&spec, text).expect("spec");
    seed(&cx.cache, &["index", "debs"]);
    run_ok(cx.mlimg().args(["lock", "-f"]).arg(&spec));
    let out = cx.path().join("out");
    cx.build_json(
        &spec,
        &["--locked", "-o", &format!("oci:{}", out.display())],
    );
    keep(&cx.cache);
    let lock: toml::Value =
        toml::from_str(&fs::read_to_string(spec.with_extension("lock")).expect("lock"))
            .expect("toml");
    let arches: Vec<&str> = lock["system"]
        .as_array()
        .expect("system")
        .iter()
        .map(|s| s["architecture"].as_str().expect("arch"))
        .collect();
    assert_eq!(arches, ["amd64", "arm64"]);
    let arm = &lock["system"][1]["packages"];
    assert!(
        arm.as_array()
            .expect("packages")
            .iter()
            .any(|p| p["name"].as_str() == Some("tini")
                && p["architecture"].as_str() == Some("arm64")
                && p["url"].as_str().is_some_and(|u| u.ends_with("_arm64.deb"))),
        "{arm:?}"
    );
    // (the arm64 index may come from the seeded store: the lock's URLs show what was chosen)
    // the tini binary of each image is an ELF for its machine
    for (arch, machine) in [("amd64", 62u16), ("arm64", 183u16)] {
        let head = file_head_in_layout(&out, arch, "usr/bin/tini", 20)
            .unwrap_or_else(|| panic!("usr/bin/tini not in the {arch} image"));
        assert_eq!(&head[..4], b"\x7fELF");
        assert_eq!(u16::from_le_bytes([head[18], head[19]]), machine, "{arch}");
    }
}

/// The reason most ML images have an apt line: LightGBM's wheel links libgomp (and libstdc++),
/// which a slim base lacks. With `[system]` the import works, and the shared-library lint,
/// which knows what `[system]` installs, stays quiet.
#[test]
fn lightgbm_imports_with_libgomp_from_system() {
    let World {
        cx,
        reg,
        mirror: _mirror,
        spec,
    } = world(
        "lgbm",
        "[\"libgomp1\", \"libstdc++6\"]",
        untouched(),
        "\n\n[[deps]]\nname = \"ml\"\nrequirements = \"requirements.txt\"",
    );
    fs::write(
        spec.with_file_name("requirements.txt"),
        "lightgbm==4.3.0 \\\n    --hash=sha256:104496a3404cb2452d3412cbddcfbfadbef9c372ea91e3a9b8794bcc5183bf07\n\
         numpy==1.26.4 \\\n    --hash=sha256:666dbfb6ec68962c033a450943ded891bed2d54e6755e35e5835d63f4f6931d5\n\
         scipy==1.13.1 \\\n    --hash=sha256:a78b4b3345f1b6f68a763c6e25c0c9a23a9fd0f39f5f3d200efe8feda560a5fa\n",
    )
    .expect("requirements");
    seed(&cx.cache, &["index", "debs"]);
    crate::service_e2e::seed_wheels(&cx.cache);
    let report = cx.build_json(&spec, &["--push"]);
    crate::service_e2e::keep_wheels(&cx.cache);
    keep(&cx.cache);
    let warnings = report["warnings"].to_string();
    assert!(!warnings.contains("shared-lib-missing"), "{warnings}");
    let image = format!("{}/lgbm:1", reg.host());
    docker(&["pull", "-q", &image]);
    let out = docker(&[
        "run",
        "--rm",
        "--entrypoint",
        "python3",
        &image,
        "-c",
        "import lightgbm, numpy; print(lightgbm.__version__, numpy.__version__)",
    ]);
    assert_eq!(out, "4.3.0 1.26.4");
}
