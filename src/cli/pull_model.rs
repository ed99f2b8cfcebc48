//! `mlimg pull-model`.

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use clap::Args;

use mlimg::registry::{ClientOptions, Reference, RegistryClient};

/// Fetch a model's files from a registry into a folder, without Docker.
///
/// REF is a ModelPack artifact (what `[model]` with `formats = ["modelpack"]` pushes) or a
/// weights-only image (`formats = ["image"]`; for an index, this machine's platform or
/// --platform). Every layer is checked against its digest and unpacked with safe paths only
/// (no absolute paths, no `..`, no symlinks leading outside DIR); files appear in DIR only
/// once every layer is verified. DIR may exist, but must not hold the pulled top-level names.
#[derive(Debug, Args)]
#[command(
    verbatim_doc_comment,
    after_help = "Examples:\n  mlimg pull-model registry.example/acme/sst2-model:1.0 /models\n  mlimg pull-model registry.example/acme/sst2-model:1.0-image ./weights --json"
)]
pub struct PullModelArgs {
    /// The artifact or image, e.g. registry.example/acme/sst2-model:1.0.
    #[arg(value_name = "REF")]
    pub reference: String,
    /// The folder to write the files under.
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
    /// For an index: the platform to take (default: this machine's).
    #[arg(long, value_name = "OS/ARCH")]
    pub platform: Option<String>,
    /// Reach this registry (host[:port]) over plain HTTP (loopback registries always are).
    #[arg(long, value_name = "HOST")]
    pub insecure_registry: Vec<String>,
    /// Print a JSON report on stdout.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub network: super::NetworkArgs,
}

pub fn run(args: PullModelArgs) -> Result<()> {
    let reference = Reference::parse(&args.reference)?;
    let platform = match &args.platform {
        Some(p) => {
            mlimg::platform::Platform::parse(p).with_context(|| format!("--platform {p}"))?
        }
        None => mlimg::pull_model::host_platform(),
    };
    args.network.transport_options(None);
    let client = RegistryClient::new(ClientOptions {
        insecure_registries: args.insecure_registry.clone(),
        ..Default::default()
    })?;
    let report = mlimg::pull_model::pull_model(&client, &reference, &args.dir, &platform)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for (f, size) in &report.files {
            eprintln!("{} ({size} bytes)", args.dir.join(f).display());
        }
        eprintln!(
            "pulled {} {} files from {reference}@{}",
            report.kind,
            report.files.len(),
            report.manifest_digest
        );
    }
    Ok(())
}
