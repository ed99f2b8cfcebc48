//! Signatures (issue 12): `mlimg build --sign-key` signs the pushed image in cosign's format;
//! the signature is checked here without mlimg's code (plain HTTP to the registry and
//! `openssl dgst -verify`), then with `mlimg verify`, including after tampering.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

use crate::common::registry::TestRegistry;
use crate::common::*;

const SIMPLESIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
const SIG_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// A P-256 key pair made by openssl, as the docs tell users to: (private, public).
fn keypair(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let key = dir.join(format!("{name}.pem"));
    let public = dir.join(format!("{name}.pub"));
    run_ok(Command::new("openssl").args([
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-out",
        key.to_str().expect("utf-8"),
    ]));
    run_ok(Command::new("openssl").args([
        "pkey",
        "-in",
        key.to_str().expect("utf-8"),
        "-pubout",
        "-out",
        public.to_str().expect("utf-8"),
    ]));
    (key, public)
}

fn curl(args: &[&str]) -> Vec<u8> {
    run_ok(Command::new("curl").arg("-fsS").args(args)).stdout
}

fn get_manifest(host: &str, repo: &str, reference: &str) -> Vec<u8> {
    curl(&[
        "-H",
        &format!("Accept: {OCI_MANIFEST}, application/vnd.oci.image.index.v1+json"),
        &format!("http://{host}/v2/{repo}/manifests/{reference}"),
    ])
}

fn put_manifest(host: &str, repo: &str, reference: &str, bytes: &[u8], dir: &Path) {
    let f = dir.join("put-manifest.json");
    fs::write(&f, bytes).expect("write");
    curl(&[
        "-X",
        "PUT",
        "-H",
        &format!("Content-Type: {OCI_MANIFEST}"),
        "--data-binary",
        &format!("@{}", f.display()),
        &format!("http://{host}/v2/{repo}/manifests/{reference}"),
    ]);
}

/// A monolithic blob upload (POST, then PUT with the digest).
fn put_blob(host: &str, repo: &str, bytes: &[u8], dir: &Path) -> String {
    let digest = format!("sha256:{}", sha256_hex(bytes));
    let f = dir.join("put-blob");
    fs::write(&f, bytes).expect("write");
    let headers = String::from_utf8_lossy(&curl(&[
        "-X",
        "POST",
        "-D",
        "-",
        "-o",
        "/dev/null",
        &format!("http://{host}/v2/{repo}/blobs/uploads/"),
    ]))
    .into_owned();
    let loc = headers
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("location")
                .then(|| v.trim().to_string())
        })
        .expect("Location");
    let loc = if loc.starts_with('/') {
        format!("http://{host}{loc}")
    } else {
        loc
    };
    let sep = if loc.contains('?') { '&' } else { '?' };
    curl(&[
        "-X",
        "PUT",
        "-H",
        "Content-Type: application/octet-stream",
        "--data-binary",
        &format!("@{}", f.display()),
        &format!("{loc}{sep}digest={digest}"),
    ]);
    digest
}

fn sha256_hex(b: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(b))
}

/// `openssl dgst -sha256 -verify PUB -signature SIG PAYLOAD` on the payload and the base64 DER
/// signature as stored in the registry (decoded by `openssl base64`).
fn openssl_verifies(dir: &Path, public: &Path, payload: &[u8], signature_b64: &str) -> bool {
    let p = dir.join("payload.json");
    let b64 = dir.join("sig.b64");
    let der = dir.join("sig.der");
    fs::write(&p, payload).expect("write");
    fs::write(&b64, signature_b64).expect("write");
    run_ok(Command::new("openssl").args([
        "base64",
        "-d",
        "-A",
        "-in",
        b64.to_str().expect("utf-8"),
        "-out",
        der.to_str().expect("utf-8"),
    ]));
    let o = Command::new("openssl")
        .args(["dgst", "-sha256", "-verify"])
        .arg(public)
        .arg("-signature")
        .arg(&der)
        .arg(&p)
        .output()
        .expect("openssl");
    let text = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.success(), text.contains("Verified OK"), "{text}");
    o.status.success()
}

