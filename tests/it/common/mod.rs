//! Shared test harness: a real registry process, a fault-injecting proxy, image fixtures.
#![allow(dead_code)]

pub mod faultproxy;
pub mod image;
pub mod registry;
