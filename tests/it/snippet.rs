//! GPU settings in the image config and `mlimg snippet` (issue 13, item 4): the NVIDIA
//! runtime's variables (CUDA from the base's CUDA_VERSION, from wheels, or `[gpu] cuda`);
//! Compose output validated by `docker-compose config`, the Kubernetes Deployment by strict
//! typed structs (unknown fields rejected), `docker run` by its words.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;
use serde_json::Value;

use crate::common::snapshot::render;
use crate::common::{TestContext, run_ok, stdout};
use crate::inspect::inspect_json;

fn env_of(inspected: &Value) -> BTreeMap<String, String> {
    inspected["platforms"][0]["config"]["env"]
        .as_array()
        .expect("env")
        .iter()
        .filter_map(|e| e.as_str()?.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A one-file scratch project at `dir` with `extra` appended to its spec; built to `dir/out`.
fn project(cx: &TestContext, dir: &Path, base: &str, extra: &str) -> PathBuf {
    std::fs::create_dir_all(dir.join("app")).expect("mkdir");
    std::fs::write(dir.join("app/serve.sh"), "echo hi\n").expect("write");
    let spec = dir.join("mlimg.toml");
    std::fs::write(
        &spec,
        format!(
            "[image]\nname = \"localhost/gpu-svc\"\ntags = [\"1.0\"]\nbase = \"{base}\"\nplatforms = [\"linux/amd64\"]\n\n\
             [app]\nsrc = \"app\"\n\n{extra}"
        ),
    )
    .expect("spec");
    let out = dir.join("out");
    cx.build_json(&spec, &["-o", &format!("oci:{}", out.display())]);
    spec
}

#[test]
fn gpu_sets_the_nvidia_runtime_variables_with_cuda_from_the_base() {
    let cx = TestContext::new();
    // a "CUDA base": scratch with CUDA_VERSION in its config, as NVIDIA's images have
    project(
        &cx,
        &cx.path().join("cuda-base"),
        "scratch",
        "[config]\nenv = { CUDA_VERSION = \"12.2.2\" }\n",
    );
    let dir = cx.path().join("svc");
    project(
        &cx,
        &dir,
        "oci:../cuda-base/out",
        "[config]\ngpu = true\nports = [\"8000\"]\n",
    );
    let env = env_of(&inspect_json(
        &cx,
        &format!("oci:{}", dir.join("out").display()),
    ));
    assert_eq!(env["NVIDIA_VISIBLE_DEVICES"], "all");
    assert_eq!(env["NVIDIA_DRIVER_CAPABILITIES"], "compute,utility");
    assert_eq!(env["NVIDIA_REQUIRE_CUDA"], "cuda>=12.2");

    // [gpu] overrides; [config] env wins over it
    let dir = cx.path().join("svc2");
    project(
        &cx,
        &dir,
        "oci:../cuda-base/out",
        "[config]\nenv = { NVIDIA_VISIBLE_DEVICES = \"0\" }\n\n[gpu]\ncuda = \"11.8\"\ncapabilities = [\"compute\", \"utility\", \"video\"]\ncount = 2\n",
    );
    let env = env_of(&inspect_json(
        &cx,
        &format!("oci:{}", dir.join("out").display()),
    ));
    assert_eq!(env["NVIDIA_VISIBLE_DEVICES"], "0");
    assert_eq!(env["NVIDIA_DRIVER_CAPABILITIES"], "compute,utility,video");
    assert_eq!(env["NVIDIA_REQUIRE_CUDA"], "cuda>=11.8");

    // without gpu: none of them
    let dir = cx.path().join("cpu");
    project(&cx, &dir, "oci:../cuda-base/out", "");
    let env = env_of(&inspect_json(
        &cx,
        &format!("oci:{}", dir.join("out").display()),
    ));
    assert!(!env.contains_key("NVIDIA_VISIBLE_DEVICES"), "{env:?}");

    // a bad capability is a spec error naming the field
    let bad = cx.path().join("bad");
    std::fs::create_dir_all(&bad).expect("mkdir");
    std::fs::write(
        bad.join("mlimg.toml"),
        "[image]\nbase = \"scratch\"\n\n[gpu]\ncapabilities = [\"warp\"]\n",
    )
    .expect("write");
    let out = cx
        .mlimg()
        .args(["build", "--dry-run", "-f"])
        .arg(bad.join("mlimg.toml"))
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2), "{}", render(&out));
    assert!(
        stdout_err(&out).contains("gpu.capabilities"),
        "{}",
        render(&out)
    );
}

