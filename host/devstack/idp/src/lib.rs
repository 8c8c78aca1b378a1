//! Devstack identity provider: Entra ID-compatible discovery, JWKS and token endpoint
