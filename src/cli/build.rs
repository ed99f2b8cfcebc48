//! `mlimg build`.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Mutex;

use anyhow::Result;
use clap::Args;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use mlimg::pipeline::shared_cache::{CacheKey, SharedCache};
use mlimg::pipeline::{BuildError, BuildOptions, Outcome, Progress, Warning, build};

/// Build the image described by a spec.
#[derive(Debug, Args)]
#[command(
    verbatim_doc_comment,
    after_help = "Examples:\n  mlimg build --output oci:out/image                  # an OCI image layout folder\n  mlimg build --output docker-archive:image.tar      # then: docker load -i image.tar\n  mlimg build --dry-run                               # print the layer plan, write nothing\n  mlimg build --push                                  # push [image].name with every tag\n  mlimg build --push -t 1.2.3 --json                  # other tags; a JSON report for CI\n  SOURCE_DATE_EPOCH=1700000000 mlimg build --json -o oci-archive:img.tar"
)]
pub struct BuildArgs {
    /// The spec file.
    #[arg(
        short = 'f',
        long = "file",
        default_value = "mlimg.toml",
        value_name = "FILE"
    )]
    pub file: PathBuf,
    /// Where to write the image: oci:DIR, oci-archive:FILE, docker-archive:FILE or registry:REF
    /// (repeatable; registry:host/repo:tag pushes there like --push does for [image].name).
    #[arg(short = 'o', long = "output", value_name = "TARGET")]
    pub output: Vec<String>,
    /// Print the layer plan (every entry: mode, image path, source) and exit without writing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print one JSON object with the digests and layers on stdout (progress stays on stderr).
    #[arg(long)]
    pub json: bool,
    /// Build only these platforms of the spec's [image].platforms (repeatable), e.g. linux/arm64.
    #[arg(long, value_name = "OS/ARCH")]
    pub platform: Vec<String>,
    /// The cache folder (blobs and layer selectors).
    #[arg(long, env = "MLIMG_CACHE_DIR", value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Push the image to [image].name with every tag (only blobs the registry lacks are sent).
    /// Credentials come from ~/.docker/config.json ($DOCKER_CONFIG): auths, credsStore,
    /// credHelpers (docker-credential-ecr-login, -gcloud, …), as docker uses them.
    #[arg(long)]
    pub push: bool,
    /// Push these tags instead of [image].tags (repeatable).
    #[arg(short = 't', long, value_name = "TAG")]
    pub tag: Vec<String>,
    /// Reach this registry (host[:port]) over plain HTTP (loopback registries always are).
    #[arg(long, value_name = "HOST")]
    pub insecure_registry: Vec<String>,
    /// Blobs uploaded in parallel.
    #[arg(long, default_value_t = 4, value_name = "N")]
    pub upload_jobs: usize,
    #[command(flatten)]
    pub network: super::NetworkArgs,
    /// Upload blobs in chunks of this many bytes (default: one request per blob). Known
    /// registries' rules adjust it (ECR: ≥ 5 MiB, GHCR: ≤ 4 MiB, Artifact Registry: one PUT; a
    /// mirror takes a kind from MLIMG_REGISTRY_KIND=host=ecr|ecr-public|ghcr|quay|gar).
    #[arg(long, value_name = "BYTES")]
    pub chunk_size: Option<u64>,
    /// Fail if mlimg.lock is missing or does not match the spec (like `cargo --locked`).
    #[arg(long)]
    pub locked: bool,
    /// Let local sources (weights, deps dir, requirements, find_links, app src) resolve outside
    /// the spec's folder (or its [image] context). Off by default: a spec from an untrusted
    /// checkout could otherwise copy ~/.docker or ../../secrets into the image.
    #[arg(long)]
    pub allow_outside_context: bool,
    /// Threads writing layers (default: one per core).
    #[arg(short = 'j', long, default_value_t = 0)]
    pub jobs: usize,
    /// The registry-shared layer cache: with --push as the only output, Hub weights layers
    /// another runner pushed are found through records (tags mlimg-sel-…) in the target
    /// repository and neither downloaded nor uploaded again.
    ///
    /// auto: on when MLIMG_CACHE_KEY is set (records are signed with HMAC-SHA256 under that
    /// key, shared by the CI runners; a record that does not verify is ignored), off otherwise.
    /// signed: like auto, but MLIMG_CACHE_KEY must be set. unsigned: records without a valid
    /// MAC are believed too, so anyone who can push a tag to the repository chooses what
    /// those layers contain: only for a repository no one else can push to. off: never.
    #[arg(long, value_enum, default_value_t = SharedCacheArg::Auto, value_name = "MODE")]
    pub shared_cache: SharedCacheArg,
    /// Do not attach SBOMs (SPDX 2.3, CycloneDX 1.6) to each platform image (attached by
    /// default, as OCI referrers; see docs/provenance.md).
    #[arg(long)]
    pub no_sbom: bool,
    /// Do not attach an in-toto / SLSA v1 provenance statement to each platform image.
    #[arg(long)]
    pub no_provenance: bool,
    /// Treat lints (root user, unpinned base, secrets in a layer, …; see docs/lints.md) as
    /// errors: the build stops with exit code 2 before writing anything.
    #[arg(long)]
    pub strict: bool,
    /// The SBOM formats attached to each platform image (comma-separated).
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [SbomFormatArg::Spdx, SbomFormatArg::Cyclonedx], value_name = "FORMATS")]
    pub sbom_format: Vec<SbomFormatArg>,
    /// Record when the build started and finished (runDetails.metadata.startedOn/finishedOn)
    /// in the provenance statement. Off by default so that the statement stays byte-identical
    /// across builds of the same inputs; not allowed with SOURCE_DATE_EPOCH set.
    #[arg(long)]
    pub provenance_times: bool,
    /// Sign each pushed image (what the tags point at, and each platform manifest of a
    /// multi-platform image) with this unencrypted PEM EC P-256 private key, in cosign's
    /// format (verify with `cosign verify --key` or `mlimg verify --key`). Make one with
    /// `openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out key.pem`.
    #[arg(long, env = "MLIMG_SIGN_KEY", value_name = "KEY.pem")]
    pub sign_key: Option<std::path::PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SbomFormatArg {
    /// SPDX 2.3 JSON (application/spdx+json).
    Spdx,
    /// CycloneDX 1.6 JSON (application/vnd.cyclonedx+json).
    Cyclonedx,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SharedCacheArg {
    Auto,
    Signed,
    Unsigned,
    Off,
}

/// The shared-cache mode from `--shared-cache` and `MLIMG_CACHE_KEY` (unset or empty: no key).
fn shared_cache(
    mode: SharedCacheArg,
    key: Option<std::ffi::OsString>,
) -> Result<SharedCache, String> {
    use std::os::unix::ffi::OsStringExt as _;
    if mode == SharedCacheArg::Off {
        return Ok(SharedCache::Off);
    }
    let key = key
        .filter(|k| !k.is_empty())
        .map(|k| CacheKey::new(k.into_vec()))
        .transpose()
        .map_err(|e| format!("MLIMG_CACHE_KEY: {e}"))?;
    Ok(match (mode, key) {
        (SharedCacheArg::Off, _) | (SharedCacheArg::Auto, None) => SharedCache::Off,
        (SharedCacheArg::Auto | SharedCacheArg::Signed, Some(k)) => SharedCache::Signed(k),
        (SharedCacheArg::Signed, None) => {
            return Err(
                "--shared-cache=signed needs the key in MLIMG_CACHE_KEY (the same on every \
                 runner; e.g. `openssl rand -hex 32`, kept as a CI secret)"
                    .into(),
            );
        }
        (SharedCacheArg::Unsigned, k) => SharedCache::Unsigned(k),
    })
}

pub fn run(args: BuildArgs) -> Result<()> {
    let progress = std::sync::Arc::new(Bars::new());
    let transport = args
        .network
        .transport_options(Some(mlimg::progress::retry_messages(progress.clone())));
    let mut registry = registry_options(&args);
    registry.transport = transport.clone();
    let cache_dir = match args.cache_dir {
        Some(d) => d,
        None => mlimg::cache::Cache::default_root(None)?,
    };
    let opts = BuildOptions {
        spec_path: args.file,
        outputs: args.output,
        dry_run: args.dry_run,
        platforms: args.platform,
        cache_dir,
        source_date_epoch: std::env::var("SOURCE_DATE_EPOCH").ok(),
        jobs: args.jobs,
        pip_index_urls: pip_index_urls(),
        pip_find_links: pip_find_links(),
        locked: args.locked,
        hub: Some(mlimg::sources::hf::HubOptions {
            transport,
            ..mlimg::sources::hf::HubOptions::from_env(|k| std::env::var(k).ok())
        }),
        push: args.push,
        tags: args.tag,
        registry,
        allow_outside_context: args.allow_outside_context,
        shared_cache: SharedCache::Off,
        no_sbom: args.no_sbom,
        no_provenance: args.no_provenance,
        strict: args.strict,
        sign_key: args.sign_key.filter(|p| !p.as_os_str().is_empty()),
        sbom_formats: mlimg::provenance::SbomFormats {
            spdx: args.sbom_format.contains(&SbomFormatArg::Spdx),
            cyclonedx: args.sbom_format.contains(&SbomFormatArg::Cyclonedx),
        },
        provenance_times: args.provenance_times,
    };
    let result = match shared_cache(args.shared_cache, std::env::var_os("MLIMG_CACHE_KEY")) {
        Ok(sc) => build(
            &BuildOptions {
                shared_cache: sc,
                ..opts
            },
            &*progress,
        ),
        Err(msg) => Err(BuildError::SharedCache(msg)),
    };
    let outcome = match result {
        Ok(o) => o,
        Err(e) => {
            progress.clear();
            if args.json {
                // CI reads one JSON object whatever happens.
                let err = serde_json::json!({"error": {
                    "code": e.code(),
                    "message": super::render(&e),
                }});
                println!("{}", serde_json::to_string_pretty(&err)?);
            }
            return Err(e.into());
        }
    };
    match outcome {
        Outcome::Plan(plan, warnings) => {
            if args.json {
                let mut v = plan.to_json();
                v["warnings"] = serde_json::to_value(&warnings)?;
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                print!("{plan}");
            }
        }
        Outcome::Built(report) => {
            progress.clear();
            if args.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                for p in &report.platforms {
                    eprintln!("{}: manifest {}", p.platform, p.manifest_digest);
                    for l in &p.layers {
                        let how = if l.cached { "cached" } else { "built" };
                        eprintln!(
                            "  {:<24} {} {:>12} B  {how}",
                            l.role,
                            &l.digest[..19.min(l.digest.len())],
                            l.size
                        );
                    }
                }
                for a in &report.artifacts {
                    eprintln!("{} {}: manifest {}", a.kind, a.name, a.manifest_digest);
                    for r in a.pushed.iter().flatten() {
                        eprintln!("pushed {r}");
                    }
                }
                for o in &report.outputs {
                    eprintln!("wrote {}", o.target);
                }
                if let Some(p) = &report.push {
                    for r in &p.pushed {
                        eprintln!("pushed {r}");
                    }
                    eprintln!("sent {} bytes", p.bytes_sent);
                    for s in &p.signatures {
                        eprintln!(
                            "signed {} ({}{})",
                            s.digest,
                            s.tag,
                            if s.added {
                                ""
                            } else {
                                ", signature already there"
                            }
                        );
                    }
                }
                if report.outputs.is_empty() && report.push.is_none() {
                    eprintln!(
                        "(no --output given: the layers are in the cache; add -o oci:DIR or -o docker-archive:FILE)"
                    );
                }
                println!("{}", report.manifest_digest);
            }
        }
    }
    Ok(())
}

