mod common;
mod hf;
