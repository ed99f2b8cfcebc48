//! Two platforms for real: a linux/amd64 + linux/arm64 Python base made from bookworm's amd64
//! and arm64 packages (no emulation needed to make it), the iris service built for both: one
//! index, the weights and app layers shared (uploaded once), a deps layer per platform with
//! that platform's wheels and bytecode. The arm64 image is checked by the ELF headers of its
//! interpreter and of every shared object in it and, when qemu-aarch64 is registered with
//! binfmt_misc (scripts/setup tries), by running it under emulation; the test prints which.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::path::Path;

use crate::common::TestContext;
use crate::common::registry::TestRegistry;
use crate::service_e2e::{docker, iris_spec, keep_wheels, push_python_base, seed_wheels};

const EM_X86_64: u16 = 62;
const EM_AARCH64: u16 = 183;

/// One HTTP/1.0 exchange with the registry: (status, headers, body).
fn reg_http(
    reg: &TestRegistry,
    method: &str,
    path: &str,
    headers: &str,
    body: &[u8],
) -> (u16, String, Vec<u8>) {
    let mut c = std::net::TcpStream::connect(("127.0.0.1", reg.port())).expect("connect");
    write!(
        c,
        "{method} {path} HTTP/1.0\r\nHost: {}\r\n{headers}Content-Length: {}\r\n\r\n",
        reg.host(),
        body.len()
    )
    .expect("send");
    c.write_all(body).expect("send body");
    let mut resp = Vec::new();
    c.read_to_end(&mut resp).expect("read");
    let split = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("http head");
    let head = String::from_utf8_lossy(&resp[..split]).into_owned();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    (status, head, resp[split + 4..].to_vec())
}

/// Tags an OCI index over the single-platform manifests `refs` (same repository) as `tag`.
pub(crate) fn push_index(reg: &TestRegistry, repo: &str, tag: &str, refs: &[(String, &str)]) {
    let mut manifests = Vec::new();
    for (r, arch) in refs {
        let t = r.rsplit(':').next().expect("tag");
        let (status, _, body) = reg_http(
            reg,
            "GET",
            &format!("/v2/{repo}/manifests/{t}"),
            "Accept: application/vnd.oci.image.manifest.v1+json\r\n",
            b"",
        );
        assert_eq!(status, 200, "GET {r}");
        use sha2::Digest as _;
        manifests.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": format!("sha256:{}", hex::encode(sha2::Sha256::digest(&body))),
            "size": body.len(),
            "platform": {"architecture": arch, "os": "linux"},
        }));
    }
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": manifests,
    }))
    .expect("json");
    let (status, head, _) = reg_http(
        reg,
        "PUT",
        &format!("/v2/{repo}/manifests/{tag}"),
        "Content-Type: application/vnd.oci.image.index.v1+json\r\n",
        &index,
    );
    assert_eq!(status, 201, "PUT index: {head}");
}

fn blob(layout: &Path, digest: &str) -> Vec<u8> {
    fs::read(
        layout
            .join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:")),
    )
    .unwrap_or_else(|e| panic!("blob {digest}: {e}"))
}

fn json_blob(layout: &Path, digest: &str) -> serde_json::Value {
    serde_json::from_slice(&blob(layout, digest)).expect("json blob")
}

/// What the test learns from one platform's layers.
#[derive(Default)]
struct Scan {
    /// ELF e_machine of every shared object (path → machine).
    so: BTreeMap<String, u16>,
    interpreter: Option<u16>,
    pyc: usize,
    /// sha256 of `starlette/__pycache__/__init__.cpython-311.pyc`.
    starlette_pyc: Option<String>,
}

fn scan(layout: &Path, manifest: &serde_json::Value) -> Scan {
    use sha2::Digest as _;
    let mut s = Scan::default();
    for l in manifest["layers"].as_array().expect("layers") {
        let bytes = blob(layout, l["digest"].as_str().expect("digest"));
        let r: Box<dyn Read> = if l["mediaType"].as_str().is_some_and(|t| t.ends_with("gzip")) {
            Box::new(flate2::read::GzDecoder::new(&bytes[..]))
        } else {
            Box::new(&bytes[..])
        };
        let mut a = tar::Archive::new(r);
        for e in a.entries().expect("tar") {
            let mut e = e.expect("entry");
            if e.header().entry_type() != tar::EntryType::Regular {
                continue;
            }
            let p = e.path().expect("path").to_string_lossy().into_owned();
            let name = p.rsplit('/').next().unwrap_or("").to_string();
            let is_so = name.ends_with(".so") || name.contains(".so.");
            let is_python = p == "usr/bin/python3.11";
            if p.ends_with(".pyc") {
                s.pyc += 1;
            }
            if p.ends_with("starlette/__pycache__/__init__.cpython-311.pyc") {
                let mut b = Vec::new();
                e.read_to_end(&mut b).expect("read");
                s.starlette_pyc = Some(hex::encode(sha2::Sha256::digest(&b)));
                continue;
            }
            if !is_so && !is_python {
                continue;
            }
            let mut head = [0u8; 20];
            if e.read_exact(&mut head).is_err() || &head[..4] != b"\x7fELF" {
                continue; // a linker script (libc.so) or a tiny file: not an ELF object
            }
            let machine = u16::from_le_bytes([head[18], head[19]]);
            if is_python {
                s.interpreter = Some(machine);
            } else {
                s.so.insert(p, machine);
            }
        }
    }
    s
}

