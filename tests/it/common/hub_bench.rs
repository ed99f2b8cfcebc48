//! Benchmark driver for `scripts/bench-hub-parallel` (issue 14 item 6): a build that fetches
//! `MLIMG_BENCH_FILES` LFS files of `MLIMG_BENCH_FILE_MIB` MiB each (default 8 × 128 MiB,
//! random bytes) from the stand-in Hub, against `curl` one process per file in parallel on the
//! same server, interleaved `MLIMG_BENCH_RUNS` times (default 3). Prints one `BENCH {json}` line
//! per timed command; the script turns them into a table.
//!
//! Timed per run, each after a `sync` (so the previous command's writeback is not counted):
//! - `mlimg-cold`: `mlimg build` with empty caches (Hub downloads, then the layer is hashed);
//! - `mlimg-hub-warm`: the same build with the Hub cache kept and an empty mlimg cache: every
//!   step but the downloads (so `mlimg-cold − mlimg-hub-warm` is the download phase);
//! - `curl-parallel`: one `curl -L` per file, all started at once, into files on the same disk;
//! - `curl-one`: one `curl -L` of one file: what one connection to the stand-in can carry.
//!
//! `MLIMG_BENCH_BIN` picks the mlimg binary (default: the one cargo built with the tests), so a
//! debug test binary can drive a release mlimg.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use super::hub::{Hub, HubFileData};
use super::{TestContext, run_ok};

const REPO: &str = "bench/parallel";

fn env_usize(k: &str, default: usize) -> usize {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `len` pseudo-random bytes (xorshift64*), different per `seed`: incompressible, fast to make.
fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v = vec![0u8; len];
    for c in v.chunks_mut(8) {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        let w = x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes();
        c.copy_from_slice(&w[..c.len()]);
    }
    v
}

fn sync() {
    let _ = Command::new("sync").status();
}

fn emit(tool: &str, run: usize, secs: f64, bytes: u64) {
    println!(
        "BENCH {}",
        serde_json::json!({ "tool": tool, "run": run, "seconds": secs, "bytes": bytes })
    );
}

fn curl_files(endpoint: &str, names: &[String], dir: &Path) -> f64 {
    std::fs::create_dir_all(dir).expect("mkdir");
    let t = Instant::now();
    let children: Vec<_> = names
        .iter()
        .map(|n| {
            Command::new("curl")
                .args(["-fsSL", "-o"])
                .arg(dir.join(n))
                .arg(format!("{endpoint}/{REPO}/resolve/main/{n}"))
                .stdout(Stdio::null())
                .spawn()
                .expect("curl")
        })
        .collect();
    for mut c in children {
        assert!(c.wait().expect("wait curl").success(), "curl failed");
    }
    t.elapsed().as_secs_f64()
}

#[test]
#[ignore = "benchmark; run through scripts/bench-hub-parallel"]
fn bench_hub_parallel_downloads() {
    let n = env_usize("MLIMG_BENCH_FILES", 8);
    let mib = env_usize("MLIMG_BENCH_FILE_MIB", 128);
    let runs = env_usize("MLIMG_BENCH_RUNS", 3);
    let bin = std::env::var_os("MLIMG_BENCH_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_mlimg")));

    let hub = Hub::start(REPO);
    let mut files = BTreeMap::new();
    let mut names = Vec::new();
    for i in 0..n {
        let name = format!("shard-{i:02}.bin");
        files.insert(
            name.clone(),
            HubFileData::new(random_bytes(mib << 20, i as u64 + 1), true),
        );
        names.push(name);
    }
    let total = (n * (mib << 20)) as u64;
    let commit = hub.add_commit(files);
    hub.set_branch("main", &commit);

    let cx = TestContext::new();
    let spec = cx.path().join("mlimg.toml");
    std::fs::write(
        &spec,
        format!(
            "[image]\nbase = \"scratch\"\nplatforms = [\"linux/amd64\"]\n\n\
             [[weights]]\nname = \"shards\"\nsource = \"hf://{REPO}\"\ndest = \"/models/shards\"\n\n\
             [config]\nentrypoint = [\"/bin/true\"]\n"
        ),
    )
    .expect("write spec");
    let build = |cache: &Path, hf: &Path| -> (f64, u64) {
        let mut c = Command::new(&bin);
        c.args(["build", "--json", "--no-sbom", "--no-provenance", "-f"])
            .arg(&spec)
            .env("MLIMG_CACHE_DIR", cache)
            .env("HF_ENDPOINT", hub.endpoint())
            .env("HF_HOME", hf)
            .env("HF_HUB_CACHE", hf.join("hub"))
            .env_remove("HF_TOKEN")
            .env_remove("HF_TOKEN_PATH")
            .env_remove("HUGGINGFACE_HUB_CACHE")
            .env_remove("MLIMG_CACHE_KEY")
            .env_remove("SOURCE_DATE_EPOCH");
        let t = Instant::now();
        let out = run_ok(&mut c);
        let secs = t.elapsed().as_secs_f64();
        let r: serde_json::Value = serde_json::from_slice(&out.stdout).expect("--json report");
        (secs, r["hub_bytes_downloaded"].as_u64().expect("hub bytes"))
    };

    for run in 1..=runs {
        let dir = cx.path().join(format!("run{run}"));
        sync();
        let (secs, bytes) = build(&dir.join("cache"), &dir.join("hf"));
        assert_eq!(bytes, total, "the cold build downloads every file once");
        emit("mlimg-cold", run, secs, bytes);

        sync();
        let (secs, bytes) = build(&dir.join("cache2"), &dir.join("hf"));
        assert_eq!(bytes, 0, "the Hub cache serves every file");
        emit("mlimg-hub-warm", run, secs, 0);

        sync();
        let secs = curl_files(&hub.endpoint(), &names, &dir.join("curl"));
        for name in &names {
            let len = std::fs::metadata(dir.join("curl").join(name))
                .expect("curl output")
                .len();
            assert_eq!(len, (mib << 20) as u64, "{name}");
        }
        emit("curl-parallel", run, secs, total);

        sync();
        let secs = curl_files(&hub.endpoint(), &names[..1], &dir.join("curl1"));
        emit("curl-one", run, secs, (mib << 20) as u64);
        std::fs::remove_dir_all(&dir).expect("clean up the run");
    }
}
