//! End-to-end tests: a real server on a loopback port, real plugins, real HTTP.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod agent;
mod agentcore;
mod agentcore_identity;
mod auth;
mod chain;
mod contract;
mod credentials;
mod faults;
mod graph;
mod hostile_io;
mod jane;
mod jane_js;
mod jane_py;
mod lifecycle;
mod limits;
mod observability;
mod oci;
mod python_stack;
mod sandbox;
mod scale_out;
mod streaming;

/// Every guest artifact is used by some test (wasmtime's "no orphan test program" rule).
#[test]
fn every_guest_artifact_has_tests() {
    let covered = ["echo", "hostile", "probe-sandbox", "probe-credentials", "servicenow-agent", "dispatcher"];
    for (name, path) in delegate_artifacts::ALL {
        assert!(covered.contains(name), "guest {name} ({path}) has no e2e test");
        assert!(std::path::Path::new(path).exists(), "{path} missing");
    }
}
