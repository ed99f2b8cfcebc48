//! The command line: clap definitions only; each subcommand converts its flags into the
//! library's options and prints the report.

pub mod build;
pub mod lock;
pub mod pull_model;

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
#[command(
    name = "mlimg",
    version,
    max_term_width = 100,
    after_help = "Exit status: 0 on success, 1 when a build, source, registry or output fails, \
                  2 for a usage or spec error (fix the command line or mlimg.toml)."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    Build(build::BuildArgs),
    Lock(lock::LockArgs),
    PullModel(pull_model::PullModelArgs),
}

/// An error and its causes on one line, each cause once (a message that already quotes its
/// cause does not get it appended again), with control characters from servers or files
/// escaped so they cannot drive the terminal.
pub fn render(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = c.source();
    }
    escape(&out)
}

/// Control characters (terminal escape sequences among them) as `\u{..}`; newlines and tabs
/// stay.
pub fn escape(s: &str) -> String {
    if !s.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return s.to_string();
    }
    s.chars()
        .map(|c| {
            if c.is_control() && c != '\n' && c != '\t' {
                c.escape_unicode().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// The exit code for an error: 2 for usage and spec errors, 1 for everything else.
pub fn exit_code(e: &anyhow::Error) -> u8 {
    if let Some(b) = e.downcast_ref::<mlimg::pipeline::BuildError>() {
        return b.exit_code();
    }
    if e.downcast_ref::<mlimg::spec::SpecError>().is_some() {
        return 2;
    }
    1
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
