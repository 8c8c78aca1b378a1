//! Certificate credentials (`client_assertion`, x5t#S256) on the token endpoint, as delegate's
//! vault sends them: OBO succeeds with `azpacr` "2"; every malformed assertion is refused
//! with Entra's code and `invalid_client` 401.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::{as_refs, assert_entra_error, token};
use crate::defaults::*;
use crate::{IdpConfig, IdpServer, JWT_BEARER_GRANT};

const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// A certificate credential: its PEM (to register) and the signing half.
struct Cert {
    pem: String,
    x5t_s256: String,
    key: EncodingKey,
    alg: Algorithm,
}

fn cert(ec: bool) -> Cert {
    let (key_pair, alg) = if ec {
        (rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap(), Algorithm::ES256)
    } else {
        (
            rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048).unwrap(),
            Algorithm::RS256,
        )
    };
    let cert =
        rcgen::CertificateParams::new(vec!["delegate".to_owned()]).unwrap().self_signed(&key_pair).unwrap();
    let private = key_pair.serialize_pem();
    let key = if ec {
        EncodingKey::from_ec_pem(private.as_bytes()).unwrap()
    } else {
        EncodingKey::from_rsa_pem(private.as_bytes()).unwrap()
    };
    Cert { pem: cert.pem(), x5t_s256: URL_SAFE_NO_PAD.encode(Sha256::digest(cert.der())), key, alg }
}

fn assertion(cert: &Cert, claims: &Value) -> String {
    let mut header = Header::new(cert.alg);
    header.x5t_s256 = Some(cert.x5t_s256.clone());
    jsonwebtoken::encode(&header, claims, &cert.key).unwrap()
}

fn claims(server: &IdpServer, edit: impl FnOnce(&mut serde_json::Map<String, Value>)) -> Value {
    let now = crate::time::now();
    let mut c = json!({
        "aud": server.idp().token_endpoint(TENANT_ID),
        "iss": AGENT_APP_ID,
        "sub": AGENT_APP_ID,
        "jti": uuid::Uuid::new_v4().to_string(),
        "nbf": now,
        "iat": now,
        "exp": now + 600,
    });
    edit(c.as_object_mut().unwrap());
    c
}

fn obo_form(token_a: &str, client_assertion: &str) -> Vec<(&'static str, String)> {
    vec![
        ("grant_type", JWT_BEARER_GRANT.into()),
        ("client_id", AGENT_APP_ID.into()),
        ("client_assertion_type", ASSERTION_TYPE.into()),
        ("client_assertion", client_assertion.into()),
        ("assertion", token_a.into()),
        ("scope", format!("api://{CONNECTOR_APP_ID}/{CONNECTOR_SCOPE}")),
        ("requested_token_use", "on_behalf_of".into()),
    ]
}

