"""A tool-use loop on the host's `model` interface: the Python twin of guest/sdk/src/agent.rs.

`Agent.run` starts a conversation with the user's prompt and calls the model until it gives a
final answer. Every time the model stops with `tool-use`, each of its tool uses is answered by
exactly one tool result (matched by id, all in one user message), including an `error` result
when the tool is unknown, its input is invalid or the tool fails, so the model can explain the
failure. Model text is streamed to the caller by the host (`model.converse-stream`); the loop
never emits it a second time.

The model call is a parameter, so the loop runs natively against a scripted fake with the
generated bindings on `sys.path` (tests/test_agent.py).
"""

import json
import re
from typing import Any, Callable, Dict, List, Optional, Tuple

from componentize_py_types import Err
from wit_world.imports import model as m
from wit_world.imports.delegate_agent_types import PluginError

DEFAULT_MAX_CYCLES = 8
DEFAULT_MAX_RESULT_BYTES = 128 * 1024


class ToolError(Exception):
    """Why a tool could not produce a result; the message goes to the model as an error result."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


def invalid_input(message: str) -> ToolError:
    return ToolError(f"invalid input: {message}")


def plugin_error(code: str, message: str) -> Err:
    """The exception that makes `invoke` return `err(plugin-error)`."""
    return Err(PluginError(code=code, message=message))


def compact_json(value: Any) -> str:
    """JSON text as serde_json writes it: compact, keys sorted, UTF-8 kept."""
    return json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False)


class Tool:
    def __init__(self, name: str, description: str, input_schema: Dict[str, Any], handler: Callable[[Dict[str, Any]], Any]):
        self.name = name
        self.description = description
        self.input_schema = input_schema
        self.handler = handler

    def spec(self) -> m.ToolSpec:
        return m.ToolSpec(name=self.name, description=self.description, input_schema=compact_json(self.input_schema))

    def call(self, inp: Any) -> Any:
        try:
            checked = validate_input(self.input_schema, inp)
        except SchemaError as e:
            raise invalid_input(str(e)) from None
        return self.handler(checked)


_TOOL_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")


class Agent:
    def __init__(self, system_prompt: str, tools: List[Tool], max_cycles: int = DEFAULT_MAX_CYCLES):
        self.system_prompt = system_prompt
        self.tools = tools
        self.max_cycles = max_cycles
        self.max_result_bytes = DEFAULT_MAX_RESULT_BYTES

    def check(self) -> Optional[str]:
        if self.max_cycles < 1:
            return "max_cycles must be at least 1"
        seen = set()
        for t in self.tools:
            if not _TOOL_NAME.fullmatch(t.name):
                return f"tool name {json.dumps(t.name)} must be 1-64 characters of [a-zA-Z0-9_-]"
            if t.name in seen:
                return f"tool name {json.dumps(t.name)} is used twice"
            seen.add(t.name)
            if not isinstance(t.input_schema, dict):
                return f"the input schema of tool {json.dumps(t.name)} must be a JSON object"
        return None

    def request(self, messages: List[m.Message]) -> m.Request:
        tool_config = m.ToolConfig(tools=[t.spec() for t in self.tools], tool_choice=None) if self.tools else None
        return m.Request(
            system=[self.system_prompt] if self.system_prompt else [],
            messages=list(messages),
            tool_config=tool_config,
            inference_config=None,
        )

    def run(self, user_prompt: str, call_model: Callable[[m.Request], m.Response]) -> Dict[str, Any]:
        """Runs the loop; returns the summary (raises `Err(PluginError)` on failure)."""
        problem = self.check()
        if problem is not None:
            raise plugin_error("agent_misconfigured", problem)
        if not user_prompt.strip():
            raise plugin_error("bad_request", "the prompt is empty")
        messages = [m.Message(role=m.Role.USER, content=[m.ContentBlock_Text(user_prompt)])]
        out = {"cycles": 0, "tool_calls": 0, "tool_errors": 0, "stop_reason": "", "input_tokens": 0, "output_tokens": 0}
        while True:
            try:
                response = call_model(self.request(messages))
            except Err as e:
                raise model_error(e.value) from None
            out["cycles"] += 1
            out["input_tokens"] += response.usage.input_tokens
            out["output_tokens"] += response.usage.output_tokens
            # Tools run on what the model really sent; the history gets the sanitized copy.
            uses = [b.value for b in response.message.content if isinstance(b, m.ContentBlock_ToolUse)]
            assistant = sanitize_assistant(response.message)
            reason = response.stop_reason
            if isinstance(reason, (m.StopReason_EndTurn, m.StopReason_StopSequence, m.StopReason_MaxTokens)):
                out["stop_reason"] = stop_reason_name(reason)
                return out
            if not isinstance(reason, m.StopReason_ToolUse):
                raise stop_error(reason)
            if not uses:
                raise plugin_error("model_protocol_error", "the model stopped to use tools but requested none")
            if not self.tools:
                raise plugin_error("model_protocol_error", "the model requested a tool, but this agent offers none")
            if out["cycles"] >= self.max_cycles:
                names = ", ".join(u.name for u in uses)
                raise plugin_error(
                    "max_cycles",
                    f"stopped after {out['cycles']} model calls without a final answer (the model still wanted "
                    f"to call {names}); try a simpler or more specific request",
                )
            results = answer_tool_uses(self.tools, uses, self.max_result_bytes)
            out["tool_calls"] += len(results)
            out["tool_errors"] += sum(1 for r in results if r.status == m.ToolResultStatus.ERROR)
            messages.append(assistant)
            messages.append(m.Message(role=m.Role.USER, content=[m.ContentBlock_ToolResult(r) for r in results]))


def prompt_from_payload(payload: str) -> str:
    """The `prompt` of a `{"prompt": "..."}` payload."""
    try:
        v = json.loads(payload)
    except ValueError as e:
        raise plugin_error("bad_request", f"the payload is not JSON: {e}") from None
    p = v.get("prompt") if isinstance(v, dict) else None
    if isinstance(p, str) and p.strip():
        return p
    if isinstance(p, str):
        raise plugin_error("bad_request", "`prompt` is empty")
    raise plugin_error("bad_request", "the payload needs a string `prompt`")


def sanitize_assistant(message: m.Message) -> m.Message:
    """Drops blank text blocks (Bedrock rejects them); a non-object tool input becomes `{}`."""
    content: List[m.ContentBlock] = []
    for b in message.content:
        if isinstance(b, m.ContentBlock_Text) and not b.value.strip():
            continue
        if isinstance(b, m.ContentBlock_ToolUse):
            try:
                parse_object(b.value.input)
            except ToolError:
                b = m.ContentBlock_ToolUse(m.ToolUse(tool_use_id=b.value.tool_use_id, name=b.value.name, input="{}"))
        content.append(b)
    return m.Message(role=m.Role.ASSISTANT, content=content)


def answer_tool_uses(tools: List[Tool], uses: List[m.ToolUse], max_result_bytes: int) -> List[m.ToolResult]:
    """One result per tool use, in order; a repeated id is answered once."""
    seen = set()
    results = []
    for u in uses:
        if u.tool_use_id in seen:
            continue
        seen.add(u.tool_use_id)
        results.append(dispatch(tools, u, max_result_bytes))
    return results


def dispatch(tools: List[Tool], use: m.ToolUse, max_result_bytes: int) -> m.ToolResult:
    tool = next((t for t in tools if t.name == use.name), None)
    try:
        if tool is None:
            names = ", ".join(t.name for t in tools)
            raise ToolError(f"unknown tool `{use.name}`; the available tools are: {names}")
        content = result_content(tool.call(parse_object(use.input)), max_result_bytes)
        return m.ToolResult(tool_use_id=use.tool_use_id, status=m.ToolResultStatus.SUCCESS, content=[content])
    except ToolError as e:
        return m.ToolResult(
            tool_use_id=use.tool_use_id, status=m.ToolResultStatus.ERROR, content=[m.ToolResultContent_Text(e.message)]
        )


def result_content(value: Any, max_bytes: int) -> m.ToolResultContent:
    """Objects and arrays as JSON, strings as text, other scalars as their JSON text."""
    if isinstance(value, str):
        content: m.ToolResultContent = m.ToolResultContent_Text(value)
        text = value
    elif isinstance(value, (dict, list)):
        text = compact_json(value)
        content = m.ToolResultContent_Json(text)
    else:
        text = compact_json(value)
        content = m.ToolResultContent_Text(text)
    size = len(text.encode("utf-8"))
    if size > max_bytes:
        raise ToolError(
            f"the result is too large ({size} bytes, the limit is {max_bytes}); ask for fewer records or fields"
        )
    return content


def parse_object(text: str) -> Dict[str, Any]:
    if not text.strip():
        return {}
    try:
        v = json.loads(text)
    except ValueError as e:
        raise invalid_input(f"the tool input is not valid JSON ({e})") from None
    if not isinstance(v, dict):
        raise invalid_input("the tool input must be a JSON object")
    return v


# --- input validation: the JSON Schema subset of agent.rs's `validate_input` ---


class SchemaError(Exception):
    pass


def validate_input(schema: Any, value: Any) -> Any:
    """Checks `value` against `schema`; returns it with the schema's defaults filled in."""
    return _check_value(schema, value, "input")


