//! Pushing the same layers to a second repository of the same registry mounts them from the
//! repository mlimg pushed them to before (the cache remembers where each blob went), instead
//! of uploading them again; without that memory (another cache) they are uploaded.

use crate::common::registry::TestRegistry;
use crate::common::*;
use crate::push::{push_base, retarget};

fn layer<'a>(report: &'a serde_json::Value, role: &str) -> &'a serde_json::Value {
    report["layers"]
        .as_array()
        .and_then(|ls| ls.iter().find(|l| l["role"] == role))
        .unwrap_or_else(|| panic!("no {role} layer in {report}"))
}

#[test]
fn a_push_to_another_repository_mounts_our_earlier_pushes() {
    let cx = TestContext::new();
    let reg = TestRegistry::start();
    let spec = cx.example("sentiment").join("mlimg.toml");
    let base = push_base(&cx, spec.parent().expect("dir"), &reg);
    retarget(&spec, &base, &format!("{}/team/a", reg.host()));
    let off = ["--no-sbom", "--no-provenance"];
    let to = |repo: &str| format!("registry:{}/{repo}:v1", reg.host());

    let first = cx.build_json(&spec, &[&off[..], &["-o", &to("team/a")]].concat());
    let weights = layer(&first, "weights sst2")["digest"]
        .as_str()
        .expect("digest")
        .to_string();
    assert_eq!(layer(&first, "weights sst2")["push"], "uploaded", "{first}");
    assert_eq!(reg.uploads_of(&weights), 1);

    // same cache, another repository: every layer of ours is mounted from team/a
    let second = cx.build_json(&spec, &[&off[..], &["-o", &to("team/b")]].concat());
    for role in ["weights sst2", "app", "deps vendor"] {
        assert_eq!(layer(&second, role)["push"], "mounted", "{role}: {second}");
    }
    assert_eq!(
        reg.uploads_of(&weights),
        1,
        "no second upload of the weights"
    );
    let hex = weights.trim_start_matches("sha256:");
    let requests = reg.requests();
    assert!(
        requests
            .iter()
            .any(|r| r.starts_with("POST /v2/team/b/blobs/uploads/")
                && r.contains("from=team%2Fa")
                && r.contains(hex)
                && r.ends_with(" 201")),
        "a mount from team/a answered 201: {requests:#?}"
    );

    // another cache knows nothing of team/a: the layers are uploaded (and the image is the same)
    let other = TestContext::new();
    let third = other.build_json(&spec, &[&off[..], &["-o", &to("team/c")]].concat());
    assert_eq!(third["manifest_digest"], first["manifest_digest"]);
    assert_eq!(layer(&third, "weights sst2")["push"], "uploaded", "{third}");
    assert_eq!(reg.uploads_of(&weights), 2);
}

/// A rebuild + push with nothing changed costs a handful of small requests: one HEAD for the
/// image manifest (a registry keeps a manifest only with everything it references), one per
/// tag, none per blob, no PUT; with a lock, the base resolves from the cache with no request.
#[test]
fn a_no_op_rebuild_and_push_sends_no_blob_request_and_no_put() {
    let cx = TestContext::new();
    let reg = TestRegistry::start();
    let spec = cx.example("sentiment").join("mlimg.toml");
    let base = push_base(&cx, spec.parent().expect("dir"), &reg);
    retarget(&spec, &base, &format!("{}/acme/noop", reg.host()));
    let first = cx.build_json(&spec, &["--push"]);
    run_ok(cx.mlimg().arg("lock").arg("-f").arg(&spec));

    let before = reg.requests().len();
    let again = cx.build_json(&spec, &["--push"]);
    assert_eq!(again["manifest_digest"], first["manifest_digest"]);
    let new: Vec<String> = reg.requests()[before..].to_vec();
    assert!(
        !new.iter()
            .any(|r| r.starts_with("PUT ") || r.starts_with("POST ") || r.starts_with("PATCH ")),
        "nothing written: {new:#?}"
    );
    assert!(
        !new.iter().any(|r| r.contains("/blobs/")),
        "no blob request at all: {new:#?}"
    );
    assert!(
        !new.iter().any(|r| r.contains("/v2/base/")),
        "the locked base came from the cache: {new:#?}"
    );
    // the image manifest, two tags, and per referrer its manifest and the referrers tag
    assert!(new.len() <= 8, "{} requests: {new:#?}", new.len());
    for role in ["weights sst2", "app", "deps vendor"] {
        assert_eq!(layer(&again, role)["push"], "skipped", "{role}: {again}");
    }
}

