//! `mlimg build`.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Mutex;

use anyhow::Result;
use clap::Args;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use mlimg::build::{BuildOptions, Outcome, Progress, build};
use mlimg::plan::LayerRole;

/// Build the image described by a spec.
///
/// Examples:
///   mlimg build --output oci:out/image                  # an OCI image layout folder
///   mlimg build --output docker-archive:image.tar      # then: docker load -i image.tar
///   mlimg build --dry-run                               # print the layer plan, write nothing
///   SOURCE_DATE_EPOCH=1700000000 mlimg build --json -o oci-archive:img.tar
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct BuildArgs {
    /// The spec file.
    #[arg(
        short = 'f',
        long = "file",
        default_value = "mlimg.toml",
        value_name = "FILE"
    )]
    pub file: PathBuf,
    /// Where to write the image: oci:DIR, oci-archive:FILE or docker-archive:FILE (repeatable).
    #[arg(short = 'o', long = "output", value_name = "TARGET")]
    pub output: Vec<String>,
    /// Print the layer plan (every entry: mode, image path, source) and exit without writing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print one JSON object with the digests and layers on stdout (progress stays on stderr).
    #[arg(long)]
    pub json: bool,
    /// Build only these platforms of the spec's [image].platforms (repeatable), e.g. linux/arm64.
    #[arg(long, value_name = "OS/ARCH")]
    pub platform: Vec<String>,
    /// The cache folder (blobs and layer selectors).
    #[arg(long, env = "MLIMG_CACHE_DIR", value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Fail if mlimg.lock is missing or does not match the spec (like `cargo --locked`).
    #[arg(long)]
    pub locked: bool,
    /// Threads writing layers (default: one per core).
    #[arg(short = 'j', long, default_value_t = 0)]
    pub jobs: usize,
}

pub fn run(args: BuildArgs) -> Result<()> {
    let cache_dir = match args.cache_dir {
        Some(d) => d,
        None => mlimg::cache::Cache::default_root(None)?,
    };
    let opts = BuildOptions {
        spec_path: args.file,
        outputs: args.output,
        dry_run: args.dry_run,
        platforms: args.platform,
        cache_dir,
        source_date_epoch: std::env::var("SOURCE_DATE_EPOCH").ok(),
        jobs: args.jobs,
        pip_index_urls: pip_index_urls(),
        locked: args.locked,
        hub: Some(mlimg::sources::hf::HubOptions::from_env(|k| {
            std::env::var(k).ok()
        })),
    };
    let progress = Bars::new();
    match build(&opts, &progress)? {
        Outcome::Plan(plan) => {
            if args.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({"plan": plan.to_string()}))?
                );
            } else {
                print!("{plan}");
            }
        }
        Outcome::Built(report) => {
            progress.clear();
            if args.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                for p in &report.platforms {
                    eprintln!("{}: manifest {}", p.platform, p.manifest_digest);
                    for l in &p.layers {
                        let how = if l.cached { "cached" } else { "built" };
                        eprintln!(
                            "  {:<24} {} {:>12} B  {how}",
                            l.role,
                            &l.digest[..19.min(l.digest.len())],
                            l.size
                        );
                    }
                }
                for o in &report.outputs {
                    eprintln!("wrote {}", o.target);
                }
                if report.outputs.is_empty() {
                    eprintln!(
                        "(no --output given: the layers are in the cache; add -o oci:DIR or -o docker-archive:FILE)"
                    );
                }
                println!("{}", report.manifest_digest);
            }
        }
    }
    Ok(())
}

/// `PIP_INDEX_URL` (default: PyPI), then the space-separated `PIP_EXTRA_INDEX_URL`, as pip reads them.
fn pip_index_urls() -> Vec<String> {
    let mut v = vec![
        std::env::var("PIP_INDEX_URL")
            .ok()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "https://pypi.org/simple".to_string()),
    ];
    if let Ok(extra) = std::env::var("PIP_EXTRA_INDEX_URL") {
        v.extend(extra.split_whitespace().map(str::to_string));
    }
    v
}

/// Progress on stderr: bars on a terminal, one line per layer otherwise.
struct Bars {
    multi: Option<MultiProgress>,
    bars: Mutex<Vec<(LayerRole, ProgressBar)>>,
}

impl Bars {
    fn new() -> Self {
        let multi = std::io::stderr().is_terminal().then(MultiProgress::new);
        Bars {
            multi,
            bars: Mutex::new(Vec::new()),
        }
    }
    fn clear(&self) {
        if let Ok(mut b) = self.bars.lock() {
            b.clear();
        }
        if let Some(m) = &self.multi {
            let _ = m.clear();
        }
    }
}

impl Progress for Bars {
    fn layer_start(&self, role: &LayerRole, bytes: u64) {
        match &self.multi {
            Some(m) => {
                let bar = m.add(ProgressBar::new(bytes));
                if let Ok(style) = ProgressStyle::with_template(
                    "{msg:<24} {bar:30} {bytes}/{total_bytes} {bytes_per_sec} {eta}",
                ) {
                    bar.set_style(style);
                }
                bar.set_message(role.to_string());
                if let Ok(mut b) = self.bars.lock() {
                    b.push((role.clone(), bar));
                }
            }
            None => eprintln!("writing layer {role} ({bytes} bytes)"),
        }
    }
    fn layer_bytes(&self, role: &LayerRole, done: u64) {
        if let Ok(b) = self.bars.lock()
            && let Some((_, bar)) = b.iter().find(|(r, _)| r == role)
        {
            bar.set_position(done);
        }
    }
    fn layer_done(&self, role: &LayerRole, cached: bool) {
        if self.multi.is_none() && cached {
            eprintln!("layer {role}: cached");
        }
        if let Ok(b) = self.bars.lock()
            && let Some((_, bar)) = b.iter().find(|(r, _)| r == role)
        {
            bar.finish();
        }
    }
    fn message(&self, msg: &str) {
        match &self.multi {
            Some(m) => {
                let _ = m.println(msg);
            }
            None => eprintln!("{msg}"),
        }
    }
}
