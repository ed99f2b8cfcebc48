//! The project's own OCI layout checker, independent of mlimg's code: everything
//! `../shared/tools/oci-check --strict-repro` checks, in Rust, with the OCI JSON schemas kept in
//! `testdata/oci-schema/`. So the suite passes on a fresh clone with nothing beside it.
//!
//! - `oci-layout`, `index.json`, every manifest, index and config validate against the schemas
//!   (draft-04, formats checked);
//! - every blob referenced exists, has its descriptor's size and hashes to its digest;
//!   a manifest's own `mediaType` agrees with its descriptor's, and an index entry's `platform`
//!   with the config's `os`/`architecture`/`variant`;
//! - every layer decompresses (gzip, zstd or none, as its media type says) to bytes whose
//!   sha256 is the config's `rootfs.diff_ids` entry, one diff_id per layer;
//! - reproducibility (mlimg's contract; [`Strictness::Repro`]): tar entries sorted bytewise,
//!   parent directories before their children, one mtime per layer, owner 0:0 with no
//!   user/group names.
//!
//! [`assert_layout`] / [`assert_archive`] run these checks and then, only where
//! `../shared/tools/oci-check` exists beside the crate, that tool too; they print which ran.

use std::collections::{BTreeMap, HashSet};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::Value;
use sha2::{Digest as _, Sha256};

use super::repo_root;

/// Which tar-level rules to enforce on top of the structural checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strictness {
    /// Schemas, sizes, digests and diff_ids only (any valid OCI layout passes).
    Structure,
    /// Also mlimg's reproducibility rules on every layer's tar entries.
    Repro,
}

/// One layer as checked.
#[derive(Debug, Clone)]
pub struct CheckedLayer {
    pub digest: String,
    pub diff_id: String,
    pub media_type: String,
    pub size: u64,
    /// Tar entries (including directories); counted in both modes.
    pub entries: usize,
    /// The one mtime of all entries (`Repro` only; `None` for an empty layer).
    pub mtime: Option<u64>,
}

/// One image (manifest) as checked.
#[derive(Debug, Clone)]
pub struct CheckedImage {
    /// `org.opencontainers.image.ref.name` (or `#i`), then ` > os/arch [i]` inside indexes.
    pub what: String,
    pub manifest_digest: String,
    pub config_digest: String,
    pub config: Value,
    pub layers: Vec<CheckedLayer>,
}

/// What [`check_layout`] saw: every image (manifests of nested indexes included) and a text
/// report in oci-check's style.
#[derive(Debug, Clone, Default)]
pub struct Checked {
    pub images: Vec<CheckedImage>,
    pub report: String,
    /// The output of `../shared/tools/oci-check` when it ran (see [`assert_layout`]).
    pub external: Option<String>,
    /// OCI 1.1 referrers (artifact manifests with a `subject`): SBOM, provenance.
    pub referrers: Vec<CheckedReferrer>,
}

/// A referrer found in a layout: its manifest checked against the schema, its empty config,
/// its one document and its subject present in the layout.
#[derive(Debug, Clone)]
pub struct CheckedReferrer {
    pub manifest_digest: String,
    pub artifact_type: String,
    pub subject: String,
    /// The document (the one layer).
    pub document: PathBuf,
}

// ---------------------------------------------------------------- schemas

const SCHEMA_FILES: [&str; 7] = [
    "config-schema.json",
    "content-descriptor.json",
    "defs-descriptor.json",
    "defs.json",
    "image-index-schema.json",
    "image-layout-schema.json",
    "image-manifest-schema.json",
];

