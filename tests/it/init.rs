//! `mlimg init` (issue 13, item 3): a folder scan and Dockerfile translations — the example in
//! docs/guide.md and six realistic ML Dockerfiles. Every written spec must load with mlimg's
//! own spec parser, and the untranslated instructions are listed.

use std::path::Path;
use std::process::Output;

use crate::common::snapshot::{self, render};
use crate::common::{TestContext, repo_root};

/// Writes `files` (path → content; a path ending in `/` is a folder) under `dir`.
fn files(dir: &Path, files: &[(&str, &str)]) {
    for (p, content) in files {
        let path = dir.join(p);
        if p.ends_with('/') {
            std::fs::create_dir_all(&path).expect("mkdir");
            continue;
        }
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(&path, content).expect("write");
    }
}

fn init(cx: &TestContext, dir: &Path, args: &[&str]) -> Output {
    cx.mlimg()
        .arg("init")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run mlimg init")
}

/// The spec written in `dir`: it loads with mlimg's spec parser; returned as TOML.
fn written(dir: &Path) -> toml::Table {
    let path = dir.join("mlimg.toml");
    let text = std::fs::read_to_string(&path).expect("mlimg.toml written");
    if let Err(e) = mlimg::spec::Spec::load(&path) {
        panic!("the written spec does not load: {e}\n{text}");
    }
    text.parse().expect("TOML")
}

fn s<'a>(t: &'a toml::Table, path: &[&str]) -> &'a toml::Value {
    let mut v = t.get(path[0]).unwrap_or_else(|| panic!("no {}", path[0]));
    for k in &path[1..] {
        v = match k.parse::<usize>() {
            Ok(i) => v.get(i),
            Err(_) => v.get(*k),
        }
        .unwrap_or_else(|| panic!("no {path:?} in {t}"));
    }
    v
}

fn untranslated(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

const WEIGHTS: &str = "not really weights";

#[test]
fn a_project_folder_gets_deps_weights_app_and_a_fastapi_entrypoint() {
    let cx = TestContext::new();
    let dir = cx.path().join("sentiment-api");
    files(
        &dir,
        &[
            ("requirements.txt", "fastapi==0.110.0 --hash=sha256:00\n"),
            ("requirements-dev.txt", "pytest==8.0.0\n"),
            ("models/sst2/model.safetensors", WEIGHTS),
            ("models/sst2/config.json", "{}"),
            ("app/__init__.py", ""),
            (
                "app/main.py",
                "from fastapi import FastAPI\n\napi = FastAPI()\n\n@api.get(\"/health\")\ndef health():\n    return {}\n",
            ),
            (".dockerignore", "tests/\n"),
            (".python-version", "3.12.1\n"),
        ],
    );
    let out = init(&cx, &dir, &[]);
    assert!(out.status.success(), "{}", render(&out));
    let t = written(&dir);
    assert_eq!(s(&t, &["image", "base"]).as_str(), Some("python:3.12-slim"));
    assert_eq!(
        s(&t, &["deps", "0", "requirements"]).as_str(),
        Some("requirements.txt")
    );
    assert_eq!(
        t["deps"].as_array().map(Vec::len),
        Some(1),
        "dev requirements left out"
    );
    assert_eq!(
        s(&t, &["weights", "0", "source"]).as_str(),
        Some("models/sst2")
    );
    assert_eq!(
        s(&t, &["weights", "0", "dest"]).as_str(),
        Some("/models/sst2")
    );
    assert_eq!(s(&t, &["app", "src"]).as_str(), Some("."));
    assert_eq!(
        s(&t, &["config", "entrypoint", "3"]).as_str(),
        Some("app.main:api")
    );
    assert_eq!(s(&t, &["config", "ports", "0"]).as_str(), Some("8000/tcp"));
    assert_eq!(
        s(&t, &["config", "env", "MODEL_PATH"]).as_str(),
        Some("${weights.sst2.dest}")
    );
    assert!(
        s(&t, &["config", "healthcheck", "test", "3"])
            .as_str()
            .is_some_and(|c| c.contains("localhost:8000/health"))
    );
    let text = std::fs::read_to_string(dir.join("mlimg.toml")).expect("read");
    let out = snapshot_output(&out, &text);
    snapshot::assert_cli_snapshot!("init_of_a_project_folder", &cx, &out);

    // never replaces: a second run fails and leaves the file alone
    let again = init(&cx, &dir, &[]);
    assert_eq!(again.status.code(), Some(1), "{}", render(&again));
    assert!(
        untranslated(&again).contains("already exists"),
        "{}",
        render(&again)
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("mlimg.toml")).expect("read"),
        text
    );
    // --stdout writes nothing
    let printed = init(&cx, &dir, &["--stdout"]);
    assert!(printed.status.success());
    assert_eq!(String::from_utf8_lossy(&printed.stdout), text);
}

