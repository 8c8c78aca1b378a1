#!/usr/bin/env python3
"""boto3 `bedrock-runtime` against the devstack Bedrock endpoint.

Checks that the real Python SDK (botocore's event-stream decoder, its JSON parsers and error
handling) decodes everything the stub produces: converse, converse_stream with text and
tool-use blocks (tool input split mid-token, `p` padding, text blocks without
contentBlockStart), the answer after tool results, pre-stream errors (x-amzn-ErrorType),
in-stream exception frames and a frame with a broken CRC.

Run (starts the stub itself via cargo):
    python3 tests/interop/boto3_bedrock.py
or against a stub already running (`cargo run -p delegate-devstack-bedrock --example serve`):
    BEDROCK_ENDPOINT=http://127.0.0.1:4010 python3 tests/interop/boto3_bedrock.py
Needs boto3 (`pip install boto3`). Exit status 0 = all checks passed.
"""
import json
import os
import subprocess
import sys
import urllib.request

import boto3
import botocore.config
import botocore.eventstream
import botocore.exceptions

MODEL = "us.anthropic.claude-sonnet-4-20250514-v1:0"
TOOLS = {
    "tools": [
        {"toolSpec": {"name": "query_incidents", "description": "Search incidents",
                      "inputSchema": {"json": {"type": "object", "properties": {
                          "query": {"type": "string"}, "limit": {"type": "integer"}, "fields": {"type": "string"}}}}}},
        {"toolSpec": {"name": "get_incident", "description": "Get one incident",
                      "inputSchema": {"json": {"type": "object", "properties": {"number": {"type": "string"}}}}}},
    ]
}
INCIDENTS = {"result": [{"number": "INC0012345", "short_description": "VPN connection dropping",
                         "priority": {"display_value": "2 - High", "value": "2"}, "state": "In Progress"}]}


