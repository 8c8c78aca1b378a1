//! The `[model]` section of delegate's config: raw serde form ([`ModelConfig`]) and the
//! validated form ([`ModelSettings`]) that cannot hold an invalid combination.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// The raw `[model]` config section. Unknown keys are errors: a typo must not silently fall
/// back to a default (for example to the public endpoint instead of a VPC endpoint).
///
/// ```toml
/// [model]
/// region = "us-east-1"
/// model_id = "us.anthropic.claude-sonnet-4-20250514-v1:0"
/// endpoint_url = "https://bedrock-runtime.us-east-1.amazonaws.com"   # optional
/// ca_bundle = "/etc/delegate/corp-ca.pem"                            # optional, extra roots
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// AWS region; when absent the aws-config default chain (env, profile, IMDS) decides.
    pub region: Option<String>,
    /// Endpoint override (VPC endpoint, devstack); when absent the SDK's regional endpoint.
    pub endpoint_url: Option<String>,
    /// Allow an `http://` endpoint. Only for the devstack on loopback; off by default so a
    /// config mistake cannot send signed requests in clear text.
    #[serde(default)]
    pub allow_http: bool,
    /// Default model id (foundation model, inference profile id or ARN); plugins may override.
    pub model_id: String,
    /// PEM file with extra CA certificates to trust for the endpoint (added to the system roots).
    pub ca_bundle: Option<PathBuf>,
    /// Whole-call deadline in milliseconds, retries and streaming included (default 120000).
    pub request_timeout_ms: Option<u64>,
    /// Deadline for one HTTP attempt until the response starts, in milliseconds (default 60000).
    pub attempt_timeout_ms: Option<u64>,
    /// Longest silence between two stream events, in milliseconds (default 30000).
    pub stream_idle_timeout_ms: Option<u64>,
    /// Connect timeout in milliseconds (default 3100, the SDK's).
    pub connect_timeout_ms: Option<u64>,
    /// Attempts per call including the first, as the SDK counts them (default 3, max 10).
    pub max_attempts: Option<u32>,
    /// First retry backoff in milliseconds; backoff is exponential with full jitter (default 500).
    pub initial_backoff_ms: Option<u64>,
    /// Cap on one backoff in milliseconds (default 8000).
    pub max_backoff_ms: Option<u64>,
    /// Host-level restarts of a stream that failed before any text reached the caller
    /// (default 1, max 3). Restarts are sent without SDK retries, so they add to, never
    /// multiply, `max_attempts`.
    pub max_stream_restarts: Option<u32>,
    /// Largest assembled response in bytes (text plus tool inputs, default 1 MiB).
    pub max_response_bytes: Option<usize>,
}

/// A `[model]` setting that is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("model.{key}: {message}")]
pub struct InvalidSetting {
    /// The offending key, as written in the config.
    pub key: String,
    /// What is wrong with it.
    pub message: String,
}

fn invalid(key: &str, message: impl Into<String>) -> InvalidSetting {
    InvalidSetting { key: key.into(), message: message.into() }
}

/// Validated model settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelSettings {
    /// AWS region, if configured.
    pub region: Option<String>,
    /// Endpoint override, if configured (`https://`, or `http://` only when allowed).
    pub endpoint_url: Option<String>,
    /// Default model id.
    pub model_id: String,
    /// Extra CA bundle file.
    pub ca_bundle: Option<PathBuf>,
    /// Whole-call deadline.
    pub request_timeout: Duration,
    /// Per-attempt deadline until the response starts.
    pub attempt_timeout: Duration,
    /// Longest silence between stream events.
    pub stream_idle_timeout: Duration,
    /// TCP/TLS connect timeout.
    pub connect_timeout: Duration,
    /// SDK attempts per call, first included.
    pub max_attempts: u32,
    /// First retry backoff.
    pub initial_backoff: Duration,
    /// Cap on one backoff.
    pub max_backoff: Duration,
    /// Host-level stream restarts before any text was forwarded.
    pub max_stream_restarts: u32,
    /// Largest assembled response in bytes.
    pub max_response_bytes: usize,
}

/// Checks a model id: a foundation model id, inference profile id or ARN. Bedrock allows up to
/// 2048 characters; we refuse whitespace and control characters, which no valid id has.
pub fn validate_model_id(model_id: &str) -> Result<(), InvalidSetting> {
    if model_id.is_empty() || model_id.len() > 2048 {
        return Err(invalid("model_id", "must be 1-2048 characters"));
    }
    if model_id.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid("model_id", "must not contain whitespace or control characters"));
    }
    Ok(())
}

fn ms(key: &str, v: Option<u64>, default: u64, max: u64) -> Result<Duration, InvalidSetting> {
    let v = v.unwrap_or(default);
    if v == 0 || v > max {
        return Err(invalid(key, format!("must be between 1 and {max}")));
    }
    Ok(Duration::from_millis(v))
}