fn stdout_err(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

/// A minimal py3-none-any wheel (METADATA, WHEEL, RECORD) holding one module.
fn fake_wheel(dir: &Path, name: &str, version: &str) -> (PathBuf, String) {
    let dist = name.replace('-', "_");
    let file = dir.join(format!("{dist}-{version}-py3-none-any.whl"));
    let f = std::fs::File::create(&file).expect("create");
    let mut z = zip::ZipWriter::new(f);
    let opts: zip::write::SimpleFileOptions = zip::write::SimpleFileOptions::default();
    let info = format!("{dist}-{version}.dist-info");
    let files = [
        (format!("{dist}/__init__.py"), String::new()),
        (
            format!("{info}/METADATA"),
            format!("Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"),
        ),
        (
            format!("{info}/WHEEL"),
            "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
                .to_string(),
        ),
    ];
    let mut record = String::new();
    for (p, content) in &files {
        z.start_file(p.as_str(), opts).expect("zip");
        z.write_all(content.as_bytes()).expect("zip");
        record.push_str(&format!("{p},,\n"));
    }
    record.push_str(&format!("{info}/RECORD,,\n"));
    z.start_file(format!("{info}/RECORD"), opts).expect("zip");
    z.write_all(record.as_bytes()).expect("zip");
    z.finish().expect("zip");
    let sha = crate::common::sha256_file(&file);
    (file, sha)
}

#[test]
fn cuda_from_the_wheels_when_the_base_says_nothing() {
    let cx = TestContext::new();
    let dir = cx.path().join("wheels-svc");
    std::fs::create_dir_all(dir.join("wheels")).expect("mkdir");
    let (_, a) = fake_wheel(&dir.join("wheels"), "nvidia-cuda-runtime-cu12", "12.4.127");
    let (_, b) = fake_wheel(&dir.join("wheels"), "torch", "2.1.0+cu118");
    std::fs::write(
        dir.join("requirements.txt"),
        format!(
            "nvidia-cuda-runtime-cu12==12.4.127 --hash=sha256:{a}\ntorch==2.1.0+cu118 --hash=sha256:{b}\n"
        ),
    )
    .expect("write");
    project(
        &cx,
        &dir,
        "scratch",
        "[python]\nversion = \"3.11\"\nprefix = \"/usr/local\"\nlibc = \"glibc 2.36\"\n\n\
         [[deps]]\nname = \"gpu\"\nrequirements = \"requirements.txt\"\nfind_links = [\"wheels\"]\n\n\
         [config]\ngpu = true\n",
    );
    let env = env_of(&inspect_json(
        &cx,
        &format!("oci:{}", dir.join("out").display()),
    ));
    assert_eq!(
        env["NVIDIA_REQUIRE_CUDA"], "cuda>=12.4",
        "the newest CUDA the wheels need"
    );
}

// ------------------------------------------------------------------ snippets

/// The sentiment example with `[config] gpu`, a `[model]` weights-only image, built to
/// `oci:DIR`.
fn gpu_example(cx: &TestContext) -> (PathBuf, PathBuf) {
    let spec = cx.example("sentiment").join("mlimg.toml");
    let mut text = std::fs::read_to_string(&spec).expect("read");
    text.push_str(
        "\n[gpu]\ncount = 1\n\n[model]\nname = \"localhost/sst2-model\"\nformats = [\"modelpack\", \"image\"]\n",
    );
    std::fs::write(&spec, text).expect("write");
    let out = cx.path().join("image");
    cx.build_json(&spec, &["-o", &format!("oci:{}", out.display())]);
    (spec, out)
}

fn snippet(cx: &TestContext, args: &[&str]) -> String {
    stdout(&run_ok(cx.mlimg().arg("snippet").args(args)))
}

#[test]
fn compose_validates_with_docker_compose() {
    let cx = TestContext::new();
    let (spec, out) = gpu_example(&cx);
    let image = format!("oci:{}", out.display());
    let text = snippet(
        &cx,
        &[
            "compose",
            "-f",
            spec.to_str().expect("utf-8"),
            "--image",
            &image,
            "--weights-volume",
        ],
    );
    let file = cx.path().join("compose.yaml");
    std::fs::write(&file, &text).expect("write");
    assert!(
        Path::new("/usr/bin/docker-compose").exists(),
        "docker-compose is not installed (scripts/setup installs Debian's docker-compose)"
    );
    let checked = Command::new("/usr/bin/docker-compose")
        .arg("-f")
        .arg(&file)
        .arg("config")
        .current_dir(cx.path())
        .output()
        .expect("run docker-compose");
    assert!(checked.status.success(), "{}\n{text}", render(&checked));
    // what docker-compose understood
    let normalized: Value =
        serde_yaml_ng::from_slice(&checked.stdout).expect("docker-compose config prints YAML");
    let svc = &normalized["services"]["sentiment-api"];
    let manifest = inspect_json(&cx, &image)["platforms"][0]["manifest_digest"].clone();
    assert_eq!(
        svc["image"].as_str(),
        Some(
            format!(
                "localhost/sentiment-api:0.1.0@{}",
                manifest.as_str().expect("digest")
            )
            .as_str()
        )
    );
    let dev = &svc["deploy"]["resources"]["reservations"]["devices"][0];
    assert_eq!(dev["driver"], "nvidia");
    assert_eq!(dev["count"], 1);
    assert_eq!(dev["capabilities"][0], "gpu");
    assert_eq!(svc["healthcheck"]["test"][0], "CMD");
    assert_eq!(svc["healthcheck"]["retries"], 3);
    assert_eq!(svc["ports"][0]["target"], 8000);
    assert_eq!(svc["volumes"][0]["target"], "/models/sst2");
    assert_eq!(svc["volumes"][0]["read_only"], true);
    assert!(
        text.contains("mlimg pull-model localhost/sst2-model:0.1.0-image ."),
        "{text}"
    );
    crate::common::snapshot::settings(&cx)
        .bind(|| insta::assert_snapshot!("snippet_compose_with_gpu_and_weights_volume", text));
}

// Strict Kubernetes types: the fields mlimg writes, nothing else accepted.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Deployment {
    api_version: String,
    kind: String,
    metadata: Meta,
    spec: DeploymentSpec,
}
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Meta {
    name: String,
    labels: BTreeMap<String, String>,
}
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeploymentSpec {
    replicas: u32,
    selector: Selector,
    template: Template,
}
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Selector {
    match_labels: BTreeMap<String, String>,
}
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Template {
    metadata: TemplateMeta,
    spec: PodSpec,
}
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TemplateMeta {
    labels: BTreeMap<String, String>,
}
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PodSpec {
    containers: Vec<Container>,
    #[serde(default)]
    volumes: Vec<Volume>,
}
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Container {
    name: String,
    image: String,
    #[serde(default)]
    ports: Vec<ContainerPort>,
    readiness_probe: Option<Probe>,
    liveness_probe: Option<Probe>,
    resources: Option<Resources>,
    #[serde(default)]
    volume_mounts: Vec<VolumeMount>,
}
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ContainerPort {
    container_port: u16,
    protocol: String,
}
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Probe {
    exec: Option<ExecAction>,
    http_get: Option<HttpGet>,
    period_seconds: Option<u32>,
    timeout_seconds: Option<u32>,
    failure_threshold: Option<u32>,
    initial_delay_seconds: Option<u32>,
}
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExecAction {
    command: Vec<String>,
}
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpGet {
    path: String,
    port: u16,
}
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Resources {
    limits: BTreeMap<String, u32>,
}
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct VolumeMount {
    name: String,
    mount_path: String,
    sub_path: Option<String>,
    read_only: bool,
}
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Volume {
    name: String,
    image: ImageVolume,
}
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ImageVolume {
    reference: String,
    pull_policy: String,
}

