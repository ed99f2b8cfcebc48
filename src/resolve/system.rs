//! `[system]`: Debian packages, resolved per platform the way apt would, without running it.
//!
//! From the base image (its layers streamed once, the answer kept in the cache's facts): the
//! distribution (`/etc/os-release`), the archive and suites (`/etc/apt/sources.list`,
//! `sources.list.d/*.list|*.sources`), the keyrings that sign it (`Signed-By`, else
//! `/etc/apt/trusted.gpg(.d)`), what dpkg has installed (`/var/lib/dpkg/status`) and which
//! files each package owns (`var/lib/dpkg/info/*.list`). From the archive: `InRelease`,
//! verified with those keyrings, then each `Packages` index checked against the signed sha256.
//! The answer — every package with version, size, sha256 and URL — is the lock entry; a lock
//! that matches needs no index request.

use std::path::PathBuf;
use std::sync::Arc;

use sha2::{Digest as _, Sha256};

use super::basefs::{self, BaseFiles, Want};
use super::{ResolveError, ResolveOptions, ResolvedPlatform};
use crate::lock::{DebLock, Lockfile};
use crate::progress::Progress;
use crate::registry::RegistryClient;
pub use crate::sources::debian::base::{AptSource, DebianBase};
use crate::sources::debian::{archive, control, packages, resolve as deb_resolve};
use crate::spec::Spec;
use crate::spec::system::SystemSpec;

/// `[system]` resolved for one platform.
#[derive(Debug, Clone)]
pub struct ResolvedSystem {
    /// dpkg's architecture.
    pub architecture: String,
    pub inputs: String,
    /// Sorted by name.
    pub packages: Vec<DebLock>,
    pub base: Arc<DebianBase>,
}

/// dpkg's name for an OCI platform's architecture.
pub fn debian_arch(p: &crate::platform::Platform) -> Option<&'static str> {
    Some(match (p.architecture.as_str(), p.variant.as_deref()) {
        ("amd64", _) => "amd64",
        ("arm64", _) => "arm64",
        ("arm", Some("v5")) | ("arm", Some("v6")) => "armel",
        ("arm", _) => "armhf",
        ("386", _) => "i386",
        ("ppc64le", _) => "ppc64el",
        ("s390x", _) => "s390x",
        ("riscv64", _) => "riscv64",
        ("mips64le", _) => "mips64el",
        _ => return None,
    })
}

fn wanted(p: &str) -> Want {
    if !p.contains('/') {
        return Want::Link;
    }
    let read = matches!(
        p,
        "etc/os-release"
            | "usr/lib/os-release"
            | "etc/apt/sources.list"
            | "etc/apt/trusted.gpg"
            | "var/lib/dpkg/status"
            | "var/lib/dpkg/info/format"
    ) || [
        "etc/apt/sources.list.d/",
        "etc/apt/trusted.gpg.d/",
        "usr/share/keyrings/",
        "var/lib/dpkg/alternatives/",
    ]
    .iter()
    .any(|d| p.strip_prefix(d).is_some_and(|n| !n.contains('/')))
        || p.strip_prefix("var/lib/dpkg/info/")
            .is_some_and(|n| n.ends_with(".list") && !n.contains('/'));
    if read { Want::Read } else { Want::Nothing }
}

/// Reads the base's Debian facts (cached per base by its layer digests).
fn debian_base(
    rp: &ResolvedPlatform,
    client: Option<&RegistryClient>,
    opts: &ResolveOptions,
) -> Result<DebianBase, ResolveError> {
    let base = &rp.base;
    let digests: Vec<String> = base
        .layers
        .iter()
        .map(|l| l.descriptor.digest.to_string())
        .collect();
    let key = format!("v1\n{}", digests.join("\n"));
    if let Some(hit) = crate::cache::facts::get::<DebianBase>(&opts.cache_dir, "debian-base", &key)
    {
        return Ok(hit);
    }
    let open = |d: &str| super::open_base_layer(base, client, &opts.cache_dir, d);
    let (fs, missing) = basefs::scan(&digests, &open, &wanted)
        .map_err(|e| system_err(rp, format!("reading the base's layers: {e}")))?;
    if !missing.is_empty() {
        return Err(system_err(
            rp,
            format!(
                "base layers not available, not read: {}",
                missing.join(", ")
            ),
        ));
    }
    let b = from_files(&fs);
    if !opts.read_only {
        crate::cache::facts::put(&opts.cache_dir, "debian-base", &key, &b);
    }
    Ok(b)
}

fn system_err(rp: &ResolvedPlatform, message: String) -> ResolveError {
    ResolveError::System {
        platform: rp.platform.to_string(),
        message,
    }
}

