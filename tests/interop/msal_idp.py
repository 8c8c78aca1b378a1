#!/usr/bin/env python3
"""Interop check: real, independent client libraries against the HTTPS devstack IdP.

- Microsoft MSAL for Python signs Jane in with the password grant (PublicClientApplication,
  after MSAL's own home-realm lookup) and with a confidential client, and gets a
  client-credentials token.
- MSAL's ConfidentialClientApplication.acquire_token_on_behalf_of redeems Jane's token
  (Token A, audience = the agent app) for a token to the ServiceNow API connector (Token B),
  unchanged MSAL code; its errors (wrong secret, app-only assertion, unexposed scope) keep
  Entra's error and AADSTS codes. The same with a certificate credential (MSAL signs a PS256
  client assertion naming the certificate by x5t#S256; the certificate is generated here and
  registered with `--agent-cert`).
- PyJWT validates every token from the discovery document and the JWKS (PyJWKClient),
  requiring exp/iat/nbf/iss/aud and checking issuer and audience exactly.

Requirements: `pip install msal pyjwt[crypto]` (tested with msal 1.39.0, PyJWT 2.15.1).

The IdP listens on 127.0.0.1:443 (needs root or CAP_NET_BIND_SERVICE, and a free port 443):
MSAL for Python sends its home-realm lookup to port 443 of the authority host whatever port
the authority URL names.

Run (from the repository root):
    python3 tests/interop/msal_idp.py
which starts `cargo run -q -p delegate-devstack-idp --example devstack-idp` itself, or
    DEVSTACK_IDP_BIN=target/debug/examples/devstack-idp python3 tests/interop/msal_idp.py
to use an already built runner. Exit status 0 on success; a failed check raises.
"""

import json
import os
import ssl
import subprocess
import sys

import jwt
import msal