#[test]
fn two_platforms_one_index_shared_layers_aarch64_wheels() {
    let cx = TestContext::new();
    let reg = TestRegistry::start();
    let refs = push_python_base(&cx, &reg, &["amd64", "arm64"]);
    push_index(
        &reg,
        "mlimg-python",
        "3.11",
        &[(refs[0].clone(), "amd64"), (refs[1].clone(), "arm64")],
    );
    let base = format!("{}/mlimg-python:3.11", reg.host());
    let spec = iris_spec(
        &cx,
        &reg,
        &base,
        "multi",
        &[(
            "platforms = [\"linux/amd64\"]",
            "platforms = [\"linux/amd64\", \"linux/arm64\"]",
        )],
    );
    seed_wheels(&cx.cache);
    let layout = cx.path().join("out");
    let report = cx.build_json(
        &spec,
        &["--push", "-o", &format!("oci:{}", layout.display())],
    );
    keep_wheels(&cx.cache);
    assert_eq!(
        report["media_type"], "application/vnd.oci.image.index.v1+json",
        "{report}"
    );
    let plats = report["platforms"].as_array().expect("platforms");
    assert_eq!(plats.len(), 2);
    let digest_of = |p: &serde_json::Value, role: &str| {
        p["layers"]
            .as_array()
            .and_then(|ls| ls.iter().find(|l| l["role"] == role))
            .and_then(|l| l["digest"].as_str())
            .unwrap_or_else(|| panic!("no {role}"))
            .to_string()
    };
    for role in ["weights iris", "app"] {
        assert_eq!(
            digest_of(&plats[0], role),
            digest_of(&plats[1], role),
            "{role} is shared"
        );
        let d = digest_of(&plats[0], role);
        let sends: Vec<_> = report["push"]["blobs"]
            .as_array()
            .expect("push blobs")
            .iter()
            .filter(|b| b["digest"] == d.as_str())
            .collect();
        assert_eq!(sends.len(), 1, "{role} pushed once: {sends:?}");
    }
    assert_ne!(
        digest_of(&plats[0], "deps runtime"),
        digest_of(&plats[1], "deps runtime")
    );

    // The layout's index → per-platform manifests; scan every layer of each.
    let idx: serde_json::Value =
        serde_json::from_slice(&fs::read(layout.join("index.json")).expect("index.json"))
            .expect("json");
    let top = json_blob(
        &layout,
        idx["manifests"][0]["digest"].as_str().expect("digest"),
    );
    let mut scans = BTreeMap::new();
    for m in top["manifests"].as_array().expect("manifests") {
        let arch = m["platform"]["architecture"]
            .as_str()
            .expect("arch")
            .to_string();
        let manifest = json_blob(&layout, m["digest"].as_str().expect("digest"));
        scans.insert(arch, scan(&layout, &manifest));
    }
    let (amd, arm) = (&scans["amd64"], &scans["arm64"]);
    assert_eq!(amd.interpreter, Some(EM_X86_64));
    assert_eq!(arm.interpreter, Some(EM_AARCH64));
    for (s, want, arch) in [(amd, EM_X86_64, "amd64"), (arm, EM_AARCH64, "arm64")] {
        let numpy = s.so.keys().filter(|p| p.contains("/numpy/")).count();
        assert!(numpy >= 10, "{arch}: numpy's extension modules ({numpy})");
        let wrong: Vec<_> = s.so.iter().filter(|(_, m)| **m != want).collect();
        assert!(
            wrong.is_empty(),
            "{arch}: objects of another machine: {wrong:?}"
        );
        assert!(
            s.pyc > 1000,
            "{arch}: bytecode for stdlib and wheels ({})",
            s.pyc
        );
    }
    // .pyc files do not depend on the architecture
    assert!(amd.starlette_pyc.is_some());
    assert_eq!(amd.starlette_pyc, arm.starlette_pyc);
    eprintln!(
        "arm64 image: ELF check ran: /usr/bin/python3.11 and {} shared objects are AArch64 (e_machine 183); amd64: {} are x86-64",
        arm.so.len(),
        amd.so.len()
    );

    // Under emulation too, when this machine can.
    let binfmt = fs::read_to_string("/proc/sys/fs/binfmt_misc/qemu-aarch64").unwrap_or_default();
    if binfmt.starts_with("enabled") {
        let arm_digest = plats
            .iter()
            .find(|p| p["platform"] == "linux/arm64")
            .and_then(|p| p["manifest_digest"].as_str())
            .expect("arm64 manifest");
        let image = format!("{}/iris-service@{arm_digest}", reg.host());
        let out = docker(&[
            "run",
            "--rm",
            "--platform",
            "linux/arm64",
            "--entrypoint",
            "python3",
            &image,
            "-c",
            "import platform, numpy, starlette, uvicorn; print(platform.machine(), numpy.__version__, float(numpy.arange(4).sum()))",
        ]);
        let _ = std::process::Command::new("docker")
            .args(["rmi", &image])
            .output();
        assert_eq!(out, "aarch64 1.26.4 6.0");
        eprintln!("arm64 image: emulation check ran (qemu-aarch64 via binfmt_misc): {out}");
    } else {
        eprintln!(
            "arm64 image: emulation check skipped: qemu-aarch64 is not registered in /proc/sys/fs/binfmt_misc (the ELF check above ran)"
        );
    }
}