impl ModelConfig {
    /// Validates the section into [`ModelSettings`].
    pub fn validate(self) -> Result<ModelSettings, InvalidSetting> {
        validate_model_id(&self.model_id)?;
        if let Some(r) = &self.region
            && (r.is_empty()
                || r.len() > 64
                || !r.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'))
        {
            return Err(invalid("region", "must look like us-east-1"));
        }
        if let Some(url) = &self.endpoint_url {
            let rest = if let Some(rest) = url.strip_prefix("https://") {
                rest
            } else if let Some(rest) = url.strip_prefix("http://") {
                if !self.allow_http {
                    return Err(invalid("endpoint_url", "http:// needs allow_http = true (devstack only)"));
                }
                rest
            } else {
                return Err(invalid("endpoint_url", "must start with https://"));
            };
            let authority = rest.split('/').next().unwrap_or_default();
            if authority.is_empty()
                || authority.contains('@')
                || url.contains(['?', '#'])
                || url.chars().any(char::is_whitespace)
            {
                return Err(invalid(
                    "endpoint_url",
                    "must be scheme://host[:port][/path] without credentials, query or fragment",
                ));
            }
        }
        let max_attempts = self.max_attempts.unwrap_or(3);
        if !(1..=10).contains(&max_attempts) {
            return Err(invalid("max_attempts", "must be between 1 and 10"));
        }
        let max_stream_restarts = self.max_stream_restarts.unwrap_or(1);
        if max_stream_restarts > 3 {
            return Err(invalid("max_stream_restarts", "must be at most 3"));
        }
        let initial_backoff = ms("initial_backoff_ms", self.initial_backoff_ms, 500, 60_000)?;
        let max_backoff = ms("max_backoff_ms", self.max_backoff_ms, 8_000, 120_000)?;
        if max_backoff < initial_backoff {
            return Err(invalid("max_backoff_ms", "must not be below initial_backoff_ms"));
        }
        let max_response_bytes = self.max_response_bytes.unwrap_or(1024 * 1024);
        if max_response_bytes == 0 || max_response_bytes > 64 * 1024 * 1024 {
            return Err(invalid("max_response_bytes", "must be between 1 and 67108864"));
        }
        Ok(ModelSettings {
            region: self.region,
            endpoint_url: self.endpoint_url,
            model_id: self.model_id,
            ca_bundle: self.ca_bundle,
            request_timeout: ms("request_timeout_ms", self.request_timeout_ms, 120_000, 3_600_000)?,
            attempt_timeout: ms("attempt_timeout_ms", self.attempt_timeout_ms, 60_000, 3_600_000)?,
            stream_idle_timeout: ms(
                "stream_idle_timeout_ms",
                self.stream_idle_timeout_ms,
                30_000,
                3_600_000,
            )?,
            connect_timeout: ms("connect_timeout_ms", self.connect_timeout_ms, 3_100, 120_000)?,
            max_attempts,
            initial_backoff,
            max_backoff,
            max_stream_restarts,
            max_response_bytes,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn base() -> ModelConfig {
        ModelConfig { model_id: "us.anthropic.claude-sonnet-4-20250514-v1:0".into(), ..Default::default() }
    }

    #[test]
    fn defaults_and_deny_unknown_fields() {
        let c: ModelConfig = serde_json::from_str(r#"{"model_id":"m","region":"eu-west-1"}"#).unwrap();
        let s = c.validate().unwrap();
        assert_eq!(s.max_attempts, 3);
        assert_eq!(s.region.as_deref(), Some("eu-west-1"));
        assert!(serde_json::from_str::<ModelConfig>(r#"{"model_id":"m","endpoint":"x"}"#).is_err());
    }

    #[test]
    fn invalid_settings_name_their_key() {
        let key = |c: ModelConfig| c.validate().unwrap_err().key;
        assert_eq!(key(ModelConfig { model_id: "".into(), ..base() }), "model_id");
        assert_eq!(key(ModelConfig { model_id: "a b".into(), ..base() }), "model_id");
        assert_eq!(key(ModelConfig { region: Some("US East".into()), ..base() }), "region");
        assert_eq!(
            key(ModelConfig { endpoint_url: Some("http://127.0.0.1:1".into()), ..base() }),
            "endpoint_url"
        );
        assert_eq!(key(ModelConfig { endpoint_url: Some("ftp://x".into()), ..base() }), "endpoint_url");
        assert_eq!(key(ModelConfig { endpoint_url: Some("https://u:p@x".into()), ..base() }), "endpoint_url");
        assert_eq!(key(ModelConfig { max_attempts: Some(0), ..base() }), "max_attempts");
        assert_eq!(key(ModelConfig { initial_backoff_ms: Some(9000), ..base() }), "max_backoff_ms");
        let ok = ModelConfig { endpoint_url: Some("http://127.0.0.1:1".into()), allow_http: true, ..base() };
        assert!(ok.validate().is_ok());
        assert!(
            ModelConfig {
                model_id: "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.x-v1:0".into(),
                ..base()
            }
            .validate()
            .is_ok()
        );
    }
}