/// What the build reads of a registry base to find its Python (and what the lints need) is
/// read once: a rebuild on the same base asks for none of its layers.
#[test]
fn a_rebuild_on_the_same_python_base_reads_none_of_its_layers() {
    use std::fs;
    let cx = TestContext::new();
    let reg = TestRegistry::start();
    let base_dir = cx.path().join("pybase");
    let root = base_dir.join("root");
    fs::create_dir_all(root.join("usr/local/lib/python3.11")).unwrap();
    fs::create_dir_all(root.join("var/lib/dpkg")).unwrap();
    fs::write(root.join("usr/local/lib/python3.11/os.py"), "# os\n").unwrap();
    fs::write(
        root.join("var/lib/dpkg/status"),
        "Package: libc6\nStatus: install ok installed\nArchitecture: amd64\nVersion: 2.36-9\n\n",
    )
    .unwrap();
    fs::write(
        base_dir.join("mlimg.toml"),
        format!(
            "[image]\nname = \"{}/acme/pybase\"\ntags = [\"1\"]\nbase = \"scratch\"\n\n\
             [[deps]]\nname = \"root\"\ndir = \"root\"\ndest = \"/\"\n",
            reg.host()
        ),
    )
    .unwrap();
    // pushed from another cache, as a base team would: this build's cache has none of it
    TestContext::new().build_json(&base_dir.join("mlimg.toml"), &["--push"]);

    let proj = cx.path().join("proj");
    fs::create_dir_all(proj.join("wheels")).unwrap();
    let six = "six-1.16.0-py2.py3-none-any.whl";
    fs::copy(
        repo_root().join("testdata/wheels").join(six),
        proj.join("wheels").join(six),
    )
    .unwrap();
    fs::write(
        proj.join("requirements.txt"),
        "six==1.16.0 --hash=sha256:8abb2f1d86890a2dfb989f9a77cfcfd3e47c2a354b01111771326f8aa26e0254\n",
    )
    .unwrap();
    let spec = proj.join("mlimg.toml");
    fs::write(
        &spec,
        format!(
            "[image]\nname = \"{h}/acme/svc\"\ntags = [\"1\"]\nbase = \"{h}/acme/pybase:1\"\n\n\
             [[deps]]\nname = \"py\"\nrequirements = \"requirements.txt\"\nfind_links = [\"wheels\"]\n\n\
             [config]\nentrypoint = [\"python3\"]\nuser = \"app\"\n",
            h = reg.host()
        ),
    )
    .unwrap();
    let base_blob_reads = |reqs: &[String]| {
        reqs.iter()
            .filter(|r| r.starts_with("GET /v2/acme/pybase/blobs/"))
            .count()
    };
    let before = reg.requests().len();
    cx.build_json(&spec, &["--push"]);
    let first = reg.requests()[before..].to_vec();
    assert!(
        base_blob_reads(&first) >= 2,
        "the first build reads the base (config and layer): {first:#?}"
    );
    let before = reg.requests().len();
    let again = cx.build_json(&spec, &["--push"]);
    let second = reg.requests()[before..].to_vec();
    assert_eq!(base_blob_reads(&second), 0, "{second:#?}");
    // the lint that needs the base's /etc/passwd still knows it lacks the user `app`
    assert!(
        again["warnings"].to_string().contains("user-unknown"),
        "{again}"
    );
}
