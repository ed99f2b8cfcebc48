//! Debian system packages without apt.
//!
//! The flow, as apt does it for the plain case: `InRelease` is verified against the base image's
//! archive keyring ([`release::verify_inrelease`], or `Release` + `Release.gpg` with
//! [`release::verify_detached`]) and parsed ([`release::parse_release`]: the SHA256 list of
//! index files); `Packages.xz` is decompressed ([`packages::decompress_index`]) and parsed
//! ([`packages::read_packages`]); the requests are resolved against it and against the base's
//! dpkg `status` ([`packages::parse_status`]) by [`resolve::resolve`], which returns the packages
//! to install, dependencies first. No network and no disk here: callers fetch and verify bytes.
//!
//! [`archive`] fetches those bytes (verified, cached by sha256), [`deb`] reads a `.deb`
//! (`ar` + `control.tar` / `data.tar`), [`dpkg`] writes what dpkg's database needs and
//! classifies maintainer scripts, [`install`] turns unpacked packages into layer entries.
//!
//! Modules: [`control`] (deb822 paragraphs), [`version`] (dpkg's version order and relations),
//! [`release`] (OpenPGP with the `pgp` crate; `Release`), [`packages`] (`Packages` and `status`
//! records, dependency fields, decompression), [`mod@resolve`] (dependency resolution).
//! Each module's documentation says which crate it uses or why it is hand-written.

pub mod archive;
pub mod base;
pub mod control;
pub mod deb;
pub mod dpkg;
pub mod install;
pub mod packages;
pub mod release;
pub mod resolve;
pub mod version;

pub use control::{ControlError, Paragraph, parse_paragraphs};
pub use packages::{
    Alternatives, Dep, InstalledPackage, MultiArch, PackageRecord, PackagesError, Provide,
    decompress_index, parse_packages, parse_status, read_packages,
};
pub use release::{
    FileSum, Release, ReleaseError, parse_release, verify_detached, verify_inrelease,
};
pub use resolve::{Index, Request, Resolution, ResolveError, resolve};
pub use version::{Relation, Version, compare};

/// One Debian package: what apt's index said about it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DebLock {
    pub name: String,
    pub version: String,
    /// `amd64`, `arm64` or `all`.
    pub architecture: String,
    pub size: u64,
    pub sha256: String,
    /// Where the .deb is downloaded from (the archive's URL + the index's `Filename`).
    pub url: String,
}