#[test]
fn a_flask_app_py_and_top_level_weights() {
    let cx = TestContext::new();
    let dir = cx.path().join("p");
    files(
        &dir,
        &[
            (
                "pylock.toml",
                "lock-version = \"1.0\"\ncreated-by = \"x\"\n",
            ),
            ("requirements.txt", "flask==3.0.0\n"),
            ("app.py", "from flask import Flask\napp = Flask(__name__)\n"),
            ("model.pkl", WEIGHTS),
            ("checkpoints/v1/weights.pt", WEIGHTS),
            ("checkpoints/v1/extra/more.bin", WEIGHTS),
            (".venv/lib/torch.bin", WEIGHTS),
        ],
    );
    let out = init(&cx, &dir, &[]);
    assert!(out.status.success(), "{}", render(&out));
    let t = written(&dir);
    assert_eq!(
        s(&t, &["deps", "0", "pylock"]).as_str(),
        Some("pylock.toml")
    );
    assert_eq!(t["deps"].as_array().map(Vec::len), Some(1));
    let weights = t["weights"].as_array().expect("weights");
    assert_eq!(
        weights.len(),
        1,
        "one entry for checkpoints/v1, none for .venv: {t}"
    );
    assert_eq!(
        s(&t, &["weights", "0", "source"]).as_str(),
        Some("checkpoints/v1")
    );
    assert_eq!(
        s(&t, &["config", "entrypoint", "4"]).as_str(),
        Some("app:app")
    );
    assert!(untranslated(&out).contains("model.pkl"), "{}", render(&out));
}

/// A project's context files for the Dockerfile tests: code, requirements, weights.
fn context(dir: &Path) {
    files(
        dir,
        &[
            ("requirements.txt", "fastapi==0.110.0\n"),
            ("requirements-serve.txt", "onnxruntime==1.17.0\n"),
            ("models/sst2/model.safetensors", WEIGHTS),
            ("models/sst2/config.json", "{}"),
            ("checkpoints/best.pt", WEIGHTS),
            ("model_repository/resnet50/1/model.onnx", WEIGHTS),
            (
                "app/main.py",
                "from fastapi import FastAPI\napp = FastAPI()\n",
            ),
            ("src/serve.py", "print('hi')\n"),
            ("src/__init__.py", ""),
            ("server.py", "print('serve')\n"),
            ("app.py", "import gradio\n"),
            ("config.yaml", "a: 1\n"),
        ],
    );
}

/// Translates `dockerfile` in a fresh context; checks the spec loads and returns it with the
/// CLI output.
fn translate(cx: &TestContext, name: &str, dockerfile: &str) -> (toml::Table, Output) {
    let dir = cx.path().join(name);
    context(&dir);
    std::fs::write(dir.join("Dockerfile"), dockerfile).expect("write");
    let out = init(cx, &dir, &["--from-dockerfile", "Dockerfile"]);
    assert!(out.status.success(), "{}", render(&out));
    let t = written(&dir);
    let text = std::fs::read_to_string(dir.join("mlimg.toml")).expect("read");
    let snap = snapshot_output(&out, &text);
    snapshot::assert_cli_snapshot!(format!("init_from_dockerfile_{name}"), cx, &snap);
    (t, out)
}

/// The output with the written file appended, for one snapshot.
fn snapshot_output(out: &Output, text: &str) -> Output {
    let mut o = out.clone();
    o.stdout = format!("--- mlimg.toml\n{text}").into_bytes();
    o
}