/// The schemas' own `id`s point at opencontainers.org; drop them so their relative `$ref`s
/// (`defs.json`, ...) resolve against `file:///oci/`, where each file is registered.
fn strip_ids(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .filter(|(k, v)| !(k == "id" && v.is_string()))
                .map(|(k, v)| (k, strip_ids(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.into_iter().map(strip_ids).collect()),
        o => o,
    }
}

struct Schemas(BTreeMap<&'static str, jsonschema::Validator>);

fn schemas() -> &'static Schemas {
    static S: OnceLock<Schemas> = OnceLock::new();
    S.get_or_init(|| {
        let dir = repo_root().join("testdata/oci-schema");
        let mut resources = Vec::new();
        for f in SCHEMA_FILES {
            let text = std::fs::read_to_string(dir.join(f))
                .unwrap_or_else(|e| panic!("{}: {e}", dir.join(f).display()));
            let v: Value = serde_json::from_str(&text).expect("schema JSON");
            resources.push((format!("file:///oci/{f}"), strip_ids(v)));
        }
        let registry = jsonschema::Registry::new()
            .extend(
                resources
                    .into_iter()
                    .map(|(uri, v)| (uri, jsonschema::Draft::Draft4.create_resource(v))),
            )
            .and_then(|b| b.prepare())
            .expect("registering the OCI schemas");
        let mut out = BTreeMap::new();
        for top in [
            "config-schema.json",
            "image-index-schema.json",
            "image-layout-schema.json",
            "image-manifest-schema.json",
        ] {
            let root = serde_json::json!({ "$ref": format!("file:///oci/{top}") });
            let validator = jsonschema::options()
                .with_draft(jsonschema::Draft::Draft4)
                .should_validate_formats(true)
                .with_registry(&registry)
                .build(&root)
                .unwrap_or_else(|e| panic!("compiling {top}: {e}"));
            out.insert(top, validator);
        }
        Schemas(out)
    })
}

pub const MODELPACK_ARTIFACT: &str = "application/vnd.cncf.model.manifest.v1+json";
pub const MODELPACK_CONFIG: &str = "application/vnd.cncf.model.config.v1+json";

/// Validates a ModelPack config against the official schema (`testdata/modelpack/`, draft
/// 2020-12, formats checked).
pub fn validate_modelpack_config(cfg: &Value) -> Result<(), String> {
    static V: OnceLock<jsonschema::Validator> = OnceLock::new();
    let v = V.get_or_init(|| {
        let p = repo_root().join("testdata/modelpack/config-schema.json");
        let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        let schema: Value = serde_json::from_str(&text).expect("schema JSON");
        jsonschema::options()
            .with_draft(jsonschema::Draft::Draft202012)
            .should_validate_formats(true)
            .build(&schema)
            .unwrap_or_else(|e| panic!("compiling the ModelPack schema: {e}"))
    });
    let mut errs: Vec<String> = v
        .iter_errors(cfg)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    errs.sort();
    match errs.first() {
        None => Ok(()),
        Some(e) => Err(format!("fails the ModelPack config schema: {e}")),
    }
}

/// Validates `obj` against one of the OCI schemas (`image-manifest-schema.json`, ...).
pub fn validate(obj: &Value, schema: &str, what: &str) -> Result<(), String> {
    let v = schemas()
        .0
        .get(schema)
        .unwrap_or_else(|| panic!("no schema {schema}"));
    let mut errs: Vec<(String, String)> = v
        .iter_errors(obj)
        .map(|e| (e.instance_path().to_string(), e.to_string()))
        .collect();
    errs.sort();
    match errs.first() {
        None => Ok(()),
        Some((path, msg)) => Err(format!(
            "{what} fails {schema} at {}: {}",
            if path.is_empty() { "/" } else { path },
            msg.chars().take(200).collect::<String>()
        )),
    }
}

// ---------------------------------------------------------------- the checks

/// Counts and hashes what passes through.
struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

fn sha256_path(p: &Path) -> io::Result<(String, u64)> {
    let mut r = HashingReader {
        inner: std::fs::File::open(p)?,
        hasher: Sha256::new(),
    };
    let n = io::copy(&mut r, &mut io::sink())?;
    Ok((format!("sha256:{}", hex::encode(r.hasher.finalize())), n))
}

struct Layout<'a> {
    dir: &'a Path,
    strict: Strictness,
    out: Checked,
}

fn short(d: &str) -> &str {
    &d[..d.len().min(19)]
}

