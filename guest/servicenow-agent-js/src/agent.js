// The tool loop of the Rust SDK (guest/sdk/src/agent.rs), in JavaScript.
//
// Nothing here touches a WIT import: the loop takes the model call as a function, so node's
// test runner exercises it natively (test/agent.test.js). Values crossing the WIT boundary use
// componentize-js's mapping: records are objects with camelCase keys, variants are
// `{tag, val}`, enums are their kebab-case names, and `result` errors are thrown.

export const DEFAULT_MAX_CYCLES = 8;
export const DEFAULT_MAX_RESULT_BYTES = 128 * 1024;

/** A plugin error: the world's `plugin-error` record, thrown out of `invoke`. */
export class PluginError extends Error {
  constructor(code, message) {
    super(message);
    this.code = code;
    // componentize-js lowers a thrown value's own `payload` as the `err` case.
    Object.defineProperty(this, 'payload', { value: { code, message }, enumerable: false });
  }
}

/** A tool failure, reported to the model as an error tool result. */
export class ToolError extends Error {
  static invalidInput(message) {
    return new ToolError(`invalid input: ${message}`);
  }
}

/** A tool the model may call: name, description, JSON schema and a handler. */
export class Tool {
  constructor(name, description, inputSchema, handler) {
    this.name = name;
    this.description = description;
    this.inputSchema = inputSchema;
    this.handler = handler;
  }

  spec() {
    return { name: this.name, description: this.description, inputSchema: JSON.stringify(this.inputSchema) };
  }

  /** Validates `input` against the schema (applying defaults), then runs the handler. */
  async call(input) {
    let checked;
    try {
      checked = validateInput(this.inputSchema, input);
    } catch (e) {
      throw ToolError.invalidInput(e.message);
    }
    return this.handler(checked);
  }
}

const isValidToolName = (name) => /^[A-Za-z0-9_-]{1,64}$/.test(name);

/** The prompt of a `{"prompt": "..."}` payload. */
export function promptFromPayload(payload) {
  let v;
  try {
    v = JSON.parse(payload);
  } catch (e) {
    throw new PluginError('bad_request', `the payload is not JSON: ${e.message}`);
  }
  const p = v !== null && typeof v === 'object' && !Array.isArray(v) ? v.prompt : undefined;
  if (typeof p === 'string' && p.trim() !== '') return p;
  if (typeof p === 'string') throw new PluginError('bad_request', '`prompt` is empty');
  throw new PluginError('bad_request', 'the payload needs a string `prompt`');
}

export class Agent {
  constructor(systemPrompt, tools = [], { maxCycles = DEFAULT_MAX_CYCLES, maxResultBytes = DEFAULT_MAX_RESULT_BYTES } = {}) {
    this.systemPrompt = systemPrompt;
    this.tools = tools;
    this.maxCycles = maxCycles;
    this.maxResultBytes = maxResultBytes;
  }

  check() {
    if (!(this.maxCycles >= 1)) throw new Error('max_cycles must be at least 1');
    const seen = new Set();
    for (const t of this.tools) {
      if (!isValidToolName(t.name)) throw new Error(`tool name ${JSON.stringify(t.name)} must be 1-64 characters of [a-zA-Z0-9_-]`);
      if (seen.has(t.name)) throw new Error(`tool name ${JSON.stringify(t.name)} is used twice`);
      seen.add(t.name);
      if (!isPlainObject(t.inputSchema)) throw new Error(`the input schema of tool ${JSON.stringify(t.name)} must be a JSON object`);
    }
  }

  request(messages) {
    return {
      system: this.systemPrompt ? [this.systemPrompt] : [],
      messages,
      toolConfig: this.tools.length ? { tools: this.tools.map((t) => t.spec()), toolChoice: undefined } : undefined,
      inferenceConfig: undefined,
    };
  }