#[test]
fn the_dockerfile_in_the_guide() {
    let guide = std::fs::read_to_string(repo_root().join("docs/guide.md")).expect("guide");
    // the guide's first whole Dockerfile (its other dockerfile blocks are single lines)
    let block = guide
        .split("```dockerfile\n")
        .skip(1)
        .filter_map(|b| b.split("```").next())
        .find(|b| b.starts_with("FROM") || b.starts_with("ARG"))
        .expect("a dockerfile block in docs/guide.md");
    let cx = TestContext::new();
    let (t, out) = translate(&cx, "guide", block);
    assert_eq!(s(&t, &["image", "base"]).as_str(), Some("python:3.11-slim"));
    assert_eq!(
        s(&t, &["deps", "0", "requirements"]).as_str(),
        Some("requirements.txt")
    );
    assert_eq!(
        s(&t, &["weights", "0", "dest"]).as_str(),
        Some("/models/sst2")
    );
    assert_eq!(s(&t, &["app", "src"]).as_str(), Some("app"));
    assert_eq!(s(&t, &["app", "dest"]).as_str(), Some("/app"));
    assert_eq!(s(&t, &["config", "user"]).as_str(), Some("1000:1000"));
    assert_eq!(
        s(&t, &["config", "healthcheck", "test", "0"]).as_str(),
        Some("CMD-SHELL")
    );
    // `apt-get install curl` becomes [system]; update and the lists' removal need nothing
    assert_eq!(s(&t, &["system", "packages", "0"]).as_str(), Some("curl"));
    let err = untranslated(&out);
    assert!(!err.contains("apt-get"), "{err}");
}

