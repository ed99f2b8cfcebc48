//! `mlimg lock`.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use mlimg::lock::{self, Lockfile};
use mlimg::sources::hf::{HubEvent, HubOptions};

/// Resolve the spec's floating inputs and write them to the lock file next to it.
///
/// Pins every hf:// weights entry to a commit (with each file's size and sha256) and the base
/// image to its digests. `mlimg build` then builds exactly that; `mlimg build --locked` fails
/// when the spec no longer matches the lock. Run it again to move to newer revisions.
///
/// Examples:
///   mlimg lock                      # writes mlimg.lock next to mlimg.toml
///   mlimg lock -f specs/x.toml      # writes specs/x.lock
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct LockArgs {
    /// The spec file.
    #[arg(
        short = 'f',
        long = "file",
        default_value = "mlimg.toml",
        value_name = "FILE"
    )]
    pub file: PathBuf,
    #[command(flatten)]
    pub network: super::NetworkArgs,
}

pub fn run(args: LockArgs) -> Result<()> {
    let spec = mlimg::spec::Spec::load(&args.file)?;
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
    let progress = |e: HubEvent| {
        if let HubEvent::Start { path, size, .. } = e {
            eprintln!("downloading {path} ({size} bytes) to hash it");
        }
    };
    let registry = mlimg::registry::ClientOptions {
        transport,
        ..Default::default()
    };
    let new = lock::create(&spec, &hub, &registry, &progress)?;
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
    if old.as_ref() == Some(&new) {
        eprintln!("{} is up to date", path.display());
    } else {
        new.save(&path)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}