impl Layout<'_> {
    /// The blob a descriptor names, checked for presence, size and digest.
    fn blob(&self, desc: &Value, what: &str) -> Result<PathBuf, String> {
        let digest = desc["digest"]
            .as_str()
            .ok_or_else(|| format!("{what}: descriptor has no digest"))?;
        let (algo, hexd) = digest
            .split_once(':')
            .ok_or_else(|| format!("{what}: bad digest {digest}"))?;
        if algo != "sha256" {
            return Err(format!("{what}: unsupported digest algorithm {algo}"));
        }
        let p = self.dir.join("blobs").join(algo).join(hexd);
        if !p.is_file() {
            return Err(format!("{what}: blob {digest} is missing"));
        }
        let (got, n) = sha256_path(&p).map_err(|e| format!("{what}: {}: {e}", p.display()))?;
        let want_size = desc["size"]
            .as_u64()
            .ok_or_else(|| format!("{what}: descriptor has no size"))?;
        if n != want_size {
            return Err(format!(
                "{what}: blob {} has {n} bytes, descriptor says {want_size}",
                short(digest)
            ));
        }
        if got != digest {
            return Err(format!(
                "{what}: blob {} does not hash to its digest",
                short(digest)
            ));
        }
        Ok(p)
    }

    fn json_blob(&self, desc: &Value, what: &str) -> Result<Value, String> {
        let p = self.blob(desc, what)?;
        let bytes = std::fs::read(&p).map_err(|e| format!("{what}: {e}"))?;
        serde_json::from_slice(&bytes).map_err(|e| format!("{what}: blob is not JSON: {e}"))
    }

    fn walk(&mut self, desc: &Value, what: &str) -> Result<(), String> {
        let mt = desc["mediaType"].as_str().unwrap_or("");
        let obj = self.json_blob(desc, what)?;
        if let Some(own) = obj["mediaType"].as_str()
            && !mt.is_empty()
            && own != mt
        {
            return Err(format!(
                "{what}: blob says mediaType {own}, its descriptor {mt}"
            ));
        }
        if mt.ends_with("image.index.v1+json") || obj.get("manifests").is_some() {
            validate(&obj, "image-index-schema.json", what)?;
            let ms = obj["manifests"].as_array().cloned().unwrap_or_default();
            for (i, m) in ms.iter().enumerate() {
                let p = &m["platform"];
                let variant = p["variant"]
                    .as_str()
                    .map(|v| format!("/{v}"))
                    .unwrap_or_default();
                let sub = format!(
                    "{what} > {}/{}{variant} [{i}]",
                    p["os"].as_str().unwrap_or("?"),
                    p["architecture"].as_str().unwrap_or("?"),
                );
                self.walk(m, &sub)?;
            }
            return Ok(());
        }
        validate(&obj, "image-manifest-schema.json", what)?;
        if obj.get("subject").is_some() {
            return self.referrer(desc, &obj, what);
        }
        let cfg_what = format!("{what} config");
        let cfg = self.json_blob(&obj["config"], &cfg_what)?;
        if obj["config"]["mediaType"] == MODELPACK_CONFIG {
            return self.modelpack(desc, &obj, cfg, what);
        }
        validate(&cfg, "config-schema.json", &cfg_what)?;
        if let Some(p) = desc["platform"].as_object() {
            for k in ["os", "architecture", "variant"] {
                if let Some(want) = p.get(k).and_then(Value::as_str)
                    && cfg[k].as_str() != Some(want)
                {
                    return Err(format!(
                        "{what}: index says {k} {want}, config says {}",
                        cfg[k]
                    ));
                }
            }
        }
        let diff_ids: Vec<String> = cfg["rootfs"]["diff_ids"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|d| d.as_str().unwrap_or("").to_string())
                    .collect()
            })
            .unwrap_or_default();
        let layers = obj["layers"].as_array().cloned().unwrap_or_default();
        if diff_ids.len() != layers.len() {
            return Err(format!(
                "{what}: config has {} diff_ids for {} layers",
                diff_ids.len(),
                layers.len()
            ));
        }
        let manifest_digest = desc["digest"].as_str().unwrap_or("").to_string();
        let config_digest = obj["config"]["digest"].as_str().unwrap_or("").to_string();
        self.out.report.push_str(&format!(
            "{what}: manifest {} config {} {} layers\n",
            short(&manifest_digest),
            short(&config_digest),
            layers.len()
        ));
        let mut checked = Vec::new();
        for (i, (l, did)) in layers.iter().zip(&diff_ids).enumerate() {
            let lwhat = format!("{what} layer {i}");
            let p = self.blob(l, &lwhat)?;
            let lmt = l["mediaType"].as_str().unwrap_or("").to_string();
            let (got, entries, mtime) = self.layer(&p, &lmt, &lwhat)?;
            if &got != did {
                return Err(format!(
                    "{lwhat}: uncompressed sha256 {} is not the config's diff_id {}",
                    short(&got),
                    short(did)
                ));
            }
            let size = l["size"].as_u64().unwrap_or(0);
            self.out.report.push_str(&format!(
                "  layer {i}: {} {size:>12} B {:>5}, {entries} entries\n",
                short(l["digest"].as_str().unwrap_or("")),
                lmt.rsplit(['.', '+']).next().unwrap_or(""),
            ));
            checked.push(CheckedLayer {
                digest: l["digest"].as_str().unwrap_or("").to_string(),
                diff_id: did.clone(),
                media_type: lmt,
                size,
                entries,
                mtime,
            });
        }
        self.out.images.push(CheckedImage {
            what: what.to_string(),
            manifest_digest,
            config_digest,
            config: cfg,
            layers: checked,
        });
        Ok(())
    }

    /// An OCI 1.1 referrer: `artifactType` on the manifest and its index entry, the empty
    /// config (`{}`), one layer of the artifact type, and the subject present in the layout.
    fn referrer(&mut self, desc: &Value, obj: &Value, what: &str) -> Result<(), String> {
        let at = obj["artifactType"].as_str().unwrap_or("").to_string();
        if at.is_empty() || desc["artifactType"].as_str() != Some(at.as_str()) {
            return Err(format!(
                "{what}: referrer artifactType {} (index entry says {})",
                obj["artifactType"], desc["artifactType"]
            ));
        }
        if obj["config"]["mediaType"] != "application/vnd.oci.empty.v1+json" {
            return Err(format!("{what}: config is not the empty descriptor"));
        }
        let cfg = self.blob(&obj["config"], &format!("{what} config"))?;
        if std::fs::read(&cfg).map_err(|e| e.to_string())? != b"{}" {
            return Err(format!("{what}: empty config is not {{}}"));
        }
        let layers = obj["layers"].as_array().cloned().unwrap_or_default();
        let [layer] = layers.as_slice() else {
            return Err(format!("{what}: {} layers, expected 1", layers.len()));
        };
        if layer["mediaType"].as_str() != Some(at.as_str()) {
            return Err(format!("{what}: layer media type {}", layer["mediaType"]));
        }
        let document = self.blob(layer, &format!("{what} document"))?;
        self.blob(&obj["subject"], &format!("{what} subject"))?;
        self.out.report.push_str(&format!(
            "{what}: referrer {} {at} of {}\n",
            short(desc["digest"].as_str().unwrap_or("")),
            short(obj["subject"]["digest"].as_str().unwrap_or(""))
        ));
        self.out.referrers.push(CheckedReferrer {
            manifest_digest: desc["digest"].as_str().unwrap_or("").to_string(),
            artifact_type: at,
            subject: obj["subject"]["digest"].as_str().unwrap_or("").to_string(),
            document,
        });
        Ok(())
    }

    /// A ModelPack artifact: `artifactType`, the config against the official schema, every
    /// layer present with a ModelPack media type and the `org.cncf.model.filepath` annotation,
    /// untarring to its `modelfs.diffIds` entry.
    fn modelpack(
        &mut self,
        desc: &Value,
        obj: &Value,
        cfg: Value,
        what: &str,
    ) -> Result<(), String> {
        if obj["artifactType"] != MODELPACK_ARTIFACT {
            return Err(format!("{what}: artifactType is {}", obj["artifactType"]));
        }
        validate_modelpack_config(&cfg).map_err(|e| format!("{what} config: {e}"))?;
        let diff_ids: Vec<String> = cfg["modelfs"]["diffIds"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|d| d.as_str().unwrap_or("").to_string())
                    .collect()
            })
            .unwrap_or_default();
        let layers = obj["layers"].as_array().cloned().unwrap_or_default();
        if diff_ids.len() != layers.len() {
            return Err(format!(
                "{what}: config has {} diffIds for {} layers",
                diff_ids.len(),
                layers.len()
            ));
        }
        let mut checked = Vec::new();
        for (i, (l, did)) in layers.iter().zip(&diff_ids).enumerate() {
            let lwhat = format!("{what} layer {i}");
            let lmt = l["mediaType"].as_str().unwrap_or("").to_string();
            if !lmt.starts_with("application/vnd.cncf.model.") {
                return Err(format!("{lwhat}: media type {lmt} is not a ModelPack one"));
            }
            if l["annotations"]["org.cncf.model.filepath"]
                .as_str()
                .is_none()
            {
                return Err(format!("{lwhat}: no org.cncf.model.filepath annotation"));
            }
            let p = self.blob(l, &lwhat)?;
            let (got, entries, mtime) = self.layer(&p, &lmt, &lwhat)?;
            if &got != did {
                return Err(format!("{lwhat}: uncompressed sha256 is not the diffId"));
            }
            checked.push(CheckedLayer {
                digest: l["digest"].as_str().unwrap_or("").to_string(),
                diff_id: did.clone(),
                media_type: lmt,
                size: l["size"].as_u64().unwrap_or(0),
                entries,
                mtime,
            });
        }
        self.out.report.push_str(&format!(
            "{what}: ModelPack artifact, {} layers\n",
            checked.len()
        ));
        self.out.images.push(CheckedImage {
            what: what.to_string(),
            manifest_digest: desc["digest"].as_str().unwrap_or("").to_string(),
            config_digest: obj["config"]["digest"].as_str().unwrap_or("").to_string(),
            config: cfg,
            layers: checked,
        });
        Ok(())
    }

    /// Decompresses a layer as its media type says, walks its tar entries (checking the
    /// reproducibility rules when strict) and returns (sha256 of the tar, entries, mtime).
    fn layer(
        &self,
        blob: &Path,
        media_type: &str,
        what: &str,
    ) -> Result<(String, usize, Option<u64>), String> {
        let f = std::fs::File::open(blob).map_err(|e| format!("{what}: {e}"))?;
        let f = io::BufReader::new(f);
        let raw: Box<dyn Read> = if media_type.ends_with("+gzip") || media_type.ends_with(".gzip") {
            Box::new(flate2::read::GzDecoder::new(f))
        } else if media_type.ends_with("+zstd") || media_type.ends_with(".zstd") {
            Box::new(zstd::stream::read::Decoder::new(f).map_err(|e| format!("{what}: {e}"))?)
        } else if media_type.ends_with(".tar") {
            Box::new(f)
        } else {
            return Err(format!("{what}: unknown layer media type {media_type:?}"));
        };
        let mut hr = HashingReader {
            inner: raw,
            hasher: Sha256::new(),
        };
        let (entries, mtime) = {
            let mut ar = tar::Archive::new(&mut hr);
            walk_tar(&mut ar, self.strict, what)?
        };
        // the end-of-archive blocks and any padding are part of the diff_id
        io::copy(&mut hr, &mut io::sink()).map_err(|e| format!("{what}: decompressing: {e}"))?;
        Ok((
            format!("sha256:{}", hex::encode(hr.hasher.finalize())),
            entries,
            mtime,
        ))
    }
}

