//! `shared-lib-missing`: a wheel's native code needs a shared library that the image lacks
//! (LightGBM's `libgomp.so.1` without Debian's `libgomp1`, OpenCV's `libGL.so.1`, …).
//!
//! Each `.so` a wheel installs is read for its `DT_NEEDED`, `DT_RPATH` and `DT_RUNPATH`
//! ([`super::elf`]), and each needed name is looked for as the dynamic loader would: in the
//! object's run path (`$ORIGIN` is the object's own folder, so auditwheel's `<pkg>.libs/`
//! resolve inside the image's wheels), then in the image's `LD_LIBRARY_PATH`, then in the
//! base's default folders (`/lib`, `/usr/lib`, their `*-linux-*` triplet folders, `/lib64`,
//! `/usr/lib64`, `/usr/local/lib` and what `/etc/ld.so.conf(.d)` names). A library counts as
//! there when the base's layers, any layer of the image (the wheels of every set, `dir` trees)
//! or the build's own system packages ([`SystemLibs`]) hold a file of that name in one of those
//! folders. A missing one is a warning naming the Debian package that provides it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use super::base::{BaseLibs, clean, is_lib_name};
use super::elf::{self, Dynamic};
use super::warning;
use crate::plan::PlatformPlan;
use crate::progress::Warning;
use crate::sources::python::{PythonTarget, ResolvedWheel};

/// The libraries the build's own system packages (`[system]`) will add, in whichever form is
/// at hand: the image paths of the library files their `.deb`s install (looked up like the
/// base's, in the loader's folders), sonames (there wherever they are), or package names (a
/// needed library whose Debian package in the table is listed counts as there).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SystemLibs {
    /// Image paths (relative to `/`, e.g. `usr/lib/x86_64-linux-gnu/libgomp.so.1`).
    pub paths: BTreeSet<String>,
    pub sonames: BTreeSet<String>,
    pub packages: BTreeSet<String>,
}

/// One shared object a wheel installs.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SharedObject {
    /// Image path (relative to `/`).
    pub path: String,
    /// Its name inside the wheel.
    pub member: String,
    pub dynamic: Dynamic,
}

/// What a wheel installs of native code.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WheelLibs {
    /// Image paths (relative to `/`) of every `*.so` / `*.so.*` file the wheel installs.
    pub files: Vec<String>,
    /// The ELF shared objects among them, with their dynamic sections.
    pub objects: Vec<SharedObject>,
    /// Members that are ELF files but could not be read, with why.
    pub unreadable: Vec<(String, String)>,
}

/// Whether a wheel may hold native code (its platform tag is not `any`).
pub fn is_native(filename: &str) -> bool {
    filename
        .strip_suffix(".whl")
        .and_then(|s| s.rsplit('-').next())
        .is_some_and(|tag| tag != "any")
}

/// The wheel's file, if it is on this machine already: a local path (`find_links`, a path
/// in the lock) or the wheel cache. Nothing is downloaded here.
pub fn local_wheel(w: &ResolvedWheel, cache_dir: &Path) -> Option<PathBuf> {
    // the fetch stage's wheel cache (`fetch::wheel_cache`) is `<cache>/wheels`, in which the
    // python module's `WheelCache` keeps `wheels/<sha256>/<filename>`
    let cached = cache_dir
        .join("wheels")
        .join("wheels")
        .join(w.sha256.to_ascii_lowercase())
        .join(&w.filename);
    if !w.filename.contains(['/', '\\']) && cached.is_file() {
        return Some(cached);
    }
    let local = w
        .url_or_path
        .strip_prefix("file://")
        .unwrap_or(&w.url_or_path);
    if w.url_or_path.starts_with("http://") || w.url_or_path.starts_with("https://") {
        return None;
    }
    let p = PathBuf::from(local);
    p.is_file().then_some(p)
}