def make_certificate(directory):
    """A self-signed RSA certificate and its key (PEM), for the certificate credential."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "delegate interop")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    cert_pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()).decode()
    path = os.path.join(directory, "agent-cert.pem")
    with open(path, "w") as f:
        f.write(cert_pem)
    return path, cert_pem, key_pem


def start_idp(extra_args=()):
    binary = os.environ.get("DEVSTACK_IDP_BIN")
    # Port 443: MSAL looks up the home realm (/common/userrealm/...) on port 443 of the
    # authority host, ignoring the authority's port, before a password sign-in.
    cmd = ([binary] if binary else [
        "cargo", "run", "-q", "-p", "delegate-devstack-idp", "--example", "devstack-idp", "--"]
    ) + ["--port", os.environ.get("DEVSTACK_IDP_PORT", "443")] + list(extra_args)
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if not line:
        proc.kill()
        raise SystemExit("devstack-idp did not start")
    return proc, json.loads(line)


def validate(token, info, ca, audience, issuer_tenant):
    """Validate like an independent resource server: discovery -> jwks_uri -> key by kid."""
    import urllib.request

    ctx = ssl.create_default_context(cafile=ca)
    discovery_url = f"{info['url']}/{issuer_tenant}/v2.0/.well-known/openid-configuration"
    with urllib.request.urlopen(discovery_url, context=ctx) as r:
        discovery = json.load(r)
    jwks = jwt.PyJWKClient(discovery["jwks_uri"], ssl_context=ctx)
    key = jwks.get_signing_key_from_jwt(token)
    return jwt.decode(
        token,
        key.key,
        algorithms=["RS256"],
        audience=audience,
        issuer=discovery["issuer"],
        options={"require": ["exp", "iat", "nbf", "iss", "aud"]},
    )


def main():
    # requests lets these variables override a session's `verify` (which MSAL sets from its
    # `verify` argument); drop them so the devstack CA given to MSAL is what is used.
    for var in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        os.environ.pop(var, None)
    import tempfile

    workdir = tempfile.mkdtemp(prefix="msal-idp-")
    cert_path, cert_pem, key_pem = make_certificate(workdir)
    proc, info = start_idp(["--agent-cert", cert_path])
    try:
        ca = info["ca_pem"]
        authority = f"{info['url']}/{info['tenant']}"
        agent = info["agent_app_id"]
        scope = f"api://{agent}/{info['agent_scope']}"

        # 1. Password grant, public client (MSAL does the userrealm lookup first).
        public = msal.PublicClientApplication(
            agent, authority=authority, verify=ca, instance_discovery=False)
        result = public.acquire_token_by_username_password(
            info["user"], info["password"], scopes=[scope])
        assert "access_token" in result, result
        claims = validate(result["access_token"], info, ca, agent, info["tenant"])
        assert claims["ver"] == "2.0", claims
        assert claims["preferred_username"] == info["user"], claims
        assert claims["scp"] == info["agent_scope"], claims
        assert claims["azp"] == agent and claims["tid"] == info["tenant"], claims
        assert result["id_token_claims"]["oid"] == claims["oid"], result["id_token_claims"]
        print(f"ok: MSAL public client password grant for {claims['preferred_username']}")

        # 2. Password grant, confidential client, authority by domain name.
        confidential = msal.ConfidentialClientApplication(
            agent, client_credential=info["agent_app_secret"],
            authority=f"{info['url']}/{info['tenant_domain']}", verify=ca,
            instance_discovery=False)
        result = confidential.acquire_token_by_username_password(
            info["user"], info["password"], scopes=[scope])
        assert "access_token" in result, result
        claims = validate(result["access_token"], info, ca, agent, info["tenant"])
        assert claims["azpacr"] == "1", claims
        print("ok: MSAL confidential client password grant")

        # 3. Wrong password: MSAL surfaces Entra's error and AADSTS code.
        bad = public.acquire_token_by_username_password(
            info["user"], "wrong", scopes=[scope])
        assert bad.get("error") == "invalid_grant" and 50126 in bad.get("error_codes", []), bad
        print("ok: wrong password -> invalid_grant AADSTS50126")

        # 4. Client credentials.
        confidential = msal.ConfidentialClientApplication(
            agent, client_credential=info["agent_app_secret"], authority=authority,
            verify=ca, instance_discovery=False)
        result = confidential.acquire_token_for_client(scopes=[f"api://{agent}/.default"])
        assert "access_token" in result, result
        claims = validate(result["access_token"], info, ca, agent, info["tenant"])
        assert "scp" not in claims and claims["roles"] == ["Agent.Invoke"], claims
        assert claims["sub"] == claims["oid"], claims
        print("ok: MSAL client credentials")
        app_token = result["access_token"]

        # 5. On-Behalf-Of: the agent redeems Jane's Token A for Token B (ServiceNow connector).
        token_a = public.acquire_token_by_username_password(
            info["user"], info["password"], scopes=[scope])["access_token"]
        claims_a = validate(token_a, info, ca, agent, info["tenant"])
        connector = info["connector_app_id"]
        connector_scope = f"api://{connector}/{info['connector_scope']}"
        obo = confidential.acquire_token_on_behalf_of(token_a, [connector_scope])
        assert "access_token" in obo, obo
        assert obo["token_type"] == "Bearer", obo
        claims_b = validate(obo["access_token"], info, ca, connector, info["tenant"])
        assert claims_b["aud"] == connector, claims_b
        assert claims_b["scp"] == info["connector_scope"], claims_b
        assert claims_b["azp"] == agent and claims_b["azpacr"] == "1", claims_b
        for same in ("oid", "tid", "preferred_username", "name"):
            assert claims_b[same] == claims_a[same], (same, claims_a, claims_b)
        assert claims_b["exp"] <= claims_a["exp"], (claims_a["exp"], claims_b["exp"])
        # MSAL asked for offline_access/openid/profile itself; it got an id token for Jane.
        assert obo.get("id_token_claims", {}).get("oid") == claims_a["oid"], obo.get("id_token_claims")
        assert obo.get("refresh_token"), "offline_access (added by MSAL) yields a refresh token"
        print(f"ok: MSAL acquire_token_on_behalf_of -> Token B for {claims_b['aud']} "
              f"as {claims_b['preferred_username']}")

        # 6. OBO errors, as MSAL surfaces them.
        wrong = msal.ConfidentialClientApplication(
            agent, client_credential="not-the-secret", authority=authority,
            verify=ca, instance_discovery=False)
        bad = wrong.acquire_token_on_behalf_of(token_a, [connector_scope])
        assert bad.get("error") == "invalid_client" and 7000215 in bad.get("error_codes", []), bad
        bad = confidential.acquire_token_on_behalf_of(app_token, [connector_scope])
        assert bad.get("error") == "unauthorized_client" and 7000114 in bad.get("error_codes", []), bad
        bad = confidential.acquire_token_on_behalf_of(token_a, [f"api://{connector}/admin"])
        assert bad.get("error") == "invalid_scope" and 70011 in bad.get("error_codes", []), bad
        for text in (token_a, app_token, info["agent_app_secret"]):
            assert text not in json.dumps(bad), "no credential in an error"
        print("ok: OBO wrong secret -> invalid_client 7000215, app-only assertion -> 7000114, "
              "unexposed scope -> invalid_scope 70011")

        # 7. On-Behalf-Of with a certificate credential instead of the secret.
        with_cert = msal.ConfidentialClientApplication(
            agent, client_credential={"private_key": key_pem, "public_certificate": cert_pem},
            authority=authority, verify=ca, instance_discovery=False)
        obo = with_cert.acquire_token_on_behalf_of(token_a, [connector_scope])
        assert "access_token" in obo, obo
        claims_b = validate(obo["access_token"], info, ca, connector, info["tenant"])
        assert claims_b["azpacr"] == "2" and claims_b["oid"] == claims_a["oid"], claims_b
        print("ok: MSAL acquire_token_on_behalf_of with a certificate credential (PS256, x5t#S256)")
        print("ok: PyJWT validated all tokens from discovery + JWKS")
    finally:
        proc.stdin.close()
        proc.wait(timeout=10)


if __name__ == "__main__":
    sys.exit(main())