/// Walks tar entries; with `Repro`, checks mlimg's reproducibility rules.
fn walk_tar<R: Read>(
    ar: &mut tar::Archive<R>,
    strict: Strictness,
    what: &str,
) -> Result<(usize, Option<u64>), String> {
    let mut prev: Option<Vec<u8>> = None;
    let mut seen: HashSet<Vec<u8>> = HashSet::new();
    let mut mtimes: Vec<u64> = Vec::new();
    let mut n = 0;
    for e in ar
        .entries()
        .map_err(|e| format!("{what}: not a tar: {e}"))?
    {
        let e = e.map_err(|e| format!("{what}: bad tar entry: {e}"))?;
        n += 1;
        if strict != Strictness::Repro {
            continue;
        }
        let raw = e.path_bytes().into_owned();
        let name = normalize_entry_name(&raw);
        let shown = String::from_utf8_lossy(&name).into_owned();
        if let Some(p) = &prev
            && name < *p
        {
            return Err(format!(
                "{what}: tar entries are not sorted ({shown} after {})",
                String::from_utf8_lossy(p)
            ));
        }
        if let Some(slash) = name.iter().rposition(|&b| b == b'/')
            && !seen.contains(&name[..slash])
        {
            return Err(format!("{what}: {shown} comes before its parent directory"));
        }
        let h = e.header();
        let uid = h.uid().map_err(|e| format!("{what}: {shown}: {e}"))?;
        let gid = h.gid().map_err(|e| format!("{what}: {shown}: {e}"))?;
        let uname = h.username_bytes().unwrap_or_default().to_vec();
        let gname = h.groupname_bytes().unwrap_or_default().to_vec();
        if uid != 0 || gid != 0 || !uname.is_empty() || !gname.is_empty() {
            return Err(format!(
                "{what}: {shown} has owner {uid}:{gid} {:?}:{:?}",
                String::from_utf8_lossy(&uname),
                String::from_utf8_lossy(&gname)
            ));
        }
        mtimes.push(h.mtime().map_err(|e| format!("{what}: {shown}: {e}"))?);
        seen.insert(name.clone());
        prev = Some(name);
    }
    mtimes.sort();
    mtimes.dedup();
    if mtimes.len() > 1 {
        return Err(format!("{what}: entries carry several mtimes ({mtimes:?})"));
    }
    Ok((n, mtimes.first().copied()))
}