fn registry_options(args: &BuildArgs) -> mlimg::registry::ClientOptions {
    mlimg::registry::ClientOptions {
        insecure_registries: args.insecure_registry.clone(),
        max_parallel_uploads: args.upload_jobs.max(1),
        chunk_size: args.chunk_size,
        ..Default::default()
    }
}

/// `PIP_INDEX_URL` (default: PyPI), then the space-separated `PIP_EXTRA_INDEX_URL`, as pip reads them.
pub(crate) fn pip_index_urls() -> Vec<String> {
    let mut v = vec![
        std::env::var("PIP_INDEX_URL")
            .ok()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "https://pypi.org/simple".to_string()),
    ];
    if let Ok(extra) = std::env::var("PIP_EXTRA_INDEX_URL") {
        v.extend(extra.split_whitespace().map(str::to_string));
    }
    v
}

/// `PIP_FIND_LINKS`: space-separated folders of wheels (or `file://` URLs of folders), as pip
/// reads them; relative paths from the current folder. Used after each set's own `find_links`.
pub(crate) fn pip_find_links() -> Vec<PathBuf> {
    std::env::var("PIP_FIND_LINKS")
        .map(|v| parse_find_links(&v))
        .unwrap_or_default()
}

fn parse_find_links(v: &str) -> Vec<PathBuf> {
    v.split_whitespace()
        .filter(|s| {
            let remote = s.starts_with("http://") || s.starts_with("https://");
            if remote {
                eprintln!(
                    "warning: PIP_FIND_LINKS: {} is a URL; mlimg reads find-links folders only (put the wheels in a folder, or serve them as an index for PIP_EXTRA_INDEX_URL)",
                    mlimg::transport::redact_url(s)
                );
            }
            !remote
        })
        .map(|s| {
            let p = s.strip_prefix("file://").unwrap_or(s);
            std::path::absolute(p).unwrap_or_else(|_| PathBuf::from(p))
        })
        .collect()
}

