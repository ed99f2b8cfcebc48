//! mlimg: a daemonless, reproducible OCI image builder for machine-learning services.
//!
//! Data flows one way: [`spec`] → [`plan`] → [`layer`] (via [`cache`]) → [`image`] → [`output`].
//! [`build`] is the orchestrator; [`registry`] and [`sources`] do the network and source I/O.

pub mod base;
pub mod build;
pub mod cache;
pub mod image;
pub mod layer;
pub mod lock;
pub mod output;
pub mod plan;
pub mod registry;
pub mod sources;
pub mod spec;
pub mod transport;
