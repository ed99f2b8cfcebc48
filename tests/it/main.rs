//! The one integration-test binary: `cargo test --test it`.

mod common;
mod registry;