/// Progress on stderr: bars on a terminal, one line per layer otherwise.
struct Bars {
    multi: Option<MultiProgress>,
    bars: Mutex<Vec<(String, ProgressBar)>>,
    transfers: Mutex<std::collections::HashMap<String, ProgressBar>>,
}

impl Bars {
    fn new() -> Self {
        let multi = std::io::stderr().is_terminal().then(MultiProgress::new);
        Bars {
            multi,
            bars: Mutex::new(Vec::new()),
            transfers: Mutex::new(Default::default()),
        }
    }
    fn clear(&self) {
        if let Ok(mut b) = self.bars.lock() {
            b.clear();
        }
        if let Some(m) = &self.multi {
            let _ = m.clear();
        }
    }
}

impl Bars {
    fn bar(&self, key: &str, total: u64) -> Option<ProgressBar> {
        let m = self.multi.as_ref()?;
        let mut t = self.transfers.lock().ok()?;
        if let Some(b) = t.get(key) {
            return Some(b.clone());
        }
        let bar = m.add(ProgressBar::new(total));
        if let Ok(style) = ProgressStyle::with_template(
            "{msg:<24} {bar:30} {bytes}/{total_bytes} {bytes_per_sec} {eta}",
        ) {
            bar.set_style(style);
        }
        // keys can be server-sent (a Hub file's path)
        bar.set_message(super::escape(key));
        t.insert(key.to_string(), bar.clone());
        Some(bar)
    }
}

