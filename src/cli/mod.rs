//! The command line: clap definitions only; each subcommand converts its flags into the
//! library's options and prints the report.

pub mod build;
pub mod lock;

use clap::{Parser, Subcommand};

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
