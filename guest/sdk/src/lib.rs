//! The Rust SDK for delegate plugins.
//!
//! A plugin is a wasm component (target `wasm32-wasip2`) that implements the `delegate:agent`
//! world in `wit/world.wit`. This crate provides the generated bindings ([`bindings`]) plus
//! small helpers: [`emit`] text to the caller, read the [`caller`], read operator [`settings`]
//! and make outbound requests with [`http`]. Plugins never handle credentials: the host attaches
//! them to allowed requests.
//!
//! ```ignore
//! struct Hello;
//! impl delegate_sdk::Guest for Hello {
//!     fn invoke(payload: String) -> Result<String, delegate_sdk::PluginError> {
//!         delegate_sdk::emit(&format!("hello {}", delegate_sdk::caller().subject));
//!         Ok(payload)
//!     }
//! }
//! delegate_sdk::export!(Hello);
//! ```

pub mod agent;
pub mod http;

/// Generated bindings for the `delegate:agent` world (and the WASI interfaces it uses).
#[allow(missing_docs, unsafe_code, clippy::all, clippy::pedantic)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "agent",
        path: "../../wit",
        generate_all,
        pub_export_macro: true,
        export_macro_name: "export",
        default_bindings_module: "delegate_sdk::bindings",
    });
}

pub use bindings::Guest;
pub use bindings::delegate::agent::caller::Principal;
pub use bindings::delegate::agent::model;
pub use bindings::delegate::agent::types::PluginError;
pub use bindings::export;

/// Sends `text` to the caller now, as one streamed chunk.
pub fn emit(text: &str) {
    bindings::delegate::agent::output::emit(text);
}

/// The verified caller of this invocation (claims only; the plugin never sees a token).
pub fn caller() -> Principal {
    bindings::delegate::agent::caller::identity()
}

/// Operator-supplied, non-secret plugin settings (`wasi:config/store`).
pub mod settings {
    use crate::bindings::wasi::config::store;

    /// The setting `key`, if the operator configured it.
    pub fn get(key: &str) -> Option<String> {
        store::get(key).ok().flatten()
    }

    /// All settings.
    pub fn all() -> Vec<(String, String)> {
        store::get_all().unwrap_or_default()
    }
}

impl PluginError {
    /// A plugin error with a machine-readable `code` and a message for the caller.
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        Self { code: code.to_owned(), message: message.into() }
    }
}
