//! The token-endpoint call: form building per grant, bounded retries, response parsing and
//! error classification.

use crate::config::{ACCESS_TOKEN_TYPE, CertificateKey, ClientAuth, Grant, Provider, VaultSettings};
use crate::error::{IdpError, VaultError};
use delegate_auth::VerifiedCaller;
use delegate_secret::Secret;
use serde::Deserialize;

const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const CLIENT_ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// Lifetime of a client assertion: long enough for clock skew, short enough to be useless
/// if captured.
const ASSERTION_LIFETIME_SECS: u64 = 300;
/// Token responses are small; anything larger is not one.
const MAX_BODY: usize = 64 * 1024;
/// Claims challenges are small JSON objects.
const MAX_CLAIMS: usize = 8 * 1024;

/// A successful token response.
pub(crate) struct Issued {
    pub(crate) token: Secret,
    pub(crate) expires_in: Option<u64>,
}

enum Failure {
    /// Worth another attempt (timeout, connection failure, 5xx, 429); the text is fixed or
    /// built from the status and the sanitised OAuth error code only.
    Retryable(String),
    /// An answer: retrying would get the same one.
    Final(VaultError),
}

/// Requests a token, retrying transient failures up to `settings.attempts` times.
pub(crate) async fn request_token(
    client: &reqwest::Client,
    settings: &VaultSettings,
    name: &str,
    provider: &Provider,
    caller: &VerifiedCaller,
    scopes: &[String],
) -> Result<Issued, VaultError> {
    request_token_with_actor(client, settings, name, provider, caller, scopes, None).await
}

/// [`request_token`], with an RFC 8693 `actor_token` for a token-exchange grant.
pub(crate) async fn request_token_with_actor(
    client: &reqwest::Client,
    settings: &VaultSettings,
    name: &str,
    provider: &Provider,
    caller: &VerifiedCaller,
    scopes: &[String],
    actor: Option<&Secret>,
) -> Result<Issued, VaultError> {
    let mut cause = String::new();
    for attempt in 1..=settings.attempts {
        match attempt_once(client, settings, name, provider, caller, scopes, actor).await {
            Ok(issued) => return Ok(issued),
            Err(Failure::Final(e)) => return Err(e),
            Err(Failure::Retryable(why)) => {
                tracing::warn!(
                    target: "delegate::vault",
                    provider = name,
                    attempt,
                    cause = %why,
                    "token request failed, will retry if attempts remain"
                );
                cause = why;
                if attempt < settings.attempts {
                    let factor = 1u32 << (attempt - 1).min(8);
                    tokio::time::sleep(settings.retry_backoff * factor).await;
                }
            }
        }
    }
    Err(VaultError::Unavailable { provider: name.to_owned(), attempts: settings.attempts, cause })
}

