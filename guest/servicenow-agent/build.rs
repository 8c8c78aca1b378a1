//! Link-time settings of the component.

fn main() {
    // Start with 4 MiB of linear memory (the Rust default is the data segments plus a 1 MiB
    // stack, ~1.1 MiB). A Jane invocation's heap then fits without `memory.grow`, so a pool
    // slot never grows and shrinks back: each of those is an `mprotect` of the slot and a TLB
    // shootdown across the host's threads. Untouched pages cost nothing (copy-on-write image,
    // dirty-page reset), and the memory limit still applies (it is far above 4 MiB).
    // Only for wasm: the crate is also built natively for its unit tests.
    if std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() == Ok("wasm32") {
        println!("cargo:rustc-link-arg-cdylib=--initial-memory=4194304");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
