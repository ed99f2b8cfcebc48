//! A second engine: the iris service in `[image] format = "docker"` under podman (Debian's
//! package, scripts/setup installs it), which keeps the healthcheck of a Docker-format image
//! and drops it from an OCI one. Each test uses its own podman storage (vfs) in a temp dir.
//!
//! Flags this machine needs (a container without systemd, without rlimit raising rights):
//! `--storage-driver vfs --root/--runroot <temp> --cgroup-manager=cgroupfs
//! --events-backend=file`, `--tls-verify=false` for the 127.0.0.1 registry, and on `run`
//! `--ulimit nofile=1024:1024 --ulimit nproc=1024:1024` (runc may not raise them to podman's
//! defaults) and `--network none` (no CNI/netavark; the checks run inside the container).

use std::process::Command;

use crate::common::registry::TestRegistry;
use crate::common::{TestContext, run_ok, stdout};
use crate::service_e2e::{iris_spec, keep_wheels, push_python_base, seed_wheels};

struct Podman {
    dir: tempfile::TempDir,
}

/// What `podman run` needs on this machine (see the module's comment).
const RUN_FLAGS: [&str; 6] = [
    "--ulimit",
    "nofile=1024:1024",
    "--ulimit",
    "nproc=1024:1024",
    "--network",
    "none",
];

impl Podman {
    fn new() -> Podman {
        Podman {
            dir: tempfile::Builder::new()
                .prefix("mlimg-podman-")
                .tempdir()
                .expect("tempdir"),
        }
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new("podman");
        c.arg("--root")
            .arg(self.dir.path().join("root"))
            .arg("--runroot")
            .arg(self.dir.path().join("run"))
            .args([
                "--storage-driver",
                "vfs",
                "--cgroup-manager=cgroupfs",
                "--events-backend=file",
            ]);
        c
    }

    fn ok(&self, args: &[&str]) -> String {
        stdout(&run_ok(self.cmd().args(args))).trim().to_string()
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.cmd().args(["rm", "-af", "-t", "0"]).output();
    }
}

