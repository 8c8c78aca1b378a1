//! Outbound HTTPS clients: one pooled reqwest client per purpose, operator CA bundle, bounded timeouts
