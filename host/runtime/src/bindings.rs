//! The one `bindgen!` of delegate: host-side bindings for the `delegate:agent` world.
//!
//! WASI interfaces reuse wasmtime-wasi's and wasmtime-wasi-http's own bindings (`with:`), so
//! their resources are the types those crates implement. `wasi:config/store` is generated here
//! only for its types; it is linked through wasmtime-wasi-config.

#![allow(missing_docs, clippy::all, clippy::pedantic)]

wasmtime::component::bindgen!({
    world: "agent",
    path: "../../wit",
    imports: { default: async | trappable },
    exports: { default: async },
    require_store_data_send: true,
    with: {
        "wasi:http": wasmtime_wasi_http::p2::bindings::http,
        "wasi:io": wasmtime_wasi::p2::bindings::io,
        "wasi:clocks": wasmtime_wasi::p2::bindings::clocks,
    },
});

pub(crate) use delegate::agent::{caller, model, output, types};
