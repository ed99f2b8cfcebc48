//! `mlimg inspect IMAGE`: platforms, layers with their role, run config and provenance of an
//! image in a registry, an OCI layout or an archive.

use anyhow::Result;
use clap::Args;

use mlimg::inspect::{ImageRef, Inspection, PlatformImage};
use mlimg::registry::{ClientOptions, RegistryClient};

/// Show an image's platforms, layers, run config and provenance.
///
/// Per platform: its manifest, layers (role, media type, size, digest), run config
/// (entrypoint, env, user, ports, healthcheck) and, for images mlimg built, the provenance
/// summary from the attached in-toto statement (base, wheels, model repository and commit).
///
/// IMAGE is a registry reference (host/repo:tag or @sha256:…), oci:DIR[:TAG],
/// oci-archive:FILE or docker-archive:FILE. Only manifests, configs and attached documents
/// are read, never a layer (a docker archive's layers are hashed unless their names are their
/// digests).
#[derive(Debug, Args)]
#[command(after_help = "Examples:
  mlimg inspect oci:out/image
  mlimg inspect registry.example/acme/app:1.0 --json | jq '.platforms[].layers'
  mlimg inspect docker-archive:image.tar")]
pub struct InspectArgs {
    /// The image: REF, oci:DIR[:TAG], oci-archive:FILE or docker-archive:FILE.
    #[arg(value_name = "IMAGE")]
    pub image: String,
    /// Print one JSON object: {"image", "index_digest"?, "platforms": [{"platform",
    /// "manifest_digest", "layers": [{"role", "media_type", "size", "digest"}], "config",
    /// "provenance"?}]}.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

/// How to reach registries, for commands that read images.
#[derive(Debug, Args)]
pub struct RegistryArgs {
    /// Reach this registry (host[:port]) over plain HTTP (loopback registries always are).
    #[arg(long, value_name = "HOST")]
    pub insecure_registry: Vec<String>,
    #[command(flatten)]
    pub network: super::NetworkArgs,
}

impl RegistryArgs {
    pub fn client(&self) -> Result<RegistryClient> {
        let transport = self.network.transport_options(None);
        Ok(RegistryClient::new(ClientOptions {
            insecure_registries: self.insecure_registry.clone(),
            transport,
            ..Default::default()
        })?)
    }
}

/// Reads an image given as the user wrote it.
pub fn read(image: &str, registry: &RegistryArgs) -> Result<Inspection> {
    let r = ImageRef::parse(image)?;
    let client = match r {
        ImageRef::Registry(_) => Some(registry.client()?),
        _ => None,
    };
    Ok(mlimg::inspect::inspect(&r, client.as_ref())?)
}

pub fn run(args: InspectArgs) -> Result<()> {
    let ins = read(&args.image, &args.registry)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&ins)?);
        return Ok(());
    }
    print!("{}", render(&ins));
    Ok(())
}

/// `1.2 GiB (1288490188 B)`-style sizes: human first, exact in parentheses.
pub fn size(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    format!("{v:.1} {}", UNITS[u])
}

fn render(ins: &Inspection) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    let _ = writeln!(o, "{}", ins.image);
    if let Some(d) = &ins.index_digest {
        let _ = writeln!(o, "index {d} ({} platforms)", ins.platforms.len());
    }
    for p in &ins.platforms {
        o.push_str(&render_platform(p));
    }
    o
}

fn render_platform(p: &PlatformImage) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    let _ = writeln!(o, "\n{}", p.platform);
    match &p.manifest_digest {
        Some(d) => {
            let _ = writeln!(o, "  manifest {d}");
        }
        None => {
            let _ = writeln!(
                o,
                "  config   {} (docker archive: no manifest)",
                p.config_digest
            );
        }
    }
    let total: u64 = p.layers.iter().map(|l| l.size).sum();
    let _ = writeln!(o, "  layers ({}, {}):", p.layers.len(), size(total));
    let w = p.layers.iter().map(|l| l.role.len()).max().unwrap_or(0);
    for l in &p.layers {
        let _ = writeln!(
            o,
            "    {:w$}  {:>10}  {}  {}",
            l.role,
            size(l.size),
            l.digest,
            l.media_type
        );
    }
    let c = &p.config;
    let _ = writeln!(o, "  config:");
    let list = |v: &[String]| serde_json::to_string(v).unwrap_or_default();
    if let Some(e) = &c.entrypoint {
        let _ = writeln!(o, "    entrypoint   {}", list(e));
    }
    if let Some(e) = &c.cmd {
        let _ = writeln!(o, "    cmd          {}", list(e));
    }
    if let Some(u) = &c.user {
        let _ = writeln!(o, "    user         {u}");
    }
    if let Some(u) = &c.workdir {
        let _ = writeln!(o, "    workdir      {u}");
    }
    if !c.ports.is_empty() {
        let _ = writeln!(o, "    ports        {}", c.ports.join(", "));
    }
    for (i, e) in c.env.iter().enumerate() {
        let _ = writeln!(o, "    {:12} {e}", if i == 0 { "env" } else { "" });
    }
    if let Some(h) = &c.healthcheck {
        let mut s = list(&h.test);
        for (k, v) in [
            ("interval", h.interval_s),
            ("timeout", h.timeout_s),
            ("start period", h.start_period_s),
        ] {
            if let Some(v) = v {
                let _ = write!(s, ", {k} {v}s");
            }
        }
        if let Some(r) = h.retries {
            let _ = write!(s, ", {r} retries");
        }
        let _ = writeln!(o, "    healthcheck  {s}");
    }
    for (i, (k, v)) in c.labels.iter().enumerate() {
        let _ = writeln!(o, "    {:12} {k}={v}", if i == 0 { "labels" } else { "" });
    }
    match &p.provenance {
        None => {
            let _ = writeln!(o, "  provenance: none attached");
        }
        Some(pv) => {
            let _ = writeln!(o, "  provenance:");
            if let Some(b) = &pv.base {
                let _ = writeln!(
                    o,
                    "    base         {b}{}",
                    pv.base_digest
                        .as_ref()
                        .map(|d| format!(" ({d})"))
                        .unwrap_or_default()
                );
            }
            let _ = writeln!(o, "    wheels       {}", pv.wheels);
            for m in &pv.models {
                let _ = writeln!(
                    o,
                    "    model        hf://{} at {} ({} files)",
                    m.repo, m.commit, m.files
                );
            }
            if let Some(b) = &pv.builder {
                let _ = writeln!(o, "    builder      {b}");
            }
            if let Some(d) = &pv.sbom {
                let _ = writeln!(o, "    sbom         {d}");
            }
            if let Some(d) = &pv.attestation {
                let _ = writeln!(o, "    attestation  {d}");
            }
        }
    }
    o
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes() {
        assert_eq!(super::size(0), "0 B");
        assert_eq!(super::size(1023), "1023 B");
        assert_eq!(super::size(1536), "1.5 KiB");
        assert_eq!(super::size(5 << 30), "5.0 GiB");
    }
}
