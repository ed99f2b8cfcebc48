//! The integration tests: one binary, a `TestContext` per test (see `common`).

mod build;
mod common;
mod hf;
mod push;
mod python;
mod python_e2e;
mod registry;
mod spec_errors;
