//! Provenance (issue 12): an SPDX 2.3 SBOM and an in-toto / SLSA v1 statement per platform
//! image, attached as OCI referrers — in `oci:` layouts and in the registry (with the referrers
//! tag schema, since the test registry, distribution 2.8, has no referrers API).

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::common::registry::TestRegistry;
use crate::common::*;

const SPDX: &str = "application/spdx+json";
const CDX: &str = "application/vnd.cyclonedx+json";
const INTOTO: &str = "application/vnd.in-toto+json";

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn blob(layout: &Path, digest: &str) -> Vec<u8> {
    let p = layout
        .join("blobs/sha256")
        .join(digest.trim_start_matches("sha256:"));
    fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn json_of(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).expect("JSON")
}

/// Platform `i`'s referrer of type `t` in a `--json` report.
fn referrer<'a>(report: &'a Value, i: usize, t: &str) -> &'a Value {
    report["platforms"][i]["referrers"]
        .as_array()
        .and_then(|rs| rs.iter().find(|r| r["artifact_type"] == t))
        .unwrap_or_else(|| panic!("platform {i} has no {t} referrer: {report}"))
}

fn is_time(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 20
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b'T',
            13 | 16 => *c == b':',
            19 => *c == b'Z',
            _ => c.is_ascii_digit(),
        })
}

/// The SPDX 2.3 document checks: `pyspdxtools` (PyPI `spdx-tools`, installed by scripts/setup)
/// when it is on PATH, and always the required fields checked here. Prints which ran.
fn validate_spdx(doc_bytes: &[u8], dir: &Path) -> Value {
    let doc = json_of(doc_bytes);
    assert_eq!(doc["spdxVersion"], "SPDX-2.3");
    assert_eq!(doc["dataLicense"], "CC0-1.0");
    assert_eq!(doc["SPDXID"], "SPDXRef-DOCUMENT");
    assert!(doc["name"].as_str().is_some_and(|n| !n.is_empty()));
    let ns = doc["documentNamespace"]
        .as_str()
        .expect("documentNamespace");
    assert!(
        ns.starts_with("urn:mlimg:spdx:") && !ns.contains('#'),
        "{ns}"
    );
    assert!(is_time(
        doc["creationInfo"]["created"].as_str().unwrap_or("")
    ));
    let creators = doc["creationInfo"]["creators"]
        .as_array()
        .expect("creators");
    assert!(!creators.is_empty());
    assert!(creators.iter().all(|c| {
        let c = c.as_str().unwrap_or("");
        ["Tool: ", "Person: ", "Organization: "]
            .iter()
            .any(|p| c.starts_with(p))
    }));
    let mut ids = BTreeSet::from(["SPDXRef-DOCUMENT".to_string()]);
    for p in doc["packages"].as_array().expect("packages") {
        let id = p["SPDXID"].as_str().expect("SPDXID");
        assert!(
            id.starts_with("SPDXRef-")
                && id[8..]
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-'),
            "{id}"
        );
        assert!(ids.insert(id.to_string()), "duplicate {id}");
        assert!(p["name"].as_str().is_some_and(|n| !n.is_empty()), "{p}");
        assert!(p["downloadLocation"].is_string(), "{p}");
        assert_eq!(p["filesAnalyzed"], false, "{p}");
        for c in p["checksums"].as_array().into_iter().flatten() {
            assert_eq!(c["algorithm"], "SHA256");
            let v = c["checksumValue"].as_str().unwrap_or("");
            assert!(
                v.len() == 64 && v.chars().all(|c| c.is_ascii_hexdigit()),
                "{p}"
            );
        }
    }
    let rels = doc["relationships"].as_array().expect("relationships");
    assert!(
        rels.iter()
            .any(|r| r["spdxElementId"] == "SPDXRef-DOCUMENT"
                && r["relationshipType"] == "DESCRIBES")
    );
    for r in rels {
        for k in ["spdxElementId", "relatedSpdxElement"] {
            assert!(ids.contains(r[k].as_str().unwrap_or("")), "{r}");
        }
    }
    if have("pyspdxtools") {
        let f = dir.join("sbom.spdx.json");
        fs::write(&f, doc_bytes).expect("write");
        let out = Command::new("pyspdxtools")
            .arg("-i")
            .arg(&f)
            .output()
            .expect("pyspdxtools");
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "pyspdxtools rejects the SBOM:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("SBOM: validated by pyspdxtools and by the SPDX 2.3 required-field checks");
    } else {
        eprintln!(
            "SBOM: pyspdxtools not installed (scripts/setup installs it): only the SPDX 2.3 \
             required-field checks ran"
        );
    }
    doc
}