  /**
   * Runs the loop: calls `callModel(request)` (which returns a `response` or throws the
   * model's `error` record), answers tool uses, and returns the outcome once the model ends
   * its turn. Text is streamed to the caller by the host (converse-stream), not here.
   */
  async run(userPrompt, callModel) {
    try {
      this.check();
    } catch (e) {
      throw new PluginError('agent_misconfigured', e.message);
    }
    if (userPrompt.trim() === '') throw new PluginError('bad_request', 'the prompt is empty');
    const messages = [{ role: 'user', content: [{ tag: 'text', val: userPrompt }] }];
    const outcome = { text: '', cycles: 0, toolCalls: 0, toolErrors: 0, stopReason: '', inputTokens: 0, outputTokens: 0 };
    for (;;) {
      let response;
      try {
        response = callModel(this.request(messages));
      } catch (e) {
        throw modelError(errorPayload(e));
      }
      outcome.cycles += 1;
      outcome.inputTokens += Number(response.usage.inputTokens);
      outcome.outputTokens += Number(response.usage.outputTokens);
      const uses = toolUses(response.message);
      const assistant = sanitizeAssistant(response.message);
      const stop = response.stopReason.tag;
      if (stop === 'end-turn' || stop === 'stop-sequence' || stop === 'max-tokens') {
        outcome.stopReason = stopReasonName(response.stopReason);
        outcome.text = textOf(assistant);
        return outcome;
      }
      if (stop !== 'tool-use') throw stopError(response.stopReason);
      if (uses.length === 0) throw new PluginError('model_protocol_error', 'the model stopped to use tools but requested none');
      if (this.tools.length === 0) throw new PluginError('model_protocol_error', 'the model requested a tool, but this agent offers none');
      if (outcome.cycles >= this.maxCycles) {
        throw new PluginError(
          'max_cycles',
          `stopped after ${outcome.cycles} model calls without a final answer (the model still wanted to call ${uses.map((u) => u.name).join(', ')}); try a simpler or more specific request`,
        );
      }
      const results = await answerToolUses(this.tools, uses, this.maxResultBytes);
      outcome.toolCalls += results.length;
      outcome.toolErrors += results.filter((r) => r.status === 'error').length;
      messages.push(assistant);
      messages.push({ role: 'user', content: results.map((r) => ({ tag: 'tool-result', val: r })) });
    }
  }
}

/** The invocation result: the same JSON summary as the Rust agent's. */
export function summary(o) {
  return JSON.stringify({
    cycles: o.cycles,
    tool_calls: o.toolCalls,
    tool_errors: o.toolErrors,
    stop_reason: o.stopReason,
    input_tokens: o.inputTokens,
    output_tokens: o.outputTokens,
  });
}

/** A thrown import error's payload (componentize-js wraps `result` errors). */
function errorPayload(e) {
  return e !== null && typeof e === 'object' && Object.prototype.hasOwnProperty.call(e, 'payload') ? e.payload : e;
}

export const textOf = (message) => message.content.filter((b) => b.tag === 'text').map((b) => b.val).join('');

export const toolUses = (message) => message.content.filter((b) => b.tag === 'tool-use').map((b) => b.val);

/** The assistant turn as it is sent back: no blank text blocks, tool inputs that are objects. */
export function sanitizeAssistant(message) {
  const content = message.content
    .filter((b) => !(b.tag === 'text' && b.val.trim() === ''))
    .map((b) => {
      if (b.tag !== 'tool-use') return b;
      let ok = true;
      try {
        parseObject(b.val.input);
      } catch {
        ok = false;
      }
      return ok ? b : { tag: 'tool-use', val: { ...b.val, input: '{}' } };
    });
  return { role: 'assistant', content };
}

/** One result per distinct tool-use id, in order. */
export async function answerToolUses(tools, uses, maxResultBytes) {
  const seen = new Set();
  const out = [];
  for (const u of uses) {
    if (seen.has(u.toolUseId)) continue;
    seen.add(u.toolUseId);
    out.push(await dispatch(tools, u, maxResultBytes));
  }
  return out;
}

export async function dispatch(tools, use, maxResultBytes) {
  const id = use.toolUseId;
  try {
    const tool = tools.find((t) => t.name === use.name);
    if (!tool) {
      throw new ToolError(`unknown tool \`${use.name}\`; the available tools are: ${tools.map((t) => t.name).join(', ')}`);
    }
    const value = await tool.call(parseObject(use.input));
    return { toolUseId: id, status: 'success', content: [resultContent(value, maxResultBytes)] };
  } catch (e) {
    if (!(e instanceof ToolError)) throw e;
    return { toolUseId: id, status: 'error', content: [{ tag: 'text', val: e.message }] };
  }
}

