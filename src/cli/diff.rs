//! `mlimg diff A B`: which layers differ, and what a node holding A downloads to run B.

use anyhow::Result;
use clap::Args;

use super::inspect::{RegistryArgs, read, size};

/// Compare two images: which layers differ, and the bytes a node holding A pulls for B.
///
/// Which of B's layers a node that already holds A must download (by blob digest, as
/// container runtimes do), and how many bytes that is — e.g. what a weights-only update costs
/// each node of a fleet.
///
/// Both images are given like `mlimg inspect`'s IMAGE (REF, oci:DIR[:TAG], oci-archive:FILE,
/// docker-archive:FILE). bytes_to_pull counts B's layers whose digest A lacks, plus B's config
/// and manifest when they differ from A's; per platform of B, summed.
#[derive(Debug, Args)]
#[command(after_help = "Examples:
  mlimg diff registry.example/acme/app:1.0 registry.example/acme/app:1.1
  mlimg diff oci:old oci:new --json | jq .bytes_to_pull")]
pub struct DiffArgs {
    /// The image the node already holds.
    #[arg(value_name = "A")]
    pub a: String,
    /// The image the node is to run.
    #[arg(value_name = "B")]
    pub b: String,
    /// Print one JSON object: {"a", "b", "bytes_to_pull", "platforms": [{"platform",
    /// "identical", "layers_to_pull": [...], "layers_dropped": [...], "layers_shared",
    /// "bytes_to_pull", "bytes_total"}]}.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

pub fn run(args: DiffArgs) -> Result<()> {
    let a = read(&args.a, &args.registry)?;
    let b = read(&args.b, &args.registry)?;
    let d = mlimg::inspect::diff(&a, &b);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&d)?);
        return Ok(());
    }
    println!("A {}\nB {}", d.a, d.b);
    for p in &d.platforms {
        println!();
        if p.identical {
            println!("{}: identical, nothing to pull", p.platform);
            continue;
        }
        println!(
            "{}: {} of {} layers shared; pull {} of {} ({} bytes)",
            p.platform,
            p.layers_shared,
            p.layers_shared + p.layers_to_pull.len(),
            size(p.bytes_to_pull),
            size(p.bytes_total),
            p.bytes_to_pull
        );
        for l in &p.layers_to_pull {
            println!("  + {:16} {:>10}  {}", l.role, size(l.size), l.digest);
        }
        for l in &p.layers_dropped {
            println!("  - {:16} {:>10}  {}", l.role, size(l.size), l.digest);
        }
    }
    println!(
        "\nbytes to pull: {} ({})",
        d.bytes_to_pull,
        size(d.bytes_to_pull)
    );
    Ok(())
}