/// Reads the shared objects of the wheel at `path` as installed for `target`.
pub fn scan_wheel(path: &Path, target: &PythonTarget) -> Result<WheelLibs, String> {
    let entries =
        crate::sources::python::install::wheel_entries(path, target).map_err(|e| e.to_string())?;
    let mut out = WheelLibs::default();
    let mut members: Vec<(String, String)> = Vec::new();
    for e in &entries {
        let name = e.path.rsplit('/').next().unwrap_or(&e.path);
        if !is_lib_name(name) {
            continue;
        }
        out.files.push(e.path.clone());
        if let crate::layer::Content::ZipMember { name, .. } = &e.content {
            members.push((e.path.clone(), name.clone()));
        }
    }
    if members.is_empty() {
        return Ok(out);
    }
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut archive = zip::ZipArchive::new(std::io::BufReader::new(file))
        .map_err(|e| format!("{}: not a zip: {e}", path.display()))?;
    for (image_path, member) in members {
        let mut src = elf::ZipSource {
            archive: &mut archive,
            name: &member,
        };
        match elf::read_dynamic(&mut src) {
            Ok(Some(dynamic)) => out.objects.push(SharedObject {
                path: image_path,
                member,
                dynamic,
            }),
            Ok(None) => {}
            Err(e) => out.unreadable.push((member, e.to_string())),
        }
    }
    Ok(out)
}

/// Who provides a library, when a Debian package is not the answer.
enum Provider {
    Debian(&'static str),
    /// NVIDIA's container runtime mounts the driver's libraries (`[config] gpu`).
    NvidiaRuntime,
}

/// The C library's own sonames: present on every glibc system, so they count as there when
/// the base has `libc.so.6` in a default folder.
fn is_glibc(soname: &str) -> bool {
    const GLIBC: [&str; 13] = [
        "libc.so.6",
        "libm.so.6",
        "libpthread.so.0",
        "libdl.so.2",
        "librt.so.1",
        "libutil.so.1",
        "libresolv.so.2",
        "libanl.so.1",
        "libmvec.so.1",
        "libBrokenLocale.so.1",
        "libthread_db.so.1",
        "libnss_files.so.2",
        "libnss_dns.so.2",
    ];
    GLIBC.contains(&soname) || soname.starts_with("ld-linux")
}

/// The NVIDIA driver's libraries that the container runtime mounts into a GPU container.
fn is_nvidia_driver(soname: &str) -> bool {
    const DRIVER: [&str; 7] = [
        "libcuda.so.1",
        "libnvidia-ml.so.1",
        "libnvidia-ptxjitcompiler.so.1",
        "libnvcuvid.so.1",
        "libnvidia-encode.so.1",
        "libnvidia-opticalflow.so.1",
        "libnvidia-nvvm.so.4",
    ];
    DRIVER.contains(&soname)
}

/// soname → Debian (bookworm) package, for what ML wheels commonly need.
const DEBIAN: &[(&str, &str)] = &[
    ("libgomp.so.1", "libgomp1"),
    ("libstdc++.so.6", "libstdc++6"),
    ("libgcc_s.so.1", "libgcc-s1"),
    ("libatomic.so.1", "libatomic1"),
    ("libgfortran.so.5", "libgfortran5"),
    ("libquadmath.so.0", "libquadmath0"),
    ("libopenblas.so.0", "libopenblas0"),
    ("libblas.so.3", "libblas3"),
    ("liblapack.so.3", "liblapack3"),
    ("libomp.so.5", "libomp5-14"),
    ("libtbb.so.12", "libtbb12"),
    ("libnuma.so.1", "libnuma1"),
    ("libGL.so.1", "libgl1"),
    ("libEGL.so.1", "libegl1"),
    ("libGLX.so.0", "libglx0"),
    ("libOpenGL.so.0", "libopengl0"),
    ("libGLdispatch.so.0", "libglvnd0"),
    ("libgbm.so.1", "libgbm1"),
    ("libglib-2.0.so.0", "libglib2.0-0"),
    ("libgthread-2.0.so.0", "libglib2.0-0"),
    ("libgobject-2.0.so.0", "libglib2.0-0"),
    ("libgio-2.0.so.0", "libglib2.0-0"),
    ("libgmodule-2.0.so.0", "libglib2.0-0"),
    ("libX11.so.6", "libx11-6"),
    ("libXext.so.6", "libxext6"),
    ("libXrender.so.1", "libxrender1"),
    ("libXau.so.6", "libxau6"),
    ("libXdmcp.so.6", "libxdmcp6"),
    ("libSM.so.6", "libsm6"),
    ("libICE.so.6", "libice6"),
    ("libxcb.so.1", "libxcb1"),
    ("libsndfile.so.1", "libsndfile1"),
    ("libasound.so.2", "libasound2"),
    ("libportaudio.so.2", "libportaudio2"),
    ("libsox.so.3", "libsox3"),
    ("libavcodec.so.59", "libavcodec59"),
    ("libavformat.so.59", "libavformat59"),
    ("libavutil.so.57", "libavutil57"),
    ("libavfilter.so.8", "libavfilter8"),
    ("libavdevice.so.59", "libavdevice59"),
    ("libswscale.so.6", "libswscale6"),
    ("libswresample.so.4", "libswresample4"),
    ("libz.so.1", "zlib1g"),
    ("libbz2.so.1.0", "libbz2-1.0"),
    ("liblzma.so.5", "liblzma5"),
    ("libzstd.so.1", "libzstd1"),
    ("libssl.so.3", "libssl3"),
    ("libcrypto.so.3", "libssl3"),
    ("libffi.so.8", "libffi8"),
    ("libexpat.so.1", "libexpat1"),
    ("libuuid.so.1", "libuuid1"),
    ("libcrypt.so.1", "libcrypt1"),
    ("libsqlite3.so.0", "libsqlite3-0"),
    ("libtinfo.so.6", "libtinfo6"),
    ("libncursesw.so.6", "libncursesw6"),
    ("libreadline.so.8", "libreadline8"),
    ("libjpeg.so.62", "libjpeg62-turbo"),
    ("libpng16.so.16", "libpng16-16"),
    ("libtiff.so.6", "libtiff6"),
    ("libwebp.so.7", "libwebp7"),
    ("libfreetype.so.6", "libfreetype6"),
    ("libfontconfig.so.1", "libfontconfig1"),
    ("libxml2.so.2", "libxml2"),
    ("libxslt.so.1", "libxslt1.1"),
    ("libcurl.so.4", "libcurl4"),
    ("libpq.so.5", "libpq5"),
    ("libmariadb.so.3", "libmariadb3"),
    ("libgeos_c.so.1", "libgeos-c1v5"),
    ("libhdf5_serial.so.103", "libhdf5-103-1"),
    ("libpython3.11.so.1.0", "libpython3.11"),
];

fn provider(soname: &str) -> Option<Provider> {
    if is_nvidia_driver(soname) {
        return Some(Provider::NvidiaRuntime);
    }
    if is_glibc(soname) {
        return Some(Provider::Debian("libc6"));
    }
    DEBIAN
        .iter()
        .find(|(s, _)| *s == soname)
        .map(|(_, p)| Provider::Debian(p))
}

/// The Debian package that provides `soname`, if the table knows one.
pub fn debian_package(soname: &str) -> Option<&'static str> {
    match provider(soname) {
        Some(Provider::Debian(p)) => Some(p),
        _ => None,
    }
}

