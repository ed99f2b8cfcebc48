//! The integration tests: one binary, a `TestContext` per test (see `common`).

mod build;
mod cache_integrity;
mod cli_snapshots;
mod common;
mod hardening;
mod hf;
mod hostile_net;
mod hub_build;
mod layer_golden;
mod layout_reuse;
mod lints;
mod lock;
mod model;
mod oci_checker;
mod pipeline;
mod provenance;
mod push;
mod python;
mod python_e2e;
mod python_offline;
mod registry;
mod requirements;
mod shared_cache;
mod spec_errors;
mod spec_features;
mod transport;