/// The official CycloneDX 1.6 JSON schema (testdata/cyclonedx/, with the SPDX license-id and
/// JSF schemas it references), formats checked.
fn cyclonedx_validator() -> &'static jsonschema::Validator {
    static V: std::sync::OnceLock<jsonschema::Validator> = std::sync::OnceLock::new();
    V.get_or_init(|| {
        let dir = repo_root().join("testdata/cyclonedx");
        let load = |f: &str| -> Value {
            let p = dir.join(f);
            serde_json::from_str(
                &fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())),
            )
            .expect("schema JSON")
        };
        let registry = jsonschema::Registry::new()
            .extend(["spdx.schema.json", "jsf-0.82.schema.json"].map(|f| {
                (
                    format!("http://cyclonedx.org/schema/{f}"),
                    jsonschema::Draft::Draft7.create_resource(load(f)),
                )
            }))
            .and_then(|b| b.prepare())
            .expect("registering the CycloneDX schemas");
        jsonschema::options()
            .with_draft(jsonschema::Draft::Draft7)
            .should_validate_formats(true)
            .with_registry(&registry)
            .build(&load("bom-1.6.schema.json"))
            .unwrap_or_else(|e| panic!("compiling the CycloneDX 1.6 schema: {e}"))
    })
}

/// Validates a CycloneDX document against the official 1.6 schema; returns it parsed.
fn validate_cyclonedx(doc_bytes: &[u8]) -> Value {
    let doc = json_of(doc_bytes);
    let errs: Vec<String> = cyclonedx_validator()
        .iter_errors(&doc)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect();
    assert!(
        errs.is_empty(),
        "the CycloneDX SBOM fails the 1.6 schema:\n{}\n{doc}",
        errs.join("\n")
    );
    assert_eq!(doc["bomFormat"], "CycloneDX");
    assert_eq!(doc["specVersion"], "1.6");
    doc
}

#[test]
fn the_cyclonedx_schema_check_rejects_what_it_should() {
    let good = serde_json::json!({
        "bomFormat": "CycloneDX", "specVersion": "1.6", "version": 1,
        "components": [{"type": "library", "name": "six",
                        "licenses": [{"license": {"id": "MIT"}}]}],
    });
    assert!(cyclonedx_validator().is_valid(&good));
    let mut bad = good.clone();
    bad["components"][0]["licenses"][0]["license"]["id"] = "Not-A-License".into();
    assert!(
        !cyclonedx_validator().is_valid(&bad),
        "SPDX ids are checked"
    );
    let mut bad = good.clone();
    bad["components"][0]["type"] = "weights".into();
    assert!(!cyclonedx_validator().is_valid(&bad));
    let mut bad = good;
    bad["serialNumber"] = "urn:uuid:not-a-uuid".into();
    assert!(!cyclonedx_validator().is_valid(&bad));
}

fn package<'a>(doc: &'a Value, id: &str) -> &'a Value {
    doc["packages"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["SPDXID"] == id))
        .unwrap_or_else(|| panic!("no package {id}"))
}

fn build_layout(cx: &TestContext, spec: &Path, out: &Path, extra: &[&str]) -> Value {
    let mut args = vec!["-o".to_string(), format!("oci:{}", out.display())];
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    cx.build_json(spec, &args)
}

