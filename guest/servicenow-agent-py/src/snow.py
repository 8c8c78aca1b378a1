"""The three incident tools as plain data: input validation, the Table API request each call
makes, and how a ServiceNow response (or a refused request) becomes a tool result.

A line-by-line port of guest/servicenow-agent/src/snow.rs. Nothing here performs I/O (and
nothing imports the component bindings), so all of it runs under a native CPython too
(tests/test_snow.py). No request carries credentials: the host's egress layer attaches the
caller's delegated ServiceNow token (Token B) itself.
"""

import json
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

from tool_loop import ToolError, compact_json, invalid_input

#: The Table API path of the incident table.
INCIDENT_PATH = "/api/now/table/incident"

#: Fields `query_incidents` returns when the model does not ask for others (the article's).
DEFAULT_FIELDS = "number,short_description,priority,state,assigned_to"

#: Incident fields `update_incident` may write (the Rust agent's list, same order).
WRITABLE_FIELDS = [
    "short_description",
    "description",
    "state",
    "impact",
    "urgency",
    "priority",
    "category",
    "subcategory",
    "assigned_to",
    "assignment_group",
    "caller_id",
    "contact_type",
    "work_notes",
    "comments",
    "close_code",
    "close_notes",
]

#: Largest value `update_incident` writes to one field.
MAX_VALUE_CHARS = 4000

#: Server-side `javascript:` values allowed in an encoded query ("me", "my groups").
ALLOWED_SCRIPTS = [
    "gs.getUserID()",
    "gs.getUser().getID()",
    "gs.getUserName()",
    "gs.getUser().getName()",
    "gs.getUser().getMyGroups()",
]

#: Pages `query_incidents` reads at most to collect `limit` rows.
MAX_PAGES = 10


@dataclass
class Planned:
    """One Table API request, ready to send."""

    method: str
    url: str
    body: Optional[str] = None


def query_incidents_schema() -> Dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "query": {
                "type": "string",
                "maxLength": 2000,
                "default": "",
                "description": "ServiceNow encoded query: conditions joined by ^ (AND) or ^OR, e.g. "
                "`assigned_to=javascript:gs.getUserID()^active=true^ORDERBYnumber` for the user's own "
                "active incidents. Operators: = != < <= > >= LIKE STARTSWITH ENDSWITH IN ISEMPTY "
                "ISNOTEMPTY, sorting with ORDERBY<field> / ORDERBYDESC<field>. Empty for no filter.",
            },
            "limit": {
                "type": "integer",
                "minimum": 1,
                "maximum": 100,
                "default": 10,
                "description": "Maximum number of incidents to return (1-100).",
            },
            "fields": {
                "type": "string",
                "maxLength": 1000,
                "default": DEFAULT_FIELDS,
                "description": "Comma-separated incident fields to return (dot-walking like "
                "`assigned_to.email` is allowed); empty for all fields.",
            },
        },
        "additionalProperties": False,
    }


def get_incident_schema() -> Dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "number": {
                "type": "string",
                "maxLength": 32,
                "description": "The incident number: INC followed by 7 digits, e.g. INC0012345.",
            }
        },
        "required": ["number"],
        "additionalProperties": False,
    }


def update_incident_schema() -> Dict[str, Any]:
    field_spec = {"type": ["string", "integer", "number", "boolean", "null"]}
    props = {f: dict(field_spec) for f in WRITABLE_FIELDS}
    return {
        "type": "object",
        "properties": {
            "sys_id": {
                "type": "string",
                "description": "The incident's sys_id (32 hexadecimal characters), as returned by "
                "get_incident or query_incidents.",
            },
            "updates": {
                "type": "object",
                "properties": props,
                "additionalProperties": False,
                "description": "Fields to change and their new values. Choice fields take their "
                "values (standard labels are translated): state 1 New, 2 In Progress, 3 On Hold, 6 Resolved, 7 Closed, "
                "8 Canceled; impact and urgency 1 High, 2 Medium, 3 Low (priority is usually computed "
                "from them). work_notes and comments add a journal entry. Reference fields "
                "(assigned_to, assignment_group, caller_id) take a sys_id. Resolving usually needs "
                "close_code and close_notes.",
            },
        },
        "required": ["sys_id", "updates"],
        "additionalProperties": False,
    }


