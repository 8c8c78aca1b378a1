"""The tool loop against a scripted model, and the schema subset (agent.rs's tests, in part)."""

import json
import unittest

from componentize_py_types import Err
from tool_loop import Agent, SchemaError, Tool, ToolError, prompt_from_payload, validate_input
from wit_world.imports import model as m

SCHEMA_AB = {
    "type": "object",
    "properties": {"a": {"type": "integer", "minimum": 0, "maximum": 10}, "b": {"type": "string", "default": "x"}},
    "required": ["a"],
    "additionalProperties": False,
}


def response(content, stop):
    return m.Response(
        message=m.Message(role=m.Role.ASSISTANT, content=content),
        stop_reason=stop,
        usage=m.Usage(input_tokens=10, output_tokens=5, total_tokens=15),
        latency_ms=None,
    )


def use(i, name, inp):
    return m.ContentBlock_ToolUse(m.ToolUse(tool_use_id=i, name=name, input=inp))


def scripted(script):
    seen = []
    it = iter(script)

    def call(req):
        seen.append(req)
        r = next(it)
        if isinstance(r, m.Error):
            raise Err(r)
        return r

    return call, seen


def plugin_error(f):
    try:
        f()
    except Err as e:
        return e.value
    raise AssertionError("no plugin error")


def echo_tool():
    return Tool("echo", "Echoes its input.", SCHEMA_AB, lambda inp: inp)


def failing_tool():
    def fail(_):
        raise ToolError("access denied")

    return Tool("fail", "Always fails.", {"type": "object"}, fail)


class Loop(unittest.TestCase):
    def test_tool_uses_are_answered_in_one_message_then_the_answer_ends_the_run(self):
        call, seen = scripted(
            [
                response(
                    [m.ContentBlock_Text("Looking. "), use("t1", "echo", '{"a":"3"}'), use("t2", "fail", "{}"),
                     use("t3", "nope", "{}"), use("t1", "echo", "{}"), use("t4", "echo", "[1]")],
                    m.StopReason_ToolUse(),
                ),
                response([m.ContentBlock_Text("done")], m.StopReason_EndTurn()),
            ]
        )
        out = Agent("sys", [echo_tool(), failing_tool()]).run("hi", call)
        self.assertEqual(
            out,
            {"cycles": 2, "tool_calls": 4, "tool_errors": 3, "stop_reason": "end_turn", "input_tokens": 20, "output_tokens": 10},
        )
        second = seen[1]
        self.assertEqual(second.system, ["sys"])
        self.assertEqual([t.name for t in second.tool_config.tools], ["echo", "fail"])
        self.assertEqual(json.loads(second.tool_config.tools[0].input_schema), SCHEMA_AB)
        assistant, results = second.messages[1], second.messages[2]
        self.assertEqual(assistant.role, m.Role.ASSISTANT)
        self.assertEqual(assistant.content[-1].value.input, "{}", "a non-object input is sanitized")
        self.assertEqual(results.role, m.Role.USER)
        rs = [b.value for b in results.content]
        self.assertEqual([r.tool_use_id for r in rs], ["t1", "t2", "t3", "t4"])
        self.assertEqual(rs[0].status, m.ToolResultStatus.SUCCESS)
        self.assertEqual(rs[0].content, [m.ToolResultContent_Json('{"a":3,"b":"x"}')])
        self.assertEqual(rs[1].content, [m.ToolResultContent_Text("access denied")])
        self.assertIn("unknown tool `nope`; the available tools are: echo, fail", rs[2].content[0].value)
        self.assertEqual(rs[3].content[0].value, "invalid input: the tool input must be a JSON object")

    def test_limits_and_stop_reasons(self):
        call, _ = scripted([response([use("t", "echo", '{"a":1}')], m.StopReason_ToolUse())] * 3)
        e = plugin_error(lambda: Agent("s", [echo_tool()], max_cycles=2).run("hi", call))
        self.assertEqual(e.code, "max_cycles")
        self.assertIn("still wanted to call echo", e.message)
        for stop, code in [
            (m.StopReason_GuardrailIntervened(), "guardrail_intervened"),
            (m.StopReason_ContentFiltered(), "content_filtered"),
            (m.StopReason_MalformedToolUse(), "model_malformed_output"),
            (m.StopReason_ContextWindowExceeded(), "context_window_exceeded"),
            (m.StopReason_Other("new"), "model_stopped"),
            (m.StopReason_ToolUse(), "model_protocol_error"),
        ]:
            call, _ = scripted([response([m.ContentBlock_Text("x")], stop)])
            self.assertEqual(plugin_error(lambda: Agent("s", [echo_tool()]).run("hi", call)).code, code)
        call, _ = scripted([response([m.ContentBlock_Text("part")], m.StopReason_MaxTokens())])
        self.assertEqual(Agent("s", []).run("hi", call)["stop_reason"], "max_tokens")

    def test_model_errors_keep_their_kind(self):
        call, _ = scripted([m.Error(kind=m.ErrorKind.THROTTLED, message="slow down", retryable=True)])
        e = plugin_error(lambda: Agent("s", [echo_tool()]).run("hi", call))
        self.assertEqual((e.code, e.message), ("model_throttled", "slow down (temporary: try again later)"))

    def test_misconfiguration_and_payloads(self):
        call, seen = scripted([])
        bad = Agent("s", [Tool("bad name", "d", {}, lambda v: v)])
        self.assertEqual(plugin_error(lambda: bad.run("hi", call)).code, "agent_misconfigured")
        self.assertEqual(seen, [])
        self.assertEqual(plugin_error(lambda: Agent("s", []).run("  ", call)).code, "bad_request")
        self.assertEqual(prompt_from_payload('{"prompt":"Show me"}'), "Show me")
        self.assertEqual(plugin_error(lambda: prompt_from_payload("nope")).code, "bad_request")
        self.assertEqual(plugin_error(lambda: prompt_from_payload('{"prompt":5}')).code, "bad_request")
        self.assertEqual(plugin_error(lambda: prompt_from_payload('{"prompt":" "}')).message, "`prompt` is empty")