async fn attempt_once(
    client: &reqwest::Client,
    settings: &VaultSettings,
    name: &str,
    provider: &Provider,
    caller: &VerifiedCaller,
    scopes: &[String],
    actor: Option<&Secret>,
) -> Result<Issued, Failure> {
    let scope = scopes.join(" ");
    // A fresh client assertion per attempt: each carries its own `jti` and validity window.
    let assertion = match &provider.client_auth {
        ClientAuth::Secret(_) => None,
        ClientAuth::Certificate(cert) => Some(
            client_assertion(cert, &provider.client_id, provider.token_endpoint.as_str())
                .map_err(|()| Failure::Final(misconfigured_key(name)))?,
        ),
    };
    let mut form: Vec<(&str, &str)> = vec![("client_id", provider.client_id.as_str())];
    match (&provider.client_auth, &assertion) {
        (ClientAuth::Secret(secret), _) => form.push(("client_secret", secret.expose())),
        (ClientAuth::Certificate(_), Some(jwt)) => {
            form.push(("client_assertion_type", CLIENT_ASSERTION_TYPE));
            form.push(("client_assertion", jwt.expose()));
        }
        (ClientAuth::Certificate(_), None) => return Err(Failure::Final(misconfigured_key(name))),
    }
    match &provider.grant {
        Grant::EntraObo { .. } => {
            form.push(("grant_type", JWT_BEARER));
            form.push(("assertion", caller.token().expose()));
            form.push(("scope", &scope));
            form.push(("requested_token_use", "on_behalf_of"));
        }
        Grant::TokenExchange { subject_token_type, requested_token_type, audience, resource, .. } => {
            form.push(("grant_type", TOKEN_EXCHANGE));
            form.push(("subject_token", caller.token().expose()));
            form.push(("subject_token_type", subject_token_type));
            if let Some(t) = requested_token_type {
                form.push(("requested_token_type", t));
            }
            if let Some(a) = audience {
                form.push(("audience", a));
            }
            if let Some(r) = resource {
                form.push(("resource", r));
            }
            if let Some(actor) = actor {
                // The host's own client-credentials token: the IdP records it in `act`.
                form.push(("actor_token", actor.expose()));
                form.push(("actor_token_type", ACCESS_TOKEN_TYPE));
            }
            if !scope.is_empty() {
                form.push(("scope", &scope));
            }
        }
        Grant::ClientCredentials => {
            form.push(("grant_type", "client_credentials"));
            form.push(("scope", &scope));
        }
    }
    let response = client
        .post(provider.token_endpoint.clone())
        .timeout(settings.attempt_timeout)
        .header(reqwest::header::ACCEPT, "application/json")
        .form(&form)
        .send()
        .await
        .map_err(|e| Failure::Retryable(transport_cause(&e).into()))?;
    drop(form);
    let status = response.status().as_u16();
    if response.content_length().is_some_and(|n| n > MAX_BODY as u64) {
        return Err(invalid(name, "response too large"));
    }
    let body = response.bytes().await.map_err(|e| Failure::Retryable(transport_cause(&e).into()))?;
    if body.len() > MAX_BODY {
        return Err(invalid(name, "response too large"));
    }
    if (200..300).contains(&status) {
        return parse_success(name, &body);
    }
    Err(classify(name, &provider.grant, status, &body))
}

fn transport_cause(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_body() || e.is_decode() {
        "response body failed"
    } else {
        "request failed"
    }
}

fn invalid(name: &str, detail: &'static str) -> Failure {
    Failure::Final(VaultError::InvalidResponse { provider: name.to_owned(), detail })
}

/// `expires_in` is a JSON number per RFC 6749; some servers send a string.
#[derive(Deserialize)]
#[serde(untagged)]
enum Seconds {
    Number(u64),
    Text(String),
}

/// The success body. Not `Debug`: it holds the token before it is moved into a `Secret`.
#[derive(Deserialize)]
struct TokenBody {
    access_token: String,
    #[serde(default)]
    token_type: Option<String>,
    #[serde(default)]
    expires_in: Option<Seconds>,
}

fn parse_success(name: &str, body: &[u8]) -> Result<Issued, Failure> {
    let parsed: TokenBody = serde_json::from_slice(body)
        .map_err(|_| invalid(name, "token response is not JSON with an access_token"))?;
    let token = Secret::new(parsed.access_token);
    if token.is_empty() {
        return Err(invalid(name, "access_token is empty"));
    }
    if parsed.token_type.as_deref().is_some_and(|t| !t.eq_ignore_ascii_case("bearer")) {
        return Err(invalid(name, "token_type is not Bearer"));
    }
    let expires_in = match parsed.expires_in {
        None => None,
        Some(Seconds::Number(n)) => Some(n),
        Some(Seconds::Text(s)) => {
            Some(s.trim().parse().map_err(|_| invalid(name, "expires_in is not a number"))?)
        }
    };
    Ok(Issued { token, expires_in })
}

/// The error body (Entra's shape is a superset of RFC 6749 §5.2). `error_description` is
/// deliberately not read: it is free text that may quote user names, and branching on it is
/// wrong anyway.
#[derive(Deserialize)]
struct ErrorBody {
    error: String,
    #[serde(default)]
    error_codes: Vec<u64>,
    #[serde(default)]
    suberror: Option<String>,
    #[serde(default)]
    trace_id: Option<String>,
    #[serde(default)]
    correlation_id: Option<String>,
    #[serde(default)]
    claims: Option<String>,
}

/// Keeps an IdP-supplied identifier only if it looks like one (OAuth error codes are
/// `[a-z_]`, Entra ids are GUIDs), so a hostile or broken IdP cannot put text in our errors.
fn clean(s: &str) -> Option<String> {
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'));
    ok.then(|| s.to_owned())
}

