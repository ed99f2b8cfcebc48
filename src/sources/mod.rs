//! Where layer contents come from: local trees, the Hugging Face Hub, Python wheels.
pub mod debian;
pub mod git;
pub mod hf;
pub mod local;
pub mod python;