/// One platform's image, as the library lookup sees it.
pub struct Image<'a> {
    pub base: &'a BaseLibs,
    /// Image paths (relative to `/`) of the library files our layers install.
    pub files: BTreeSet<String>,
    /// `LD_LIBRARY_PATH` of the image's environment.
    pub ld_library_path: Vec<String>,
    /// `[config] gpu` / `[gpu]`: the NVIDIA runtime provides the driver's libraries.
    pub gpu: bool,
    pub system: &'a SystemLibs,
}

/// Where the loader finds a library.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// A file of the image (relative to `/`): one of ours or the base's.
    At(String),
    /// Provided without a file the image shows: glibc's names on a glibc base, the NVIDIA
    /// runtime's, the build's system packages, a path in `DT_NEEDED`.
    Elsewhere,
}

/// `dirs` with `$ORIGIN` (and `${ORIGIN}`) expanded to the folder of the object at `path`.
fn expand(path: &str, dirs: &[String]) -> Vec<String> {
    let origin = format!("/{}", path.rsplit_once('/').map_or("", |(d, _)| d));
    dirs.iter()
        .map(|d| d.replace("${ORIGIN}", &origin).replace("$ORIGIN", &origin))
        .collect()
}

impl Image<'_> {
    /// The image path of library `name` in `dir`, when the image has one there.
    fn at(&self, dir: &str, name: &str) -> Option<String> {
        let dir = clean(dir);
        let resolved = self.base.resolve(&dir);
        [&dir, &resolved]
            .into_iter()
            .map(|d| format!("{d}/{name}"))
            .find(|p| self.files.contains(p))
            .or_else(|| {
                self.base
                    .has(&dir, name)
                    .then(|| format!("{resolved}/{name}"))
            })
    }

    fn glibc(&self) -> bool {
        self.base
            .search
            .iter()
            .chain(&self.ld_library_path)
            .any(|d| self.at(d, "libc.so.6").is_some())
    }

    /// Where the loader finds `soname` searching first `first` (the object's run path, or
    /// the `DT_RPATH`s it inherits, `$ORIGIN` expanded), then `LD_LIBRARY_PATH` and the
    /// default folders.
    pub fn locate(&self, first: &[String], soname: &str) -> Option<Found> {
        if soname.contains('/')
            || self.system.sonames.contains(soname)
            || debian_package(soname).is_some_and(|p| self.system.packages.contains(p))
            || (self.gpu && is_nvidia_driver(soname))
            || (is_glibc(soname) && self.glibc())
        {
            return Some(Found::Elsewhere);
        }
        first
            .iter()
            .chain(&self.ld_library_path)
            .chain(&self.base.search)
            .find_map(|d| self.at(d, soname))
            .map(Found::At)
    }

    /// Whether the loader finds `soname` for an object at `path` with run path `search` and
    /// nothing inherited.
    #[cfg(test)]
    fn finds(&self, path: &str, search: &[String], soname: &str) -> bool {
        self.locate(&expand(path, search), soname).is_some()
    }
}