def _check_value(schema: Any, value: Any, path: str) -> Any:
    if not isinstance(schema, dict):
        return value
    value = _coerce(schema, value)
    types = schema.get("type")
    allowed = [types] if isinstance(types, str) else [t for t in types if isinstance(t, str)] if isinstance(types, list) else []
    if allowed and not any(_has_type(value, t) for t in allowed):
        raise SchemaError(f"`{path}` must be {_article_list(allowed)}, got {_type_name(value)}")
    options = schema.get("enum")
    if isinstance(options, list) and not any(_json_eq(o, value) for o in options):
        raise SchemaError(f"`{path}` must be one of {', '.join(compact_json(o) for o in options)}")
    if _is_number(value):
        lo, hi = schema.get("minimum"), schema.get("maximum")
        if _is_number(lo) and value < lo:
            raise SchemaError(f"`{path}` must be at least {_show_num(lo)}")
        if _is_number(hi) and value > hi:
            raise SchemaError(f"`{path}` must be at most {_show_num(hi)}")
    elif isinstance(value, str):
        n = len(value)
        lo, hi = schema.get("minLength"), schema.get("maxLength")
        if _is_uint(lo) and n < lo:
            raise SchemaError(f"`{path}` must not be empty" if lo == 1 else f"`{path}` must be at least {lo} characters long")
        if _is_uint(hi) and n > hi:
            raise SchemaError(f"`{path}` must be at most {hi} characters long")
    elif isinstance(value, list):
        n = len(value)
        lo, hi = schema.get("minItems"), schema.get("maxItems")
        if _is_uint(lo) and n < lo:
            raise SchemaError(f"`{path}` needs at least {lo} items")
        if _is_uint(hi) and n > hi:
            raise SchemaError(f"`{path}` takes at most {hi} items")
        if "items" in schema:
            return [_check_value(schema["items"], item, f"{path}[{i}]") for i, item in enumerate(value)]
    elif isinstance(value, dict):
        return _check_object(schema, value, path)
    return value


