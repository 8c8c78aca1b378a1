//! Model providers behind one trait: AWS Bedrock Converse / ConverseStream first.
//!
//! - [`types`]: plain domain types mirroring the WIT `model` interface one to one; the runtime
//!   converts the generated bindings to and from these.
//! - [`ModelProvider`]: the trait; [`BedrockProvider`] its Bedrock implementation on
//!   `aws-sdk-bedrockruntime`, configured by [`ModelConfig`] → [`ModelSettings`].
//! - [`validate_request`] and [`ModelBudget`]: the checks that run before any provider call;
//!   [`call_model`] applies both around a provider.
//!
//! This crate knows nothing about wasm: it is testable alone against the devstack endpoint.

pub mod bedrock;
pub mod budget;
pub mod config;
pub mod document;
pub mod error;
pub mod provider;
pub mod types;
pub mod validate;

pub use bedrock::{AwsCredentials, BedrockProvider, ProviderSetupError};
pub use budget::{BudgetUsage, ModelBudget};
pub use config::{InvalidSetting, ModelConfig, ModelSettings, validate_model_id};
pub use error::{ModelError, ModelErrorKind};
pub use provider::{ModelFuture, ModelProvider, NoModelProvider, call_model};
pub use types::*;
pub use validate::{RequestLimits, is_valid_tool_name, validate_request};
