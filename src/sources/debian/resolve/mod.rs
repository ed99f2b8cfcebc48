//! Dependency resolution of requested Debian packages against an index and the base's dpkg
//! database, choosing the way apt does for the plain cases.
//!
//! - Candidate: the highest version of a name for the target architecture (or `all`); a pinned
//!   request (`tini=0.19.0-1`) takes exactly that version.
//! - `Pre-Depends` and `Depends` are followed recursively; `Recommends` and `Suggests` are not
//!   (like `apt-get install --no-install-recommends`).
//! - A requirement already met by an installed package (dpkg status `install|hold ok installed`)
//!   or by a package already chosen needs nothing. For `a | b`, an alternative that is already met
//!   wins; otherwise the first alternative that can be chosen.
//! - Virtual names (`Provides`, versioned provides too): a real package of that name is preferred;
//!   else the single provider; several providers are an error that lists them (unless one is
//!   already installed or chosen, which meets the requirement).
//! - Multi-Arch: `foo:any` is met by a `Multi-Arch: allowed` package; a plain requirement by a
//!   package of the target architecture, `all`, or `Multi-Arch: foreign`.
//! - An installed package too old for a versioned requirement is upgraded to its candidate
//!   (listed in [`Resolution::upgrades`]); installed packages whose own requirements an upgrade
//!   breaks are upgraded too, or the resolution fails. `Conflicts` / `Breaks` between chosen and
//!   installed packages are errors, except that an installed package broken by a chosen one is
//!   upgraded when its candidate is no longer broken.
//! - Upgrading an installed package also upgrades the base's other packages of the same source
//!   package to the same source version (apt's `Upgrade-By-Source-Package`).
//! - No backtracking: once chosen, a package stays chosen. Cycles (libc6 ↔ libgcc-s1) are fine.
//! - Deterministic: requests in order, requirements in field order, candidates by version then
//!   name; [`Resolution::packages`] is a depth-first post-order (dependencies first) from the
//!   chosen packages sorted by name.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

use super::packages::{Alternatives, Dep, InstalledPackage, MultiArch, PackageRecord, Provide};
use super::version::compare;

/// One requested package: `name` or `name=version`, with its spec line when known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub name: String,
    pub version: Option<String>,
    pub line: Option<usize>,
}

impl Request {
    /// Parses `name` or `name=version`.
    pub fn parse(text: &str, line: Option<usize>) -> Request {
        let (name, version) = match text.split_once('=') {
            Some((n, v)) => (n.trim(), Some(v.trim().to_string())),
            None => (text.trim(), None),
        };
        Request {
            name: name.to_string(),
            version,
            line,
        }
    }
}

/// The packages of one or more `Packages` indexes (e.g. `main` and `contrib`, or a suite and its
/// updates), by name and by provided name.
#[derive(Debug, Clone, Default)]
pub struct Index {
    records: Vec<PackageRecord>,
    by_name: BTreeMap<String, Vec<usize>>,
    providers: BTreeMap<String, Vec<usize>>,
}

impl Index {
    /// Builds an index; a record repeated with the same name, version and architecture is kept
    /// once (the first one).
    pub fn new(lists: impl IntoIterator<Item = Vec<PackageRecord>>) -> Index {
        let mut index = Index::default();
        for list in lists {
            for r in list {
                let i = index.records.len();
                let same = index.by_name.entry(r.name.clone()).or_default();
                if same.iter().any(|&j| {
                    let o = &index.records[j];
                    o.version == r.version && o.architecture == r.architecture
                }) {
                    continue;
                }
                same.push(i);
                for p in &r.provides {
                    index.providers.entry(p.name.clone()).or_default().push(i);
                }
                index.records.push(r);
            }
        }
        index
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Every version of `name` in the index.
    pub fn versions(&self, name: &str) -> impl Iterator<Item = &PackageRecord> {
        self.by_name
            .get(name)
            .into_iter()
            .flatten()
            .map(|&i| &self.records[i])
    }
}

/// What to install.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution {
    /// Packages to install, dependencies first, ties by name.
    pub packages: Vec<PackageRecord>,
    /// Names of installed (base) packages replaced by another version.
    pub upgrades: Vec<String>,
    pub warnings: Vec<String>,
}

fn at_line(line: &Option<usize>) -> String {
    line.map(|l| format!("line {l}: ")).unwrap_or_default()
}

