//! `mlimg sbom` and `mlimg provenance`: print a document attached to a pushed image.

use std::io::Write as _;

use anyhow::{Context as _, Result};
use clap::Args;

use mlimg::registry::{ClientOptions, Reference, RegistryClient};

/// Print the SBOM (`mlimg sbom`: SPDX 2.3, or CycloneDX 1.6 with --format cyclonedx) or the
/// in-toto provenance statement (`mlimg provenance`) that `mlimg build` attached to a pushed
/// image.
///
/// The document is found through the OCI referrers tag schema (`sha256-<hex of the image
/// manifest>` → an index of referrers), so it works on registries without the referrers API;
/// its bytes are checked against their digest and printed as stored. For a multi-platform
/// image, this machine's platform or --platform.
///
/// Examples:
///   mlimg sbom registry.example/acme/app:1.0 | jq '.packages[].name'
///   mlimg sbom registry.example/acme/app:1.0 --format cyclonedx | jq '.components[].name'
///   mlimg provenance registry.example/acme/app:1.0 --platform linux/arm64
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct DocArgs {
    /// The image, e.g. registry.example/acme/app:1.0.
    #[arg(value_name = "REF")]
    pub reference: String,
    /// For an index: the platform whose image's document to print (default: this machine's).
    #[arg(long, value_name = "OS/ARCH")]
    pub platform: Option<String>,
    /// `mlimg sbom`: which SBOM to print.
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub format: Option<SbomFormat>,
    /// Reach this registry (host[:port]) over plain HTTP (loopback registries always are).
    #[arg(long, value_name = "HOST")]
    pub insecure_registry: Vec<String>,
    #[command(flatten)]
    pub network: super::NetworkArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SbomFormat {
    /// SPDX 2.3 JSON (the default).
    Spdx,
    /// CycloneDX 1.6 JSON.
    Cyclonedx,
}

pub fn run(args: DocArgs, artifact_type: &str) -> Result<()> {
    use mlimg::provenance::{CYCLONEDX_ARTIFACT_TYPE, SPDX_ARTIFACT_TYPE};
    let artifact_type = match (artifact_type, args.format) {
        (SPDX_ARTIFACT_TYPE, Some(SbomFormat::Cyclonedx)) => CYCLONEDX_ARTIFACT_TYPE,
        (SPDX_ARTIFACT_TYPE, _) | (_, None) => artifact_type,
        (_, Some(_)) => anyhow::bail!("--format applies to `mlimg sbom` only"),
    };
    let reference = Reference::parse(&args.reference)?;
    let platform = match &args.platform {
        Some(p) => {
            mlimg::platform::Platform::parse(p).with_context(|| format!("--platform {p}"))?
        }
        None => mlimg::pull_model::host_platform(),
    };
    let transport = args.network.transport_options(None);
    let client = RegistryClient::new(ClientOptions {
        insecure_registries: args.insecure_registry.clone(),
        transport,
        ..Default::default()
    })?;
    let doc =
        mlimg::provenance::remote::fetch_document(&client, &reference, &platform, artifact_type)?;
    let mut out = std::io::stdout().lock();
    out.write_all(&doc.bytes)?;
    if !doc.bytes.ends_with(b"\n") {
        out.write_all(b"\n")?;
    }
    eprintln!("{artifact_type} {} of {}", doc.referrer, doc.subject);
    Ok(())
}