fn verify(cx: &TestContext, reference: &str, public: &Path) -> Output {
    cx.mlimg()
        .args(["verify", reference, "--key"])
        .arg(public)
        .output()
        .expect("mlimg verify")
}

fn assert_fails(o: &Output, why: &str) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains(why), "expected {why:?} in: {err}");
}

#[test]
fn signed_push_verifies_with_openssl_cosign_layout_and_mlimg_verify() {
    let cx = TestContext::new();
    let reg = TestRegistry::start();
    let host = reg.host();
    let repo = "acme/signed";
    let name = format!("{host}/{repo}");
    let spec = cx.example("sentiment").join("mlimg.toml");
    let (key, public) = keypair(cx.path(), "key");
    let (other_key, other_public) = keypair(cx.path(), "other");
    let build = |tag: &str, extra: &[&str]| -> Value {
        let mut args = vec![format!("-o"), format!("registry:{name}:{tag}")];
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        cx.build_json(&spec, &args)
    };
    let key_arg = key.to_str().expect("utf-8");
    let report = build("1", &["--sign-key", key_arg]);
    let manifest = report["manifest_digest"]
        .as_str()
        .expect("digest")
        .to_string();
    let hex = &manifest[7..];
    let sigs = report["push"]["signatures"].as_array().expect("signatures");
    assert_eq!(
        sigs.len(),
        1,
        "a single-platform image: one signed manifest"
    );
    assert_eq!(sigs[0]["digest"], manifest.as_str());
    assert_eq!(sigs[0]["tag"], format!("sha256-{hex}.sig").as_str());
    assert_eq!(sigs[0]["added"], true);

    // the referrers (SBOMs, statement) are listed through the tag schema beside the signature
    let referrers: Value =
        serde_json::from_slice(&get_manifest(&host, repo, &format!("sha256-{hex}")))
            .expect("referrers index");
    let types: Vec<&str> = referrers["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        .filter_map(|m| m["artifactType"].as_str())
        .collect();
    assert_eq!(
        types,
        [
            "application/spdx+json",
            "application/vnd.cyclonedx+json",
            "application/vnd.in-toto+json"
        ]
    );
    let st_ref = referrers["manifests"][2]["digest"]
        .as_str()
        .expect("digest");
    let st_manifest: Value =
        serde_json::from_slice(&get_manifest(&host, repo, st_ref)).expect("manifest");
    let st: Value = serde_json::from_slice(&curl(&[&format!(
        "http://{host}/v2/{repo}/blobs/{}",
        st_manifest["layers"][0]["digest"].as_str().expect("layer")
    )]))
    .expect("statement");
    assert_eq!(st["subject"][0]["digest"]["sha256"], hex);

    // the signature, read with plain HTTP and checked with openssl: cosign's tag and layout
    let sig_bytes = get_manifest(&host, repo, &format!("sha256-{hex}.sig"));
    let sig_manifest: Value = serde_json::from_slice(&sig_bytes).expect("sig manifest");
    assert_eq!(sig_manifest["mediaType"], OCI_MANIFEST);
    let layers = sig_manifest["layers"].as_array().expect("layers");
    assert_eq!(layers.len(), 1);
    assert_eq!(layers[0]["mediaType"], SIMPLESIGNING);
    let payload_digest = layers[0]["digest"].as_str().expect("digest").to_string();
    let payload = curl(&[&format!("http://{host}/v2/{repo}/blobs/{payload_digest}")]);
    assert_eq!(format!("sha256:{}", sha256_hex(&payload)), payload_digest);
    let p: Value = serde_json::from_slice(&payload).expect("payload JSON");
    assert_eq!(
        p,
        serde_json::json!({
            "critical": {
                "identity": {"docker-reference": name},
                "image": {"docker-manifest-digest": manifest},
                "type": "cosign container image signature",
            },
            "optional": null,
        })
    );
    let signature = layers[0]["annotations"][SIG_ANNOTATION]
        .as_str()
        .expect("signature annotation")
        .to_string();
    assert!(openssl_verifies(cx.path(), &public, &payload, &signature));
    assert!(!openssl_verifies(
        cx.path(),
        &other_public,
        &payload,
        &signature
    ));
    let config_digest = sig_manifest["config"]["digest"].as_str().expect("config");
    let config: Value = serde_json::from_slice(&curl(&[&format!(
        "http://{host}/v2/{repo}/blobs/{config_digest}"
    )]))
    .expect("config");
    assert_eq!(config["rootfs"]["diff_ids"][0], payload_digest.as_str());

    // mlimg verify: 0 with the key, 1 with another
    let o = verify(&cx, &format!("{name}:1"), &public);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = stdout(&o);
    assert!(
        text.contains("verified") && text.contains(&manifest) && text.contains(&payload_digest),
        "{text}"
    );
    assert_fails(
        &verify(&cx, &format!("{name}:1"), &other_public),
        "does not match the payload",
    );
    // a pinned reference works the same; --json says what was checked
    let o = run_ok(
        cx.mlimg()
            .args(["verify", &format!("{name}@{manifest}"), "--json", "--key"])
            .arg(&public),
    );
    let v: Value = serde_json::from_slice(&o.stdout).expect("--json");
    assert_eq!(v["digest"], manifest.as_str());
    assert_eq!(v["tag"], format!("sha256-{hex}.sig").as_str());
    assert_eq!(v["verified"][0]["payload"], payload_digest.as_str());
    assert_eq!(v["verified"][0]["docker_reference"], name.as_str());
    assert_eq!(v["others"], 0);

    // a rebuild with the same key adds nothing (deterministic signature, same layer)
    let again = build("1", &["--sign-key", key_arg]);
    assert_eq!(again["manifest_digest"], manifest.as_str());
    assert_eq!(again["push"]["signatures"][0]["added"], false);
    assert_eq!(
        again["push"]["signatures"][0]["signature"],
        signature.as_str()
    );
    assert_eq!(
        get_manifest(&host, repo, &format!("sha256-{hex}.sig")),
        sig_bytes
    );
    // a second key (through MLIMG_SIGN_KEY) adds its signature beside the first
    let out = run_ok(
        cx.mlimg()
            .env("MLIMG_SIGN_KEY", &other_key)
            .args(["build", "--json", "-f"])
            .arg(&spec)
            .arg("-o")
            .arg(format!("registry:{name}:1")),
    );
    let second: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(second["push"]["signatures"][0]["added"], true);
    let merged: Value =
        serde_json::from_slice(&get_manifest(&host, repo, &format!("sha256-{hex}.sig")))
            .expect("sig manifest");
    assert_eq!(merged["layers"].as_array().map(Vec::len), Some(2));
    assert_eq!(
        merged["layers"][0], layers[0],
        "the first signature is kept"
    );
    for k in [&public, &other_public] {
        let o = verify(&cx, &format!("{name}:1"), k);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }

    // tampering 1: the tag moved to another (unsigned) manifest
    let other = run_ok(
        cx.mlimg()
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .args(["build", "--json", "--no-sbom", "--no-provenance", "-f"])
            .arg(&spec)
            .arg("-o")
            .arg(format!("registry:{name}:2")),
    );
    let other: Value = serde_json::from_slice(&other.stdout).expect("json");
    let other_digest = other["manifest_digest"]
        .as_str()
        .expect("digest")
        .to_string();
    assert_ne!(other_digest, manifest);
    let image_bytes = get_manifest(&host, repo, &manifest);
    let other_bytes = get_manifest(&host, repo, &other_digest);
    put_manifest(&host, repo, "1", &other_bytes, cx.path());
    assert_fails(&verify(&cx, &format!("{name}:1"), &public), "no signature");
    put_manifest(&host, repo, "1", &image_bytes, cx.path());

    // tampering 2: the first image's signatures copied to the other image's .sig tag
    put_manifest(
        &host,
        repo,
        &format!("sha256-{}.sig", &other_digest[7..]),
        &sig_bytes,
        cx.path(),
    );
    assert_fails(
        &verify(&cx, &format!("{name}:2"), &public),
        "digest mismatch",
    );

    // tampering 3: a modified payload (another identity) under the original signature
    let forged = String::from_utf8(payload.clone())
        .expect("utf-8")
        .replace(repo, "evil/repo");
    assert_ne!(forged.as_bytes(), &payload[..]);
    let forged_digest = put_blob(&host, repo, forged.as_bytes(), cx.path());
    let mut m = sig_manifest.clone();
    m["layers"][0]["digest"] = forged_digest.as_str().into();
    m["layers"][0]["size"] = forged.len().into();
    put_manifest(
        &host,
        repo,
        &format!("sha256-{hex}.sig"),
        &serde_json::to_vec(&m).expect("json"),
        cx.path(),
    );
    assert!(!openssl_verifies(
        cx.path(),
        &public,
        forged.as_bytes(),
        &signature
    ));
    assert_fails(
        &verify(&cx, &format!("{name}:1"), &public),
        "does not match the payload",
    );
    put_manifest(
        &host,
        repo,
        &format!("sha256-{hex}.sig"),
        &sig_bytes,
        cx.path(),
    );
    assert!(verify(&cx, &format!("{name}:1"), &public).status.success());

    // Docker still pulls and runs the signed image
    let image = format!("{name}:1");
    run_ok(Command::new("docker").args(["pull", &image]));
    let run = Command::new("docker")
        .args(["run", "--rm", &image])
        .output()
        .expect("docker run");
    let _ = Command::new("docker").args(["rmi", "-f", &image]).output();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let text = stdout(&run);
    assert!(text.contains("model: /models/sst2"), "{text}");
    assert!(text.contains("user: 1000:1000"), "{text}");
}

#[test]
fn sign_key_needs_a_push_and_a_p256_key() {
    let cx = TestContext::new();
    let spec = cx.example("sentiment").join("mlimg.toml");
    let (key, _) = keypair(cx.path(), "key");
    let out = format!("oci:{}", cx.path().join("o").display());
    let o = cx
        .mlimg()
        .args(["build", "-f"])
        .arg(&spec)
        .args(["-o", &out, "--sign-key"])
        .arg(&key)
        .output()
        .expect("mlimg");
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--push"));
    let rsa = cx.path().join("rsa.pem");
    run_ok(Command::new("openssl").args([
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:2048",
        "-out",
        rsa.to_str().expect("utf-8"),
    ]));
    let o = cx
        .mlimg()
        .args(["build", "-f"])
        .arg(&spec)
        .args(["-o", "registry:127.0.0.1:9/x/y:1", "--sign-key"])
        .arg(&rsa)
        .output()
        .expect("mlimg");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("EC P-256") && err.contains("openssl genpkey"),
        "{err}"
    );
}

