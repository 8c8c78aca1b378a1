// The ServiceNow agent of the AgentCore OBO article, in JavaScript: the same tools, JSON shapes
// and summary as the Rust agent (guest/servicenow-agent), built into a component with
// componentize-js against wit/ (world `delegate:agent/agent`).
//
// Payload `{"prompt": "..."}`; settings (wasi:config/store) `servicenow_url` (required) and
// `max_cycles` (optional, 1-32, default 8). The plugin holds no credential: it sends plain
// requests over wasi:http/outgoing-handler (src/http.js) and the host attaches the caller's
// delegated ServiceNow token to the requests its egress rules allow.

import { converseStream } from 'delegate:agent/model@0.1.0';
import { get as setting } from 'wasi:config/store@0.2.0-rc.1';
import { Agent, DEFAULT_MAX_CYCLES, PluginError, Tool, ToolError, promptFromPayload, summary } from './agent.js';
import { HttpError, send } from './http.js';
import * as snow from './snow.js';

const SYSTEM_PROMPT =
  'You are a ServiceNow assistant. You help users query and manage their incidents. You only see records the user is authorized to access. Be concise.\n' +
  "Use query_incidents to list or search incidents (for the user's own incidents filter with assigned_to=javascript:gs.getUserID()), get_incident to read one incident by number, and update_incident to change one: look the incident up first to get its sys_id. When a tool reports an error, tell the user plainly what happened and what they can do; never guess data a tool did not return.";

const MAX_CYCLES_CAP = 32;

function readSetting(key) {
  try {
    return setting(key) ?? undefined;
  } catch {
    return undefined;
  }
}

/** Sends one planned request (no credentials) and interprets the answer; also returns `Link`. */
function sendPlanned(planned) {
  const headers = { accept: 'application/json' };
  if (planned.body !== undefined) headers['content-type'] = 'application/json';
  let resp;
  try {
    resp = send({ method: planned.method, url: planned.url, headers, body: planned.body });
  } catch (e) {
    if (!(e instanceof HttpError)) throw e;
    if (e.kind === 'invalid') throw new ToolError("the plugin's servicenow_url setting is not a usable URL");
    throw snow.transportError(e.kind, e.message, planned);
  }
  const value = snow.interpret(resp.status, resp.headers.get('retry-after'), resp.body);
  return { value, link: resp.headers.get('link') };
}

async function query(base, input) {
  const q = snow.queryIncidents(base, input);
  const rows = [];
  let offset = 0;
  for (let i = 0; i < snow.MAX_PAGES; i++) {
    const { value, link } = sendPlanned(q.page(offset));
    const next = q.absorb(rows, value, offset, link);
    if (next === undefined) break;
    offset = next;
  }
  return { result: rows };
}

/** The agent with its three tools bound to the instance at `base`. */
export function agent(base, maxCycles = DEFAULT_MAX_CYCLES) {
  const bind = (plan) => async (input) => sendPlanned(plan(base, input)).value;
  return new Agent(
    SYSTEM_PROMPT,
    [
      new Tool(
        'query_incidents',
        'Search for incidents in ServiceNow with an encoded query. Returns the Table API JSON {"result":[...]} with display values; only incidents the user may see are returned.',
        snow.queryIncidentsSchema(),
        (input) => query(base, input),
      ),
      new Tool(
        'get_incident',
        'Get all details of one incident by its number (e.g. INC0012345). Returns {"result":[...]} with at most one record; an empty list means it does not exist or the user may not see it.',
        snow.getIncidentSchema(),
        bind(snow.getIncident),
      ),
      new Tool(
        'update_incident',
        'Update fields of an existing incident, identified by sys_id. Returns the updated record {"result":{...}}. ServiceNow decides whether the user may change it.',
        snow.updateIncidentSchema(),
        bind(snow.updateIncident),
      ),
    ],
    { maxCycles },
  );
}

export async function invoke(payload) {
  const prompt = promptFromPayload(payload);
  const raw = readSetting('servicenow_url');
  if (raw === undefined) throw new PluginError('not_configured', 'the plugin setting servicenow_url is not set');
  let base;
  try {
    base = snow.normalizeBaseUrl(raw);
  } catch (e) {
    throw new PluginError('not_configured', e.message);
  }
  let maxCycles = DEFAULT_MAX_CYCLES;
  const rawCycles = readSetting('max_cycles');
  if (rawCycles !== undefined) {
    const n = /^[0-9]+$/.test(rawCycles.trim()) ? Number(rawCycles.trim()) : NaN;
    if (!(n >= 1 && n <= MAX_CYCLES_CAP)) {
      throw new PluginError('not_configured', `the max_cycles setting must be 1-${MAX_CYCLES_CAP} (got ${JSON.stringify(rawCycles)})`);
    }
    maxCycles = n;
  }
  const outcome = await agent(base, maxCycles).run(prompt, converseStream);
  return summary(outcome);
}