/// The Debian facts in the files of a base.
pub fn from_files(fs: &BaseFiles) -> DebianBase {
    let mut b = DebianBase {
        links: fs
            .links
            .iter()
            .filter(|(p, _)| !p.contains('/'))
            .map(|(p, t)| (p.clone(), t.clone()))
            .collect(),
        ..Default::default()
    };
    if let Some(os) = fs.read("etc/os-release").or(fs.read("usr/lib/os-release")) {
        for line in String::from_utf8_lossy(os).lines() {
            let Some((k, v)) = line.split_once('=') else {
                continue;
            };
            let v = v.trim().trim_matches('"').to_string();
            match k.trim() {
                "ID" => b.os_id = Some(v),
                "VERSION_CODENAME" if !v.is_empty() => b.codename = Some(v),
                _ => {}
            }
        }
    }
    for (path, data) in &fs.files {
        let text = String::from_utf8_lossy(data);
        if path == "etc/apt/sources.list"
            || (path.starts_with("etc/apt/sources.list.d/") && path.ends_with(".list"))
        {
            b.sources.extend(one_line_sources(&text, path));
        } else if path.starts_with("etc/apt/sources.list.d/") && path.ends_with(".sources") {
            b.sources.extend(deb822_sources(&text, path));
        } else if path == "etc/apt/trusted.gpg"
            || ((path.starts_with("etc/apt/trusted.gpg.d/")
                || path.starts_with("usr/share/keyrings/"))
                && (path.ends_with(".gpg") || path.ends_with(".asc")))
        {
            b.keyrings.insert(path.clone(), data.clone());
        }
    }
    for (path, data) in &fs.files {
        if let Some(name) = path.strip_prefix("var/lib/dpkg/alternatives/") {
            b.alternatives
                .insert(name.to_string(), String::from_utf8_lossy(data).into_owned());
        }
    }
    b.status = fs
        .read("var/lib/dpkg/status")
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .unwrap_or_default();
    b.multiarch_db = fs
        .read("var/lib/dpkg/info/format")
        .is_some_and(|f| String::from_utf8_lossy(f).trim() == "1");
    for (path, data) in &fs.files {
        let Some(name) = path
            .strip_prefix("var/lib/dpkg/info/")
            .and_then(|n| n.strip_suffix(".list"))
        else {
            continue;
        };
        let package = name.split(':').next().unwrap_or(name);
        for line in String::from_utf8_lossy(data).lines() {
            let f = line.trim().trim_start_matches('/');
            if !f.is_empty() && f != "." {
                let c = b.canonical(f);
                b.owned.insert(c, package.to_string());
            }
        }
    }
    // a path with another listed under it is a folder, shared by whoever lists it
    let keys: Vec<String> = b.owned.keys().cloned().collect();
    for w in keys.windows(2) {
        if w[1]
            .strip_prefix(w[0].as_str())
            .is_some_and(|r| r.starts_with('/'))
        {
            b.owned.remove(&w[0]);
        }
    }
    b
}

/// `deb [opts] URI SUITE COMPONENT…` lines.
fn one_line_sources(text: &str, file: &str) -> Vec<AptSource> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        let Some(rest) = line
            .strip_prefix("deb ")
            .or_else(|| line.strip_prefix("deb\t"))
        else {
            continue;
        };
        let mut rest = rest.trim();
        let mut signed_by = None;
        if let Some(opts) = rest.strip_prefix('[') {
            let Some((o, r)) = opts.split_once(']') else {
                continue;
            };
            for kv in o.split_whitespace() {
                if let Some(v) = kv.strip_prefix("signed-by=") {
                    signed_by = Some(v.to_string());
                }
            }
            rest = r.trim();
        }
        let mut words = rest.split_whitespace();
        let (Some(uri), Some(suite)) = (words.next(), words.next()) else {
            continue;
        };
        out.push(AptSource {
            uri: uri.trim_end_matches('/').to_string(),
            suites: vec![suite.to_string()],
            components: words.map(str::to_string).collect(),
            signed_by,
            file: format!("/{file}"),
        });
    }
    out
}

/// deb822 `.sources` stanzas (`Types: deb`, `URIs`, `Suites`, `Components`, `Signed-By`).
fn deb822_sources(text: &str, file: &str) -> Vec<AptSource> {
    let Ok(paras) = control::parse_paragraphs(text) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for p in paras {
        let words = |f: &str| -> Vec<String> {
            p.get(f)
                .map(|v| v.split_whitespace().map(str::to_string).collect())
                .unwrap_or_default()
        };
        if !words("Types").iter().any(|t| t == "deb")
            || p.get("Enabled").is_some_and(|e| e.trim() == "no")
        {
            continue;
        }
        for uri in words("URIs") {
            out.push(AptSource {
                uri: uri.trim_end_matches('/').to_string(),
                suites: words("Suites"),
                components: words("Components"),
                signed_by: p.get("Signed-By").map(|s| s.trim().to_string()),
                file: format!("/{file}"),
            });
        }
    }
    out
}

