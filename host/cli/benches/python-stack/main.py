"""The article's Python agent, as the side-by-side baseline for delegate's load bench.

This is the ServiceNow incident agent of the article the project starts from
(`../shared/seeds/agentcore-obo-servicenow-article.txt`, beside the repository): Strands +
BedrockModel + BedrockAgentCoreApp, `query_incidents` / `get_incident` / `update_incident` over
the Table API, run standalone against the same devstack stand-ins as `delegate serve`:

  make bench-python    # venv with the pinned packages, then the load bench with --python

It differs from the article's listing only where standalone running demands it, or where the
article's code would waste time a competent Python deployment would not (every difference
makes Python faster or is needed to run at all):

- Inbound: no AgentCore front door runs here, so this app checks Token A itself, as the
  front door's Custom JWT Authorizer would (signature against the JWKS from the discovery
  document, issuer, audience, client, scope), in an ASGI gate before the agent runs.
- Outbound: without AgentCore Identity, the On-Behalf-Of exchange goes straight to the
  Entra stand-in through MSAL. MSAL's `acquire_token_on_behalf_of` does not answer from its
  cache, so Token B is kept per Token A (by its SHA-256) until a minute before it expires,
  as AgentCore Identity's token vault keeps it: one exchange per user token, then hits.
- `query_incidents` reads further pages until it has `limit` rows, as delegate's agent does.
  The article's single request shows Jane 4 of her 5 incidents: the Table API drops rows the
  user may not read *after* paging, so a page can come back short while later pages still
  hold her rows. Like delegate's agent it also asks for display values (`2 - High`, not `2`).
- One boto3 Bedrock client (BedrockModel) and one pooled httpx client for the process, where
  the article builds a BedrockModel per invocation and an httpx client per request; Strands'
  printing callback handler is off.

Configuration comes from the environment the bench sets (see `python_env` in load.rs).
"""

import contextvars
import hashlib
import json
import logging
import os
import ssl
import time

import httpx
import jwt
import msal
from bedrock_agentcore.runtime import BedrockAgentCoreApp
from strands import Agent, tool
from strands.models import BedrockModel

SNOW_INSTANCE_URL = os.environ["SNOW_INSTANCE_URL"]
MODEL_ID = os.environ["MODEL_ID"]
AWS_REGION = os.environ.get("AWS_REGION", "us-east-1")
BEDROCK_ENDPOINT_URL = os.environ.get("BEDROCK_ENDPOINT_URL")
CA_FILE = os.environ["DEVSTACK_CA_FILE"]
TENANT_AUTHORITY = os.environ["ENTRA_AUTHORITY"]
DISCOVERY_URL = os.environ["ENTRA_DISCOVERY_URL"]
AGENT_CLIENT_ID = os.environ["AGENT_CLIENT_ID"]
AGENT_SCOPE = os.environ["AGENT_SCOPE"]
SNOW_SCOPE = os.environ["SNOW_SCOPE"]
with open(os.environ["AGENT_CLIENT_SECRET_FILE"], encoding="utf-8") as f:
    AGENT_CLIENT_SECRET = f.read().strip()

app = BedrockAgentCoreApp()
# The app logs a line per request at INFO; delegate runs at warn in the bench.
app.logger.setLevel(logging.WARNING)

# -- Inbound: what AgentCore's Custom JWT Authorizer does in front of the article's container --

_tls = ssl.create_default_context(cafile=CA_FILE)
_discovery = httpx.get(DISCOVERY_URL, verify=_tls, timeout=10).json()
_jwks = jwt.PyJWKClient(_discovery["jwks_uri"], ssl_context=_tls, cache_keys=True)


def verify_token_a(header: str) -> str:
    """Returns the raw Token A if it is valid for this agent, else raises."""
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise jwt.InvalidTokenError("no bearer token")
    key = _jwks.get_signing_key_from_jwt(token)
    claims = jwt.decode(
        token,
        key.key,
        algorithms=["RS256"],
        audience=AGENT_CLIENT_ID,
        issuer=_discovery["issuer"],
        options={"require": ["exp", "iat", "aud", "iss"]},
    )
    if claims.get("azp", claims.get("appid")) != AGENT_CLIENT_ID:
        raise jwt.InvalidTokenError("client not allowed")
    if AGENT_SCOPE not in claims.get("scp", "").split():
        raise jwt.InvalidTokenError("scope missing")
    return token


class JwtGate:
    """ASGI gate: 401 unless POST /invocations carries a valid Token A (/ping stays open)."""

    def __init__(self, inner):
        self.inner = inner

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"] == "/invocations":
            header = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
            try:
                verify_token_a(header)
            except Exception:
                await send({"type": "http.response.start", "status": 401,
                            "headers": [(b"content-type", b"application/json"),
                                        (b"www-authenticate", b"Bearer")]})
                await send({"type": "http.response.body", "body": b'{"error":"unauthorized"}'})
                return
        await self.inner(scope, receive, send)


