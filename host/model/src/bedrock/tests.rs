//! Tests of the Bedrock provider against the devstack endpoint.