#[tokio::test]
async fn certificate_credentials_authenticate_obo() {
    let (rsa, ec, unregistered) = (cert(false), cert(true), cert(false));
    let mut config = IdpConfig::default();
    config.apps[0].client_certificates = vec![rsa.pem.clone(), ec.pem.clone()];
    let server = IdpServer::start(config).await.unwrap();
    let idp = server.idp();
    let a = idp
        .mint_access_token(JANE, AGENT_APP_ID, AGENT_APP_ID, &[AGENT_SCOPE], Duration::from_secs(600))
        .unwrap();
    let a = a.expose();

    for (cert, audience) in [(&rsa, idp.token_endpoint(TENANT_ID)), (&ec, idp.issuer(TENANT_ID))] {
        let ca = assertion(
            cert,
            &claims(&server, |c| {
                c.insert("aud".into(), audience.clone().into());
            }),
        );
        let (status, body) = token(&server, TENANT_ID, &as_refs(&obo_form(a, &ca))).await;
        assert_eq!(status, 200, "{body}");
        let b = jsonwebtoken::dangerous::insecure_decode::<Value>(body["access_token"].as_str().unwrap())
            .unwrap()
            .claims;
        assert_eq!(b["azpacr"], "2", "certificate-authenticated client");
        assert_eq!(b["aud"], CONNECTOR_APP_ID);
    }

    // MSAL for Python's quirks, which Entra accepts: a padded thumbprint, float times, PS256.
    let msal_style = {
        let mut header = Header::new(Algorithm::PS256);
        header.x5t_s256 = Some(format!("{}=", rsa.x5t_s256));
        let now = crate::time::now() as f64 + 0.25;
        let c = claims(&server, |c| {
            c.insert("exp".into(), json!(now + 600.0));
            c.insert("iat".into(), json!(now));
            c.remove("nbf");
        });
        jsonwebtoken::encode(&header, &c, &rsa.key).unwrap()
    };
    let (status, body) = token(&server, TENANT_ID, &as_refs(&obo_form(a, &msal_style))).await;
    assert_eq!(status, 200, "{body}");

    let good = assertion(&rsa, &claims(&server, |_| {}));
    let tampered = {
        let (input, signature) = good.rsplit_once('.').unwrap();
        let first = if signature.starts_with('A') { "B" } else { "A" };
        format!("{input}.{first}{}", &signature[1..])
    };
    let mut both = obo_form(a, &good);
    both.push(("client_secret", AGENT_APP_SECRET.into()));
    let mut wrong_type = obo_form(a, &good);
    wrong_type.retain(|(k, _)| *k != "client_assertion_type");
    let no_type = wrong_type.clone();
    wrong_type.push(("client_assertion_type", "urn:other".into()));
    let other_endpoint = idp.token_endpoint(OTHER_TENANT_ID);
    let cases: Vec<(&str, Vec<(&'static str, String)>, u16, &str, u64)> = vec![
        (
            "unregistered certificate",
            obo_form(a, &assertion(&unregistered, &claims(&server, |_| {}))),
            401,
            "invalid_client",
            700027,
        ),
        (
            "wrong issuer",
            obo_form(
                a,
                &assertion(
                    &rsa,
                    &claims(&server, |c| {
                        c.insert("iss".into(), CONNECTOR_APP_ID.into());
                    }),
                ),
            ),
            401,
            "invalid_client",
            700021,
        ),
        (
            "two audiences",
            obo_form(
                a,
                &assertion(
                    &rsa,
                    &claims(&server, |c| {
                        c.insert("aud".into(), json!(["https://a.example/token", "https://b.example/token"]));
                    }),
                ),
            ),
            401,
            "invalid_client",
            5002741,
        ),
        (
            "another endpoint's audience",
            obo_form(
                a,
                &assertion(
                    &rsa,
                    &claims(&server, |c| {
                        c.insert("aud".into(), other_endpoint.clone().into());
                    }),
                ),
            ),
            401,
            "invalid_client",
            700027,
        ),
        (
            "expired",
            obo_form(
                a,
                &assertion(
                    &rsa,
                    &claims(&server, |c| {
                        c.insert("exp".into(), (crate::time::now() - 1).into());
                    }),
                ),
            ),
            401,
            "invalid_client",
            700024,
        ),
        ("tampered", obo_form(a, &tampered), 401, "invalid_client", 700027),
        ("garbage", obo_form(a, "garbage"), 400, "invalid_request", 50027),
        (
            "negative exp",
            obo_form(
                a,
                &assertion(
                    &rsa,
                    &claims(&server, |c| {
                        c.insert("exp".into(), json!(-1.5));
                    }),
                ),
            ),
            400,
            "invalid_request",
            50027,
        ),
        ("secret and assertion", both, 400, "invalid_request", 9002313),
        ("missing assertion type", no_type, 400, "invalid_request", 900144),
        ("wrong assertion type", wrong_type, 400, "invalid_request", 9002313),
    ];
    for (name, form, status, error, code) in cases {
        let (got, body) = token(&server, TENANT_ID, &as_refs(&form)).await;
        assert_eq!(got, status, "{name}: {body}");
        assert_entra_error(&body, error, code);
        assert!(!body.to_string().contains("eyJ"), "{name}: no token in an error");
    }
}

#[test]
fn a_bad_certificate_in_the_directory_is_a_config_error() {
    let mut config = IdpConfig::default();
    config.apps[0].client_certificates =
        vec!["-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".into()];
    assert!(crate::Idp::new(config).is_err());
}