/// `./a/b/` → `a/b`, as oci-check compares names.
fn normalize_entry_name(raw: &[u8]) -> Vec<u8> {
    let mut s = raw;
    while let Some(r) = s.strip_prefix(b"./").or_else(|| s.strip_prefix(b"/")) {
        s = r;
    }
    while let Some(r) = s.strip_suffix(b"/") {
        s = r;
    }
    s.to_vec()
}

/// Checks an OCI image layout folder; `Err` names the first problem found.
pub fn check_layout(dir: &Path, strict: Strictness) -> Result<Checked, String> {
    for f in ["oci-layout", "index.json"] {
        if !dir.join(f).is_file() {
            return Err(format!("{} has no {f}", dir.display()));
        }
    }
    let read = |f: &str| -> Result<Value, String> {
        let text = std::fs::read(dir.join(f)).map_err(|e| format!("{f}: {e}"))?;
        serde_json::from_slice(&text).map_err(|e| format!("{f} is not JSON: {e}"))
    };
    validate(
        &read("oci-layout")?,
        "image-layout-schema.json",
        "oci-layout",
    )?;
    let index = read("index.json")?;
    validate(&index, "image-index-schema.json", "index.json")?;
    let mut l = Layout {
        dir,
        strict,
        out: Checked::default(),
    };
    let ms = index["manifests"].as_array().cloned().unwrap_or_default();
    for (i, m) in ms.iter().enumerate() {
        let what = m["annotations"]["org.opencontainers.image.ref.name"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| format!("#{i}"));
        l.walk(m, &what)?;
    }
    l.out.report.push_str("mlimg oci checks: OK\n");
    Ok(l.out)
}

