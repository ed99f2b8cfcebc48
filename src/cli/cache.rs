//! `mlimg cache ls|prune`: the local cache, and stale selector records in a registry.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use anyhow::{Result, bail};
use clap::{Args, Subcommand};

use mlimg::cache::{Cache, Kind, PruneOptions};

use super::inspect::{RegistryArgs, size};

/// Show or clean up the local cache (layer blobs, selector records, wheels, Debian packages,
/// base facts, push records), or stale shared-cache records in a registry.
#[derive(Debug, Args)]
#[command(after_help = "Examples:
  mlimg cache ls
  mlimg cache prune --older-than 30d --keep-bytes 50GiB
  mlimg cache prune --registry registry.example/acme/app --dry-run")]
pub struct CacheArgs {
    #[command(subcommand)]
    pub command: CacheCommand,
}

#[derive(Debug, Subcommand)]
pub enum CacheCommand {
    Ls(LsArgs),
    Prune(PruneArgs),
}

/// What the local cache holds: blobs, selector records, wheels, output notes, base facts,
/// push records, and Debian package indexes, .deb files and unpacked packages.
///
/// Kinds: blob, wheel, selector, output, fact (facts read from a base image), pushed (where a
/// blob was pushed, for cross-repository mounts), deb-index (a verified Packages index), deb (a
/// downloaded .deb), deb-unpacked (a .deb's files unpacked into a folder; its size is the sum
/// of its files), temp (a build's temp file, or one a build left behind).
#[derive(Debug, Args)]
#[command(after_help = "Examples:
  mlimg cache ls
  mlimg cache ls --json | jq '.totals'")]
pub struct LsArgs {
    /// The cache folder.
    #[arg(long, env = "MLIMG_CACHE_DIR", value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// One JSON object: {"root", "totals", "entries": [{"kind", "name", "size", "last_used"}]};
    /// totals has a count and bytes per kind (blobs/blob_bytes, wheels/wheel_bytes, facts,
    /// pushed, deb_indexes, debs, deb_unpacked, ...), temp_bytes and total_bytes.
    #[arg(long)]
    pub json: bool,
}

/// Remove old or excess cache entries, or stale selector records in a registry.
///
/// Locally: removes every entry (blobs, wheels, records, base facts, push records, Debian
/// indexes, .deb files, unpacked packages) last used longer ago than --older-than, then the
/// least recently used of the large kinds (blobs, wheels, Debian indexes, .deb files, unpacked
/// packages) until they take at most --keep-bytes; base facts and push records are small and
/// go by age only. Always: temp files of builds that died and selector records whose blob is
/// gone. An entry's last use is when a build last wrote or reused it (a layer's: when a build
/// last found it). An unpacked package is moved aside before it is removed, so a build never
/// finds it half removed. The next build rebuilds (or downloads) what is gone.
///
/// With --registry REPO: deletes the repository's mlimg-sel-* records (the registry-shared
/// layer cache) whose layer no tagged image of the repository uses; a record whose layer an
/// existing tag's image (or index) holds is never deleted. The registry must allow deletes
/// (distribution: storage.delete.enabled); its garbage collector frees the blobs afterwards.
#[derive(Debug, Args)]
#[command(after_help = "Examples:
  mlimg cache prune --older-than 30d
  mlimg cache prune --keep-bytes 20GiB --dry-run
  mlimg cache prune --registry registry.example/acme/app")]
pub struct PruneArgs {
    /// The cache folder.
    #[arg(long, env = "MLIMG_CACHE_DIR", value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Remove entries last used longer ago than this (30d, 12h, 1w).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, conflicts_with = "registry")]
    pub older_than: Option<Duration>,
    /// Keep at most this much in blobs, wheels, Debian indexes, .deb files and unpacked
    /// packages (10GiB, 500M, bytes); the least recently used go.
    #[arg(long, value_name = "SIZE", value_parser = mlimg::cache::parse_size, conflicts_with = "registry")]
    pub keep_bytes: Option<u64>,
    /// Prune the selector records in this registry repository instead of the local cache.
    #[arg(long, value_name = "REPO")]
    pub registry: Option<String>,
    /// Say what would be removed; remove nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print a JSON report.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub net: RegistryArgs,
}

fn cache(dir: &Option<PathBuf>) -> Result<Cache> {
    let root = match dir {
        Some(d) => d.clone(),
        None => Cache::default_root(None)?,
    };
    Ok(Cache::open(&root)?)
}

fn ago(now: u64, t: u64) -> String {
    let d = now.saturating_sub(t);
    match d {
        0..=119 => format!("{d}s ago"),
        120..=7199 => format!("{}m ago", d / 60),
        7200..=172_799 => format!("{}h ago", d / 3600),
        _ => format!("{}d ago", d / 86400),
    }
}