#[test]
fn kubernetes_deployment_parses_strictly() {
    let cx = TestContext::new();
    let (spec, _) = gpu_example(&cx);
    let spec = spec.to_str().expect("utf-8");
    let text = snippet(&cx, &["kubernetes", "-f", spec, "--weights-volume"]);
    crate::common::snapshot::settings(&cx)
        .bind(|| insta::assert_snapshot!("snippet_kubernetes_with_gpu_and_weights_volume", text));
    let d: Deployment = serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(
        (d.api_version.as_str(), d.kind.as_str()),
        ("apps/v1", "Deployment")
    );
    assert_eq!(d.metadata.name, "sentiment-api");
    assert_eq!(d.spec.replicas, 1);
    assert_eq!(
        d.spec.selector.match_labels,
        d.spec.template.metadata.labels
    );
    assert_eq!(d.metadata.labels, d.spec.template.metadata.labels);
    let c = &d.spec.template.spec.containers[0];
    assert_eq!(c.name, "sentiment-api");
    assert_eq!(c.image, "localhost/sentiment-api:0.1.0");
    assert_eq!(
        (c.ports[0].container_port, c.ports[0].protocol.as_str()),
        (8000, "TCP")
    );
    let live = c.liveness_probe.as_ref().expect("liveness probe");
    let exec = live.exec.as_ref().expect("exec probe");
    assert_eq!(exec.command, ["test", "-f", "/models/sst2/config.json"]);
    assert!(live.http_get.is_none());
    assert_eq!(
        (
            live.period_seconds,
            live.timeout_seconds,
            live.failure_threshold,
            live.initial_delay_seconds
        ),
        (Some(30), Some(5), Some(3), Some(10))
    );
    assert!(
        c.readiness_probe
            .as_ref()
            .is_some_and(|p| p.initial_delay_seconds.is_none())
    );
    let limits = &c.resources.as_ref().expect("resources").limits;
    assert_eq!(limits.get("nvidia.com/gpu"), Some(&1));
    let v = &d.spec.template.spec.volumes[0];
    assert_eq!(v.image.reference, "localhost/sst2-model:0.1.0-image");
    assert_eq!(v.image.pull_policy, "IfNotPresent");
    let m = &c.volume_mounts[0];
    assert_eq!(
        (m.name.as_str(), m.mount_path.as_str()),
        (v.name.as_str(), "/models/sst2")
    );
    assert_eq!(m.sub_path.as_deref(), Some("models/sst2"));
    assert!(m.read_only);

    // without --weights-volume: no volumes; the strict types still parse it
    let text = snippet(&cx, &["kubernetes", "-f", spec]);
    let d: Deployment = serde_yaml_ng::from_str(&text).expect("strict parse");
    assert!(d.spec.template.spec.volumes.is_empty());
    // a healthcheck that fetches a localhost URL becomes an HTTP probe
    let text = std::fs::read_to_string(spec).expect("read").replace(
        "test = [\"CMD\", \"test\", \"-f\", \"/models/sst2/config.json\"]",
        "test = [\"CMD-SHELL\", \"wget -qO- http://localhost:8000/health || exit 1\"]",
    );
    std::fs::write(spec, text).expect("write");
    let text = snippet(&cx, &["kubernetes", "-f", spec]);
    let d: Deployment = serde_yaml_ng::from_str(&text).expect("strict parse");
    let c = &d.spec.template.spec.containers[0];
    let get = c
        .readiness_probe
        .as_ref()
        .and_then(|p| p.http_get.as_ref())
        .expect("httpGet");
    assert_eq!((get.path.as_str(), get.port), ("/health", 8000), "{text}");
    // the strict types do reject what they do not know
    let extra = text.replace("replicas: 1", "replicas: 1\n  bogus: 1");
    assert!(serde_yaml_ng::from_str::<Deployment>(&extra).is_err());
}