/// Most objects visited again while `DT_RPATH`s are passed down (a bound on the fixpoint).
const MAX_VISITS: usize = 1_000_000;

/// The folders the loader searches first for each object's `DT_NEEDED`, as glibc does: an
/// object with `DT_RUNPATH` gets only that; one without gets its own `DT_RPATH` and then the
/// `DT_RPATH`s of the objects that loaded it, up the chain (auditwheel's vendored libraries in
/// `<pkg>.libs/` often have no run path and are found through their loader's). Each object
/// inherits from every object of the image that loads it (an approximation: at run time the
/// first loader wins).
fn first_dirs<'a>(
    image: &Image,
    objects: &BTreeMap<&'a str, &'a SharedObject>,
) -> BTreeMap<&'a str, Vec<String>> {
    // the DT_RPATH chain each object passes to what it loads
    let own_rpath = |o: &SharedObject| {
        if o.dynamic.runpath.is_empty() {
            expand(&o.path, &o.dynamic.rpath)
        } else {
            Vec::new()
        }
    };
    let mut inherited: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    let first = |o: &SharedObject, inh: Option<&BTreeSet<String>>| -> Vec<String> {
        if o.dynamic.runpath.is_empty() {
            let mut v = own_rpath(o);
            v.extend(inh.into_iter().flatten().cloned());
            v
        } else {
            expand(&o.path, &o.dynamic.runpath)
        }
    };
    let mut queue: Vec<&str> = objects.keys().copied().collect();
    let mut visits = 0;
    while let Some(p) = queue.pop() {
        visits += 1;
        if visits > MAX_VISITS {
            break;
        }
        let o = objects[p];
        let dirs = first(o, inherited.get(p));
        let mut chain: Vec<String> = own_rpath(o);
        chain.extend(inherited.get(p).into_iter().flatten().cloned());
        for n in &o.dynamic.needed {
            let Some(Found::At(q)) = image.locate(&dirs, n) else {
                continue;
            };
            let Some((&q, _)) = objects.get_key_value(q.as_str()) else {
                continue;
            };
            let set = inherited.entry(q).or_default();
            let before = set.len();
            set.extend(chain.iter().cloned());
            if set.len() > before {
                queue.push(q);
            }
        }
    }
    objects
        .iter()
        .map(|(p, o)| (*p, first(o, inherited.get(p))))
        .collect()
}

/// The image's `LD_LIBRARY_PATH` folders.
pub fn ld_library_path(settings: &serde_json::Value) -> Vec<String> {
    settings["Env"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e.as_str()?.strip_prefix("LD_LIBRARY_PATH="))
        .flat_map(|v| v.split(':'))
        .filter(|d| d.starts_with('/'))
        .map(str::to_string)
        .collect()
}

