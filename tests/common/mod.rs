//! Helpers shared by the integration tests; each test uses only some.
#![allow(dead_code)]

pub mod apache;
pub mod fleet;
pub mod oracle;
pub mod rng;