#[test]
fn fastapi_with_apt_useradd_and_a_hub_download() {
    let cx = TestContext::new();
    let (t, out) = translate(
        &cx,
        "fastapi",
        r#"# syntax=docker/dockerfile:1
FROM python:3.11-slim
ARG PORT=8000
ENV PYTHONUNBUFFERED=1 \
    MODEL_DIR=/models/sst2
WORKDIR /app
RUN apt-get update && apt-get install -y --no-install-recommends curl \
    && rm -rf /var/lib/apt/lists/*
COPY requirements.txt .
RUN pip install --no-cache-dir --upgrade pip && pip install --no-cache-dir -r requirements.txt
COPY models/sst2 /models/sst2
COPY app/ ./app/
RUN useradd -m appuser
USER appuser
EXPOSE ${PORT}
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 CMD curl -f http://localhost:${PORT}/health || exit 1
LABEL org.opencontainers.image.source="https://github.com/acme/api" team=ml
ADD https://huggingface.co/distilbert/distilbert-base-uncased/resolve/main/vocab.txt /models/vocab.txt
CMD ["uvicorn", "app.main:app", "--host", "0.0.0.0", "--port", "8000"]
"#,
    );
    assert_eq!(s(&t, &["config", "ports", "0"]).as_str(), Some("8000"));
    assert_eq!(s(&t, &["app", "dest"]).as_str(), Some("/app/app"));
    assert_eq!(s(&t, &["config", "labels", "team"]).as_str(), Some("ml"));
    assert_eq!(
        s(&t, &["config", "healthcheck", "start_period"]).as_str(),
        Some("60s")
    );
    let err = untranslated(&out);
    assert!(err.contains("not translated (2)"), "{err}");
    assert_eq!(s(&t, &["system", "packages", "0"]).as_str(), Some("curl"));
    assert!(
        err.contains("hf://distilbert/distilbert-base-uncased"),
        "{err}"
    );
    assert!(err.contains("useradd"), "{err}");
}

#[test]
fn multi_stage_venv_builder() {
    let cx = TestContext::new();
    let (t, out) = translate(
        &cx,
        "venv",
        r#"FROM python:3.11-slim AS builder
WORKDIR /build
RUN apt-get update && apt-get install -y build-essential
COPY requirements.txt .
RUN python -m venv /opt/venv && /opt/venv/bin/pip install --no-cache-dir -r requirements.txt

FROM python:3.11-slim AS test
RUN echo unused

FROM python:3.11-slim
COPY --from=builder /opt/venv /opt/venv
ENV PATH="/opt/venv/bin:$PATH"
WORKDIR /srv
COPY src/ /srv/src/
COPY checkpoints/ /srv/checkpoints/
EXPOSE 8080
ENTRYPOINT ["python", "-m", "src.serve"]
"#,
    );
    assert_eq!(
        s(&t, &["deps", "0", "requirements"]).as_str(),
        Some("requirements.txt")
    );
    assert_eq!(
        s(&t, &["weights", "0", "source"]).as_str(),
        Some("checkpoints")
    );
    assert_eq!(
        s(&t, &["weights", "0", "dest"]).as_str(),
        Some("/srv/checkpoints")
    );
    assert_eq!(s(&t, &["app", "src"]).as_str(), Some("src"));
    assert!(
        s(&t, &["config", "env", "PATH"])
            .as_str()
            .is_some_and(|p| p.starts_with("/opt/venv/bin:/usr/local/sbin")),
        "{t}"
    );
    let err = untranslated(&out);
    // the builder's apt-get is listed; the unused stage is noted in the file
    assert!(err.contains("(stage builder) RUN apt-get"), "{err}");
    let text = std::fs::read_to_string(cx.path().join("venv/mlimg.toml")).expect("read");
    assert!(text.contains("stage test is not used"), "{text}");
}

#[test]
fn cuda_torch_image_with_shell_form_cmd() {
    let cx = TestContext::new();
    let (t, out) = translate(
        &cx,
        "cuda",
        r#"ARG CUDA=12.1.1
FROM --platform=linux/amd64 nvidia/cuda:${CUDA}-runtime-ubuntu22.04
ENV DEBIAN_FRONTEND=noninteractive NVIDIA_VISIBLE_DEVICES=all
RUN apt-get update && apt-get install -y python3 python3-pip && rm -rf /var/lib/apt/lists/*
RUN pip3 install --no-cache-dir torch==2.2.0 --index-url https://download.pytorch.org/whl/cu121
COPY requirements.txt /tmp/requirements.txt
RUN pip3 install -r /tmp/requirements.txt
COPY . /workspace
WORKDIR /workspace
CMD python3 server.py --port 9000
"#,
    );
    assert_eq!(
        s(&t, &["image", "base"]).as_str(),
        Some("nvidia/cuda:12.1.1-runtime-ubuntu22.04")
    );
    assert_eq!(
        s(&t, &["image", "platforms", "0"]).as_str(),
        Some("linux/amd64")
    );
    assert_eq!(
        s(&t, &["deps", "0", "requirements"]).as_str(),
        Some("requirements.txt")
    );
    assert_eq!(s(&t, &["app", "src"]).as_str(), Some("."));
    assert_eq!(s(&t, &["app", "dest"]).as_str(), Some("/workspace"));
    // weights copied with the code get layers of their own at the same paths
    let weights: Vec<(String, String)> = t["weights"]
        .as_array()
        .expect("weights")
        .iter()
        .map(|w| {
            (
                w["source"].as_str().unwrap_or_default().into(),
                w["dest"].as_str().unwrap_or_default().into(),
            )
        })
        .collect();
    assert!(
        weights.contains(&("models/sst2".into(), "/workspace/models/sst2".into())),
        "{weights:?}"
    );
    assert_eq!(
        s(&t, &["weights", "1", "name"]).as_str(),
        Some("resnet50-1")
    );
    assert_eq!(
        s(&t, &["config", "cmd", "2"]).as_str(),
        Some("python3 server.py --port 9000")
    );
    let err = untranslated(&out);
    assert!(
        err.contains("torch==2.2.0") && err.contains("requirements file"),
        "{err}"
    );
}

#[test]
fn hugging_face_space_with_chown_and_snapshot_download() {
    let cx = TestContext::new();
    let (t, out) = translate(
        &cx,
        "space",
        r#"FROM python:3.10
RUN useradd -m -u 1000 user
USER user
ENV HOME=/home/user \
    PATH=/home/user/.local/bin:$PATH
WORKDIR $HOME/app
COPY --chown=user requirements.txt requirements.txt
RUN pip install --no-cache-dir --upgrade -r requirements.txt
COPY --chown=user app.py config.yaml $HOME/app/
RUN python -c "from huggingface_hub import snapshot_download; snapshot_download('org/model')"
EXPOSE 7860
CMD ["python", "app.py"]
"#,
    );
    assert_eq!(
        s(&t, &["config", "workdir"]).as_str(),
        Some("/home/user/app")
    );
    assert_eq!(s(&t, &["config", "user"]).as_str(), Some("user"));
    assert_eq!(
        s(&t, &["deps", "0", "requirements"]).as_str(),
        Some("requirements.txt")
    );
    assert_eq!(s(&t, &["app", "src"]).as_str(), Some("."));
    assert_eq!(s(&t, &["app", "dest"]).as_str(), Some("/home/user/app"));
    let err = untranslated(&out);
    assert!(err.contains("hf://ORG/REPO"), "{err}");
    let text = std::fs::read_to_string(cx.path().join("space/mlimg.toml")).expect("read");
    assert!(text.contains("--chown/--chmod dropped"), "{text}");
}

#[test]
fn onnx_server_with_args_volumes_and_an_archive() {
    let cx = TestContext::new();
    let (t, out) = translate(
        &cx,
        "onnx",
        r#"FROM python:3.11-slim
ARG MODEL_NAME=resnet50
LABEL maintainer="ml-platform@acme.io"
COPY model_repository/${MODEL_NAME}/ /models/${MODEL_NAME}/
COPY requirements-serve.txt /tmp/
RUN pip install --no-cache-dir -r /tmp/requirements-serve.txt
WORKDIR /opt/server
COPY server.py config.yaml ./
ADD labels.tar.gz /opt/labels/
VOLUME ["/cache"]
STOPSIGNAL SIGINT
ENV MODEL_PATH=/models/${MODEL_NAME}
ENTRYPOINT ["python"]
CMD ["server.py"]
"#,
    );
    assert_eq!(s(&t, &["weights", "0", "name"]).as_str(), Some("resnet50"));
    assert_eq!(
        s(&t, &["weights", "0", "dest"]).as_str(),
        Some("/models/resnet50")
    );
    assert_eq!(s(&t, &["deps", "0", "name"]).as_str(), Some("serve"));
    assert_eq!(
        s(&t, &["config", "env", "MODEL_PATH"]).as_str(),
        Some("/models/resnet50")
    );
    assert_eq!(s(&t, &["config", "volumes", "0"]).as_str(), Some("/cache"));
    assert_eq!(s(&t, &["config", "stop_signal"]).as_str(), Some("SIGINT"));
    assert_eq!(
        s(&t, &["config", "entrypoint", "0"]).as_str(),
        Some("python")
    );
    assert_eq!(s(&t, &["config", "cmd", "0"]).as_str(), Some("server.py"));
    assert_eq!(s(&t, &["app", "src"]).as_str(), Some("."));
    assert_eq!(s(&t, &["app", "dest"]).as_str(), Some("/opt/server"));
    let err = untranslated(&out);
    assert!(
        err.contains("ADD labels.tar.gz") && err.contains("unpacks archives"),
        "{err}"
    );
}

#[test]
fn flask_gunicorn_with_inline_packages_and_a_foreign_image() {
    let cx = TestContext::new();
    let (t, out) = translate(
        &cx,
        "flask",
        r#"FROM python:3.9-slim-bookworm
MAINTAINER Jane Doe <jane@acme.io>
WORKDIR /app
COPY requirements.txt ./
RUN pip install -r requirements.txt && pip install gunicorn==21.2.0
COPY --from=ghcr.io/acme/tokenizers:1.0 /tokenizers /app/tokenizers
COPY app/ .
EXPOSE 5000/tcp
USER 10001
CMD gunicorn -w 2 -b 0.0.0.0:5000 main:app
"#,
    );
    assert_eq!(
        s(
            &t,
            &["config", "labels", "org.opencontainers.image.authors"]
        )
        .as_str(),
        Some("Jane Doe <jane@acme.io>")
    );
    assert_eq!(s(&t, &["app", "src"]).as_str(), Some("app"));
    assert_eq!(s(&t, &["app", "dest"]).as_str(), Some("/app"));
    assert_eq!(s(&t, &["config", "ports", "0"]).as_str(), Some("5000/tcp"));
    let err = untranslated(&out);
    assert!(err.contains("gunicorn==21.2.0"), "{err}");
    assert!(
        err.contains("files from the image ghcr.io/acme/tokenizers:1.0"),
        "{err}"
    );
}

#[test]
fn a_broken_dockerfile_names_file_and_line() {
    let cx = TestContext::new();
    let dir = cx.path().join("bad");
    files(&dir, &[("Dockerfile", "FROM python:3.11\nFROBNICATE x\n")]);
    let out = init(&cx, &dir, &["--from-dockerfile", "Dockerfile"]);
    assert_eq!(out.status.code(), Some(1), "{}", render(&out));
    assert!(
        untranslated(&out).contains("Dockerfile:2"),
        "{}",
        render(&out)
    );
    assert!(!dir.join("mlimg.toml").exists());
}