/// Library files of our layers other than wheel sets (a `dir` tree, the app).
pub fn layer_files(pp: &PlatformPlan) -> impl Iterator<Item = String> + '_ {
    pp.layers.iter().flat_map(|l| &l.entries).filter_map(|e| {
        let name = e.path.rsplit('/').next().unwrap_or(&e.path);
        is_lib_name(name).then(|| e.path.clone())
    })
}

/// Most library names one message lists.
const SHOWN: usize = 5;

/// The warnings for one platform: `wheels` are the read wheel sets (layer role, wheel, what
/// it installs).
pub fn check(image: &Image, wheels: &[(String, &ResolvedWheel, &WheelLibs)]) -> Vec<Warning> {
    let objects: BTreeMap<&str, &SharedObject> = wheels
        .iter()
        .flat_map(|(_, _, l)| &l.objects)
        .map(|o| (o.path.as_str(), o))
        .collect();
    let first = first_dirs(image, &objects);
    let mut out = Vec::new();
    for (role, wheel, libs) in wheels {
        // needed name → the objects that need it
        let mut missing: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for o in &libs.objects {
            let dirs = first.get(o.path.as_str()).map_or(&[][..], Vec::as_slice);
            for n in &o.dynamic.needed {
                if image.locate(dirs, n).is_none() {
                    missing.entry(n).or_default().push(&o.member);
                }
            }
        }
        if missing.is_empty() {
            continue;
        }
        out.push(warning(
            "shared-lib-missing",
            message(role, &wheel.filename, &missing),
        ));
    }
    out
}