fn did_you_mean(s: &[String]) -> String {
    if s.is_empty() {
        String::new()
    } else {
        format!(" (did you mean {}?)", s.join(", "))
    }
}

/// Why a resolution failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    #[error(
        "{}unknown package {name:?}: not in the index for {arch}{}",
        at_line(line),
        did_you_mean(suggestions)
    )]
    UnknownPackage {
        name: String,
        arch: String,
        line: Option<usize>,
        suggestions: Vec<String>,
    },
    #[error("{}package {name:?} has no version {version:?}; available: {}", at_line(line), available.join(", "))]
    VersionNotFound {
        name: String,
        version: String,
        available: Vec<String>,
        line: Option<usize>,
    },
    #[error(
        "{}{needed_by} needs {dep}, which cannot be met: {reason}",
        at_line(line)
    )]
    Unsatisfiable {
        needed_by: String,
        dep: String,
        reason: String,
        line: Option<usize>,
    },
    #[error("{}{needed_by} needs the virtual package {name:?}, provided by several packages: {}; request one of them", at_line(line), providers.join(", "))]
    AmbiguousVirtual {
        name: String,
        providers: Vec<String>,
        needed_by: String,
        line: Option<usize>,
    },
    #[error("{}{package} {kind} {relation}, matched by {other} ({})", at_line(line), if *other_installed { "installed in the base" } else { "also chosen" })]
    Conflict {
        package: String,
        kind: &'static str,
        relation: String,
        other: String,
        other_installed: bool,
        line: Option<usize>,
    },
    #[error(
        "{}{needed_by} needs {wanted}, but {chosen} is already chosen",
        at_line(line)
    )]
    VersionClash {
        needed_by: String,
        wanted: String,
        chosen: String,
        line: Option<usize>,
    },
    #[error(
        "{}{needed_by} needs {package} {installed} of the base downgraded to {candidate}, which apt would not do (pin the version to force it)",
        at_line(line)
    )]
    WouldDowngrade {
        needed_by: String,
        package: String,
        installed: String,
        candidate: String,
        line: Option<usize>,
    },
    #[error(
        "upgrading {upgraded} breaks the installed {package}, which depends on {dep} and has no newer version that fits"
    )]
    BrokenInstalled {
        package: String,
        dep: String,
        upgraded: String,
    },
}

/// A package as the rules see it, installed or from the index.
struct View<'a> {
    name: &'a str,
    version: &'a str,
    arch: &'a str,
    multi_arch: MultiArch,
    provides: &'a [Provide],
}

impl<'a> View<'a> {
    fn of_record(r: &'a PackageRecord) -> Self {
        View {
            name: &r.name,
            version: &r.version,
            arch: &r.architecture,
            multi_arch: r.multi_arch,
            provides: &r.provides,
        }
    }
    fn of_installed(p: &'a InstalledPackage) -> Self {
        View {
            name: &p.name,
            version: &p.version,
            arch: &p.architecture,
            multi_arch: p.multi_arch,
            provides: &p.provides,
        }
    }
}

/// dpkg's `archsatisfied` for a native depender on `arch`; `conflict` relations match any arch.
fn arch_ok(v: &View, dep: &Dep, arch: &str, conflict: bool) -> bool {
    if conflict {
        return true;
    }
    let pkg_arch = if v.arch == "all" { arch } else { v.arch };
    match dep.arch_qualifier.as_deref() {
        None => v.multi_arch == MultiArch::Foreign || pkg_arch == arch,
        Some("any") => v.multi_arch == MultiArch::Allowed,
        Some("native") => pkg_arch == arch,
        Some(a) => pkg_arch == a,
    }
}

/// Whether the package meets `dep` by its own name and version.
fn meets_real(v: &View, dep: &Dep, arch: &str, conflict: bool) -> bool {
    v.name == dep.name
        && arch_ok(v, dep, arch, conflict)
        && dep
            .relation
            .as_ref()
            .is_none_or(|(r, want)| r.holds(v.version, want))
}

/// Whether the package meets `dep` through `Provides` (a versioned `dep` needs a versioned one).
fn meets_provided(v: &View, dep: &Dep, arch: &str, conflict: bool) -> bool {
    arch_ok(v, dep, arch, conflict)
        && v.provides.iter().any(|p| {
            p.name == dep.name
                && match (&dep.relation, &p.version) {
                    (None, _) => true,
                    (Some((r, want)), Some(have)) => r.holds(have, want),
                    (Some(_), None) => false,
                }
        })
}

