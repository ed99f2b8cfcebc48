//! Registry access: references, auth, pull and push.
//!
//! Synchronous (blocking reqwest + std threads) like the rest of mlimg. Blobs are always
//! streamed: nothing here holds a layer in memory.

mod auth;
mod client;
mod error;
mod limits;
mod manage;
mod memory;
mod pull;
mod push;
mod reference;
mod stream;

pub use crate::digest::sha256_digest;
pub use auth::{Credential, CredentialStore, Secret};
pub use client::{ClientOptions, RegistryClient, is_loopback};
pub use error::{Direction, HttpFailure, RegistryCode, RegistryError, Result};
pub use limits::{KINDS as REGISTRY_KINDS, Limits};
pub use memory::{BlobMemory, ContentStore};
pub use pull::{
    DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, LayerDesc, OCI_INDEX, OCI_MANIFEST, Platform,
    PulledImage, RawManifest,
};
pub use push::{
    BlobAction, BlobGenerator, BlobOrigin, PushBlob, PushEvent, PushManifest, PushReport,
    PushRequest,
};
pub use reference::Reference;
pub use stream::Streamed;