/// What decides the resolution: the request, where it looks, the base it installs into.
fn inputs_hash(sys: &SystemSpec, rp: &ResolvedPlatform) -> String {
    let mut h = Sha256::new();
    h.update(b"mlimg-system v1\n");
    for p in &sys.packages {
        h.update(format!("package {p}\n"));
    }
    h.update(format!(
        "suite {:?}\nmirror {:?}\ncomponents {:?}\n",
        sys.suite, sys.mirror, sys.components
    ));
    for l in &rp.base.layers {
        h.update(format!("base {}\n", l.descriptor.digest));
    }
    hex::encode(h.finalize())
}

/// Resolves `[system]` for one platform (from the lock when it matches).
pub(super) fn resolve_platform(
    spec: &Spec,
    rp: &mut ResolvedPlatform,
    client: Option<&RegistryClient>,
    lock: Option<&Lockfile>,
    opts: &ResolveOptions,
    lock_path: &std::path::Path,
    progress: &dyn Progress,
) -> Result<(), ResolveError> {
    let Some(sys) = &spec.system else {
        return Ok(());
    };
    let arch = debian_arch(&rp.platform)
        .ok_or_else(|| system_err(rp, "Debian has no architecture for this platform".into()))?;
    let base = debian_base(rp, client, opts)?;
    let inputs = inputs_hash(sys, rp);
    let locked = lock.and_then(|l| l.system(&rp.platform));
    if let Some(l) = locked
        && l.inputs == inputs
        && l.architecture == arch
    {
        rp.system = Some(Arc::new(ResolvedSystem {
            architecture: arch.to_string(),
            inputs,
            packages: l.packages.clone(),
            base: Arc::new(base),
        }));
        return Ok(());
    }
    if opts.locked {
        return Err(ResolveError::Locked {
            path: lock_path.to_path_buf(),
            reason: format!(
                "[system] for {}: {}",
                rp.platform,
                if locked.is_some() {
                    "the packages, sources or base changed since the lock was written"
                } else {
                    "not in the lock"
                }
            ),
        });
    }
    if base.status.is_empty() {
        return Err(system_err(
            rp,
            format!(
                "the base {} has no dpkg database (/var/lib/dpkg/status): [system] installs \
                 Debian packages into a Debian or Ubuntu base",
                spec.image.base_name
            ),
        ));
    }
    let packages = resolve_online(spec, sys, &base, arch, rp, opts, progress)?;
    rp.system = Some(Arc::new(ResolvedSystem {
        architecture: arch.to_string(),
        inputs,
        packages,
        base: Arc::new(base),
    }));
    Ok(())
}

/// The sources `[system]` reads: the base's, narrowed or replaced by the spec.
pub fn sources_for(sys: &SystemSpec, base: &DebianBase) -> Result<Vec<AptSource>, String> {
    let mut out: Vec<AptSource> = base.sources.clone();
    if let Some(m) = &sys.mirror {
        // the spec's mirror replaces the base's archive(s); keyrings stay the base's
        let signed_by = out.iter().find_map(|s| s.signed_by.clone());
        let suites = match &sys.suite {
            Some(s) => vec![s.clone()],
            None if !out.is_empty() => {
                let mut v: Vec<String> = out
                    .iter()
                    .filter(|s| !s.uri.contains("security"))
                    .flat_map(|s| s.suites.clone())
                    .collect();
                v.dedup();
                v
            }
            None => base.codename.iter().cloned().collect(),
        };
        out = vec![AptSource {
            uri: m.clone(),
            suites,
            components: vec!["main".into()],
            signed_by,
            file: "[system] mirror".into(),
        }];
    } else if let Some(s) = &sys.suite {
        for src in &mut out {
            src.suites.retain(|x| x == s);
        }
        out.retain(|src| !src.suites.is_empty());
    }
    if let Some(c) = &sys.components {
        for src in &mut out {
            src.components = c.clone();
        }
    }
    if out.is_empty() {
        return Err(match (&sys.suite, base.sources.is_empty()) {
            (_, true) => "the base has no apt sources (/etc/apt/sources.list or sources.list.d): set [system] mirror and suite".into(),
            (Some(s), false) => format!("no source of the base has suite {s:?}"),
            (None, false) => "no usable apt source".into(),
        });
    }
    Ok(out)
}

