//! Resolve: everything that floats goes over the network here, and nothing else does.

pub mod base;

pub use base::{BaseError, BaseLayer, BlobOrigin, ResolvedBase};
