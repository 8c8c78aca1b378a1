//! The inbound-token attack corpus, as data: each case is the raw `Authorization` header
//! value(s) a client sends and the outcome a correct authorizer must produce.
//!
//! The same corpus is run against `delegate_auth::Authorizer` directly (unit test) and over
//! real HTTP against the server (which must also create no plugin instance on rejection).

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Map, Value, json};

use crate::keys::{SigningKey, signing_input};
use crate::{Idp, IdpError, TokenSpec, TokenVersion, defaults, time};

/// What a correct authorizer does with a case.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expected {
    /// The token is valid and allowed.
    Accepted,
    /// 401: no valid token (missing, malformed, bad signature, wrong issuer/audience, expired).
    Unauthenticated,
    /// 403: a valid token whose client, scopes or claims are not allowed.
    Forbidden,
}

/// One attack (or control) case.
#[derive(Clone)]
pub struct AttackCase {
    /// Stable, descriptive name (use it in assertion messages).
    pub name: &'static str,
    /// The `Authorization` header values to send, in order: none, one, or several.
    /// These are devstack test tokens, never real credentials.
    pub authorization: Vec<String>,
    /// The required outcome.
    pub expected: Expected,
}

impl std::fmt::Debug for AttackCase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Header values can be 1 MB; show their sizes only.
        let sizes: Vec<usize> = self.authorization.iter().map(String::len).collect();
        f.debug_struct("AttackCase")
            .field("name", &self.name)
            .field("authorization_lengths", &sizes)
            .field("expected", &self.expected)
            .finish()
    }
}

/// The authorizer configuration the corpus is written for. Configure the authorizer under test
/// with: discovery `idp.discovery_url(&tenant)`, `allowed_audiences = [audience]`,
/// `allowed_clients = [client_id]`, `required_scopes = [scope]`, `leeway_seconds = leeway`,
/// algorithms RS256 only, `max_token_bytes` 16 KiB.
#[derive(Clone, Debug)]
pub struct CorpusTarget {
    /// Tenant id of the issuer.
    pub tenant: String,
    /// The one allowed audience.
    pub audience: String,
    /// The one allowed client.
    pub client_id: String,
    /// The user the valid tokens are for.
    pub user: String,
    /// The one required scope.
    pub scope: String,
    /// The authorizer's clock leeway.
    pub leeway: Duration,
}

