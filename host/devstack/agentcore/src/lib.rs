//! Devstack stand-ins for AWS Bedrock AgentCore, so the article's deployment can be run on
//! loopback: [`front_door`] plays AgentCore Runtime's public endpoint (customJWTAuthorizer,
//! header allow-list, workload access token minting, `RuntimeClientError` mapping) and
//! [`identity`] plays the AgentCore Identity data plane (`GetWorkloadAccessTokenForJWT`,
//! `GetResourceOauth2Token` with the On-Behalf-Of flow against the devstack IdP).
//!
//! The two talk to each other only over HTTP, as the real services do.

pub mod front_door;
pub mod identity;