#[test]
fn podman_keeps_the_healthcheck_of_a_docker_format_image() {
    let cx = TestContext::new();
    let reg = TestRegistry::start();
    let base = push_python_base(&cx, &reg, &["amd64"]).remove(0);
    let spec = iris_spec(
        &cx,
        &reg,
        &base,
        "docker",
        &[(
            "platforms = [\"linux/amd64\"]",
            "platforms = [\"linux/amd64\"]\nformat = \"docker\"",
        )],
    );
    seed_wheels(&cx.cache);
    let plan = stdout(&run_ok(
        cx.mlimg().args(["build", "--dry-run", "-f"]).arg(&spec),
    ));
    assert!(
        plan.contains("format: docker (application/vnd.docker.distribution.manifest.v2+json)"),
        "{plan}"
    );
    let report = cx.build_json(&spec, &["--push"]);
    keep_wheels(&cx.cache);
    assert_eq!(
        report["media_type"], "application/vnd.docker.distribution.manifest.v2+json",
        "{report}"
    );
    // The SBOM / provenance referrers stay OCI artifact manifests whose subject is the Docker
    // manifest; the registry took them (the push would have failed otherwise).
    let referrers = report["platforms"][0]["referrers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(!referrers.is_empty(), "{report}");
    let digest = report["manifest_digest"].as_str().expect("digest");
    let m = reg_get(&reg, &format!("/v2/iris-service/manifests/{digest}"));
    assert_eq!(
        m["mediaType"],
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    assert_eq!(
        m["config"]["mediaType"],
        "application/vnd.docker.container.image.v1+json"
    );
    for l in m["layers"].as_array().expect("layers") {
        let t = l["mediaType"].as_str().unwrap_or_default();
        assert!(
            t == "application/vnd.docker.image.rootfs.diff.tar.gzip"
                || t == "application/vnd.docker.image.rootfs.diff.tar",
            "{t}"
        );
    }
    for r in &referrers {
        let d = r["manifest_digest"].as_str().expect("referrer digest");
        let rm = reg_get(&reg, &format!("/v2/iris-service/manifests/{d}"));
        assert_eq!(
            rm["mediaType"],
            "application/vnd.oci.image.manifest.v1+json"
        );
        assert_eq!(rm["subject"]["digest"], digest, "{rm}");
        assert_eq!(
            rm["subject"]["mediaType"],
            "application/vnd.docker.distribution.manifest.v2+json"
        );
    }

    let image = format!("{}/iris-service:docker", reg.host());
    // Docker takes the Docker-format image too, uncompressed weights layer included.
    crate::service_e2e::docker(&["pull", "-q", &image]);
    let _pulled = crate::service_e2e::ImageGuard(image.clone());
    let hc = crate::service_e2e::docker(&[
        "image",
        "inspect",
        &image,
        "--format",
        "{{json .Config.Healthcheck.Test}}",
    ]);
    assert!(hc.contains("urllib.request"), "{hc}");
    let size = crate::service_e2e::docker(&[
        "run",
        "--rm",
        "--entrypoint",
        "python3",
        &image,
        "-c",
        "import os, numpy; print(os.path.getsize('/models/iris/iris.safetensors'))",
    ]);
    let want = std::fs::metadata(
        crate::common::repo_root().join("specs/iris-service/model/iris.safetensors"),
    )
    .expect("model")
    .len();
    assert_eq!(size, want.to_string());
    let p = Podman::new();
    p.ok(&["pull", "-q", "--tls-verify=false", &image]);
    let hc = p.ok(&[
        "image",
        "inspect",
        &image,
        "--format",
        "{{json .HealthCheck}}",
    ]);
    assert!(
        hc.contains("urllib.request"),
        "podman lost the healthcheck: {hc}"
    );
    let id = p.ok(&[&["run", "-d"][..], &RUN_FLAGS, &[image.as_str()]].concat());
    let start = std::time::Instant::now();
    loop {
        let hc = p
            .cmd()
            .args(["healthcheck", "run", &id])
            .output()
            .expect("podman");
        if hc.status.success() {
            break;
        }
        let running = p.ok(&["inspect", &id, "--format", "{{.State.Running}}"]);
        assert!(
            running == "true" && start.elapsed().as_secs() < 90,
            "not healthy under podman ({running}): {}",
            String::from_utf8_lossy(&p.cmd().args(["logs", &id]).output().expect("logs").stderr)
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    eprintln!("healthy under podman after {:?}", start.elapsed());
    assert_eq!(
        p.ok(&["inspect", &id, "--format", "{{.State.Health.Status}}"]),
        "healthy"
    );
    let out = p.ok(&[
        "exec", &id, "python3", "-c",
        "import urllib.request as u; print(u.urlopen(u.Request('http://127.0.0.1:8000/predict', data=b'{\"features\": [6.3, 3.3, 6.0, 2.5]}')).read().decode())",
    ]);
    assert!(out.contains("\"label\":\"virginica\""), "{out}");
    p.ok(&["stop", "-t", "10", &id]);
    assert_eq!(
        p.ok(&["inspect", &id, "--format", "{{.State.ExitCode}}"]),
        "0"
    );

    // The same service in OCI format: podman (4.3) drops the healthcheck. A fresh storage:
    // both images have the same config, so podman would store them as one image.
    let cx2 = TestContext::new();
    seed_wheels(&cx2.cache);
    let spec_oci = iris_spec(&cx2, &reg, &base, "oci", &[]);
    cx2.build_json(&spec_oci, &["--push"]);
    let image = format!("{}/iris-service:oci", reg.host());
    let p2 = Podman::new();
    p2.ok(&["pull", "-q", "--tls-verify=false", &image]);
    assert_eq!(
        p2.ok(&[
            "image",
            "inspect",
            &image,
            "--format",
            "{{json .HealthCheck}}"
        ]),
        "null",
        "podman now keeps an OCI image's healthcheck: docs/spec.md's reason for format = \"docker\" changed"
    );
}

#[test]
fn zstd_layers_are_refused_in_docker_format() {
    let cx = TestContext::new();
    let reg = TestRegistry::start();
    let spec = iris_spec(
        &cx,
        &reg,
        "scratch",
        "z",
        &[
            (
                "platforms = [\"linux/amd64\"]",
                "platforms = [\"linux/amd64\"]\nformat = \"docker\"",
            ),
            (
                "dest = \"/models/iris\"",
                "dest = \"/models/iris\"\ncompression = \"zstd\"",
            ),
            (
                "[[deps]]\nname = \"runtime\"\nrequirements = \"requirements.txt\"",
                "",
            ),
        ],
    );
    let out = cx
        .mlimg()
        .args(["build", "--dry-run", "-f"])
        .arg(&spec)
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("weights iris") && err.contains("zstd") && err.contains("docker"),
        "{err}"
    );
}

fn reg_get(reg: &TestRegistry, path: &str) -> serde_json::Value {
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect(("127.0.0.1", reg.port())).expect("connect");
    write!(
        c,
        "GET {path} HTTP/1.0\r\nHost: {}\r\nAccept: application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json\r\n\r\n",
        reg.host()
    )
    .expect("send");
    let mut resp = String::new();
    c.read_to_string(&mut resp).expect("read");
    let (head, body) = resp.split_once("\r\n\r\n").unwrap_or((&resp, ""));
    assert!(
        head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200"),
        "GET {path}: {head}"
    );
    serde_json::from_str(body).expect("manifest json")
}

/// Several platforms in docker format: a Docker manifest list over schema 2 manifests, same
/// layer and config blobs as the OCI build, skopeo reads it back.
#[test]
fn docker_format_with_two_platforms_is_a_manifest_list() {
    let cx = TestContext::new();
    let dir = cx.path().join("svc");
    std::fs::create_dir_all(dir.join("model")).expect("mkdir");
    std::fs::write(dir.join("model/w.bin"), b"weights").expect("write");
    let spec_text = |format: &str| {
        format!(
            "[image]\nname = \"localhost/two\"\ntags = [\"1\"]\nplatforms = [\"linux/amd64\", \"linux/arm64\"]\nformat = \"{format}\"\n\n[[weights]]\nname = \"w\"\nsource = \"model\"\ndest = \"/models\"\n\n[config]\ncmd = [\"/x\"]\nhealthcheck = {{ test = [\"CMD\", \"/x\"] }}\n"
        )
    };
    let mut reports = Vec::new();
    for format in ["docker", "oci"] {
        let spec = dir.join(format!("{format}.toml"));
        std::fs::write(&spec, spec_text(format)).expect("spec");
        let out = cx.path().join(format!("out-{format}"));
        reports.push((
            cx.build_json(
                &spec,
                &[
                    "--no-sbom",
                    "--no-provenance",
                    "-o",
                    &format!("oci:{}", out.display()),
                ],
            ),
            out,
        ));
    }
    let (docker_r, docker_out) = &reports[0];
    let (oci_r, _) = &reports[1];
    assert_eq!(
        docker_r["media_type"],
        "application/vnd.docker.distribution.manifest.list.v2+json"
    );
    assert_eq!(
        oci_r["media_type"],
        "application/vnd.oci.image.index.v1+json"
    );
    for i in 0..2 {
        let (d, o) = (&docker_r["platforms"][i], &oci_r["platforms"][i]);
        assert_eq!(d["config_digest"], o["config_digest"], "same config bytes");
        assert_eq!(
            d["layers"][0]["digest"], o["layers"][0]["digest"],
            "same layer bytes"
        );
        assert_eq!(
            d["layers"][0]["media_type"],
            "application/vnd.docker.image.rootfs.diff.tar"
        );
        assert_ne!(d["manifest_digest"], o["manifest_digest"]);
    }
    let top = docker_r["manifest_digest"].as_str().expect("digest");
    let list: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            docker_out
                .join("blobs/sha256")
                .join(top.trim_start_matches("sha256:")),
        )
        .expect("list blob"),
    )
    .expect("json");
    let archs: Vec<&str> = list["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        .map(|m| {
            assert_eq!(
                m["mediaType"],
                "application/vnd.docker.distribution.manifest.v2+json"
            );
            m["platform"]["architecture"].as_str().expect("arch")
        })
        .collect();
    assert_eq!(archs, ["amd64", "arm64"]);
    // skopeo (containers/image, podman's library) reads the arm64 image of the layout.
    let out = run_ok(Command::new("skopeo").args([
        "inspect",
        "--override-arch",
        "arm64",
        &format!("oci:{}", docker_out.display()),
    ]));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("skopeo json");
    assert_eq!(v["Architecture"], "arm64", "{v}");
    let out = run_ok(Command::new("skopeo").args([
        "inspect",
        "--config",
        "--raw",
        "--override-arch",
        "arm64",
        &format!("oci:{}", docker_out.display()),
    ]));
    let cfg: serde_json::Value = serde_json::from_slice(&out.stdout).expect("config json");
    assert_eq!(cfg["config"]["Healthcheck"]["Test"][1], "/x", "{cfg}");
}