gated = JwtGate(app)

# -- Outbound: On-Behalf-Of through MSAL (the article: AgentCore Identity) --

_msal = msal.ConfidentialClientApplication(
    AGENT_CLIENT_ID,
    client_credential=AGENT_CLIENT_SECRET,
    authority=TENANT_AUTHORITY,
    verify=CA_FILE,
    instance_discovery=False,
)

snow_token_var: contextvars.ContextVar[str] = contextvars.ContextVar("snow_token", default="")
_token_b: dict[bytes, tuple[str, float]] = {}


async def fetch_snow_token(token_a: str) -> None:
    key = hashlib.sha256(token_a.encode()).digest()
    cached = _token_b.get(key)
    if cached and cached[1] > time.time():
        snow_token_var.set(cached[0])
        return
    result = _msal.acquire_token_on_behalf_of(token_a, [SNOW_SCOPE])
    if "access_token" not in result:
        raise RuntimeError(result.get("error", "no token"))
    _token_b[key] = (result["access_token"], time.time() + int(result.get("expires_in", 0)) - 60)
    snow_token_var.set(result["access_token"])


# -- ServiceNow REST client (the article's, with one pooled client) --

_snow = httpx.Client(verify=_tls, timeout=30)


def snow_request(method, endpoint, params=None, json_body=None, with_response=False):
    token = snow_token_var.get()
    if not token:
        return {"error": "No ServiceNow token available."}
    try:
        resp = _snow.request(
            method,
            f"{SNOW_INSTANCE_URL}/api/now/{endpoint}",
            headers={
                "Authorization": f"Bearer {token}",
                "Content-Type": "application/json",
                "Accept": "application/json",
            },
            params=params,
            json=json_body,
        )
        resp.raise_for_status()
        return (resp.json(), resp) if with_response else resp.json()
    except httpx.HTTPStatusError as exc:
        status = exc.response.status_code
        if status == 401:
            return {"error": "Token expired. Please re-authenticate."}
        if status == 403:
            return {"error": "Access denied for this operation."}
        return {"error": f"ServiceNow error: {status}"}
    except Exception as exc:
        return {"error": str(exc)}


# -- Tools (the article's) --

@tool
def query_incidents(
    query: str = "",
    limit: int = 10,
    fields: str = "number,short_description,priority,state,assigned_to",
) -> str:
    """Search for incidents in ServiceNow."""
    rows, offset = [], 0
    for _ in range(10):  # delegate's agent reads at most 10 pages too
        params = {"sysparm_query": query, "sysparm_limit": limit, "sysparm_fields": fields,
                  "sysparm_display_value": "true", "sysparm_exclude_reference_link": "true"}
        if offset:
            params["sysparm_offset"] = offset
        page = snow_request("GET", "table/incident", params=params, with_response=True)
        if isinstance(page, dict):  # an error
            return json.dumps(page, indent=2)
        body, resp = page
        rows.extend(body.get("result", [])[: limit - len(rows)])
        if len(rows) >= limit or "next" not in resp.links:
            break
        offset += limit
    return json.dumps({"result": rows}, indent=2)


@tool
def get_incident(number: str) -> str:
    """Get details of a specific incident by number."""
    return json.dumps(snow_request("GET", "table/incident", params={
        "sysparm_query": f"number={number}",
        "sysparm_limit": 1,
    }), indent=2)


@tool
def update_incident(sys_id: str, updates: dict) -> str:
    """Update an existing incident."""
    return json.dumps(
        snow_request("PATCH", f"table/incident/{sys_id}", json_body=updates),
        indent=2,
    )


# -- Agent entrypoint (the article's) --

MODEL = BedrockModel(model_id=MODEL_ID, region_name=AWS_REGION, endpoint_url=BEDROCK_ENDPOINT_URL)


@app.entrypoint
async def invoke(payload, context):
    try:
        # The gate has checked this header already.
        token_a = context.request_headers["Authorization"].partition(" ")[2]
        await fetch_snow_token(token_a)
    except Exception:
        yield "Authentication error: could not obtain ServiceNow token."
        return

    agent = Agent(
        model=MODEL,
        tools=[query_incidents, get_incident, update_incident],
        system_prompt=(
            "You are a ServiceNow assistant. You help users query and manage "
            "their incidents. You only see records the user is authorized to "
            "access. Be concise."
        ),
        callback_handler=None,
    )

    stream = agent.stream_async(payload.get("prompt"))
    async for event in stream:
        if "data" in event and isinstance(event["data"], str):
            yield event["data"]