const utf8Length = (s) => new TextEncoder().encode(s).length;

function resultContent(value, maxBytes) {
  let content;
  if (typeof value === 'string') content = { tag: 'text', val: value };
  else if (value !== null && typeof value === 'object') content = { tag: 'json', val: JSON.stringify(value) };
  else content = { tag: 'text', val: JSON.stringify(value) };
  const len = utf8Length(content.val);
  if (len > maxBytes) {
    throw new ToolError(`the result is too large (${len} bytes, the limit is ${maxBytes}); ask for fewer records or fields`);
  }
  return content;
}

function parseObject(input) {
  if (input.trim() === '') return {};
  let v;
  try {
    v = JSON.parse(input);
  } catch (e) {
    throw ToolError.invalidInput(`the tool input is not valid JSON (${e.message})`);
  }
  if (!isPlainObject(v)) throw ToolError.invalidInput('the tool input must be a JSON object');
  return v;
}

const isPlainObject = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);

// --- input validation: the subset of JSON Schema the Rust SDK checks, same messages ---

/** The input after the schema: types checked, numeric strings coerced, defaults applied. Throws Error(message). */
export function validateInput(schema, input) {
  return checkValue(schema, input, 'input');
}

function typeName(v) {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  switch (typeof v) {
    case 'boolean':
      return 'a boolean';
    case 'number':
      return 'a number';
    case 'string':
      return 'a string';
    default:
      return 'an object';
  }
}

function hasType(v, t) {
  switch (t) {
    case 'object':
      return isPlainObject(v);
    case 'array':
      return Array.isArray(v);
    case 'string':
      return typeof v === 'string';
    case 'boolean':
      return typeof v === 'boolean';
    case 'null':
      return v === null;
    case 'number':
      return typeof v === 'number';
    case 'integer':
      return typeof v === 'number' && Number.isInteger(v);
    default:
      return true;
  }
}

function articleList(types) {
  return types
    .map((t) => (['object', 'array', 'integer'].includes(t) ? `an ${t}` : t === 'null' ? 'null' : `a ${t}`))
    .join(' or ');
}

const showNum = (x) => String(x);

function jsonEqual(a, b) {
  return JSON.stringify(a) === JSON.stringify(b);
}

function coerce(schema, value) {
  if (typeof value !== 'string') return value;
  const t = schema.type;
  const wants = (x) => (typeof t === 'string' ? t === x : Array.isArray(t) ? t.includes(x) && !t.includes('string') : false);
  const s = value.trim();
  if (wants('integer') && /^[+-]?\d+$/.test(s)) return Number(s);
  if (wants('number') && s !== '' && Number.isFinite(Number(s)) && /^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/.test(s)) return Number(s);
  return value;
}

function checkValue(schema, value, path) {
  if (!isPlainObject(schema)) return value;
  value = coerce(schema, value);
  if (schema.type !== undefined) {
    const allowed = typeof schema.type === 'string' ? [schema.type] : Array.isArray(schema.type) ? schema.type.filter((t) => typeof t === 'string') : [];
    if (allowed.length && !allowed.some((t) => hasType(value, t))) {
      throw new Error(`\`${path}\` must be ${articleList(allowed)}, got ${typeName(value)}`);
    }
  }
  if (Array.isArray(schema.enum) && !schema.enum.some((o) => jsonEqual(o, value))) {
    throw new Error(`\`${path}\` must be one of ${schema.enum.map((o) => JSON.stringify(o)).join(', ')}`);
  }
  if (typeof value === 'number') {
    if (typeof schema.minimum === 'number' && value < schema.minimum) throw new Error(`\`${path}\` must be at least ${showNum(schema.minimum)}`);
    if (typeof schema.maximum === 'number' && value > schema.maximum) throw new Error(`\`${path}\` must be at most ${showNum(schema.maximum)}`);
  } else if (typeof value === 'string') {
    const chars = [...value].length;
    if (typeof schema.minLength === 'number' && chars < schema.minLength) {
      throw new Error(schema.minLength === 1 ? `\`${path}\` must not be empty` : `\`${path}\` must be at least ${schema.minLength} characters long`);
    }
    if (typeof schema.maxLength === 'number' && chars > schema.maxLength) throw new Error(`\`${path}\` must be at most ${schema.maxLength} characters long`);
  } else if (Array.isArray(value)) {
    if (typeof schema.minItems === 'number' && value.length < schema.minItems) throw new Error(`\`${path}\` needs at least ${schema.minItems} items`);
    if (typeof schema.maxItems === 'number' && value.length > schema.maxItems) throw new Error(`\`${path}\` takes at most ${schema.maxItems} items`);
    if (schema.items !== undefined) return value.map((item, i) => checkValue(schema.items, item, `${path}[${i}]`));
  } else if (isPlainObject(value)) {
    return checkObject(schema, value, path);
  }
  return value;
}