def start_stub():
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    proc = subprocess.Popen(["cargo", "run", "-q", "-p", "delegate-devstack-bedrock", "--example", "serve"],
                            cwd=root, stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline().strip()
    if not line.startswith("listening "):
        proc.kill()
        sys.exit(f"stub did not start: {line!r}")
    return proc, line.split(" ", 1)[1]


def faults(endpoint, **kv):
    req = urllib.request.Request(endpoint + "/_devstack/faults", data=json.dumps(kv).encode(),
                                 headers={"content-type": "application/json"}, method="POST")
    urllib.request.urlopen(req).read()


def client(endpoint):
    return boto3.client("bedrock-runtime", region_name="us-east-1", endpoint_url=endpoint,
                        aws_access_key_id="AKIDINTEROP", aws_secret_access_key="interop-secret",
                        config=botocore.config.Config(retries={"total_max_attempts": 1, "mode": "standard"}))


def ask(text):
    return [{"role": "user", "content": [{"text": text}]}]


def collect(stream):
    """Decodes a converse_stream into (event names, text, tool uses, stop reason, usage)."""
    names, text, tools, stop, usage = [], "", {}, None, None
    for ev in stream:
        (name, body), = ev.items()
        names.append(name)
        if name == "contentBlockStart":
            tu = body["start"]["toolUse"]
            tools[body["contentBlockIndex"]] = {"toolUseId": tu["toolUseId"], "name": tu["name"], "input": ""}
        elif name == "contentBlockDelta":
            d = body["delta"]
            if "text" in d:
                text += d["text"]
            else:
                tools[body["contentBlockIndex"]]["input"] += d["toolUse"]["input"]
        elif name == "messageStop":
            stop = body["stopReason"]
        elif name == "metadata":
            usage = body["usage"]
    return names, text, [dict(t, input=json.loads(t["input"] or "{}")) for t in tools.values()], stop, usage


def main():
    proc = None
    endpoint = os.environ.get("BEDROCK_ENDPOINT")
    if not endpoint:
        proc, endpoint = start_stub()
    checks = 0
    try:
        br = client(endpoint)
        faults(endpoint, reset=True)

        # converse: a tool call, then the answer rendered from the tool result
        r = br.converse(modelId=MODEL, messages=ask("Show me 5 incidents assigned to me"), toolConfig=TOOLS)
        assert r["stopReason"] == "tool_use", r
        tu = [b["toolUse"] for b in r["output"]["message"]["content"] if "toolUse" in b][0]
        assert tu["name"] == "query_incidents" and tu["input"]["limit"] == 5, tu
        assert r["usage"]["totalTokens"] > 0 and "latencyMs" in r["metrics"], r
        checks += 1

        # converse_stream: the same turn streamed
        s = br.converse_stream(modelId=MODEL, messages=ask("Show me 5 incidents assigned to me"), toolConfig=TOOLS)
        names, text, tools, stop, usage = collect(s["stream"])
        assert names[0] == "messageStart" and names[-2:] == ["messageStop", "metadata"], names
        assert names.count("contentBlockStart") == 1, names  # only the tool block has one
        assert stop == "tool_use" and tools[0]["name"] == "query_incidents", (stop, tools)
        assert tools[0]["input"] == tu["input"], (tools, tu)
        assert text and usage["outputTokens"] > 0
        checks += 1

        # the final answer after the tool result, in several deltas
        msgs = ask("Show me 5 incidents assigned to me") + [
            {"role": "assistant", "content": [{"toolUse": tools[0]}]},
            {"role": "user", "content": [{"toolResult": {"toolUseId": tools[0]["toolUseId"], "status": "success",
                                                          "content": [{"json": INCIDENTS}]}}]}]
        s = br.converse_stream(modelId=MODEL, messages=msgs, toolConfig=TOOLS)
        names, text, tools2, stop, _ = collect(s["stream"])
        assert stop == "end_turn" and not tools2, (stop, tools2)
        assert names.count("contentBlockDelta") >= 4, names
        assert "| INC0012345 | VPN connection dropping | 2 - High | In Progress |" in text, text
        checks += 1

        # pre-stream error with x-amzn-ErrorType
        faults(endpoint, reset=True, throttle=1)
        try:
            br.converse(modelId=MODEL, messages=ask("hi"))
            raise AssertionError("expected ThrottlingException")
        except botocore.exceptions.ClientError as e:
            assert e.response["Error"]["Code"] == "ThrottlingException", e.response
            assert e.response["ResponseMetadata"]["HTTPStatusCode"] == 429
        checks += 1

        # validation of the conversation
        try:
            br.converse(modelId=MODEL, messages=[{"role": "assistant", "content": [{"text": "x"}]}])
            raise AssertionError("expected ValidationException")
        except botocore.exceptions.ClientError as e:
            assert e.response["Error"]["Code"] == "ValidationException", e.response
        checks += 1

        # in-stream exception frames, each of the five stream members
        for exc, code in [("throttlingException", "throttlingException"),
                          ("modelStreamErrorException", "modelStreamErrorException"),
                          ("internalServerException", "internalServerException"),
                          ("serviceUnavailableException", "serviceUnavailableException"),
                          ("validationException", "validationException")]:
            faults(endpoint, reset=True, stream_exception={"after_deltas": 2, "exception": exc})
            s = br.converse_stream(modelId=MODEL, messages=msgs, toolConfig=TOOLS)
            got = []
            try:
                for ev in s["stream"]:
                    got.append(ev)
                raise AssertionError(f"expected {exc}")
            except botocore.exceptions.EventStreamError as e:
                assert e.response["Error"]["Code"] == code, e.response
            deltas = [g for g in got if "contentBlockDelta" in g]
            assert len(deltas) == 2, got
            checks += 1

        # a frame with a broken CRC must be rejected, not decoded
        faults(endpoint, reset=True, malformed_frame_after=1)
        s = br.converse_stream(modelId=MODEL, messages=msgs, toolConfig=TOOLS)
        try:
            for _ in s["stream"]:
                pass
            raise AssertionError("expected a checksum error")
        except botocore.eventstream.ChecksumMismatch:
            pass
        checks += 1
    finally:
        if proc:
            proc.kill()
    print(f"boto3 {boto3.__version__} / botocore: {checks} checks passed")


if __name__ == "__main__":
    main()
