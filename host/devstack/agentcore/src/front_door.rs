//! AgentCore Runtime front door stand-in (to be written).
