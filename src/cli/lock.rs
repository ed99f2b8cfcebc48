//! `mlimg lock`.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use mlimg::lock::{self, Lockfile};
use mlimg::progress::Progress;
use mlimg::resolve::{self, ResolveOptions};
use mlimg::sources::hf::HubOptions;
use mlimg::spec::BaseSpec;

/// Resolve the spec's floating inputs and write them to the lock file next to it.
///
/// Pins the base image to its digests, every hf:// weights entry to a commit (with each
/// file's size and sha256), and every wheel set to the wheel chosen per package and platform
/// (file name, URL, sha256). `mlimg build` then builds exactly that; `mlimg build --locked`
/// fails when the spec no longer matches the lock and asks no index, Hub or registry tag
/// anything. Run it again to move to newer revisions.
#[derive(Debug, Args)]
#[command(
    verbatim_doc_comment,
    after_help = "Examples:\n  mlimg lock                      # writes mlimg.lock next to mlimg.toml\n  mlimg lock -f specs/x.toml      # writes specs/x.lock"
)]
pub struct LockArgs {
    /// The spec file.
    #[arg(
        short = 'f',
        long = "file",
        default_value = "mlimg.toml",
        value_name = "FILE"
    )]
    pub file: PathBuf,
    /// The cache folder (read only here: base layers already there are not downloaded to
    /// detect the target Python).
    #[arg(long, env = "MLIMG_CACHE_DIR", value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Let local sources resolve outside the spec's folder (see `mlimg build --help`).
    #[arg(long)]
    pub allow_outside_context: bool,
    #[command(flatten)]
    pub network: super::NetworkArgs,
}

struct Lines;
impl Progress for Lines {
    fn message(&self, msg: &str) {
        eprintln!("{msg}");
    }
}

pub fn run(args: LockArgs) -> Result<()> {
    let spec = mlimg::spec::Spec::load_with(
        &args.file,
        &mlimg::spec::LoadOptions {
            allow_outside_context: args.allow_outside_context,
        },
    )?;
    // Retries are printed as they happen (one line each, with cause and wait).
    let transport = args.network.transport_options(Some(std::sync::Arc::new(
        |e: &mlimg::transport::RetryEvent| eprintln!("{e}"),
    )));
    let hub = HubOptions {
        transport: transport.clone(),
        ..HubOptions::from_env(|k| std::env::var(k).ok())
    };
    let path = lock::lock_path(&args.file);
    let old = Lockfile::load(&path)?;
    let client = match spec.image.base {
        BaseSpec::Registry(_) => Some(mlimg::registry::RegistryClient::new(
            mlimg::registry::ClientOptions {
                transport,
                ..Default::default()
            },
        )?),
        _ => None,
    };
    let cache_dir = match args.cache_dir {
        Some(d) => d,
        None => mlimg::cache::Cache::default_root(None)?,
    };
    let opts = ResolveOptions {
        platforms: spec.image.platforms.clone(),
        locked: false,
        read_only: false,
        hub,
        pip_index_urls: super::build::pip_index_urls(),
        pip_find_links: super::build::pip_find_links(),
        cache_dir,
    };
    let new = resolve::resolve(&spec, None, client.as_ref(), &opts, &Lines)?.to_lock(&spec);
    for w in &new.weights {
        let before = old
            .as_ref()
            .and_then(|o| o.weights(&w.name))
            .map(|o| o.commit.as_str());
        let what = match before {
            Some(c) if c == w.commit => "unchanged".to_string(),
            Some(c) => format!("was {}", &c[..12.min(c.len())]),
            None => "new".to_string(),
        };
        eprintln!(
            "weights {}: hf://{}@{} → {} ({} files, {what})",
            w.name,
            w.repo,
            w.revision,
            w.commit,
            w.files.len()
        );
    }
    if let Some(b) = &new.base {
        for p in &b.platforms {
            eprintln!("base {} {}: {}", b.reference, p.platform, p.digest);
        }
    }
    for d in &new.deps {
        eprintln!(
            "deps {} {}: {} wheels for {}",
            d.name,
            d.platform,
            d.wheels.len(),
            d.python
        );
    }
    for s in &new.system {
        let size: u64 = s.packages.iter().map(|p| p.size).sum();
        eprintln!(
            "system {}: {} Debian packages ({}, {:.1} MiB of .debs)",
            s.platform,
            s.packages.len(),
            s.architecture,
            size as f64 / (1u64 << 20) as f64
        );
    }
    if old.as_ref() == Some(&new) {
        eprintln!("{} is up to date", path.display());
    } else {
        new.save(&path)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}