fn meets(v: &View, dep: &Dep, arch: &str, conflict: bool) -> bool {
    meets_real(v, dep, arch, conflict) || meets_provided(v, dep, arch, conflict)
}

fn label(r: &PackageRecord) -> String {
    format!("{} {}", r.name, r.version)
}

struct Solver<'a> {
    index: &'a Index,
    arch: &'a str,
    installed: Vec<&'a InstalledPackage>,
    /// Installed entries (indices into `installed`) replaced by a chosen version.
    shadowed: BTreeSet<usize>,
    /// Chosen record per (name, architecture).
    chosen: BTreeMap<(String, String), usize>,
    /// The request line that pulled each chosen record in.
    origin: BTreeMap<usize, Option<usize>>,
    queue: Vec<usize>,
    upgrades: BTreeSet<String>,
    warnings: Vec<String>,
    /// Installed packages (indices into `installed`) by their candidate's source package name.
    by_source: BTreeMap<String, Vec<usize>>,
}

enum Met {
    Installed,
    Chosen,
}

impl<'a> Solver<'a> {
    fn live_installed(&self) -> impl Iterator<Item = (usize, &'a InstalledPackage)> + '_ {
        self.installed
            .iter()
            .enumerate()
            .filter(|(i, _)| !self.shadowed.contains(i))
            .map(|(i, p)| (i, *p))
    }

    fn met(&self, dep: &Dep) -> Option<Met> {
        if self.chosen.values().any(|&r| {
            meets(
                &View::of_record(&self.index.records[r]),
                dep,
                self.arch,
                false,
            )
        }) {
            return Some(Met::Chosen);
        }
        if self
            .live_installed()
            .any(|(_, p)| meets(&View::of_installed(p), dep, self.arch, false))
        {
            return Some(Met::Installed);
        }
        None
    }

    /// The candidate (highest version) of a real name for `dep`'s architecture rules.
    fn candidate(&self, name: &str, dep: &Dep) -> Option<usize> {
        let idx = self.index.by_name.get(name)?;
        idx.iter()
            .copied()
            .filter(|&i| {
                let probe = Dep {
                    name: name.to_string(),
                    arch_qualifier: dep.arch_qualifier.clone(),
                    relation: None,
                };
                arch_ok(
                    &View::of_record(&self.index.records[i]),
                    &probe,
                    self.arch,
                    false,
                )
            })
            .max_by(|&a, &b| {
                let (ra, rb) = (&self.index.records[a], &self.index.records[b]);
                compare(&ra.version, &rb.version)
                    // Same version twice (e.g. arch and all): prefer the target architecture.
                    .then_with(|| {
                        (ra.architecture == self.arch).cmp(&(rb.architecture == self.arch))
                    })
                    .then_with(|| b.cmp(&a))
            })
    }

    /// The package to choose for `dep`, which nothing meets yet.
    fn pick(&self, dep: &Dep, needed_by: &str, line: Option<usize>) -> Result<usize, ResolveError> {
        let unsatisfiable = |reason: String| ResolveError::Unsatisfiable {
            needed_by: needed_by.to_string(),
            dep: dep.to_string(),
            reason,
            line,
        };
        let mut reason = None;
        if let Some(c) = self.candidate(&dep.name, dep) {
            let r = &self.index.records[c];
            if meets_real(&View::of_record(r), dep, self.arch, false) {
                return Ok(c);
            }
            reason = Some(format!("the candidate is {} {}", r.name, r.version));
        }
        // Providers: only candidate versions count, as in apt.
        let mut providers: Vec<usize> = Vec::new();
        for &i in self.index.providers.get(&dep.name).into_iter().flatten() {
            let r = &self.index.records[i];
            let plain = Dep {
                name: r.name.clone(),
                arch_qualifier: None,
                relation: None,
            };
            if self.candidate(&r.name, &plain) == Some(i)
                && meets_provided(&View::of_record(r), dep, self.arch, false)
                && !providers.contains(&i)
            {
                providers.push(i);
            }
        }
        match providers.len() {
            1 => Ok(providers[0]),
            0 => Err(unsatisfiable(reason.unwrap_or_else(|| {
                if self.index.providers.contains_key(&dep.name) {
                    "no provider fits the version or architecture".to_string()
                } else {
                    format!("no package of that name for {}", self.arch)
                }
            }))),
            _ => {
                let mut names: Vec<String> = providers
                    .iter()
                    .map(|&i| self.index.records[i].name.clone())
                    .collect();
                names.sort();
                names.dedup();
                Err(ResolveError::AmbiguousVirtual {
                    name: dep.name.clone(),
                    providers: names,
                    needed_by: needed_by.to_string(),
                    line,
                })
            }
        }
    }

    /// Adds a record to the chosen set; an installed entry of the same name and architecture is
    /// replaced: an upgrade, or a downgrade — only for a pinned request (with a warning), as apt
    /// never downgrades on its own.
    fn install(
        &mut self,
        r: usize,
        needed_by: &str,
        line: Option<usize>,
        allow_downgrade: bool,
    ) -> Result<(), ResolveError> {
        let rec = &self.index.records[r];
        let key = (rec.name.clone(), rec.architecture.clone());
        if let Some(&have) = self.chosen.get(&key) {
            if have == r {
                return Ok(());
            }
            return Err(ResolveError::VersionClash {
                needed_by: needed_by.to_string(),
                wanted: label(rec),
                chosen: label(&self.index.records[have]),
                line,
            });
        }
        let replaced: Vec<(usize, &InstalledPackage)> = self
            .live_installed()
            .filter(|(_, p)| {
                p.name == rec.name
                    && (p.architecture == rec.architecture
                        || p.architecture == "all"
                        || rec.architecture == "all")
            })
            .collect();
        if !allow_downgrade
            && let Some((_, p)) = replaced
                .iter()
                .find(|(_, p)| compare(&rec.version, &p.version) == Ordering::Less)
        {
            return Err(ResolveError::WouldDowngrade {
                needed_by: needed_by.to_string(),
                package: p.name.clone(),
                installed: p.version.clone(),
                candidate: rec.version.clone(),
                line,
            });
        }
        for (i, p) in replaced {
            self.shadowed.insert(i);
            self.upgrades.insert(p.name.clone());
            if compare(&rec.version, &p.version) == Ordering::Less {
                self.warnings.push(format!(
                    "{} is downgraded from {} (base) to {}",
                    p.name, p.version, rec.version
                ));
            }
        }
        self.chosen.insert(key, r);
        self.origin.entry(r).or_insert(line);
        self.queue.push(r);
        self.upgrade_siblings(r, line)?;
        Ok(())
    }

    /// apt's `APT::Get::Upgrade-By-Source-Package` (on by default): when a package is installed
    /// or upgraded, the base's other packages whose candidate is built from the same source
    /// version are upgraded to it (libc6 brings libc-bin along; a new libpcre2-16-0 brings the
    /// base's libpcre2-8-0). The candidate's `Source` decides, as the status may lack the field.
    fn upgrade_siblings(&mut self, r: usize, line: Option<usize>) -> Result<(), ResolveError> {
        let rec = &self.index.records[r];
        let (source, source_version) = rec.source();
        let Some(group) = self.by_source.get(&source) else {
            return Ok(());
        };
        let siblings: Vec<usize> = group
            .iter()
            .filter(|&&i| !self.shadowed.contains(&i))
            .map(|&i| self.installed[i])
            .filter(|p| p.name != rec.name)
            .filter_map(|p| {
                let plain = Dep {
                    name: p.name.clone(),
                    arch_qualifier: None,
                    relation: None,
                };
                let c = self.candidate(&p.name, &plain)?;
                let cand = &self.index.records[c];
                let newer = compare(&cand.version, &p.version) == Ordering::Greater;
                let same_build = cand.source() == (source.clone(), source_version.clone());
                let free = !self
                    .chosen
                    .contains_key(&(cand.name.clone(), cand.architecture.clone()));
                (newer && same_build && free).then_some(c)
            })
            .collect();
        let who = label(rec);
        for c in siblings {
            self.install(c, &who, line, false)?;
        }
        Ok(())
    }

    fn satisfy(
        &mut self,
        group: &Alternatives,
        needed_by: &str,
        line: Option<usize>,
    ) -> Result<(), ResolveError> {
        if group.iter().any(|d| self.met(d).is_some()) {
            return Ok(());
        }
        let mut first_err = None;
        for d in group {
            match self.pick(d, needed_by, line) {
                Ok(r) => return self.install(r, needed_by, line, false),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Follows the requirements of everything queued.
    fn drain(&mut self) -> Result<(), ResolveError> {
        while let Some(r) = self.queue.pop() {
            let rec = &self.index.records[r];
            let line = self.origin.get(&r).copied().flatten();
            let who = label(rec);
            for group in rec.pre_depends.iter().chain(&rec.depends) {
                self.satisfy(group, &who, line)?;
            }
        }
        Ok(())
    }

    fn request(&mut self, req: &Request) -> Result<(), ResolveError> {
        let line = req.line;
        let who = format!("request {:?}", req.name);
        let plain = Dep {
            name: req.name.clone(),
            arch_qualifier: None,
            relation: None,
        };
        let reals: Vec<usize> = self
            .index
            .by_name
            .get(&req.name)
            .into_iter()
            .flatten()
            .copied()
            .filter(|&i| {
                arch_ok(
                    &View::of_record(&self.index.records[i]),
                    &plain,
                    self.arch,
                    false,
                )
            })
            .collect();
        if reals.is_empty() {
            if self.index.providers.contains_key(&req.name) && req.version.is_none() {
                if self.met(&plain).is_some() {
                    self.warnings
                        .push(format!("{}: already provided", req.name));
                    return Ok(());
                }
                let r = self.pick(&plain, &who, line)?;
                self.warnings.push(format!(
                    "{} is a virtual package; installing {}",
                    req.name,
                    label(&self.index.records[r])
                ));
                return self.install(r, &who, line, false);
            }
            return Err(ResolveError::UnknownPackage {
                name: req.name.clone(),
                arch: self.arch.to_string(),
                line,
                suggestions: self.suggestions(&req.name),
            });
        }
        let r = match &req.version {
            Some(v) => match reals
                .iter()
                .copied()
                .find(|&i| compare(&self.index.records[i].version, v) == Ordering::Equal)
            {
                Some(r) => r,
                None => {
                    let mut available: Vec<String> = reals
                        .iter()
                        .map(|&i| self.index.records[i].version.clone())
                        .collect();
                    available.sort_by(|a, b| compare(b, a));
                    available.dedup();
                    return Err(ResolveError::VersionNotFound {
                        name: req.name.clone(),
                        version: v.clone(),
                        available,
                        line,
                    });
                }
            },
            None => self.candidate(&req.name, &plain).unwrap_or(reals[0]),
        };
        let rec = &self.index.records[r];
        let pinned = req.version.is_some();
        // Unpinned: the base's version is kept when it is the candidate or newer (apt's
        // "already the newest version"); pinned: only when it is that version.
        let kept = self.live_installed().find(|(_, p)| {
            p.name == rec.name
                && match compare(&p.version, &rec.version) {
                    Ordering::Equal => true,
                    Ordering::Greater => !pinned,
                    Ordering::Less => false,
                }
        });
        if let Some((_, p)) = kept {
            self.warnings.push(format!(
                "{} {} is already installed in the base",
                p.name, p.version
            ));
            return Ok(());
        }
        self.install(r, &who, line, pinned)
    }

    /// Up to three names close to `name`: same prefix, or at most two edits away.
    fn suggestions(&self, name: &str) -> Vec<String> {
        let common = |n: &str| {
            n.bytes()
                .zip(name.bytes())
                .take_while(|(a, b)| a == b)
                .count()
        };
        let mut scored: Vec<(usize, std::cmp::Reverse<usize>, &String)> = self
            .index
            .by_name
            .keys()
            .chain(self.index.providers.keys())
            .filter_map(|n| {
                if n.len().abs_diff(name.len()) > 3 && !n.starts_with(name) {
                    return None;
                }
                let d = edit_distance(name, n);
                let d = if d <= 2 {
                    d
                } else if n.starts_with(name) {
                    3
                } else {
                    return None;
                };
                Some((d, std::cmp::Reverse(common(n)), n))
            })
            .collect();
        // Closest first, then the longest shared prefix, then by name.
        scored.sort();
        scored.dedup_by(|a, b| a.2 == b.2);
        scored
            .into_iter()
            .take(3)
            .map(|(_, _, n)| n.clone())
            .collect()
    }

    fn line_of(&self, r: usize) -> Option<usize> {
        self.origin.get(&r).copied().flatten()
    }

    /// Installed packages whose requirements an upgrade broke: upgrade them too, or fail.
    fn fix_installed(&mut self) -> Result<bool, ResolveError> {
        let upgraded: BTreeSet<String> = self.upgrades.clone();
        let mut broken = Vec::new();
        for (_, p) in self.live_installed() {
            for group in p.pre_depends.iter().chain(&p.depends) {
                if group.iter().any(|d| upgraded.contains(&d.name))
                    && !group.iter().any(|d| self.met(d).is_some())
                {
                    let names: Vec<String> = group.iter().map(Dep::to_string).collect();
                    let culprit = group
                        .iter()
                        .find(|d| upgraded.contains(&d.name))
                        .map(|d| d.name.clone())
                        .unwrap_or_default();
                    broken.push((p, names.join(" | "), culprit));
                    break;
                }
            }
        }
        let mut changed = false;
        for (p, dep, culprit) in broken {
            let plain = Dep {
                name: p.name.clone(),
                arch_qualifier: None,
                relation: None,
            };
            match self.candidate(&p.name, &plain) {
                Some(c)
                    if compare(&self.index.records[c].version, &p.version) == Ordering::Greater =>
                {
                    let line = self.chosen_line_for(&culprit);
                    self.install(c, &format!("{} {} (base)", p.name, p.version), line, false)?;
                    changed = true;
                }
                _ => {
                    return Err(ResolveError::BrokenInstalled {
                        package: format!("{} {}", p.name, p.version),
                        dep,
                        upgraded: culprit,
                    });
                }
            }
        }
        Ok(changed)
    }

    fn chosen_line_for(&self, name: &str) -> Option<usize> {
        self.chosen
            .iter()
            .find(|((n, _), _)| n == name)
            .and_then(|(_, &r)| self.line_of(r))
    }

    /// `Conflicts` / `Breaks` in both directions; an installed package a chosen one breaks is
    /// upgraded when its candidate is not broken.
    fn check_conflicts(&mut self) -> Result<bool, ResolveError> {
        let chosen: Vec<usize> = self.chosen.values().copied().collect();
        for &r in &chosen {
            let rec = &self.index.records[r];
            let rels = rec
                .conflicts
                .iter()
                .map(|d| ("conflicts with", d))
                .chain(rec.breaks.iter().map(|d| ("breaks", d)));
            for (kind, dep) in rels {
                for &o in &chosen {
                    let other = &self.index.records[o];
                    if o != r
                        && other.name != rec.name
                        && meets(&View::of_record(other), dep, self.arch, true)
                    {
                        return Err(ResolveError::Conflict {
                            package: label(rec),
                            kind,
                            relation: dep.to_string(),
                            other: label(other),
                            other_installed: false,
                            line: self.line_of(r).or(self.line_of(o)),
                        });
                    }
                }
                let hit = self
                    .live_installed()
                    .find(|(_, p)| {
                        p.name != rec.name && meets(&View::of_installed(p), dep, self.arch, true)
                    })
                    .map(|(_, p)| p);
                if let Some(p) = hit {
                    let plain = Dep {
                        name: p.name.clone(),
                        arch_qualifier: None,
                        relation: None,
                    };
                    if let Some(c) = self.candidate(&p.name, &plain)
                        && compare(&self.index.records[c].version, &p.version) == Ordering::Greater
                        && !meets(
                            &View::of_record(&self.index.records[c]),
                            dep,
                            self.arch,
                            true,
                        )
                    {
                        let line = self.line_of(r);
                        self.install(c, &label(rec), line, false)?;
                        return Ok(true);
                    }
                    return Err(ResolveError::Conflict {
                        package: label(rec),
                        kind,
                        relation: dep.to_string(),
                        other: format!("{} {}", p.name, p.version),
                        other_installed: true,
                        line: self.line_of(r),
                    });
                }
            }
        }
        for (_, p) in self.live_installed() {
            let rels = p
                .conflicts
                .iter()
                .map(|d| ("conflicts with", d))
                .chain(p.breaks.iter().map(|d| ("breaks", d)));
            for (kind, dep) in rels {
                for &o in &chosen {
                    let other = &self.index.records[o];
                    if other.name != p.name && meets(&View::of_record(other), dep, self.arch, true)
                    {
                        return Err(ResolveError::Conflict {
                            package: format!("{} {} (base)", p.name, p.version),
                            kind,
                            relation: dep.to_string(),
                            other: label(other),
                            other_installed: false,
                            line: self.line_of(o),
                        });
                    }
                }
            }
        }
        Ok(false)
    }

    /// Dependencies first: depth-first post-order from the chosen packages by name.
    fn order(&self) -> Vec<usize> {
        let chosen: Vec<usize> = self.chosen.values().copied().collect();
        let name_of = |r: usize| {
            let rec = &self.index.records[r];
            (rec.name.clone(), rec.architecture.clone())
        };
        let edges = |r: usize| -> Vec<usize> {
            let rec = &self.index.records[r];
            let mut out: Vec<usize> = Vec::new();
            for groups in [&rec.pre_depends, &rec.depends] {
                let mut level: Vec<usize> = Vec::new();
                for group in groups {
                    for d in group {
                        for &o in &chosen {
                            if o != r
                                && meets(
                                    &View::of_record(&self.index.records[o]),
                                    d,
                                    self.arch,
                                    false,
                                )
                                && !level.contains(&o)
                            {
                                level.push(o);
                            }
                        }
                    }
                }
                level.sort_by_key(|&o| name_of(o));
                for o in level {
                    if !out.contains(&o) {
                        out.push(o);
                    }
                }
            }
            out
        };
        let mut roots = chosen.clone();
        roots.sort_by_key(|&r| name_of(r));
        let mut done = BTreeSet::new();
        let mut out = Vec::new();
        for root in roots {
            if done.contains(&root) {
                continue;
            }
            // Iterative DFS: (node, its children, next child).
            done.insert(root);
            let mut stack = vec![(root, edges(root), 0usize)];
            while let Some((node, children, next)) = stack.last_mut() {
                if *next < children.len() {
                    let c = children[*next];
                    *next += 1;
                    if done.insert(c) {
                        let e = edges(c);
                        stack.push((c, e, 0));
                    }
                } else {
                    out.push(*node);
                    stack.pop();
                }
            }
        }
        out
    }
}

/// Resolves `requests` for `arch` against `index` and what the base has `installed`.
pub fn resolve(
    requests: &[Request],
    index: &Index,
    installed: &[InstalledPackage],
    arch: &str,
) -> Result<Resolution, ResolveError> {
    let mut s = Solver {
        index,
        arch,
        installed: installed.iter().filter(|p| p.status_ok).collect(),
        shadowed: BTreeSet::new(),
        chosen: BTreeMap::new(),
        origin: BTreeMap::new(),
        queue: Vec::new(),
        upgrades: BTreeSet::new(),
        warnings: Vec::new(),
        by_source: BTreeMap::new(),
    };
    for (i, p) in s.installed.iter().enumerate() {
        let plain = Dep {
            name: p.name.clone(),
            arch_qualifier: None,
            relation: None,
        };
        if let Some(c) = s.candidate(&p.name, &plain) {
            let source = index.records[c].source().0;
            s.by_source.entry(source).or_default().push(i);
        }
    }
    for req in requests {
        s.request(req)?;
        s.drain()?;
    }
    // Each round adds at least one package, so this ends within the index's size.
    for _ in 0..=index.len() {
        let mut changed = s.fix_installed()?;
        s.drain()?;
        changed |= s.check_conflicts()?;
        s.drain()?;
        if !changed {
            break;
        }
    }
    let order = s.order();
    Ok(Resolution {
        packages: order.iter().map(|&r| index.records[r].clone()).collect(),
        upgrades: s.upgrades.into_iter().collect(),
        warnings: s.warnings,
    })
}

/// Edit distance counting a swap of two neighbours as one edit (optimal string alignment):
/// `crul` is one edit from `curl`. Names are short, so a full table is fine.
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let w = b.len() + 1;
    let mut d = vec![0usize; (a.len() + 1) * w];
    for i in 0..=a.len() {
        for j in 0..=b.len() {
            d[i * w + j] = if i == 0 || j == 0 {
                i + j
            } else {
                let sub = d[(i - 1) * w + j - 1] + usize::from(a[i - 1] != b[j - 1]);
                let mut best = sub.min(d[(i - 1) * w + j] + 1).min(d[i * w + j - 1] + 1);
                if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                    best = best.min(d[(i - 2) * w + j - 2] + 1);
                }
                best
            };
        }
    }
    d[a.len() * w + b.len()]
}

#[cfg(test)]
mod tests;
