//! Devstack Bedrock endpoint: Converse and ConverseStream with a deterministic planner