#[test]
fn docker_run_and_an_image_alone() {
    let cx = TestContext::new();
    let (spec, out) = gpu_example(&cx);
    let text = snippet(
        &cx,
        &[
            "docker-run",
            "-f",
            spec.to_str().expect("utf-8"),
            "--weights-volume",
        ],
    );
    crate::common::snapshot::settings(&cx)
        .bind(|| insta::assert_snapshot!("snippet_docker_run_with_gpu", text));
    let line = text.lines().last().expect("a command line");
    let words: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(&words[..3], ["docker", "run", "-d"], "{text}");
    let after = |flag: &str| {
        words
            .iter()
            .position(|w| *w == flag)
            .map(|i| words[i + 1])
            .unwrap_or_else(|| panic!("no {flag} in {line}"))
    };
    assert_eq!(after("-p"), "8000:8000/tcp");
    assert_eq!(after("--gpus"), "1");
    assert_eq!(after("-v"), "\"$PWD/models/sst2:/models/sst2:ro\"");
    assert_eq!(words.last().copied(), Some("localhost/sentiment-api:0.1.0"));

    // from the image alone (no spec): the config's GPU variables ask for all GPUs
    let alone = cx.path().join("elsewhere");
    std::fs::create_dir_all(&alone).expect("mkdir");
    let image = format!("oci:{}", out.display());
    let o = run_ok(
        cx.mlimg()
            .args(["snippet", "compose", "--image", &image])
            .current_dir(&alone),
    );
    let v: Value = serde_yaml_ng::from_slice(&o.stdout).expect("YAML");
    let svc = &v["services"]["image"];
    assert_eq!(
        svc["deploy"]["resources"]["reservations"]["devices"][0]["count"],
        "all"
    );
    assert_eq!(svc["ports"][0], "8000:8000/tcp");
    // neither spec nor image: says what to give
    let o = cx
        .mlimg()
        .args(["snippet", "compose"])
        .current_dir(&alone)
        .output()
        .expect("run");
    assert_eq!(o.status.code(), Some(1), "{}", render(&o));
    assert!(stdout_err(&o).contains("--image"), "{}", render(&o));
}