#[test]
fn a_multi_platform_push_signs_the_index_and_each_platform_manifest() {
    let cx = TestContext::new();
    let reg = TestRegistry::start();
    let dir = cx.path().join("multi");
    fs::create_dir_all(dir.join("app")).expect("mkdir");
    fs::write(dir.join("app/main.py"), "print('hi')\n").expect("write");
    let spec = dir.join("mlimg.toml");
    fs::write(
        &spec,
        "[image]\nplatforms = [\"linux/amd64\", \"linux/arm64\"]\n\n[app]\nsrc = \"app\"\ndest = \"/app\"\n",
    )
    .expect("write");
    let (key, public) = keypair(cx.path(), "key");
    let name = format!("{}/acme/multi", reg.host());
    let report = cx.build_json(
        &spec,
        &[
            "-o",
            &format!("registry:{name}:1"),
            "--sign-key",
            key.to_str().expect("utf-8"),
        ],
    );
    let index = report["manifest_digest"].as_str().expect("digest");
    let platforms: Vec<&str> = report["platforms"]
        .as_array()
        .expect("platforms")
        .iter()
        .filter_map(|p| p["manifest_digest"].as_str())
        .collect();
    assert_eq!(platforms.len(), 2);
    let signed: Vec<&str> = report["push"]["signatures"]
        .as_array()
        .expect("signatures")
        .iter()
        .filter_map(|s| s["digest"].as_str())
        .collect();
    assert_eq!(signed, [index, platforms[0], platforms[1]]);
    for r in [format!("{name}:1")]
        .into_iter()
        .chain(platforms.iter().map(|d| format!("{name}@{d}")))
    {
        let o = verify(&cx, &r, &public);
        assert!(
            o.status.success(),
            "{r}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
}
