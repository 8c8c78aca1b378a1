//! Devstack TLS: a local CA and server certificates generated at start, and an HTTPS server for axum routers