class Schema(unittest.TestCase):
    def fails(self, schema, value, message):
        with self.assertRaises(SchemaError) as cx:
            validate_input(schema, value)
        self.assertEqual(str(cx.exception), message)

    def test_schema_validation(self):
        s = SCHEMA_AB
        self.assertEqual(validate_input(s, {"a": 3}), {"a": 3, "b": "x"})
        self.assertEqual(validate_input(s, {"a": "4"}), {"a": 4, "b": "x"})
        self.assertEqual(validate_input(s, {"a": 5.0})["a"], 5.0)
        self.fails(s, {}, "`a` is required")
        self.fails(s, {"a": 11}, "`a` must be at most 10")
        self.fails(s, {"a": -1}, "`a` must be at least 0")
        self.fails(s, {"a": 1.5}, "`a` must be an integer, got a number")
        self.fails(s, {"a": 1, "b": 2}, "`b` must be a string, got a number")
        self.fails(s, {"a": 1, "c": 2}, "unknown property `c` (allowed: a, b)")
        self.fails(s, [1], "`input` must be an object, got an array")
        self.fails(s, {"a": True}, "`a` must be an integer, got a boolean")
        nested = {
            "type": "object",
            "properties": {
                "u": {"type": "object", "properties": {"k": {"type": "string", "maxLength": 3, "enum": ["ab", "abc"]}}},
                "l": {"type": "array", "items": {"type": "integer"}, "maxItems": 2},
                "n": {"type": ["string", "null"], "minLength": 1},
            },
        }
        validate_input(nested, {"u": {"k": "abc"}, "l": [1, 2], "n": None})
        self.fails(nested, {"u": {"k": "abcd"}}, '`u.k` must be one of "ab", "abc"')
        self.fails(nested, {"l": [1, "x"]}, "`l[1]` must be an integer, got a string")
        self.fails(nested, {"l": [1, 2, 3]}, "`l` takes at most 2 items")
        self.fails(nested, {"n": ""}, "`n` must not be empty")
        either = {"type": "object", "properties": {"v": {"type": ["string", "integer"]}}}
        self.assertEqual(validate_input(either, {"v": "5"}), {"v": "5"})


if __name__ == "__main__":
    unittest.main()