def normalize_base_url(raw: str) -> str:
    """The base URL setting, checked and without a trailing `/`; raises ValueError."""
    url = raw.strip().rstrip("/")
    if url.startswith("https://"):
        rest = url[len("https://") :]
    elif url.startswith("http://"):
        rest = url[len("http://") :]
    else:
        raise ValueError(f"servicenow_url must start with https:// (got {debug_str(raw)})")
    host = rest.split("/")[0]
    if not host or any(c in url for c in "?# @"):
        raise ValueError(
            "servicenow_url must be a plain base URL like https://instance.service-now.com "
            f"(got {debug_str(raw)})"
        )
    return url


def debug_str(s: str) -> str:
    """A string quoted like Rust's `{:?}` (close enough for messages)."""
    return json.dumps(s, ensure_ascii=False)


def _as_u64(v: Any) -> Optional[int]:
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        return None
    return v


@dataclass
class Query:
    """A validated `query_incidents` call; `page` gives the request for each page."""

    base: str
    query: str
    limit: int
    fields: str

    def page(self, offset: int) -> Planned:
        params: List[Tuple[str, str]] = [("sysparm_query", self.query), ("sysparm_limit", str(self.limit))]
        if offset > 0:
            params.append(("sysparm_offset", str(offset)))
        if self.fields:
            params.append(("sysparm_fields", self.fields))
        return Planned("GET", table_url(self.base, INCIDENT_PATH, params))

    def absorb(self, rows: List[Any], page: Any, offset: int, link: Optional[str]) -> Optional[int]:
        """Adds the page's rows (never past `limit`); the next page's offset, if one is needed."""
        if isinstance(page, dict) and isinstance(page.get("result"), list):
            room = max(self.limit - len(rows), 0)
            rows.extend(page["result"][:room])
        full = len(rows) >= self.limit
        if not full and link is not None and has_next_link(link):
            return offset + self.limit
        return None


def query_incidents(base: str, inp: Dict[str, Any]) -> Query:
    query = inp.get("query")
    query = query.strip() if isinstance(query, str) else ""
    check_scripts(query)
    limit = _as_u64(inp.get("limit"))
    if limit is None:
        limit = 10
    if not 1 <= limit <= 100:
        raise invalid_input("`limit` must be between 1 and 100")
    fields = inp.get("fields")
    if not isinstance(fields, str):
        fields = DEFAULT_FIELDS
    return Query(base, query, limit, check_fields(fields))


def has_next_link(link: str) -> bool:
    compact = "".join(c for c in link if not c.isspace()).lower()
    return ';rel="next"' in compact or ";rel=next" in compact


def get_incident(base: str, inp: Dict[str, Any]) -> Planned:
    raw = inp.get("number")
    number = check_number(raw.strip() if isinstance(raw, str) else "")
    params = [("sysparm_query", f"number={number}"), ("sysparm_limit", "1")]
    return Planned("GET", table_url(base, INCIDENT_PATH, params))


def update_incident(base: str, inp: Dict[str, Any]) -> Planned:
    raw_id = inp.get("sys_id")
    sys_id = check_sys_id(raw_id if isinstance(raw_id, str) else "")
    updates = inp.get("updates")
    if not isinstance(updates, dict):
        raise invalid_input("`updates` must be an object of field names to new values")
    if not updates:
        raise invalid_input("`updates` is empty: name at least one field to change")
    body: Dict[str, str] = {}
    for field_name, value in updates.items():
        if field_name not in WRITABLE_FIELDS:
            raise invalid_input(
                f"`{field_name}` cannot be updated by this tool; writable fields: {', '.join(WRITABLE_FIELDS)}"
            )
        # ServiceNow values are strings; numbers and booleans are what models send for them.
        if isinstance(value, str):
            text = value
        elif isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, (int, float)):
            text = compact_json(value)
        elif value is None:
            text = ""
        else:
            raise invalid_input(f"`{field_name}` must be a string value")
        if len(text) > MAX_VALUE_CHARS:
            raise invalid_input(f"the value of `{field_name}` is longer than {MAX_VALUE_CHARS} characters")
        body[field_name] = choice_value(field_name, text)
    return Planned("PATCH", table_url(base, f"{INCIDENT_PATH}/{sys_id}", []), compact_json(body))