/// The keyrings a source trusts: its `Signed-By` file, else every trusted keyring.
fn keyrings_for(src: &AptSource, base: &DebianBase) -> Result<Vec<Vec<u8>>, String> {
    match &src.signed_by {
        Some(s) if s.contains("BEGIN PGP PUBLIC KEY BLOCK") => Ok(vec![s.as_bytes().to_vec()]),
        Some(s) => {
            let mut v = Vec::new();
            for path in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                let k = base
                    .keyrings
                    .get(path.trim_start_matches('/'))
                    .ok_or_else(|| {
                        format!("{}: Signed-By {path} is not in the base image", src.file)
                    })?;
                v.push(k.clone());
            }
            Ok(v)
        }
        None => {
            let v: Vec<Vec<u8>> = base
                .keyrings
                .iter()
                .filter(|(p, _)| p.starts_with("etc/apt/"))
                .map(|(_, k)| k.clone())
                .collect();
            if v.is_empty() {
                return Err(format!(
                    "{}: no Signed-By and no /etc/apt/trusted.gpg(.d) keyring in the base: \
                     nothing to verify the archive with",
                    src.file
                ));
            }
            Ok(v)
        }
    }
}

fn resolve_online(
    spec: &Spec,
    sys: &SystemSpec,
    base: &DebianBase,
    arch: &str,
    rp: &ResolvedPlatform,
    opts: &ResolveOptions,
    progress: &dyn Progress,
) -> Result<Vec<DebLock>, ResolveError> {
    let err = |m: String| system_err(rp, m);
    let t = crate::transport::Transport::from_defaults().map_err(|e| err(e.to_string()))?;
    let sources = sources_for(sys, base).map_err(err)?;
    let index_dir: PathBuf = opts.cache_dir.join("debian/index");
    let mut records: Vec<Vec<packages::PackageRecord>> = Vec::new();
    for src in &sources {
        let keyrings = keyrings_for(src, base).map_err(err)?;
        for suite in &src.suites {
            progress.message(&format!("system: {} {suite} ({arch})", src.uri));
            let release = archive::fetch_release(&t, &src.uri, suite, &keyrings)
                .map_err(|e| err(e.to_string()))?;
            for comp in &src.components {
                let Some((name, sum)) = release.packages_path(comp, arch) else {
                    return Err(err(format!(
                        "{} {suite}: the Release file lists no {comp}/binary-{arch}/Packages index \
                         (is {comp:?} a component and {arch} an architecture of this archive?)",
                        src.uri
                    )));
                };
                let url = format!("{}/dists/{suite}/{name}", src.uri);
                let path = archive::fetch_verified(&t, &url, sum.size, &sum.sha256, &index_dir, "")
                    .map_err(|e| err(e.to_string()))?;
                let f = std::fs::File::open(&path)
                    .map_err(|e| err(format!("{}: {e}", path.display())))?;
                let reader =
                    packages::decompress_index(&name, f).map_err(|e| err(format!("{url}: {e}")))?;
                let mut parsed =
                    packages::read_packages(reader).map_err(|e| err(format!("{url}: {e}")))?;
                // where each .deb is: this archive's URL + the index's `Filename`
                for r in &mut parsed {
                    r.filename = format!("{}/{}", src.uri, r.filename);
                }
                records.push(parsed);
            }
        }
    }
    let installed = packages::parse_status(&base.status)
        .map_err(|e| err(format!("the base's /var/lib/dpkg/status: {e}")))?;
    let requests: Vec<deb_resolve::Request> = sys
        .packages
        .iter()
        .map(|p| deb_resolve::Request {
            name: p.name.clone(),
            version: p.version.clone(),
            line: Some(p.line),
        })
        .collect();
    let index = deb_resolve::Index::new(records);
    let res = deb_resolve::resolve(&requests, &index, &installed, arch).map_err(|e| {
        ResolveError::SystemPackages {
            spec: spec.path.clone(),
            platform: rp.platform.to_string(),
            source: Box::new(e),
        }
    })?;
    for w in &res.warnings {
        progress.warning(&crate::progress::Warning::new(
            "system-resolve",
            format!("{}: {w}", rp.platform),
        ));
    }
    let mut out: Vec<DebLock> = res
        .packages
        .iter()
        .map(|r| DebLock {
            name: r.name.clone(),
            version: r.version.clone(),
            architecture: r.architecture.clone(),
            size: r.size,
            sha256: r.sha256.to_ascii_lowercase(),
            url: r.filename.clone(),
        })
        .collect();
    out.sort_by(|a, b| (&a.name, &a.architecture).cmp(&(&b.name, &b.architecture)));
    Ok(out)
}
