//! update-alternatives without running it: the link groups of the new packages (parsed from
//! their postinst by [`super::scripts`]) merged with the base's admin files, giving the
//! symlinks and `var/lib/dpkg/alternatives/NAME` files update-alternatives would leave (checked
//! against `update-alternatives --root` in the tests).

use std::collections::BTreeMap;

/// A `--slave LINK NAME PATH` of an alternative.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlternativeSlave {
    pub link: String,
    pub name: String,
    pub path: String,
}

/// An `update-alternatives --install` call of a package's postinst.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alternative {
    pub package: String,
    /// The generic name's link, absolute (`/usr/bin/awk`).
    pub link: String,
    pub name: String,
    /// The alternative, absolute (`/usr/bin/mawk`).
    pub path: String,
    pub priority: i64,
    pub slaves: Vec<AlternativeSlave>,
}

/// What the alternatives of an image amount to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AlternativeLinks {
    /// (link path without the leading `/`, target): `usr/bin/awk -> /etc/alternatives/awk`,
    /// `etc/alternatives/awk -> /usr/bin/mawk`; sorted.
    pub symlinks: Vec<(String, String)>,
    /// (image path, content): `var/lib/dpkg/alternatives/awk`; sorted.
    pub files: Vec<(String, Vec<u8>)>,
    /// Alternatives left alone, with why (manual mode in the base, a link that differs from the
    /// base's, a missing target).
    pub unhandled: Vec<String>,
}

/// A choice of a link group: its priority and its slaves' paths by slave name.
type Choice = (i64, BTreeMap<String, String>);

/// One link group as update-alternatives keeps it.
#[derive(Debug, Clone, Default)]
struct Group {
    manual: bool,
    link: String,
    /// (slave name, slave link), sorted by name.
    slaves: BTreeMap<String, String>,
    /// path → (priority, slave name → path)
    choices: BTreeMap<String, Choice>,
}

/// Parses an update-alternatives admin file (`var/lib/dpkg/alternatives/NAME`).
fn parse_admin(text: &str) -> Option<Group> {
    let mut lines = text.lines();
    let manual = match lines.next()? {
        "auto" => false,
        "manual" => true,
        _ => return None,
    };
    let link = lines.next()?.to_string();
    let mut slave_names = Vec::new();
    let mut slaves = BTreeMap::new();
    loop {
        let name = lines.next()?;
        if name.is_empty() {
            break;
        }
        let slink = lines.next()?;
        slave_names.push(name.to_string());
        slaves.insert(name.to_string(), slink.to_string());
    }
    let mut choices = BTreeMap::new();
    loop {
        let path = lines.next()?;
        if path.is_empty() {
            break;
        }
        let priority = lines.next()?.parse().ok()?;
        let mut spaths = BTreeMap::new();
        for name in &slave_names {
            let p = lines.next()?;
            if !p.is_empty() {
                spaths.insert(name.clone(), p.to_string());
            }
        }
        choices.insert(path.to_string(), (priority, spaths));
    }
    Some(Group {
        manual,
        link,
        slaves,
        choices,
    })
}

fn write_admin(g: &Group) -> String {
    let mut s = String::new();
    s.push_str(if g.manual { "manual\n" } else { "auto\n" });
    s.push_str(&g.link);
    s.push('\n');
    for (name, link) in &g.slaves {
        s.push_str(&format!("{name}\n{link}\n"));
    }
    s.push('\n');
    for (path, (priority, spaths)) in &g.choices {
        s.push_str(&format!("{path}\n{priority}\n"));
        for name in g.slaves.keys() {
            s.push_str(spaths.get(name).map(String::as_str).unwrap_or_default());
            s.push('\n');
        }
    }
    s.push('\n');
    s
}

/// The symlinks and admin files for the alternatives of the new packages, merged with the
/// base's admin files (`base`: name → content of `var/lib/dpkg/alternatives/NAME`). `exists`
/// tells whether an absolute path exists in the image (base or new packages): a choice whose
/// path is missing is skipped and a slave whose path is missing gets no link, as
/// update-alternatives does. Only groups the new packages touch are returned.
pub fn alternative_links(
    base: &BTreeMap<String, String>,
    new: &[Alternative],
    exists: &dyn Fn(&str) -> bool,
) -> AlternativeLinks {
    let mut out = AlternativeLinks::default();
    let mut groups: BTreeMap<String, Group> = BTreeMap::new();
    for alt in new {
        if !groups.contains_key(&alt.name) {
            let group = match base.get(&alt.name) {
                Some(text) => match parse_admin(text) {
                    Some(g) => g,
                    None => {
                        out.unhandled.push(format!(
                            "{}: {}: the base's admin file is not understood",
                            alt.package, alt.name
                        ));
                        continue;
                    }
                },
                None => Group {
                    link: alt.link.clone(),
                    ..Group::default()
                },
            };
            groups.insert(alt.name.clone(), group);
        }
        let Some(group) = groups.get_mut(&alt.name) else {
            continue;
        };
        if group.link != alt.link {
            out.unhandled.push(format!(
                "{}: alternative {} links {} but {} is already its link",
                alt.package, alt.name, alt.link, group.link
            ));
            continue;
        }
        if !exists(&alt.path) {
            out.unhandled.push(format!(
                "{}: alternative {}: {} does not exist",
                alt.package, alt.name, alt.path
            ));
            continue;
        }
        let mut spaths = BTreeMap::new();
        for s in &alt.slaves {
            group
                .slaves
                .entry(s.name.clone())
                .or_insert_with(|| s.link.clone());
            spaths.insert(s.name.clone(), s.path.clone());
        }
        group
            .choices
            .insert(alt.path.clone(), (alt.priority, spaths));
    }
    for (name, group) in &groups {
        if group.choices.is_empty() {
            continue;
        }
        out.files.push((
            format!("var/lib/dpkg/alternatives/{name}"),
            write_admin(group).into_bytes(),
        ));
        if group.manual {
            out.unhandled.push(format!(
                "alternative {name} is in manual mode in the base: its selection is kept"
            ));
            continue;
        }
        // Best: highest priority, the first path in order among equals.
        let mut best: Option<(&String, &Choice)> = None;
        for choice in &group.choices {
            if best.is_none_or(|b| choice.1.0 > b.1.0) {
                best = Some(choice);
            }
        }
        let Some((path, (_, spaths))) = best else {
            continue;
        };
        let link_to = |link: &str| link.trim_start_matches('/').to_string();
        out.symlinks
            .push((link_to(&group.link), format!("/etc/alternatives/{name}")));
        out.symlinks
            .push((format!("etc/alternatives/{name}"), path.clone()));
        for (sname, slink) in &group.slaves {
            if let Some(spath) = spaths.get(sname)
                && exists(spath)
            {
                out.symlinks
                    .push((link_to(slink), format!("/etc/alternatives/{sname}")));
                out.symlinks
                    .push((format!("etc/alternatives/{sname}"), spath.clone()));
            }
        }
    }
    out.symlinks.sort();
    out.files.sort();
    out
}