fn kind(k: Kind) -> &'static str {
    match k {
        Kind::Blob => "blob",
        Kind::Wheel => "wheel",
        Kind::Selector => "selector",
        Kind::Output => "output",
        Kind::Temp => "temp",
        Kind::Fact => "fact",
        Kind::Pushed => "pushed",
        Kind::DebIndex => "deb-index",
        Kind::Deb => "deb",
        Kind::DebUnpacked => "deb-unpacked",
    }
}

pub fn run(args: CacheArgs) -> Result<()> {
    match args.command {
        CacheCommand::Ls(a) => ls(a),
        CacheCommand::Prune(a) => prune(a),
    }
}

fn ls(a: LsArgs) -> Result<()> {
    let c = cache(&a.cache_dir)?;
    let l = c.list()?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&l)?);
        return Ok(());
    }
    let t = &l.totals;
    println!("cache {}", l.root.display());
    println!("  blobs         {:>6}  {}", t.blobs, size(t.blob_bytes));
    println!("  wheels        {:>6}  {}", t.wheels, size(t.wheel_bytes));
    println!("  selectors     {:>6}", t.selectors);
    println!("  outputs       {:>6}", t.outputs);
    println!("  facts         {:>6}  {}", t.facts, size(t.fact_bytes));
    println!("  pushed        {:>6}  {}", t.pushed, size(t.pushed_bytes));
    if t.deb_indexes + t.debs + t.deb_unpacked > 0 {
        println!(
            "  deb indexes   {:>6}  {}",
            t.deb_indexes,
            size(t.deb_index_bytes)
        );
        println!("  debs          {:>6}  {}", t.debs, size(t.deb_bytes));
        println!(
            "  deb unpacked  {:>6}  {}",
            t.deb_unpacked,
            size(t.deb_unpacked_bytes)
        );
    }
    if t.temp_bytes > 0 {
        println!("  temp                  {}", size(t.temp_bytes));
    }
    println!("  total                 {}", size(t.total_bytes));
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut big: Vec<_> = l.entries.iter().filter(|e| e.kind.in_budget()).collect();
    big.sort_by_key(|e| std::cmp::Reverse(e.size));
    if !big.is_empty() {
        println!("\nlargest:");
        for e in big.iter().take(10) {
            println!(
                "  {:12}  {:>10}  {:>9}  {}",
                kind(e.kind),
                size(e.size),
                ago(now, e.last_used),
                e.name
            );
        }
    }
    Ok(())
}

fn prune(a: PruneArgs) -> Result<()> {
    if let Some(repo) = &a.registry {
        let r = mlimg::registry::Reference::parse(repo)?;
        if r.tag.is_some() || r.digest.is_some() {
            bail!("--registry {repo}: give the repository without a tag or digest");
        }
        let client = a.net.client()?;
        let rep = mlimg::pipeline::sel_prune::prune_records(&client, &r, a.dry_run)?;
        if a.json {
            println!("{}", serde_json::to_string_pretty(&rep)?);
            return Ok(());
        }
        let verb = if a.dry_run { "would delete" } else { "deleted" };
        println!(
            "{}: {} image tag(s) read; {} selector record(s) kept (their layers are in use), {verb} {}",
            rep.repository,
            rep.image_tags,
            rep.kept.len(),
            rep.deleted.len()
        );
        for d in &rep.deleted {
            println!("  {verb} {} (layer {})", d.tag, d.layer);
        }
        if !rep.deleted.is_empty() && !a.dry_run {
            println!("the registry frees the layers' blobs at its next garbage collection");
        }
        return Ok(());
    }
    let c = cache(&a.cache_dir)?;
    let rep = c.prune(
        &PruneOptions {
            older_than: a.older_than,
            keep_bytes: a.keep_bytes,
            dry_run: a.dry_run,
        },
        SystemTime::now(),
    )?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&rep)?);
        return Ok(());
    }
    let verb = if a.dry_run { "would remove" } else { "removed" };
    for e in &rep.removed {
        println!(
            "{verb} {:12} {:>10}  {}",
            kind(e.kind),
            size(e.size),
            e.name
        );
    }
    println!(
        "{verb} {} entr{} ({}) and {} selector record(s) without a blob; {} kept",
        rep.removed.len(),
        if rep.removed.len() == 1 { "y" } else { "ies" },
        size(rep.freed_bytes),
        rep.orphan_selectors,
        size(rep.kept_bytes)
    );
    if a.older_than.is_none() && a.keep_bytes.is_none() {
        eprintln!("hint: --older-than 30d or --keep-bytes 20GiB remove more");
    }
    Ok(())
}
