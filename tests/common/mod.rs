//! Helpers shared by the integration tests; each test uses only some.
#![allow(dead_code)]

pub mod apache;
pub mod chromium;
pub mod fleet;
pub mod oracle;
pub mod rng;

/// A test that needs a machine feature (a tmpfs mount, a mount namespace)
/// skips without it, except on CI (`CI` set, as CI services and .ci/run
/// set it): the feature exists there, and a skip would hide a regression,
/// so the test fails.
pub fn feature_missing(why: &str) {
    if std::env::var_os("CI").is_some_and(|v| !v.is_empty()) {
        panic!("{why}; CI is set, where this test must run");
    }
    eprintln!("SKIPPED: {why}");
}