fn message(role: &str, wheel: &str, missing: &BTreeMap<&str, Vec<&str>>) -> String {
    let mut needs: Vec<String> = missing
        .iter()
        .take(SHOWN)
        .map(|(n, from)| {
            let more = match from.len() {
                1 => String::new(),
                k => format!(" and {} more", k - 1),
            };
            format!("{n} (from {}{more})", from[0])
        })
        .collect();
    if missing.len() > SHOWN {
        needs.push(format!("{} more", missing.len() - SHOWN));
    }
    let mut packages: Vec<&str> = Vec::new();
    let mut unknown: Vec<&str> = Vec::new();
    let mut nvidia: Vec<&str> = Vec::new();
    for n in missing.keys() {
        match provider(n) {
            Some(Provider::Debian(p)) => {
                if !packages.contains(&p) {
                    packages.push(p);
                }
            }
            Some(Provider::NvidiaRuntime) => nvidia.push(n),
            None => unknown.push(n),
        }
    }
    let mut fixes: Vec<String> = Vec::new();
    if !packages.is_empty() {
        let quoted: Vec<String> = packages.iter().map(|p| format!("{p:?}")).collect();
        fixes.push(format!("add {} to [system] packages", quoted.join(", ")));
    }
    if !nvidia.is_empty() {
        fixes.push(format!(
            "{} comes with the NVIDIA driver: set [config] gpu = true so the NVIDIA container runtime mounts it",
            nvidia.join(", ")
        ));
    }
    if !unknown.is_empty() {
        fixes.push(format!(
            "no Debian package is known for {} (`apt-file search NAME` finds one)",
            unknown.join(", ")
        ));
    }
    format!(
        "{role}: {wheel} needs {}, which the image lacks; {}",
        needs.join(", "),
        fixes.join("; ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> BaseLibs {
        let mut b = BaseLibs::default();
        b.links.insert("lib".into(), "usr/lib".into());
        b.dirs.insert(
            "usr/lib/x86_64-linux-gnu".into(),
            ["libc.so.6", "libm.so.6", "libz.so.1"]
                .map(String::from)
                .into(),
        );
        b.search = vec![
            "lib".into(),
            "usr/lib".into(),
            "lib/x86_64-linux-gnu".into(),
            "usr/lib/x86_64-linux-gnu".into(),
        ];
        b
    }

    fn image<'a>(b: &'a BaseLibs, system: &'a SystemLibs) -> Image<'a> {
        Image {
            base: b,
            files: BTreeSet::new(),
            ld_library_path: Vec::new(),
            gpu: false,
            system,
        }
    }

    const SP: &str = "usr/local/lib/python3.11/site-packages";

    #[test]
    fn lookup_follows_the_loader() {
        let b = base();
        let sys = SystemLibs::default();
        let mut img = image(&b, &sys);
        let so = format!("{SP}/lightgbm/lib/lib_lightgbm.so");
        assert!(img.finds(&so, &[], "libc.so.6"));
        assert!(img.finds(&so, &[], "libpthread.so.0"), "glibc's own names");
        assert!(img.finds(&so, &[], "libz.so.1"));
        assert!(!img.finds(&so, &[], "libgomp.so.1"));
        // vendored next to the package, reached through $ORIGIN only
        img.files
            .insert(format!("{SP}/lightgbm.libs/libgomp-a34b3233.so.1"));
        assert!(!img.finds(&so, &[], "libgomp-a34b3233.so.1"));
        assert!(img.finds(
            &so,
            &["$ORIGIN/../../lightgbm.libs".into()],
            "libgomp-a34b3233.so.1"
        ));
        assert!(img.finds(
            &so,
            &["${ORIGIN}/../../lightgbm.libs".into()],
            "libgomp-a34b3233.so.1"
        ));
        // LD_LIBRARY_PATH, the NVIDIA runtime
        assert!(!img.finds(&so, &[], "libcuda.so.1"));
        img.gpu = true;
        assert!(img.finds(&so, &[], "libcuda.so.1"));
        img.files.insert("opt/x/lib/libx.so.1".into());
        assert!(!img.finds(&so, &[], "libx.so.1"));
        img.ld_library_path = vec!["/opt/x/lib".into()];
        assert!(img.finds(&so, &[], "libx.so.1"));
    }

    fn object(path: &str, needed: &[&str], rpath: &[&str], runpath: &[&str]) -> SharedObject {
        let v = |x: &[&str]| x.iter().map(|s| s.to_string()).collect();
        SharedObject {
            path: format!("{SP}/{path}"),
            member: path.into(),
            dynamic: Dynamic {
                needed: v(needed),
                rpath: v(rpath),
                runpath: v(runpath),
                soname: None,
            },
        }
    }

    fn wheel() -> ResolvedWheel {
        ResolvedWheel {
            name: "numpy".into(),
            version: "1.26.4".into(),
            filename: "numpy-1.26.4-cp311-cp311-manylinux_2_17_x86_64.whl".into(),
            sha256: String::new(),
            url_or_path: String::new(),
            size: None,
        }
    }

    /// numpy's layout: the extension has DT_RPATH $ORIGIN/../../numpy.libs, the vendored
    /// openblas has no run path and needs the vendored gfortran, found through the
    /// extension's DT_RPATH (inherited); with DT_RUNPATH instead nothing is inherited.
    #[test]
    fn rpath_is_inherited_runpath_is_not() {
        let b = base();
        let sys = SystemLibs::default();
        let mut img = image(&b, &sys);
        let blas = "numpy.libs/libopenblas64_p-r0.so";
        let fortran = "numpy.libs/libgfortran-040039e1.so.5.0.0";
        let libs = |ext_rpath: &[&str], ext_runpath: &[&str]| WheelLibs {
            files: [blas, fortran]
                .iter()
                .map(|f| format!("{SP}/{f}"))
                .collect(),
            objects: vec![
                object(
                    "numpy/core/_multiarray_umath.so",
                    &["libopenblas64_p-r0.so", "libc.so.6"],
                    ext_rpath,
                    ext_runpath,
                ),
                object(
                    blas,
                    &["libgfortran-040039e1.so.5.0.0", "libm.so.6"],
                    &[],
                    &[],
                ),
                object(fortran, &["libz.so.1"], &[], &[]),
            ],
            unreadable: Vec::new(),
        };
        let w = wheel();
        let rpath = libs(&["$ORIGIN/../../numpy.libs"], &[]);
        img.files = rpath.files.iter().cloned().collect();
        let found = check(&img, &[("deps ml".into(), &w, &rpath)]);
        assert!(found.is_empty(), "{found:?}");

        let runpath = libs(&[], &["$ORIGIN/../../numpy.libs"]);
        let found = check(&img, &[("deps ml".into(), &w, &runpath)]);
        assert_eq!(found.len(), 1, "{found:?}");
        let m = &found[0].message;
        assert!(
            m.contains(
                "needs libgfortran-040039e1.so.5.0.0 (from numpy.libs/libopenblas64_p-r0.so)"
            ) && !m.contains("libopenblas64_p-r0.so (from"),
            "{m}"
        );
    }

    #[test]
    fn no_glibc_without_libc() {
        let b = BaseLibs {
            search: vec!["lib".into(), "usr/lib".into()],
            ..BaseLibs::default()
        };
        let sys = SystemLibs::default();
        let img = image(&b, &sys);
        assert!(!img.finds("x/a.so", &[], "libc.so.6"));
        assert!(!img.finds("x/a.so", &[], "libm.so.6"));
    }

    #[test]
    fn system_packages_count() {
        let b = base();
        let sys = SystemLibs {
            paths: [
                "usr/lib/x86_64-linux-gnu/libGL.so.1".to_string(),
                "opt/elsewhere/libEGL.so.1".to_string(),
            ]
            .into(),
            sonames: ["libsndfile.so.1".to_string()].into(),
            packages: ["libgomp1".to_string()].into(),
        };
        let mut img = image(&b, &sys);
        img.files.extend(sys.paths.iter().cloned());
        assert!(img.finds("x/a.so", &[], "libgomp.so.1"));
        assert!(img.finds("x/a.so", &[], "libsndfile.so.1"));
        assert!(
            img.finds("x/a.so", &[], "libGL.so.1"),
            "in a searched folder"
        );
        assert!(
            !img.finds("x/a.so", &[], "libEGL.so.1"),
            "not in a searched folder"
        );
        assert!(!img.finds("x/a.so", &[], "libX11.so.6"));
    }

    #[test]
    fn messages_name_packages() {
        let mut m = BTreeMap::new();
        m.insert("libgomp.so.1", vec!["lightgbm/lib/lib_lightgbm.so"]);
        assert_eq!(
            message(
                "deps ml",
                "lightgbm-4.3.0-py3-none-manylinux_2_28_x86_64.whl",
                &m
            ),
            "deps ml: lightgbm-4.3.0-py3-none-manylinux_2_28_x86_64.whl needs libgomp.so.1 \
             (from lightgbm/lib/lib_lightgbm.so), which the image lacks; add \"libgomp1\" to \
             [system] packages"
        );
        let mut m = BTreeMap::new();
        m.insert("libGL.so.1", vec!["cv2/cv2.abi3.so"]);
        m.insert("libglib-2.0.so.0", vec!["cv2/cv2.abi3.so", "cv2/x.so"]);
        m.insert("libgthread-2.0.so.0", vec!["cv2/cv2.abi3.so"]);
        m.insert("libfoo.so.3", vec!["cv2/y.so"]);
        m.insert("libcuda.so.1", vec!["cv2/z.so"]);
        let msg = message("deps cv", "opencv.whl", &m);
        assert!(
            msg.contains("add \"libgl1\", \"libglib2.0-0\" to [system] packages"),
            "{msg}"
        );
        assert!(
            msg.contains("libglib-2.0.so.0 (from cv2/cv2.abi3.so and 1 more)"),
            "{msg}"
        );
        assert!(
            msg.contains("no Debian package is known for libfoo.so.3"),
            "{msg}"
        );
        assert!(
            msg.contains("libcuda.so.1 comes with the NVIDIA driver"),
            "{msg}"
        );
    }

    #[test]
    fn table_and_tags() {
        assert_eq!(debian_package("libsndfile.so.1"), Some("libsndfile1"));
        assert_eq!(debian_package("libgthread-2.0.so.0"), Some("libglib2.0-0"));
        assert_eq!(debian_package("libc.so.6"), Some("libc6"));
        assert_eq!(debian_package("libcuda.so.1"), None);
        assert_eq!(debian_package("libnothing.so.9"), None);
        assert!(is_native(
            "lightgbm-4.3.0-py3-none-manylinux_2_28_x86_64.whl"
        ));
        assert!(!is_native("six-1.16.0-py2.py3-none-any.whl"));
    }
}
