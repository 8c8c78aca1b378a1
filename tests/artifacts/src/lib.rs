//! Paths of the guest components built by this crate's build script.
//!
//! Each const is the absolute path of a `wasm32-wasip2` component; [`ALL`] lists them all so a
//! test can check that every guest is covered.

include!(concat!(env!("OUT_DIR"), "/gen.rs"));