function checkObject(schema, fields, path) {
  const props = isPlainObject(schema.properties) ? schema.properties : undefined;
  const at = (name) => (path === 'input' ? name : `${path}.${name}`);
  if (Array.isArray(schema.required)) {
    for (const name of schema.required) {
      if (typeof name === 'string' && !Object.prototype.hasOwnProperty.call(fields, name)) throw new Error(`\`${at(name)}\` is required`);
    }
  }
  const closed = schema.additionalProperties === false;
  const out = {};
  for (const [name, value] of Object.entries(fields)) {
    if (props && Object.prototype.hasOwnProperty.call(props, name)) {
      out[name] = checkValue(props[name], value, at(name));
    } else if (closed) {
      throw new Error(`unknown property \`${at(name)}\` (allowed: ${props ? Object.keys(props).join(', ') : ''})`);
    } else {
      out[name] = value;
    }
  }
  if (props) {
    for (const [name, prop] of Object.entries(props)) {
      if (!Object.prototype.hasOwnProperty.call(out, name) && isPlainObject(prop) && prop.default !== undefined) out[name] = prop.default;
    }
  }
  return out;
}

// --- stop reasons and model errors: the Rust SDK's codes ---

const STOP_NAMES = {
  'end-turn': 'end_turn',
  'tool-use': 'tool_use',
  'max-tokens': 'max_tokens',
  'stop-sequence': 'stop_sequence',
  'guardrail-intervened': 'guardrail_intervened',
  'content-filtered': 'content_filtered',
  'malformed-model-output': 'malformed_model_output',
  'malformed-tool-use': 'malformed_tool_use',
  'context-window-exceeded': 'model_context_window_exceeded',
};

export const stopReasonName = (r) => (r.tag === 'other' ? r.val : STOP_NAMES[r.tag] ?? r.tag);

function stopError(r) {
  const [code, message] =
    {
      'guardrail-intervened': ['guardrail_intervened', "a guardrail stopped the model's answer"],
      'content-filtered': ['content_filtered', "the model's answer was filtered"],
      'malformed-model-output': ['model_malformed_output', 'the model produced output that could not be used; try again'],
      'malformed-tool-use': ['model_malformed_output', 'the model produced output that could not be used; try again'],
      'context-window-exceeded': ['context_window_exceeded', "the conversation no longer fits the model's context window"],
    }[r.tag] ?? ['model_stopped', 'the model stopped for an unexpected reason'];
  return new PluginError(code, `${message} (${stopReasonName(r)})`);
}

const MODEL_ERROR_CODES = {
  unavailable: 'model_unavailable',
  validation: 'model_request_invalid',
  throttled: 'model_throttled',
  'model-not-ready': 'model_not_ready',
  'model-timeout': 'model_timeout',
  'model-error': 'model_error',
  'stream-error': 'model_stream_error',
  'service-unavailable': 'model_service_unavailable',
  internal: 'model_internal_error',
  'access-denied': 'model_access_denied',
  'not-found': 'model_not_found',
  'budget-exceeded': 'budget_exceeded',
};

/** A failed model call as the plugin's error (the host maps these codes to HTTP statuses). */
export function modelError(e) {
  if (e === null || typeof e !== 'object' || typeof e.kind !== 'string') {
    return new PluginError('model_error', `the model call failed (${String(e)})`);
  }
  let message = e.message ? e.message : 'the model call failed';
  if (e.retryable) message += ' (temporary: try again later)';
  return new PluginError(MODEL_ERROR_CODES[e.kind] ?? 'model_error', message);
}