impl Default for CorpusTarget {
    /// The article's setup: Token A for Jane, issued to and for the "ServiceNow Agent" app.
    fn default() -> Self {
        CorpusTarget {
            tenant: defaults::TENANT_ID.into(),
            audience: defaults::AGENT_APP_ID.into(),
            client_id: defaults::AGENT_APP_ID.into(),
            user: defaults::JANE.into(),
            scope: defaults::AGENT_SCOPE.into(),
            leeway: Duration::from_secs(60),
        }
    }
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn to_json(value: &impl serde::Serialize) -> Result<String, IdpError> {
    serde_json::to_string(value).map_err(|e| IdpError::Key(e.to_string()))
}

/// Builds the corpus against `idp` (which must contain `target.user`). It adds and retires one
/// signing key (for the retired-`kid` case) and never changes the current signing key.
///
/// Time-based cases sit 20 s inside or outside the leeway, so run the corpus within ~15 s of
/// building it.
pub fn attack_corpus(idp: &Idp, target: &CorpusTarget) -> Result<Vec<AttackCase>, IdpError> {
    use Expected::{Accepted, Forbidden, Unauthenticated};

    let now = time::now();
    let leeway = target.leeway.as_secs();
    let kid = idp.current_kid();
    let spec = TokenSpec {
        tenant: target.tenant.clone(),
        user: Some(target.user.clone()),
        client_id: target.client_id.clone(),
        audience: target.audience.clone(),
        scopes: vec![target.scope.clone()],
        roles: Vec::new(),
        version: TokenVersion::V2,
        lifetime: Duration::from_secs(3600),
        client_authenticated: false,
    };
    let base = idp.access_token_claims(&spec)?;
    let header_json = to_json(&json!({"typ": "JWT", "alg": "RS256", "kid": kid}))?;

    // Signs a variant of the valid claims with the real key and header.
    let with = |edit: &dyn Fn(&mut Map<String, Value>)| -> Result<String, IdpError> {
        let mut claims = base.clone();
        edit(&mut claims);
        Ok(idp.sign_claims(&claims)?.expose().to_owned())
    };
    // Signs exactly these header and payload texts with the real key.
    let raw = |header: &str, payload: &str| -> Result<String, IdpError> {
        idp.sign_jws(header.as_bytes(), payload.as_bytes(), &kid, Algorithm::RS256)
    };
    // The valid payload with an extra header parameter, properly signed.
    let with_header = |extra: Value| -> Result<String, IdpError> {
        let mut header = json!({"typ": "JWT", "alg": "RS256", "kid": kid});
        if let (Some(h), Some(e)) = (header.as_object_mut(), extra.as_object()) {
            h.extend(e.clone());
        }
        raw(&to_json(&header)?, &to_json(&base)?)
    };
    let bearer = |token: &str| format!("Bearer {token}");

    let valid = with(&|_| {})?;
    let other_valid = with(&|c| {
        c.insert("uti".into(), "another-token-id-000000".into());
    })?;
    let parts: Vec<&str> = valid.split('.').collect();
    let other_parts: Vec<&str> = other_valid.split('.').collect();
    let (vh, vp, vs) = (parts[0], parts[1], parts[2]);
    let payload_json = to_json(&base)?;

    // A key the IdP never published.
    let foreign = SigningKey::generate()?;
    let foreign_sign = |header: &Value| -> Result<String, IdpError> {
        let input = signing_input(to_json(header)?.as_bytes(), payload_json.as_bytes());
        let sig = foreign.sign(input.as_bytes(), Algorithm::RS256)?;
        Ok(format!("{input}.{sig}"))
    };

    // A key that was published and then retired.
    let retired_kid = idp.rotate_add_key()?;
    let retired_token = idp.sign_jws(
        to_json(&json!({"typ": "JWT", "alg": "RS256", "kid": retired_kid}))?.as_bytes(),
        payload_json.as_bytes(),
        &retired_kid,
        Algorithm::RS256,
    )?;
    idp.retire_key(&retired_kid);

    // RS/HS confusion: HMAC keyed with the RSA public key (PEM and raw modulus).
    let public_pem = idp.public_key_pem(&kid).unwrap_or_default();
    let hs = |secret: &[u8]| -> Result<String, IdpError> {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(kid.clone());
        jsonwebtoken::encode(&header, &base, &EncodingKey::from_secret(secret))
            .map_err(|e| IdpError::Key(e.to_string()))
    };
    let (n, _) = idp.public_key_components(&kid).unwrap_or_default();
    let n_bytes = URL_SAFE_NO_PAD.decode(n.as_bytes()).unwrap_or_default();

    let v1_spec = TokenSpec { version: TokenVersion::V1, ..spec };
    let v1_token = idp.sign_claims(&idp.access_token_claims(&v1_spec)?)?;

    let other_tenant_issuer = idp.issuer(defaults::OTHER_TENANT_ID);
    let big_claim = "x".repeat(17 * 1024);
    let one_mb = format!("Bearer {}", "A".repeat(1024 * 1024));

    let mut cases = vec![
        // ---- controls
        (Accepted, "valid_v2_token", vec![bearer(&valid)]),
        (Accepted, "scheme_is_case_insensitive", vec![format!("bearer {valid}")]),
        (
            Accepted,
            "aud_array_containing_allowed_audience",
            vec![bearer(&with(&|c| {
                c.insert("aud".into(), json!(["api://someone-else", target.audience]));
            })?)],
        ),
        (
            Accepted,
            "expired_but_inside_leeway",
            vec![bearer(&with(&|c| {
                c.insert("iat".into(), (now - 3600).into());
                c.insert("nbf".into(), (now - 3600).into());
                c.insert("exp".into(), (now + 20 - leeway).into());
            })?)],
        ),
        (
            Accepted,
            "nbf_in_future_but_inside_leeway",
            vec![bearer(&with(&|c| {
                c.insert("nbf".into(), (now + leeway - 20).into());
                c.insert("iat".into(), (now + leeway - 20).into());
            })?)],
        ),
        (
            Accepted,
            "unknown_extra_claims_ignored",
            vec![bearer(&with(&|c| {
                c.insert("aio".into(), "opaque".into());
                c.insert("rh".into(), "I".into());
            })?)],
        ),
        // ---- transport / header shape
        (Unauthenticated, "missing_authorization_header", vec![]),
        (Unauthenticated, "empty_authorization_header", vec![String::new()]),
        (Unauthenticated, "empty_bearer", vec!["Bearer ".into()]),
        (Unauthenticated, "bearer_without_token", vec!["Bearer".into()]),
        (Unauthenticated, "wrong_scheme_basic", vec![format!("Basic {}", b64(b"jane:pw"))]),
        (Unauthenticated, "wrong_scheme_token_in_basic", vec![format!("Basic {valid}")]),
        (Unauthenticated, "token_without_scheme", vec![valid.clone()]),
        (Unauthenticated, "two_spaces_after_scheme", vec![format!("Bearer  {valid}")]),
        (Unauthenticated, "trailing_garbage_after_token", vec![format!("Bearer {valid} extra")]),
        (Unauthenticated, "two_authorization_headers", vec![bearer(&valid), bearer(&valid)]),
        (Unauthenticated, "two_authorization_headers_one_bad", vec![bearer(&valid), "Bearer x".into()]),
        (Unauthenticated, "one_megabyte_header", vec![one_mb]),
        (
            Unauthenticated,
            "oversized_signed_token",
            vec![bearer(&with(&|c| {
                c.insert("pad".into(), big_claim.clone().into());
            })?)],
        ),
        // ---- JWS structure
        (Unauthenticated, "two_segments", vec![bearer(&format!("{vh}.{vp}"))]),
        (Unauthenticated, "four_segments", vec![bearer(&format!("{valid}.{vs}"))]),
        (
            Unauthenticated,
            "jwe_five_segments",
            vec![bearer(&format!(
                "{}.{}.{}.{}.{}",
                b64(br#"{"alg":"RSA-OAEP","enc":"A256GCM","kid":"x"}"#),
                b64(b"key"),
                b64(b"iv"),
                b64(b"ciphertext"),
                b64(b"tag")
            ))],
        ),
        (Unauthenticated, "header_not_base64", vec![bearer(&format!("!!!!.{vp}.{vs}"))]),
        (Unauthenticated, "header_base64_padded", vec![bearer(&format!("{vh}=.{vp}.{vs}"))]),
        (Unauthenticated, "header_not_json", vec![bearer(&format!("{}.{vp}.{vs}", b64(b"not json")))]),
        (Unauthenticated, "payload_not_json", vec![bearer(&raw(&header_json, "not json")?)]),
        (Unauthenticated, "payload_json_array", vec![bearer(&raw(&header_json, "[1,2,3]")?)]),
        (
            Unauthenticated,
            "duplicate_aud_claim",
            vec![bearer(&raw(&header_json, &payload_json.replacen('{', "{\"aud\":\"api://attacker\",", 1))?)],
        ),
        (
            Unauthenticated,
            "duplicate_unknown_claim",
            vec![bearer(&raw(&header_json, &payload_json.replacen('{', "{\"x\":1,\"x\":2,", 1))?)],
        ),
        (
            Unauthenticated,
            "duplicate_alg_in_header",
            vec![bearer(&raw(
                &format!(r#"{{"typ":"JWT","alg":"none","alg":"RS256","kid":"{kid}"}}"#),
                &payload_json,
            )?)],
        ),
        // ---- algorithm attacks
        (
            Unauthenticated,
            "alg_none_unsigned",
            vec![bearer(&format!(
                "{}.{vp}.",
                b64(format!(r#"{{"alg":"none","typ":"JWT","kid":"{kid}"}}"#).as_bytes())
            ))],
        ),
        (
            Unauthenticated,
            "alg_none_with_real_signature",
            vec![bearer(&format!(
                "{}.{vp}.{vs}",
                b64(format!(r#"{{"alg":"none","typ":"JWT","kid":"{kid}"}}"#).as_bytes())
            ))],
        ),
        (Unauthenticated, "hs256_keyed_with_public_key_pem", vec![bearer(&hs(public_pem.as_bytes())?)]),
        (Unauthenticated, "hs256_keyed_with_modulus", vec![bearer(&hs(&n_bytes)?)]),
        (
            Unauthenticated,
            "es256_all_zero_signature",
            vec![bearer(&format!(
                "{}.{vp}.{}",
                b64(format!(r#"{{"alg":"ES256","typ":"JWT","kid":"{kid}"}}"#).as_bytes()),
                b64(&[0u8; 64])
            ))],
        ),
        (
            Unauthenticated,
            "ps256_not_in_allowed_algorithms",
            vec![bearer(&idp.sign_jws(
                to_json(&json!({"typ": "JWT", "alg": "PS256", "kid": kid}))?.as_bytes(),
                payload_json.as_bytes(),
                &kid,
                Algorithm::PS256,
            )?)],
        ),
        (
            Unauthenticated,
            "unknown_alg_value",
            vec![bearer(&format!(
                "{}.{vp}.{vs}",
                b64(format!(r#"{{"alg":"RS1","typ":"JWT","kid":"{kid}"}}"#).as_bytes())
            ))],
        ),
        // ---- header parameters that name keys or change processing
        (
            Unauthenticated,
            "jku_header",
            vec![bearer(&with_header(json!({"jku": "https://attacker.example/keys"}))?)],
        ),
        (
            Unauthenticated,
            "x5u_header",
            vec![bearer(&with_header(json!({"x5u": "https://attacker.example/cert.pem"}))?)],
        ),
        (
            Unauthenticated,
            "embedded_jwk_attacker_key",
            vec![bearer(&foreign_sign(
                &json!({"typ": "JWT", "alg": "RS256", "kid": kid, "jwk": foreign.jwk_json(None)}),
            )?)],
        ),
        (
            Unauthenticated,
            "embedded_jwk_real_key",
            vec![bearer(&with_header(json!({"jwk": {"kty": "RSA", "n": n, "e": "AQAB"}}))?)],
        ),
        (Unauthenticated, "x5c_header", vec![bearer(&with_header(json!({"x5c": [foreign.x5c]}))?)]),
        (Unauthenticated, "crit_header", vec![bearer(&with_header(json!({"crit": ["exp"], "exp": 1}))?)]),
        (
            Unauthenticated,
            "b64_false_unencoded_payload",
            vec![bearer(&with_header(json!({"b64": false, "crit": ["b64"]}))?)],
        ),
        (Unauthenticated, "cty_nested_jwt", vec![bearer(&with_header(json!({"cty": "JWT"}))?)]),
        (Unauthenticated, "enc_header_on_jws", vec![bearer(&with_header(json!({"enc": "A256GCM"}))?)]),
        // ---- keys
        (
            Unauthenticated,
            "missing_kid",
            vec![bearer(&raw(r#"{"typ":"JWT","alg":"RS256"}"#, &payload_json)?)],
        ),
        (
            Unauthenticated,
            "unknown_kid",
            vec![bearer(&raw(r#"{"typ":"JWT","alg":"RS256","kid":"no-such-key"}"#, &payload_json)?)],
        ),
        (
            Unauthenticated,
            "kid_path_traversal",
            vec![bearer(&raw(r#"{"typ":"JWT","alg":"RS256","kid":"../../../../dev/null"}"#, &payload_json)?)],
        ),
        (Unauthenticated, "kid_of_retired_key", vec![bearer(&retired_token)]),
        (
            Unauthenticated,
            "foreign_key_with_real_kid",
            vec![bearer(&foreign_sign(&json!({"typ": "JWT", "alg": "RS256", "kid": kid}))?)],
        ),
        // ---- signature
        (
            Unauthenticated,
            "signature_of_another_token",
            vec![bearer(&format!("{vh}.{vp}.{}", other_parts[2]))],
        ),
        (
            Unauthenticated,
            "tampered_payload",
            vec![bearer(&format!(
                "{vh}.{}.{vs}",
                b64(to_json(&{
                    let mut c = base.clone();
                    c.insert("oid".into(), "00000000-0000-0000-0000-000000000001".into());
                    c
                })?
                .as_bytes())
            ))],
        ),
        (Unauthenticated, "truncated_signature", vec![bearer(&format!("{vh}.{vp}.{}", &vs[..vs.len() - 4]))]),
        (Unauthenticated, "empty_signature", vec![bearer(&format!("{vh}.{vp}."))]),
        (
            Unauthenticated,
            "signature_bit_flipped",
            vec![bearer(&format!("{vh}.{vp}.{}", flip_first_char(vs)))],
        ),
        // ---- issuer
        (
            Unauthenticated,
            "wrong_issuer_other_tenant",
            vec![bearer(&with(&|c| {
                c.insert("iss".into(), other_tenant_issuer.clone().into());
            })?)],
        ),
        (
            Unauthenticated,
            "wrong_issuer_trailing_slash",
            vec![bearer(&with(&|c| {
                c.insert("iss".into(), format!("{}/", idp.issuer(&target.tenant)).into());
            })?)],
        ),
        (
            Unauthenticated,
            "missing_issuer",
            vec![bearer(&with(&|c| {
                c.remove("iss");
            })?)],
        ),
        (Unauthenticated, "v1_token_when_only_v2_configured", vec![bearer(v1_token.expose())]),
        (
            Unauthenticated,
            "tid_differs_from_issuer_tenant",
            vec![bearer(&with(&|c| {
                c.insert("tid".into(), defaults::OTHER_TENANT_ID.into());
            })?)],
        ),
        (
            Unauthenticated,
            "ver_1_with_v2_issuer",
            vec![bearer(&with(&|c| {
                c.insert("ver".into(), "1.0".into());
            })?)],
        ),
        // ---- audience
        (
            Unauthenticated,
            "wrong_audience",
            vec![bearer(&with(&|c| {
                c.insert("aud".into(), defaults::CONNECTOR_APP_ID.into());
            })?)],
        ),
        (
            Unauthenticated,
            "missing_audience",
            vec![bearer(&with(&|c| {
                c.remove("aud");
            })?)],
        ),
        (
            Unauthenticated,
            "empty_audience_array",
            vec![bearer(&with(&|c| {
                c.insert("aud".into(), json!([]));
            })?)],
        ),
        (
            Unauthenticated,
            "audience_prefix_only",
            vec![bearer(&with(&|c| {
                c.insert("aud".into(), target.audience[..8].into());
            })?)],
        ),
        // ---- time
        (
            Unauthenticated,
            "expired_outside_leeway",
            vec![bearer(&with(&|c| {
                c.insert("iat".into(), (now - 7200).into());
                c.insert("nbf".into(), (now - 7200).into());
                c.insert("exp".into(), (now - leeway - 20).into());
            })?)],
        ),
        (
            Unauthenticated,
            "nbf_in_future_outside_leeway",
            vec![bearer(&with(&|c| {
                c.insert("nbf".into(), (now + leeway + 20).into());
            })?)],
        ),
        (
            Unauthenticated,
            "iat_in_future_outside_leeway",
            vec![bearer(&with(&|c| {
                c.insert("iat".into(), (now + leeway + 20).into());
            })?)],
        ),
        (
            Unauthenticated,
            "missing_exp",
            vec![bearer(&with(&|c| {
                c.remove("exp");
            })?)],
        ),
        (
            Unauthenticated,
            "exp_as_string",
            vec![bearer(&with(&|c| {
                c.insert("exp".into(), (now + 3600).to_string().into());
            })?)],
        ),
        (
            Unauthenticated,
            "exp_huge_float",
            vec![bearer(&raw(
                &header_json,
                &payload_json.replacen(
                    &format!("\"exp\":{}", base.get("exp").and_then(Value::as_u64).unwrap_or(0)),
                    "\"exp\":1e300",
                    1,
                ),
            )?)],
        ),
        (
            Unauthenticated,
            "exp_negative",
            vec![bearer(&with(&|c| {
                c.insert("exp".into(), json!(-1));
            })?)],
        ),
        // ---- client and scope (valid tokens, not allowed) -> 403
        (
            Forbidden,
            "client_not_allowed",
            vec![bearer(&with(&|c| {
                c.insert("azp".into(), defaults::CONNECTOR_APP_ID.into());
            })?)],
        ),
        (
            Forbidden,
            "missing_client_claim",
            vec![bearer(&with(&|c| {
                c.remove("azp");
            })?)],
        ),
        (
            Forbidden,
            "required_scope_missing",
            vec![bearer(&with(&|c| {
                c.insert("scp".into(), "User.Read".into());
            })?)],
        ),
        (
            Forbidden,
            "scope_prefix_only",
            vec![bearer(&with(&|c| {
                c.insert("scp".into(), target.scope[..target.scope.len() - 1].into());
            })?)],
        ),
        (
            Forbidden,
            "app_only_token_without_scp",
            vec![bearer(&with(&|c| {
                c.remove("scp");
                c.insert("roles".into(), json!(["Agent.Invoke"]));
                c.insert("idtyp".into(), "app".into());
            })?)],
        ),
    ];
    Ok(cases
        .drain(..)
        .map(|(expected, name, authorization)| AttackCase { name, authorization, expected })
        .collect())
}

fn flip_first_char(s: &str) -> String {
    let mut chars: Vec<char> = s.chars().collect();
    if let Some(c) = chars.first_mut() {
        *c = if *c == 'A' { 'B' } else { 'A' };
    }
    chars.into_iter().collect()
}