fn classify(name: &str, grant: &Grant, status: u16, body: &[u8]) -> Failure {
    let provider = name.to_owned();
    let Ok(parsed) = serde_json::from_slice::<ErrorBody>(body) else {
        if status >= 500 || status == 429 {
            return Failure::Retryable(format!("HTTP {status}"));
        }
        return invalid(name, "error response is not OAuth JSON");
    };
    let idp = Box::new(IdpError {
        http_status: status,
        error: clean(&parsed.error).unwrap_or_else(|| "unrecognised".into()),
        codes: parsed.error_codes,
        suberror: parsed.suberror.as_deref().and_then(clean),
        trace_id: parsed.trace_id.as_deref().and_then(clean),
        correlation_id: parsed.correlation_id.as_deref().and_then(clean),
    });
    if status >= 500
        || status == 429
        || matches!(idp.error.as_str(), "temporarily_unavailable" | "server_error")
    {
        return Failure::Retryable(format!("HTTP {status} {}", idp.error));
    }
    let claims = parsed.claims.filter(|c| {
        c.len() <= MAX_CLAIMS && serde_json::from_str::<serde_json::Value>(c).is_ok_and(|v| v.is_object())
    });
    let consent = idp.suberror.as_deref() == Some("consent_required")
        || idp.error == "consent_required"
        || idp.has_code(65001);
    let error = if consent {
        VaultError::ConsentRequired { provider, idp }
    } else if idp.error == "interaction_required"
        || idp.has_code(50076)
        || idp.has_code(50079)
        || claims.is_some()
    {
        VaultError::InteractionRequired { provider, idp, claims }
    } else {
        match idp.error.as_str() {
            // 500131: the assertion's audience is not the client we present, i.e. the vault's
            // client_id differs from the audience the authorizer accepts: an operator problem.
            "invalid_grant" if idp.has_code(500131) => VaultError::Misconfigured { provider, idp },
            "invalid_grant" => VaultError::CallerTokenRejected { provider, idp },
            // RFC 8693 §2.2.2: an unacceptable subject token is `invalid_request`.
            "invalid_request" if matches!(grant, Grant::TokenExchange { .. }) => {
                VaultError::CallerTokenRejected { provider, idp }
            }
            _ => VaultError::Misconfigured { provider, idp },
        }
    };
    if let VaultError::Misconfigured { provider, idp } = &error {
        // Operator problem: say so loudly, with the IdP's code and ids, never the secret.
        tracing::error!(
            target: "delegate::vault",
            provider = %provider,
            idp_error = %idp,
            "identity provider refused delegate's token request; check the provider's client id, secret and scopes"
        );
    }
    Failure::Final(error)
}

/// Claims of a client assertion (RFC 7523 §3; Entra's certificate-credential format).
#[derive(serde::Serialize)]
struct AssertionClaims<'a> {
    aud: &'a str,
    iss: &'a str,
    sub: &'a str,
    jti: String,
    nbf: u64,
    iat: u64,
    exp: u64,
}

/// Signs a client assertion: `aud` is the token endpoint (a single value: Entra refuses two,
/// AADSTS5002741), `iss` = `sub` = the client id, the certificate named by `x5t#S256`.
fn client_assertion(cert: &CertificateKey, client_id: &str, token_endpoint: &str) -> Result<Secret, ()> {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_err(drop)?.as_secs();
    let mut header = jsonwebtoken::Header::new(cert.algorithm);
    header.x5t_s256 = Some(cert.x5t_s256.clone());
    let claims = AssertionClaims {
        aud: token_endpoint,
        iss: client_id,
        sub: client_id,
        jti: uuid::Uuid::new_v4().to_string(),
        nbf: now,
        iat: now,
        exp: now + ASSERTION_LIFETIME_SECS,
    };
    jsonwebtoken::encode(&header, &claims, &cert.key).map(Secret::new).map_err(drop)
}

fn misconfigured_key(name: &str) -> VaultError {
    tracing::error!(target: "delegate::vault", provider = name, "cannot sign the client assertion with the configured key");
    VaultError::Misconfigured {
        provider: name.to_owned(),
        idp: Box::new(IdpError { error: "client_assertion_signing_failed".into(), ..IdpError::default() }),
    }
}
