"""The ServiceNow agent as a delegate plugin, in Python (componentize-py).

The same agent as guest/servicenow-agent (Rust): payload `{"prompt": "..."}`, the model through
the host's `model` import (text streamed to the caller by the host), three tools over
ServiceNow's Table API — `query_incidents(query, limit, fields)`, `get_incident(number)`,
`update_incident(sys_id, updates)` — and a JSON summary as the result:
`{"cycles":N,"input_tokens":...,"output_tokens":...,"stop_reason":"end_turn","tool_calls":M,"tool_errors":E}`.

Settings (`wasi:config/store`): `servicenow_url` (required) and `max_cycles` (1-32, default 8).
The plugin holds no credential: the host attaches the caller's delegated token to each
allowed request.
"""

from typing import Any, Dict, Optional, Tuple

import outbound
import snow
import tool_loop
import wit_world
from componentize_py_types import Err
from tool_loop import Agent, Tool, ToolError, compact_json, plugin_error
from wit_world.imports import model, store

SYSTEM_PROMPT = (
    "You are a ServiceNow assistant. You help users query and manage their "
    "incidents. You only see records the user is authorized to access. Be concise.\n"
    "Use query_incidents to list or search incidents (for the user's own incidents filter with "
    "assigned_to=javascript:gs.getUserID()), get_incident to read one incident by number, and "
    "update_incident to change one: look the incident up first to get its sys_id. When a tool "
    "reports an error, tell the user plainly what happened and what they can do; never guess data "
    "a tool did not return."
)

#: Upper bound for the `max_cycles` setting.
MAX_CYCLES_CAP = 32


def setting(key: str) -> Optional[str]:
    try:
        return store.get(key)
    except Err:
        return None


def fetch(planned: snow.Planned) -> Tuple[Any, Optional[str]]:
    """Sends one planned request (no credentials) and interprets the answer, with its Link header."""
    headers = [("accept", "application/json")]
    body = b""
    if planned.body is not None:
        headers.append(("content-type", "application/json"))
        body = planned.body.encode("utf-8")
    try:
        resp = outbound.send(planned.method, planned.url, headers, body)
    except snow.HttpError as e:
        raise snow.transport_error(e, planned) from None
    return snow.interpret(resp.status, resp.header("retry-after"), resp.body), resp.header("link")


def agent(base: str, max_cycles: int) -> Agent:
    def query(inp: Dict[str, Any]) -> Any:
        q = snow.query_incidents(base, inp)
        rows: list = []
        offset = 0
        for _ in range(snow.MAX_PAGES):
            page, link = fetch(q.page(offset))
            nxt = q.absorb(rows, page, offset, link)
            if nxt is None:
                break
            offset = nxt
        return {"result": rows}

    return Agent(
        SYSTEM_PROMPT,
        [
            Tool(
                "query_incidents",
                'Search for incidents in ServiceNow with an encoded query. Returns the Table API JSON '
                '{"result":[...]} with display values; only incidents the user may see are returned.',
                snow.query_incidents_schema(),
                query,
            ),
            Tool(
                "get_incident",
                'Get all details of one incident by its number (e.g. INC0012345). Returns {"result":[...]} '
                "with at most one record; an empty list means it does not exist or the user may not see it.",
                snow.get_incident_schema(),
                lambda inp: fetch(snow.get_incident(base, inp))[0],
            ),
            Tool(
                "update_incident",
                'Update fields of an existing incident, identified by sys_id. Returns the updated record '
                '{"result":{...}}. ServiceNow decides whether the user may change it.',
                snow.update_incident_schema(),
                lambda inp: fetch(snow.update_incident(base, inp))[0],
            ),
        ],
        max_cycles,
    )


def run(payload: str) -> str:
    prompt = tool_loop.prompt_from_payload(payload)
    raw = setting("servicenow_url")
    if raw is None:
        raise plugin_error("not_configured", "the plugin setting servicenow_url is not set")
    try:
        base = snow.normalize_base_url(raw)
    except ValueError as e:
        raise plugin_error("not_configured", str(e)) from None
    max_cycles = tool_loop.DEFAULT_MAX_CYCLES
    raw_cycles = setting("max_cycles")
    if raw_cycles is not None:
        text = raw_cycles.strip()
        if not (text.isascii() and text.isdigit() and 1 <= int(text) <= MAX_CYCLES_CAP):
            raise plugin_error(
                "not_configured",
                f"the max_cycles setting must be 1-{MAX_CYCLES_CAP} (got {snow.debug_str(raw_cycles)})",
            )
        max_cycles = int(text)
    summary = agent(base, max_cycles).run(prompt, model.converse_stream)
    return compact_json(summary)


class WitWorld(wit_world.WitWorld):
    def invoke(self, payload: str) -> str:
        try:
            return run(payload)
        except Err:
            raise
        except ToolError as e:  # a tool error outside a tool call: a bug, reported as one
            raise plugin_error("plugin_bug", e.message) from None
        except MemoryError:
            # Out of linear memory (the host refused to grow it): let it trap rather than
            # pretend to be a normal failure.
            raise
        except Exception as e:  # a bug in the plugin: a clean plugin error, never a trap
            raise plugin_error("plugin_bug", f"{type(e).__name__}: {e}") from None
