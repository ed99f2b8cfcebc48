//! The command line: clap definitions only; each subcommand converts its flags into the
//! library's options and prints the report.

pub mod build;
pub mod lock;

use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use mlimg::transport::{RetryObserver, TransportOptions};

/// Build reproducible OCI images for ML services — no daemon, no Dockerfile, no root.
///
/// mlimg reads a declarative spec (mlimg.toml) naming a base image, dependency sets, model
/// weights, app code and runtime config, and writes one content-addressed layer per part:
/// changing the weights rebuilds only the weights layer, changing code only the app layer.
/// Same inputs give byte-identical digests on any machine.
#[derive(Debug, Parser)]
#[command(name = "mlimg", version, max_term_width = 100)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    Build(build::BuildArgs),
    Lock(lock::LockArgs),
}

/// Network flags shared by `build` and `lock`: they apply to every request (registry, Hugging
/// Face Hub, Python indexes).
#[derive(Debug, Args)]
pub struct NetworkArgs {
    /// Retries per request (and per blob upload or file download without progress) on 5xx,
    /// 429 (honouring Retry-After), timeouts and broken connections, with exponential backoff
    /// from 0.5 s up to 30 s. Each retry prints one line with its cause and wait. 0: fail at
    /// the first error.
    #[arg(long, default_value_t = 4, value_name = "N")]
    pub retries: u32,
    /// Network timeout in seconds: for connecting, for a server that sends nothing for this
    /// long, and for each small request (manifests, tokens, listings) as a whole. Large
    /// downloads and uploads may take longer as long as data keeps moving. [default: connect
    /// 30, idle 60, small requests 60]
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout: Option<u64>,
}

impl NetworkArgs {
    /// The options for every client; also made the process default (for the Python index
    /// client, which is not handed options).
    pub fn transport_options(&self, on_retry: Option<RetryObserver>) -> TransportOptions {
        let mut t = TransportOptions {
            retries: self.retries,
            on_retry,
            ..TransportOptions::default()
        };
        if let Some(s) = self.timeout {
            t = t.with_timeout(Duration::from_secs(s));
        }
        mlimg::transport::set_default_options(t.clone());
        t
    }
}
