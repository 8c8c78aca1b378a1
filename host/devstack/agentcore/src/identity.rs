//! AgentCore Identity data plane stand-in (to be written).