impl Progress for Bars {
    fn transfer(&self, key: &str, done: u64, total: u64) {
        if let Some(b) = self.bar(key, total) {
            b.set_length(total);
            b.set_position(done);
        }
    }
    fn transfer_done(&self, key: &str, summary: &str) {
        let summary = &super::escape(summary);
        match self.transfers.lock().ok().and_then(|mut t| t.remove(key)) {
            Some(b) => b.finish_and_clear(),
            None if self.multi.is_some() => {}
            None => eprintln!("{summary}"),
        }
        if let Some(m) = &self.multi {
            let _ = m.println(summary);
        }
    }
    fn layer_start(&self, id: &str, label: &str, bytes: u64) {
        // a per-file weights layer's label holds the file's path (from the Hub, for hf://)
        let label = &super::escape(label);
        match &self.multi {
            Some(m) => {
                let bar = m.add(ProgressBar::new(bytes));
                if let Ok(style) = ProgressStyle::with_template(
                    "{msg:<24} {bar:30} {bytes}/{total_bytes} {bytes_per_sec} {eta}",
                ) {
                    bar.set_style(style);
                }
                bar.set_message(label.to_string());
                if let Ok(mut b) = self.bars.lock() {
                    b.push((id.to_string(), bar));
                }
            }
            None => eprintln!("writing layer {label} ({bytes} bytes)"),
        }
    }
    fn layer_bytes(&self, id: &str, done: u64) {
        if let Ok(b) = self.bars.lock()
            && let Some((_, bar)) = b.iter().find(|(r, _)| r == id)
        {
            bar.set_position(done);
        }
    }
    fn layer_done(&self, id: &str, label: &str, cached: bool) {
        if self.multi.is_none() && cached {
            eprintln!("layer {}: cached", super::escape(label));
        }
        if let Ok(b) = self.bars.lock()
            && let Some((_, bar)) = b.iter().find(|(r, _)| r == id)
        {
            bar.finish();
        }
    }
    fn message(&self, msg: &str) {
        let msg = super::escape(msg);
        match &self.multi {
            Some(m) => {
                let _ = m.println(&msg);
            }
            None => eprintln!("{msg}"),
        }
    }
    fn warning(&self, w: &Warning) {
        self.message(&format!("warning[{}]: {}", w.code, w.message));
        if let Some(h) = &w.hint {
            self.message(&format!("  hint: {h}"));
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn find_links_from_the_environment() {
        let got = super::parse_find_links("/w1  file:///w2 https://host/links rel");
        assert_eq!(got[0], std::path::PathBuf::from("/w1"));
        assert_eq!(got[1], std::path::PathBuf::from("/w2"));
        assert_eq!(got.len(), 3, "{got:?}");
        assert!(got[2].is_absolute() && got[2].ends_with("rel"), "{got:?}");
    }
}
