//! `mlimg snippet compose|kubernetes|docker-run`: a ready service definition for the image.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::{Args, ValueEnum};

use mlimg::snippet::Service;

use super::inspect::{RegistryArgs, read};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Kind {
    /// A Compose file (docker compose / docker-compose).
    Compose,
    /// A Kubernetes Deployment.
    Kubernetes,
    /// A `docker run` command line.
    DockerRun,
}

/// Print a ready service definition for the built image.
///
/// From the spec (image name and first tag, ports, healthcheck, [config] gpu, [model]'s
/// weights-only image) and, with --image, the image itself read back (its digest pins the
/// reference; its config wins). With --image and no spec, from the image alone (GPU when its
/// config sets NVIDIA_VISIBLE_DEVICES).
///
/// Compose: ports, healthcheck, GPU reservations (deploy.resources.reservations.devices).
/// Kubernetes: a Deployment with readiness/liveness probes from the healthcheck (an HTTP GET
/// when it fetches a localhost URL) and nvidia.com/gpu limits. --weights-volume: the weights
/// from [model]'s weights-only image — an image volume in Kubernetes, a read-only bind mount
/// of the folder `mlimg pull-model` fills for Compose and docker run.
#[derive(Debug, Args)]
#[command(after_help = "Examples:
  mlimg snippet compose > compose.yaml && docker compose up -d
  mlimg snippet kubernetes --image oci:out/image --weights-volume | kubectl apply -f -
  mlimg snippet docker-run --image registry.example/acme/app:1.0")]
pub struct SnippetArgs {
    /// What to print.
    #[arg(value_enum)]
    pub kind: Kind,
    /// The spec [default: mlimg.toml, when it exists].
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// The built image: REF, oci:DIR[:TAG], oci-archive:FILE or docker-archive:FILE.
    #[arg(long, value_name = "IMAGE")]
    pub image: Option<String>,
    /// Mount the weights from [model]'s weights-only image instead of using the image's copy.
    #[arg(long)]
    pub weights_volume: bool,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

pub fn run(args: SnippetArgs) -> Result<()> {
    let spec_path = match &args.file {
        Some(f) => Some(f.clone()),
        None => Some(PathBuf::from("mlimg.toml")).filter(|p| p.is_file()),
    };
    let spec = spec_path
        .as_deref()
        .map(mlimg::spec::Spec::load)
        .transpose()?;
    let inspected = args
        .image
        .as_deref()
        .map(|i| read(i, &args.registry))
        .transpose()?;
    let service = match (&spec, &inspected, &args.image) {
        (Some(s), Some(ins), Some(given)) => Service::from_spec(s, Some((ins, given))),
        (Some(s), _, _) => Service::from_spec(s, None),
        (None, Some(ins), Some(given)) => Service::from_image(ins, given),
        _ => {
            bail!("no mlimg.toml here: give the spec with -f FILE or the image with --image IMAGE")
        }
    };
    let text = match args.kind {
        Kind::Compose => mlimg::snippet::compose(&service, args.weights_volume),
        Kind::Kubernetes => mlimg::snippet::kubernetes(&service, args.weights_volume),
        Kind::DockerRun => mlimg::snippet::docker_run(&service, args.weights_volume),
    };
    print!("{text}");
    Ok(())
}
