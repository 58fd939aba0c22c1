//! Test harness: private servers, one test's environment, connector handles, test events
//! and what the stream stored, and waits. `benches/e2e.rs` uses it too.

pub mod certs;
pub mod connector;
pub mod env;
pub mod events;
pub mod http;
pub mod proxy;
pub mod servers;
pub mod waits;

pub use connector::*;
pub use env::*;
pub use events::*;
pub use servers::MariaDb;
pub use waits::*;

/// Skips a test that cannot run here, saying why. Under CI (`CI` set) that is a failure: a
/// test that cannot run must never pass there.
pub fn skip(reason: &str) {
    assert!(
        std::env::var_os("CI").is_none_or(|v| v.is_empty() || v == "false"),
        "CI must run every test, but: {reason}"
    );
    eprintln!("skipped: {reason}");
}
