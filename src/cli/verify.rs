//! `mlimg verify`: check an image's cosign-format signatures with a public key.

use anyhow::{Context as _, Result};
use clap::Args;

use mlimg::provenance::sign::PublicKey;
use mlimg::registry::{ClientOptions, Reference, RegistryClient};

/// Verify the signatures `mlimg build --sign-key` (or `cosign sign --key`) attached to an
/// image.
///
/// REF is resolved to its manifest (or index) digest; the signatures are read from the tag
/// `sha256-<hex>.sig` (cosign's tag scheme). A signature counts when its payload names exactly
/// that digest and its ECDSA P-256 / SHA-256 signature over the payload verifies with --key.
/// Exit status 0 when at least one does, 1 otherwise (no signature, wrong key, a payload about
/// another digest, a tampered payload).
///
/// Examples:
///   mlimg verify registry.example/acme/app:1.0 --key cosign.pub
///   mlimg verify registry.example/acme/app@sha256:… --key key.pub --json
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct VerifyArgs {
    /// The image, e.g. registry.example/acme/app:1.0 (or @sha256:… for one platform manifest).
    #[arg(value_name = "REF")]
    pub reference: String,
    /// The public key: PEM SubjectPublicKeyInfo (`openssl pkey -in key.pem -pubout`, or a
    /// cosign.pub).
    #[arg(long, value_name = "PUB.pem")]
    pub key: std::path::PathBuf,
    /// Print what was verified as JSON.
    #[arg(long)]
    pub json: bool,
    /// Reach this registry (host[:port]) over plain HTTP (loopback registries always are).
    #[arg(long, value_name = "HOST")]
    pub insecure_registry: Vec<String>,
    #[command(flatten)]
    pub network: super::NetworkArgs,
}

pub fn run(args: VerifyArgs) -> Result<()> {
    let shown = args.key.display().to_string();
    let pem = std::fs::read_to_string(&args.key).with_context(|| format!("--key {shown}"))?;
    let key = PublicKey::from_pem(&pem, &shown)?;
    let reference = Reference::parse(&args.reference)?;
    let transport = args.network.transport_options(None);
    let client = RegistryClient::new(ClientOptions {
        insecure_registries: args.insecure_registry.clone(),
        transport,
        ..Default::default()
    })?;
    let v = mlimg::provenance::remote::verify_signatures(&client, &reference, &key, &shown)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!(
            "verified: {} ({}) is signed by {shown}",
            v.reference, v.digest
        );
        for s in &v.verified {
            println!(
                "  signature payload {} (docker-reference {}) in {}@{}",
                s.payload, s.docker_reference, v.tag, v.signature_manifest
            );
        }
        if v.others > 0 {
            println!(
                "  {} other signature(s) there do not verify with this key",
                v.others
            );
        }
    }
    Ok(())
}