#[test]
fn sbom_and_provenance_are_reproducible_valid_and_about_the_image() {
    let cx = TestContext::new();
    let spec = cx.example("sentiment").join("mlimg.toml");
    let out1 = cx.path().join("one");
    let out2 = cx.path().join("two");
    let r1 = build_layout(&cx, &spec, &out1, &[]);
    // a second build of the same inputs, from an empty cache
    let cache2 = cx.path().join("cache2");
    let r2 = build_layout(
        &cx,
        &spec,
        &out2,
        &["--cache-dir", cache2.to_str().expect("utf-8")],
    );
    let manifest = r1["manifest_digest"].as_str().expect("digest").to_string();
    assert_eq!(r2["manifest_digest"], manifest.as_str());
    for t in [SPDX, CDX, INTOTO] {
        let (a, b) = (referrer(&r1, 0, t), referrer(&r2, 0, t));
        assert_eq!(a, b, "{t}: the second build's referrer differs");
        let d = a["document_digest"].as_str().expect("document");
        assert_eq!(blob(&out1, d), blob(&out2, d), "{t}: not byte-identical");
    }

    // the layout: the image under its tag, and two referrers whose subject is its manifest
    let checked = oci::assert_layout(&out1);
    assert_eq!(checked.images.len(), 1, "{}", checked.report);
    assert_eq!(checked.referrers.len(), 3, "{}", checked.report);
    for r in &checked.referrers {
        assert_eq!(r.subject, manifest, "{}", checked.report);
    }
    let index = json_of(&fs::read(out1.join("index.json")).expect("index"));
    assert_eq!(index["manifests"][0]["digest"], manifest.as_str());
    let types: Vec<&str> = index["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        .filter_map(|m| m["artifactType"].as_str())
        .collect();
    assert_eq!(types, [SPDX, CDX, INTOTO]);
    // tools that open the layout by tag still see only the image
    if have("skopeo") {
        let insp = json_of(
            &run_ok(
                Command::new("skopeo")
                    .arg("inspect")
                    .arg(format!("oci:{}:0.1.0", out1.display())),
            )
            .stdout,
        );
        assert_eq!(insp["Digest"], manifest.as_str());
    }

    // the SBOM: valid SPDX 2.3, naming the base, every weights file and the app layer
    let image_manifest = json_of(&blob(&out1, &manifest));
    let base_digest = image_manifest["annotations"]["org.opencontainers.image.base.digest"]
        .as_str()
        .expect("base digest")
        .to_string();
    let sbom = validate_spdx(
        &blob(
            &out1,
            referrer(&r1, 0, SPDX)["document_digest"]
                .as_str()
                .unwrap_or(""),
        ),
        cx.path(),
    );
    assert_eq!(
        sbom["creationInfo"]["created"],
        image_manifest["annotations"]["org.opencontainers.image.created"]
    );
    let img = package(&sbom, "SPDXRef-Image");
    assert_eq!(img["checksums"][0]["checksumValue"], &manifest[7..]);
    let base = package(&sbom, "SPDXRef-Base");
    assert_eq!(base["checksums"][0]["checksumValue"], &base_digest[7..]);
    assert_eq!(base["versionInfo"], base_digest.as_str());
    let models = spec.parent().expect("dir").join("models/sst2");
    let mut files = 0;
    for e in fs::read_dir(&models).expect("models") {
        let e = e.expect("entry");
        let name = e.file_name().to_string_lossy().into_owned();
        if !(name.ends_with(".json") || name.ends_with(".safetensors")) {
            continue;
        }
        files += 1;
        let size = e.metadata().expect("stat").len();
        let p = sbom["packages"]
            .as_array()
            .and_then(|ps| {
                ps.iter()
                    .find(|p| p["name"] == format!("/models/sst2/{name}").as_str())
            })
            .unwrap_or_else(|| panic!("no SBOM entry for {name}"));
        assert_eq!(p["primaryPackagePurpose"], "FILE");
        let comment = p["comment"].as_str().unwrap_or("");
        assert!(comment.contains(&format!("size {size} bytes")), "{comment}");
        assert!(comment.contains("sha256 not recorded"), "{comment}");
    }
    assert!(files > 0);
    let app_layer = layer_digest(&r1, "app");
    let app = package(&sbom, "SPDXRef-App");
    assert_eq!(app["checksums"][0]["checksumValue"], &app_layer[7..]);
    assert!(
        app["comment"]
            .as_str()
            .is_some_and(|c| c.contains(&app_layer)),
        "{app}"
    );

    // the prepared tree (`[[deps]] dir`): one package with its file count and layer digest
    let vendor_layer = layer_digest(&r1, "deps vendor");
    let vendor = package(&sbom, "SPDXRef-Deps-vendor");
    assert_eq!(vendor["checksums"][0]["checksumValue"], &vendor_layer[7..]);
    let vendor_files = walk_files(&spec.parent().expect("dir").join("vendor/site-packages"));
    assert!(
        vendor["comment"].as_str().is_some_and(
            |c| c.contains(&format!("{vendor_files} files")) && c.contains(&vendor_layer)
        ),
        "{vendor}"
    );

    // the CycloneDX SBOM: valid against the official 1.6 schema, the same facts
    let cdx = validate_cyclonedx(&blob(
        &out1,
        referrer(&r1, 0, CDX)["document_digest"]
            .as_str()
            .unwrap_or(""),
    ));
    assert_eq!(
        cdx["metadata"]["component"]["hashes"][0]["content"],
        &manifest[7..]
    );
    assert_eq!(
        cdx["metadata"]["timestamp"],
        image_manifest["annotations"]["org.opencontainers.image.created"]
    );
    let comp = |r: &str| -> Value {
        cdx["components"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["bom-ref"] == r))
            .cloned()
            .unwrap_or_else(|| panic!("no component {r}"))
    };
    assert_eq!(comp("base")["hashes"][0]["content"], &base_digest[7..]);
    assert_eq!(comp("app")["hashes"][0]["content"], &app_layer[7..]);
    assert_eq!(
        comp("deps:vendor")["hashes"][0]["content"],
        &vendor_layer[7..]
    );
    let model = comp("weights:sst2");
    assert_eq!(model["type"], "machine-learning-model");
    assert_eq!(
        model["components"].as_array().map(Vec::len),
        Some(files),
        "{model}"
    );

    // manifest annotations: the version from the first tag, and per weights layer where it
    // came from; no source/revision (the project is not a git checkout)
    let ann = &image_manifest["annotations"];
    assert_eq!(ann["org.opencontainers.image.version"], "0.1.0");
    assert!(
        ann.get("org.opencontainers.image.revision").is_none(),
        "{ann}"
    );
    let weights_layer = layer_digest(&r1, "weights sst2");
    let wl = image_manifest["layers"]
        .as_array()
        .and_then(|ls| ls.iter().find(|l| l["digest"] == weights_layer.as_str()))
        .expect("weights layer");
    assert_eq!(wl["annotations"]["dev.mlimg.weights.source"], "local");
    assert_eq!(wl["annotations"]["dev.mlimg.weights.name"], "sst2");
    let app_desc = image_manifest["layers"]
        .as_array()
        .and_then(|ls| ls.iter().find(|l| l["digest"] == app_layer.as_str()))
        .expect("app layer");
    assert!(app_desc.get("annotations").is_none(), "{app_desc}");

    // the statement: about this manifest, with the spec and the base, and no times
    let st_bytes = blob(
        &out1,
        referrer(&r1, 0, INTOTO)["document_digest"]
            .as_str()
            .unwrap_or(""),
    );
    let st = json_of(&st_bytes);
    assert_eq!(st["_type"], "https://in-toto.io/Statement/v1");
    assert_eq!(st["predicateType"], "https://slsa.dev/provenance/v1");
    assert_eq!(st["subject"][0]["digest"]["sha256"], &manifest[7..]);
    let bd = &st["predicate"]["buildDefinition"];
    assert_eq!(bd["externalParameters"]["spec"]["path"], "mlimg.toml");
    assert_eq!(
        bd["externalParameters"]["spec"]["digest"]["sha256"],
        sha256_file(&spec).as_str()
    );
    assert_eq!(bd["externalParameters"]["platforms"][0], "linux/amd64");
    assert_eq!(bd["externalParameters"]["tags"][0], "0.1.0");
    assert_eq!(
        bd["resolvedDependencies"][0]["digest"]["sha256"],
        &base_digest[7..]
    );
    assert_eq!(
        st["predicate"]["runDetails"]["builder"]["id"],
        "urn:mlimg:builder:cli"
    );
    assert_eq!(
        st["predicate"]["runDetails"]["builder"]["version"]["mlimg"],
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(bd["buildType"], "urn:mlimg:build-type:image:v1");
    let text = String::from_utf8_lossy(&st_bytes);
    assert!(!text.contains("startedOn") && !text.contains("finishedOn"));
}

fn walk_files(dir: &Path) -> usize {
    let mut n = 0;
    for e in fs::read_dir(dir).expect("read_dir") {
        let e = e.expect("entry");
        let t = e.file_type().expect("type");
        if t.is_dir() {
            n += walk_files(&e.path());
        } else {
            n += 1;
        }
    }
    n
}

#[test]
fn provenance_times_only_when_asked_and_never_with_source_date_epoch() {
    let cx = TestContext::new();
    let spec = cx.example("sentiment").join("mlimg.toml");
    let out = cx.path().join("timed");
    let r = build_layout(
        &cx,
        &spec,
        &out,
        &["--provenance-times", "--sbom-format", "spdx"],
    );
    let types: Vec<&str> = r["platforms"][0]["referrers"]
        .as_array()
        .expect("referrers")
        .iter()
        .filter_map(|x| x["artifact_type"].as_str())
        .collect();
    assert_eq!(types, [SPDX, INTOTO]);
    let st = json_of(&blob(
        &out,
        referrer(&r, 0, INTOTO)["document_digest"]
            .as_str()
            .unwrap_or(""),
    ));
    let md = &st["predicate"]["runDetails"]["metadata"];
    for k in ["startedOn", "finishedOn"] {
        let t = md[k].as_str().unwrap_or("");
        assert!(is_time(t), "{k}: {md}");
        assert!(
            !t.starts_with("1970"),
            "{k} is the clock, not the epoch: {t}"
        );
    }
    assert!(md["startedOn"].as_str() <= md["finishedOn"].as_str());
    let o = cx
        .mlimg()
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .args(["build", "--provenance-times", "-f"])
        .arg(&spec)
        .arg("-o")
        .arg(format!("oci:{}", cx.path().join("x").display()))
        .output()
        .expect("mlimg");
    assert_eq!(
        o.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("SOURCE_DATE_EPOCH"));
}

#[test]
fn source_and_revision_come_from_the_spec_or_a_clean_git_checkout() {
    let cx = TestContext::new();
    let spec = cx.example("sentiment").join("mlimg.toml");
    let project = spec.parent().expect("dir").to_path_buf();
    let manifest_of = |name: &str, extra: &[&str]| -> Value {
        let out = cx.path().join(name);
        let r = build_layout(&cx, &spec, &out, extra);
        json_of(&blob(&out, r["manifest_digest"].as_str().expect("digest")))
    };
    let git = |args: &[&str]| {
        run_ok(
            Command::new("git")
                .arg("-C")
                .arg(&project)
                .args(args)
                .env("GIT_AUTHOR_NAME", "t")
                .env("GIT_AUTHOR_EMAIL", "t@example.com")
                .env("GIT_COMMITTER_NAME", "t")
                .env("GIT_COMMITTER_EMAIL", "t@example.com"),
        )
    };
    // a first build writes mlimg.lock beside the spec: commit it with the rest
    manifest_of("first", &[]);
    git(&["init", "-q"]);
    git(&["add", "-A"]);
    git(&["commit", "-qm", "init"]);
    git(&[
        "remote",
        "add",
        "origin",
        "https://ci-bot:s3cret@git.example.com/acme/sentiment.git",
    ]);
    let head = stdout(&git(&["rev-parse", "HEAD"])).trim().to_string();
    // outputs go outside the checkout, so it stays clean
    let out = cx.path().join("clean");
    let r = build_layout(&cx, &spec, &out, &[]);
    let m = json_of(&blob(&out, r["manifest_digest"].as_str().expect("digest")));
    let st = json_of(&blob(
        &out,
        referrer(&r, 0, INTOTO)["document_digest"]
            .as_str()
            .unwrap_or(""),
    ));
    let src = &st["predicate"]["buildDefinition"]["resolvedDependencies"][0];
    assert_eq!(src["uri"], "git+https://git.example.com/acme/sentiment.git");
    assert_eq!(src["digest"]["gitCommit"], head.as_str());
    let ann = &m["annotations"];
    assert_eq!(ann["org.opencontainers.image.revision"], head.as_str());
    assert_eq!(
        ann["org.opencontainers.image.source"],
        "https://git.example.com/acme/sentiment.git"
    );
    assert!(!m.to_string().contains("s3cret"));
    // the same commit again: the same manifest (reproducible)
    assert_eq!(manifest_of("clean2", &[]), m);
    // a dirty tree: no revision (its HEAD is not what was built)
    fs::write(project.join("NOTES.txt"), "wip").expect("write");
    let dirty = manifest_of("dirty", &[]);
    assert!(
        dirty["annotations"]
            .get("org.opencontainers.image.revision")
            .is_none()
    );
    fs::remove_file(project.join("NOTES.txt")).expect("rm");
    // the spec's own values win over git
    let text = fs::read_to_string(&spec).expect("spec");
    fs::write(
        &spec,
        text.replacen(
            "[image]\n",
            "[image]\nsource = \"https://src.example/acme/s\"\nrevision = \"v9\"\n",
            1,
        ),
    )
    .expect("write");
    let pinned = manifest_of("pinned", &[]);
    assert_eq!(
        pinned["annotations"]["org.opencontainers.image.source"],
        "https://src.example/acme/s"
    );
    assert_eq!(
        pinned["annotations"]["org.opencontainers.image.revision"],
        "v9"
    );
}

#[test]
fn no_sbom_and_no_provenance_turn_them_off() {
    let cx = TestContext::new();
    let spec = cx.example("sentiment").join("mlimg.toml");
    let out = cx.path().join("none");
    let r = build_layout(&cx, &spec, &out, &["--no-sbom", "--no-provenance"]);
    assert!(r["platforms"][0].get("referrers").is_none(), "{r}");
    let index = json_of(&fs::read(out.join("index.json")).expect("index"));
    assert_eq!(index["manifests"].as_array().map(Vec::len), Some(1));
    let out = cx.path().join("sbom-only");
    let r = build_layout(&cx, &spec, &out, &["--no-provenance"]);
    let refs = r["platforms"][0]["referrers"]
        .as_array()
        .expect("referrers");
    assert_eq!(refs.len(), 2);
    assert_eq!(refs[0]["artifact_type"], SPDX);
    assert_eq!(refs[1]["artifact_type"], CDX);
    let out = cx.path().join("cdx-only");
    let r = build_layout(
        &cx,
        &spec,
        &out,
        &["--no-provenance", "--sbom-format", "cyclonedx"],
    );
    let refs = r["platforms"][0]["referrers"]
        .as_array()
        .expect("referrers");
    assert_eq!(refs.len(), 1);
    assert_eq!(refs[0]["artifact_type"], CDX);
}

#[test]
fn each_platform_sbom_lists_its_own_wheels() {
    let cx = TestContext::new();
    let wheels = crate::python_e2e::example_wheels();
    let index = crate::python_e2e::serve_index(&wheels, &[]);
    let req = fs::read_to_string(repo_root().join("specs/python-app/requirements.txt"))
        .expect("requirements");
    let spec = crate::python_e2e::table_spec(&cx, &req);
    let out = cx.path().join("oci");
    let report = json_of(
        &run_ok(
            cx.mlimg()
                .env("PIP_INDEX_URL", &index.url)
                .args(["build", "--json", "-f"])
                .arg(&spec)
                .arg("-o")
                .arg(format!("oci:{}", out.display())),
        )
        .stdout,
    );
    let checked = oci::assert_layout(&out);
    assert_eq!(checked.referrers.len(), 6, "{}", checked.report);
    let sums: BTreeSet<String> = wheels.iter().map(|w| sha256_file(w)).collect();
    for (i, arch) in [(0, "x86_64"), (1, "aarch64")] {
        let manifest = report["platforms"][i]["manifest_digest"]
            .as_str()
            .expect("digest");
        // about the platform manifest, never the index
        assert_eq!(
            checked
                .referrers
                .iter()
                .filter(|r| r.subject == manifest)
                .count(),
            3
        );
        let sbom = validate_spdx(
            &blob(
                &out,
                referrer(&report, i, SPDX)["document_digest"]
                    .as_str()
                    .unwrap_or(""),
            ),
            cx.path(),
        );
        let pypi: Vec<&Value> = sbom["packages"]
            .as_array()
            .expect("packages")
            .iter()
            .filter(|p| {
                p["SPDXID"]
                    .as_str()
                    .is_some_and(|s| s.starts_with("SPDXRef-Pypi-"))
            })
            .collect();
        assert!(!pypi.is_empty(), "{sbom}");
        for p in &pypi {
            let (name, version) = (
                p["name"].as_str().unwrap_or(""),
                p["versionInfo"].as_str().unwrap_or(""),
            );
            assert_eq!(
                p["externalRefs"][0]["referenceLocator"],
                format!("pkg:pypi/{name}@{version}").as_str()
            );
            let sum = p["checksums"][0]["checksumValue"].as_str().unwrap_or("");
            assert!(sums.contains(sum), "{p}: not a served wheel's sha256");
            assert!(
                p["packageFileName"]
                    .as_str()
                    .is_some_and(|f| f.ends_with(".whl"))
            );
        }
        let markupsafe = pypi
            .iter()
            .find(|p| p["name"] == "markupsafe")
            .expect("markupsafe");
        assert!(
            markupsafe["packageFileName"]
                .as_str()
                .is_some_and(|f| f.contains(arch)),
            "{markupsafe}"
        );
        // licenses from each wheel's METADATA: a `License` that is an SPDX id, else the one
        // classifier naming a license; "BSD License" (which BSD?) and two classifiers stay
        // NOASSERTION
        let want = [
            ("markupsafe", "BSD-3-Clause"),
            ("six", "MIT"),
            ("wheel", "MIT"),
            ("idna", "NOASSERTION"),
            ("packaging", "NOASSERTION"),
        ];
        for (name, license) in want {
            let p = pypi
                .iter()
                .find(|p| p["name"] == name)
                .unwrap_or_else(|| panic!("no {name}"));
            assert_eq!(p["licenseDeclared"], license, "{p}");
        }
        let cdx = validate_cyclonedx(&blob(
            &out,
            referrer(&report, i, CDX)["document_digest"]
                .as_str()
                .unwrap_or(""),
        ));
        let libs: Vec<&Value> = cdx["components"]
            .as_array()
            .expect("components")
            .iter()
            .filter(|c| c["type"] == "library")
            .collect();
        assert_eq!(libs.len(), pypi.len(), "{cdx}");
        for (name, license) in want {
            let c = libs
                .iter()
                .find(|c| c["name"] == name)
                .unwrap_or_else(|| panic!("no {name}"));
            assert!(
                c["hashes"][0]["content"]
                    .as_str()
                    .is_some_and(|h| sums.contains(h))
            );
            if license == "NOASSERTION" {
                assert!(c.get("licenses").is_none(), "{c}");
            } else {
                assert_eq!(c["licenses"][0]["expression"], license, "{c}");
            }
        }
        let st = json_of(&blob(
            &out,
            referrer(&report, i, INTOTO)["document_digest"]
                .as_str()
                .unwrap_or(""),
        ));
        assert_eq!(st["subject"][0]["digest"]["sha256"], &manifest[7..]);
        let deps = st["predicate"]["buildDefinition"]["resolvedDependencies"]
            .as_array()
            .expect("deps");
        assert_eq!(deps.len(), pypi.len(), "{st}");
        assert!(deps.iter().all(|d| {
            d["digest"]["sha256"]
                .as_str()
                .is_some_and(|s| sums.contains(s))
        }));
    }
}

/// `skopeo inspect --raw` of a reference in the test registry.
fn raw(reference: &str) -> Value {
    json_of(
        &run_ok(
            Command::new("skopeo")
                .args(["inspect", "--raw", "--tls-verify=false"])
                .arg(format!("docker://{reference}")),
        )
        .stdout,
    )
}

fn curl_blob(host: &str, repo: &str, digest: &str) -> Vec<u8> {
    run_ok(Command::new("curl").args(["-fsS", &format!("http://{host}/v2/{repo}/blobs/{digest}")]))
        .stdout
}

#[test]
fn push_attaches_referrers_through_the_tag_schema_and_docker_still_pulls() {
    let cx = TestContext::new();
    let reg = TestRegistry::start();
    let spec = cx.example("sentiment").join("mlimg.toml");
    let repo = "acme/prov";
    let name = format!("{}/{repo}", reg.host());
    let out = cx.path().join("layout");
    let push = |extra: &[&str]| {
        let mut args = vec![
            "-o".to_string(),
            format!("registry:{name}:1"),
            "-o".to_string(),
            format!("oci:{}", out.display()),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        cx.build_json(&spec, &args)
    };
    let report = push(&[]);
    let manifest = report["manifest_digest"]
        .as_str()
        .expect("digest")
        .to_string();
    let pushed: Vec<&Value> = report["push"]["referrers"]
        .as_array()
        .expect("pushed referrers")
        .iter()
        .collect();
    assert_eq!(pushed.len(), 3, "{report}");
    let tag = format!("sha256-{}", &manifest[7..]);
    assert!(
        pushed
            .iter()
            .all(|p| p["tag"] == tag.as_str() && p["subject"] == manifest.as_str())
    );

    // the tag schema: `sha256-<hex>` is an index listing both referrers with their types
    let list = |reference: &str| -> Vec<(String, String)> {
        let idx = raw(reference);
        assert_eq!(idx["mediaType"], "application/vnd.oci.image.index.v1+json");
        idx["manifests"]
            .as_array()
            .expect("manifests")
            .iter()
            .map(|m| {
                (
                    m["artifactType"].as_str().unwrap_or("").to_string(),
                    m["digest"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect()
    };
    let want: Vec<(String, String)> = [SPDX, CDX, INTOTO]
        .iter()
        .map(|t| {
            (
                t.to_string(),
                referrer(&report, 0, t)["manifest_digest"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
            )
        })
        .collect();
    assert_eq!(list(&format!("{name}:{tag}")), want);
    // each referrer's manifest points at the image; its document is the layout's
    for (t, d) in &want {
        let m = raw(&format!("{name}@{d}"));
        assert_eq!(m["artifactType"], t.as_str());
        assert_eq!(m["subject"]["digest"], manifest.as_str());
        let doc = m["layers"][0]["digest"].as_str().expect("layer");
        assert_eq!(curl_blob(&reg.host(), repo, doc), blob(&out, doc));
        if t == SPDX {
            validate_spdx(&blob(&out, doc), cx.path());
        } else if t == CDX {
            validate_cyclonedx(&blob(&out, doc));
        } else {
            let st = json_of(&blob(&out, doc));
            assert_eq!(st["subject"][0]["digest"]["sha256"], &manifest[7..]);
        }
    }

    // `mlimg sbom` / `mlimg provenance` print them from the registry, through the tag schema
    for (cmd, format, t) in [
        ("sbom", "spdx", SPDX),
        ("sbom", "cyclonedx", CDX),
        ("provenance", "", INTOTO),
    ] {
        let mut c = cx.mlimg();
        c.args([cmd, &format!("{name}:1")]);
        if !format.is_empty() {
            c.args(["--format", format]);
        }
        let o = run_ok(&mut c);
        let d = referrer(&report, 0, t)["document_digest"]
            .as_str()
            .expect("document");
        assert_eq!(
            String::from_utf8_lossy(&o.stdout).trim_end(),
            String::from_utf8_lossy(&blob(&out, d)).trim_end(),
            "mlimg {cmd}"
        );
    }

    // a second push of the same build lists each referrer once
    let again = push(&[]);
    assert_eq!(again["manifest_digest"], manifest.as_str());
    assert_eq!(list(&format!("{name}:{tag}")), want);

    // the image's tag is the image manifest itself (no index wrapping it), and Docker pulls it
    let top = raw(&format!("{name}:1"));
    assert_eq!(
        top["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    assert!(top.get("subject").is_none() && top.get("manifests").is_none());
    let image = format!("{name}:1");
    run_ok(Command::new("docker").args(["pull", &image]));
    let id = run_ok(Command::new("docker").args([
        "image",
        "inspect",
        "--format",
        "{{index .RepoDigests 0}}",
        &image,
    ]));
    let _ = Command::new("docker").args(["rmi", "-f", &image]).output();
    assert_eq!(stdout(&id).trim(), format!("{name}@{manifest}"));

    // an image pushed without them: `mlimg sbom` says so and exits 1
    let bare = format!("{}/acme/bare", reg.host());
    cx.build_json(
        &spec,
        &[
            "-o",
            &format!("registry:{bare}:1"),
            "--no-sbom",
            "--no-provenance",
        ],
    );
    let o = cx
        .mlimg()
        .args(["sbom", &format!("{bare}:1")])
        .output()
        .expect("mlimg sbom");
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("no application/spdx+json referrer"), "{err}");
}
