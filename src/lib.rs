//! mlimg: a daemonless, reproducible OCI image builder for machine-learning services.
//!
//! Data flows one way: [`spec`] → [`resolve`] (the lock value) → [`plan`] → [`fetch`] →
//! [`layer`] (via [`cache`]) → [`image`] → [`sink`]. [`pipeline`] is the orchestrator;
//! [`registry`], [`transport`] and [`sources`] do the network and source I/O.

pub mod cache;
pub mod digest;
pub mod fetch;
pub mod image;
pub mod layer;
pub mod lint;
pub mod lock;
pub mod pipeline;
pub mod plan;
pub mod platform;
pub mod progress;
pub mod provenance;
pub mod pull_model;
pub mod registry;
pub mod resolve;
pub mod sink;
pub mod sources;
pub mod spec;
pub mod transport;
