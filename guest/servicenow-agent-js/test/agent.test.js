// The tool loop against a scripted model (node --test): the Rust SDK's agent.rs behaviour.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Agent, PluginError, Tool, ToolError, promptFromPayload, summary } from '../src/agent.js';

const schemaAb = {
  type: 'object',
  properties: { a: { type: 'integer', minimum: 0, maximum: 10 }, b: { type: 'string', default: 'x' } },
  required: ['a'],
  additionalProperties: false,
};
const echo = new Tool('echo', 'Echoes its input.', schemaAb, (input) => input);
const failing = new Tool('fail', 'Always fails.', { type: 'object' }, () => {
  throw new ToolError('access denied');
});
const usage = { inputTokens: 10, outputTokens: 5, totalTokens: 15 };
const response = (content, tag) => ({ message: { role: 'assistant', content }, stopReason: { tag }, usage, latencyMs: undefined });
const use = (id, name, input) => ({ tag: 'tool-use', val: { toolUseId: id, name, input } });

function scripted(script) {
  const seen = [];
  const call = (req) => {
    seen.push(structuredClone(req));
    const next = script.shift();
    if (next instanceof Error) throw next;
    return next;
  };
  return { call, seen };
}

test('end turn returns the final text and sends prompt, system and tools', async () => {
  const { call, seen } = scripted([response([{ tag: 'text', val: 'Hello ' }, { tag: 'text', val: 'there' }], 'end-turn')]);
  const out = await new Agent('be brief', [echo]).run('hi', call);
  assert.equal(out.text, 'Hello there');
  assert.equal(out.cycles, 1);
  assert.deepEqual(seen[0].system, ['be brief']);
  assert.deepEqual(seen[0].messages, [{ role: 'user', content: [{ tag: 'text', val: 'hi' }] }]);
  assert.equal(seen[0].toolConfig.tools[0].name, 'echo');
  assert.deepEqual(JSON.parse(seen[0].toolConfig.tools[0].inputSchema), schemaAb);
  assert.deepEqual(JSON.parse(summary(out)), { cycles: 1, tool_calls: 0, tool_errors: 0, stop_reason: 'end_turn', input_tokens: 10, output_tokens: 5 });
});

test('tool results go back in the next user message; errors become error results', async () => {
  const { call, seen } = scripted([
    response([{ tag: 'text', val: ' ' }, use('t1', 'echo', '{"a":"3"}'), use('t2', 'fail', '{}'), use('t3', 'nope', '{}'), use('t1', 'echo', '{}')], 'tool-use'),
    response([{ tag: 'text', val: 'done' }], 'end-turn'),
  ]);
  const out = await new Agent('', [echo, failing]).run('go', call);
  assert.equal(out.toolCalls, 3);
  assert.equal(out.toolErrors, 2);
  const [assistant, results] = seen[1].messages.slice(1);
  assert.equal(assistant.role, 'assistant');
  assert.equal(assistant.content.length, 4, 'the blank text block is dropped');
  const r = results.content.map((b) => b.val);
  assert.deepEqual(r[0], { toolUseId: 't1', status: 'success', content: [{ tag: 'json', val: '{"a":3,"b":"x"}' }] });
  assert.deepEqual(r[1], { toolUseId: 't2', status: 'error', content: [{ tag: 'text', val: 'access denied' }] });
  assert.match(r[2].content[0].val, /unknown tool `nope`; the available tools are: echo, fail/);
  assert.deepEqual(seen[1].system, []);
});

test('max cycles, model errors and stop reasons end with the SDK codes', async () => {
  const loop = Array.from({ length: 3 }, () => response([use('t', 'echo', '{"a":1}')], 'tool-use'));
  await assert.rejects(new Agent('', [echo], { maxCycles: 2 }).run('go', scripted(loop).call), (e) => e instanceof PluginError && e.code === 'max_cycles');
  const err = Object.assign(new Error('x'), { payload: { kind: 'throttled', message: 'slow down', retryable: true } });
  await assert.rejects(new Agent('', [echo]).run('go', scripted([err]).call), (e) => e.code === 'model_throttled' && e.message === 'slow down (temporary: try again later)');
  await assert.rejects(new Agent('', [echo]).run('go', scripted([response([], 'guardrail-intervened')]).call), (e) => e.code === 'guardrail_intervened');
  await assert.rejects(new Agent('', [echo]).run('go', scripted([response([], 'tool-use')]).call), (e) => e.code === 'model_protocol_error');
});

test('payloads', () => {
  assert.equal(promptFromPayload('{"prompt":"hi"}'), 'hi');
  assert.throws(() => promptFromPayload('nope'), (e) => e.code === 'bad_request');
  assert.throws(() => promptFromPayload('{"prompt":" "}'), (e) => e.code === 'bad_request' && e.message === '`prompt` is empty');
  assert.throws(() => promptFromPayload('{"prompt":1}'), (e) => e.payload.code === 'bad_request');
});