/// zstd layers are frames of 4 MiB back to back (`layer::parzstd`): podman (containers/image,
/// Go's klauspost/compress decoder) pulls such an OCI image and runs it, and the file spanning
/// several frames has its bytes.
#[test]
fn podman_runs_an_image_whose_zstd_layer_has_many_frames() {
    let cx = TestContext::new();
    let reg = TestRegistry::start();
    let dir = cx
        .example("sentiment")
        .parent()
        .expect("specs")
        .join("zstd");
    std::fs::create_dir_all(dir.join("model")).expect("mkdir");
    // 9 MiB + 7 of half-compressible bytes: three frames
    let mut data = Vec::with_capacity(9 << 20);
    let mut x = 1u64;
    while data.len() < (9 << 20) + 7 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        data.extend_from_slice(format!("{:x} {}\n", x >> 40, data.len() % 101).as_bytes());
    }
    data.truncate((9 << 20) + 7);
    std::fs::write(dir.join("model/w.bin"), &data).expect("write");
    use sha2::Digest as _;
    let want = hex::encode(sha2::Sha256::digest(&data));
    std::fs::write(
        dir.join("mlimg.toml"),
        format!("[image]\nname = \"{}/zstd-frames\"\ntags = [\"1\"]\nbase = \"oci:../busybox-base/out:latest\"\n\n[[weights]]\nname = \"w\"\nsource = \"model\"\ndest = \"/models\"\ncompression = \"zstd\"\n\n[config]\ncmd = [\"sha256sum\", \"/models/w.bin\"]\n", reg.host()),
    )
    .expect("spec");
    let out = dir.join("out");
    let report = cx.build_json(
        &dir.join("mlimg.toml"),
        &["--push", "-o", &format!("oci:{}", out.display())],
    );
    let layer = report["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .find(|l| {
            l["media_type"]
                .as_str()
                .is_some_and(|t| t.ends_with("+zstd"))
        })
        .unwrap_or_else(|| panic!("no zstd layer: {report}"))
        .clone();
    let blob = out.join("blobs/sha256").join(
        layer["digest"]
            .as_str()
            .and_then(|d| d.strip_prefix("sha256:"))
            .expect("digest"),
    );
    let bytes = std::fs::read(&blob).expect("blob");
    let frames = bytes
        .windows(4)
        .filter(|w| *w == [0x28, 0xb5, 0x2f, 0xfd])
        .count();
    assert!(frames >= 3, "{frames} zstd frame magics in the layer");
    let p = Podman::new();
    let image = format!("{}/zstd-frames:1", reg.host());
    p.ok(&["pull", "-q", "--tls-verify=false", &image]);
    let sum = p.ok(&[&["run", "--rm"][..], &RUN_FLAGS, &[image.as_str()]].concat());
    assert_eq!(sum, format!("{want}  /models/w.bin"));
}