#: Standard labels of the incident choice fields: field -> [(value, labels)].
CHOICE_LABELS: Dict[str, List[Tuple[str, List[str]]]] = {
    "state": [
        ("1", ["new"]),
        ("2", ["in progress"]),
        ("3", ["on hold"]),
        ("6", ["resolved"]),
        ("7", ["closed"]),
        ("8", ["canceled", "cancelled"]),
    ],
    "impact": [("1", ["high"]), ("2", ["medium"]), ("3", ["low"])],
    "urgency": [("1", ["high"]), ("2", ["medium"]), ("3", ["low"])],
    "priority": [
        ("1", ["critical", "p1"]),
        ("2", ["high", "p2"]),
        ("3", ["moderate", "p3"]),
        ("4", ["low", "p4"]),
        ("5", ["planning", "p5"]),
    ],
}


def choice_value(field_name: str, text: str) -> str:
    """The value of a choice field given either its value or a standard label."""
    choices = CHOICE_LABELS.get(field_name)
    if choices is None:
        return text
    lower = ascii_lower(text.strip())
    label = lower
    if " - " in lower:
        v, rest = lower.split(" - ", 1)
        if any(value == v.strip() for value, _ in choices):
            label = rest.strip()
    for value, labels in choices:
        if label in labels:
            return value
    return text


def ascii_lower(s: str) -> str:
    return "".join(c.lower() if c.isascii() else c for c in s)


def ascii_upper(s: str) -> str:
    return "".join(c.upper() if c.isascii() else c for c in s)


def table_url(base: str, path: str, params: List[Tuple[str, str]]) -> str:
    """The full URL for `path` with `params` plus the display options every call uses."""
    fixed = [("sysparm_display_value", "true"), ("sysparm_exclude_reference_link", "true")]
    return f"{base}{path}?" + "&".join(f"{encode(k)}={encode(v)}" for k, v in params + fixed)


_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


def encode(s: str) -> str:
    """Percent-encodes everything but RFC 3986 unreserved characters."""
    return "".join(chr(b) if b in _UNRESERVED else f"%{b:02X}" for b in s.encode("utf-8"))


def check_scripts(query: str) -> None:
    lower = ascii_lower(query)
    start_at = 0
    while True:
        i = lower.find("javascript:", start_at)
        if i < 0:
            return
        start = i + len("javascript:")
        j = query.find("^", start)
        end = len(query) if j < 0 else j
        script = query[start:end].strip()
        if script not in ALLOWED_SCRIPTS:
            allowed = ", ".join(f"javascript:{s}" for s in ALLOWED_SCRIPTS)
            raise invalid_input(f"`javascript:{script}` is not allowed in a query; only {allowed} are")
        start_at = end


def _is_field_char(c: str) -> bool:
    return c.isascii() and (c.isalnum() or c in "_.")


def check_fields(fields: str) -> str:
    names = [f.strip() for f in fields.split(",") if f.strip()]
    if len(names) > 50:
        raise invalid_input("`fields` lists more than 50 fields")
    for name in names:
        ok = (
            len(name.encode("utf-8")) <= 80
            and all(_is_field_char(c) for c in name)
            and not name.startswith(".")
            and not name.endswith(".")
        )
        if not ok:
            raise invalid_input(f"`{name}` in `fields` is not a field name")
    return ",".join(names)


