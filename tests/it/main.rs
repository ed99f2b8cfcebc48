//! The integration tests: one binary, a `TestContext` per test (see `common`).

mod build;
mod common;
mod spec_errors;