def _check_object(schema: Dict[str, Any], fields: Dict[str, Any], path: str) -> Dict[str, Any]:
    props = schema.get("properties") if isinstance(schema.get("properties"), dict) else None

    def at(name: str) -> str:
        return name if path == "input" else f"{path}.{name}"

    required = schema.get("required")
    if isinstance(required, list):
        for name in required:
            if isinstance(name, str) and name not in fields:
                raise SchemaError(f"`{at(name)}` is required")
    closed = schema.get("additionalProperties") is False
    out: Dict[str, Any] = {}
    # serde_json's Map is sorted, so the Rust agent checks properties in key order too.
    for name in sorted(fields):
        value = fields[name]
        if props is not None and name in props:
            out[name] = _check_value(props[name], value, at(name))
        elif closed:
            known = ", ".join(sorted(props)) if props else ""
            raise SchemaError(f"unknown property `{at(name)}` (allowed: {known})")
        else:
            out[name] = value
    if props is not None:
        for name, prop in props.items():
            if name not in out and isinstance(prop, dict) and "default" in prop:
                out[name] = prop["default"]
    return out


def _coerce(schema: Dict[str, Any], value: Any) -> Any:
    """`"5"` for an `integer`/`number` schema becomes `5`; everything else is left alone."""
    if not isinstance(value, str):
        return value
    t = schema.get("type")

    def wants(name: str) -> bool:
        if isinstance(t, str):
            return t == name
        if isinstance(t, list):
            return name in t and "string" not in t
        return False

    s = value.strip()
    if wants("integer") and re.fullmatch(r"[+-]?[0-9]+", s):
        i = int(s)
        if -(2**63) <= i < 2**63:
            return i
    if wants("number"):
        try:
            f = float(s)
        except ValueError:
            return value
        if f == f and f not in (float("inf"), float("-inf")):
            return f
    return value


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_uint(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _json_eq(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return a == b


def _has_type(value: Any, t: str) -> bool:
    if t == "object":
        return isinstance(value, dict)
    if t == "array":
        return isinstance(value, list)
    if t == "string":
        return isinstance(value, str)
    if t == "boolean":
        return isinstance(value, bool)
    if t == "null":
        return value is None
    if t == "number":
        return _is_number(value)
    if t == "integer":
        # 5.0 counts as an integer, as in JSON Schema.
        return _is_number(value) and (isinstance(value, int) or float(value).is_integer())
    return True


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if _is_number(value):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _article_list(types: List[str]) -> str:
    named = []
    for t in types:
        if t in ("object", "array", "integer"):
            named.append(f"an {t}")
        elif t == "null":
            named.append("null")
        else:
            named.append(f"a {t}")
    return " or ".join(named)


def _show_num(x: Any) -> str:
    if isinstance(x, int) or (float(x).is_integer() and abs(x) < 1e15):
        return str(int(x))
    return str(x)


# --- stop reasons and model errors ---

_STOP_NAMES: List[Tuple[type, str]] = [
    (m.StopReason_EndTurn, "end_turn"),
    (m.StopReason_ToolUse, "tool_use"),
    (m.StopReason_MaxTokens, "max_tokens"),
    (m.StopReason_StopSequence, "stop_sequence"),
    (m.StopReason_GuardrailIntervened, "guardrail_intervened"),
    (m.StopReason_ContentFiltered, "content_filtered"),
    (m.StopReason_MalformedModelOutput, "malformed_model_output"),
    (m.StopReason_MalformedToolUse, "malformed_tool_use"),
    (m.StopReason_ContextWindowExceeded, "model_context_window_exceeded"),
]


def stop_reason_name(reason: m.StopReason) -> str:
    """The snake_case name of a stop reason, as Bedrock spells it."""
    if isinstance(reason, m.StopReason_Other):
        return reason.value
    for cls, name in _STOP_NAMES:
        if isinstance(reason, cls):
            return name
    return "unknown"


def stop_error(reason: m.StopReason) -> Err:
    if isinstance(reason, m.StopReason_GuardrailIntervened):
        code, message = "guardrail_intervened", "a guardrail stopped the model's answer"
    elif isinstance(reason, m.StopReason_ContentFiltered):
        code, message = "content_filtered", "the model's answer was filtered"
    elif isinstance(reason, (m.StopReason_MalformedModelOutput, m.StopReason_MalformedToolUse)):
        code, message = "model_malformed_output", "the model produced output that could not be used; try again"
    elif isinstance(reason, m.StopReason_ContextWindowExceeded):
        code, message = "context_window_exceeded", "the conversation no longer fits the model's context window"
    else:
        code, message = "model_stopped", "the model stopped for an unexpected reason"
    return plugin_error(code, f"{message} ({stop_reason_name(reason)})")


_MODEL_ERROR_CODES = {
    m.ErrorKind.UNAVAILABLE: "model_unavailable",
    m.ErrorKind.VALIDATION: "model_request_invalid",
    m.ErrorKind.THROTTLED: "model_throttled",
    m.ErrorKind.MODEL_NOT_READY: "model_not_ready",
    m.ErrorKind.MODEL_TIMEOUT: "model_timeout",
    m.ErrorKind.MODEL_ERROR: "model_error",
    m.ErrorKind.STREAM_ERROR: "model_stream_error",
    m.ErrorKind.SERVICE_UNAVAILABLE: "model_service_unavailable",
    m.ErrorKind.INTERNAL: "model_internal_error",
    m.ErrorKind.ACCESS_DENIED: "model_access_denied",
    m.ErrorKind.NOT_FOUND: "model_not_found",
    m.ErrorKind.BUDGET_EXCEEDED: "budget_exceeded",
}


def model_error(e: m.Error) -> Err:
    """A failed model call as a plugin error: stable code from the kind, the host's message."""
    message = e.message or "the model call failed"
    if e.retryable:
        message += " (temporary: try again later)"
    return plugin_error(_MODEL_ERROR_CODES.get(e.kind, "model_error"), message)