def check_number(raw: str) -> str:
    """An incident number, upper-cased: `INC` and seven digits; `^` is refused first."""
    if "^" in raw:
        raise invalid_input(
            "`number` must not contain `^`: it would change the ServiceNow query instead of naming one incident"
        )
    number = ascii_upper(raw)
    ok = len(number) == 10 and number.startswith("INC") and all(c in "0123456789" for c in number[3:])
    if not ok:
        raise invalid_input(f"`number` must be INC followed by 7 digits, like INC0012345 (got {debug_str(raw)})")
    return number


def check_sys_id(raw: str) -> str:
    """A sys_id, lower-cased: exactly 32 hexadecimal characters (it becomes a URL path segment)."""
    sys_id = raw.strip()
    if len(sys_id) != 32 or not all(c in "0123456789abcdefABCDEF" for c in sys_id):
        raise invalid_input(
            f"`sys_id` must be 32 hexadecimal characters (got {debug_str(raw)}); "
            "look the incident up with get_incident first"
        )
    return sys_id.lower()


def interpret(status: int, retry_after: Optional[str], body: bytes) -> Any:
    """A ServiceNow response as a tool result: the Table API JSON on success, else ToolError."""
    if 200 <= status < 300:
        # An instance that is asleep or behind an SSO page answers 200 with HTML.
        try:
            value = json.loads(body)
        except ValueError:
            value = None
        if not isinstance(value, dict):
            raise ToolError(
                f"ServiceNow answered HTTP {status} with something that is not Table API JSON "
                "(the instance may be hibernating or unavailable)"
            )
        return value
    sn = servicenow_message(body)

    def with_sn(text: str) -> str:
        return f"{text} (ServiceNow: {sn})" if sn is not None else text

    if status == 401:
        message = with_sn("your session has expired, sign in again")
    elif status == 403:
        message = with_sn("access denied: ServiceNow does not allow you to do this")
    elif status == 404:
        message = "not found or not visible to you"
    elif status == 429:
        when = retry_after.strip() if retry_after is not None else ""
        if when and all(c in "0123456789" for c in when):
            message = f"ServiceNow is rate-limiting your requests; retry in {when} seconds"
        elif when:
            message = f"ServiceNow is rate-limiting your requests; retry after {when}"
        else:
            message = "ServiceNow is rate-limiting your requests; retry in a little while"
    else:
        message = with_sn(f"ServiceNow returned HTTP {status}")
    raise ToolError(message)


def servicenow_message(body: bytes) -> Optional[str]:
    """`error.message` (and `error.detail`) of ServiceNow's error envelope, shortened."""
    try:
        v = json.loads(body)
    except ValueError:
        return None
    err = v.get("error") if isinstance(v, dict) else None
    if not isinstance(err, dict):
        return None
    message = err.get("message")
    if not isinstance(message, str) or not message.strip():
        return None
    message = message.strip()
    detail = err.get("detail")
    detail = detail.strip() if isinstance(detail, str) else ""
    text = f"{message}: {detail}" if detail else message
    return text[:300]


class HttpError(Exception):
    """Why a request got no response: kind is denied, invalid_url, header or transport."""

    def __init__(self, kind: str, detail: str = ""):
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


def transport_error(e: HttpError, planned: Planned) -> ToolError:
    """A request that never got a response, as a tool error."""
    # Method and path, never the query string: it is what the model wrote and adds nothing.
    target = planned.url.split("?")[0]
    if e.kind == "denied":
        return ToolError(
            f"the host's egress policy does not allow this request ({planned.method} {target}); "
            "ask the operator to allow it"
        )
    if e.kind == "invalid_url":
        return ToolError("the plugin's servicenow_url setting is not a usable URL")
    if e.kind == "header":
        return ToolError(f"the host refused a request header ({e.detail})")
    if planned.method != "GET":
        # A write whose answer was lost may still have been applied.
        return ToolError(
            f"ServiceNow did not confirm the update ({e.detail}); it may have been applied: check the record "
            "before trying again"
        )
    return ToolError(f"could not reach ServiceNow ({e.detail})")