/// Unpacks an oci-archive (a tar of a layout) into a temp folder and checks it there.
pub fn check_archive(file: &Path, strict: Strictness) -> Result<Checked, String> {
    let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
    let f = std::fs::File::open(file).map_err(|e| format!("{}: {e}", file.display()))?;
    tar::Archive::new(f)
        .unpack(tmp.path())
        .map_err(|e| format!("{}: not a tar: {e}", file.display()))?;
    check_layout(tmp.path(), strict)
}

// ---------------------------------------------------------------- for tests

/// `../shared/tools/oci-check` beside the crate, if there is one.
pub fn external_tool() -> Option<PathBuf> {
    let p = repo_root().join("../shared/tools/oci-check");
    p.is_file().then_some(p)
}

/// Runs the external checker with `--strict-repro` when it exists; its failure fails the test.
/// It knows images only: with artifacts (referrers, `[model]`) in index.json it runs on a
/// copy (hard links) whose index.json lists the images alone.
fn run_external(dir: &Path) -> Option<String> {
    let index: Value = std::fs::read(dir.join("index.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null);
    let ms = index["manifests"].as_array().cloned().unwrap_or_default();
    if ms.iter().any(|m| m.get("artifactType").is_some()) {
        let tmp = tempfile::tempdir().expect("temp dir");
        let blobs = tmp.path().join("blobs/sha256");
        std::fs::create_dir_all(&blobs).expect("mkdir");
        for e in std::fs::read_dir(dir.join("blobs/sha256")).expect("blobs") {
            let e = e.expect("entry");
            let to = blobs.join(e.file_name());
            if std::fs::hard_link(e.path(), &to).is_err() {
                std::fs::copy(e.path(), &to).expect("copy blob");
            }
        }
        std::fs::copy(dir.join("oci-layout"), tmp.path().join("oci-layout")).expect("copy");
        let images: Vec<Value> = ms
            .into_iter()
            .filter(|m| m.get("artifactType").is_none())
            .collect();
        let mut idx = index.clone();
        idx["manifests"] = Value::Array(images);
        std::fs::write(
            tmp.path().join("index.json"),
            serde_json::to_vec(&idx).expect("json"),
        )
        .expect("write index");
        return run_external_on(tmp.path());
    }
    run_external_on(dir)
}

fn run_external_on(dir: &Path) -> Option<String> {
    let Some(tool) = external_tool() else {
        eprintln!(
            "oci checks on {}: mlimg's own (schemas, digests, diff_ids, repro) ran; \
             ../shared/tools/oci-check is not beside the crate, so it did not",
            dir.display()
        );
        return None;
    };
    let out = Command::new("python3")
        .arg(&tool)
        .arg(dir)
        .arg("--strict-repro")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", tool.display()));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && text.contains("oci-check: OK"),
        "{} rejects {} (mlimg's own checks passed):\n{text}{}",
        tool.display(),
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!(
        "oci checks on {}: mlimg's own (schemas, digests, diff_ids, repro) and {} ran",
        dir.display(),
        tool.display()
    );
    Some(text)
}

/// The strict checks on a layout folder (panics with the first problem), then the external
/// oci-check where it exists.
pub fn assert_layout(dir: &Path) -> Checked {
    let mut c = check_layout(dir, Strictness::Repro)
        .unwrap_or_else(|e| panic!("{} is not a valid layout: {e}", dir.display()));
    assert!(
        !c.images.is_empty(),
        "{}: index.json names no image",
        dir.display()
    );
    c.external = run_external(dir);
    c
}

/// [`assert_layout`] for an oci-archive file.
pub fn assert_archive(file: &Path) -> Checked {
    let tmp = tempfile::tempdir().expect("temp dir");
    let f = std::fs::File::open(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    tar::Archive::new(f)
        .unpack(tmp.path())
        .unwrap_or_else(|e| panic!("{}: not a tar: {e}", file.display()));
    assert_layout(tmp.path())
}
