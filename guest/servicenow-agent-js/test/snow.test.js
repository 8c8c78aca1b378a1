// The Rust agent's snow.rs tests, against the JavaScript port (node --test).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ToolError, validateInput } from '../src/agent.js';
import * as snow from '../src/snow.js';

const BASE = 'https://dev.example.com';
const checked = (schema, input) => validateInput(schema, input);

test('query urls are encoded and use display values', () => {
  const input = checked(snow.queryIncidentsSchema(), {
    query: 'assigned_to=javascript:gs.getUserID()^ORDERBYnumber',
    limit: 5,
    fields: snow.DEFAULT_FIELDS,
  });
  const p = snow.queryIncidents(BASE, input).page(0);
  assert.equal(p.method, 'GET');
  assert.equal(
    p.url,
    'https://dev.example.com/api/now/table/incident?sysparm_query=assigned_to%3Djavascript%3Ags.getUserID%28%29%5EORDERBYnumber' +
      '&sysparm_limit=5&sysparm_fields=number%2Cshort_description%2Cpriority%2Cstate%2Cassigned_to' +
      '&sysparm_display_value=true&sysparm_exclude_reference_link=true',
  );
  assert.equal(p.body, undefined);
  const d = snow.queryIncidents(BASE, checked(snow.queryIncidentsSchema(), {})).page(0);
  assert.ok(d.url.includes('sysparm_query=&sysparm_limit=10&sysparm_fields=number%2C'), d.url);
  const all = snow.queryIncidents(BASE, checked(snow.queryIncidentsSchema(), { fields: ' ' })).page(0);
  assert.ok(!all.url.includes('sysparm_fields'));
});

test('encoding', () => {
  assert.equal(snow.encode('a b+c&d=e^f%g'), 'a%20b%2Bc%26d%3De%5Ef%25g');
  assert.equal(snow.encode('ünï'), '%C3%BCn%C3%AF');
  assert.equal(snow.encode('A-z_0.9~'), 'A-z_0.9~');
});

test('query validation', () => {
  const s = snow.queryIncidentsSchema();
  assert.throws(() => validateInput(s, { limit: 0 }), { message: '`limit` must be at least 1' });
  assert.throws(() => validateInput(s, { limit: 101 }), { message: '`limit` must be at most 100' });
  assert.throws(() => snow.queryIncidents(BASE, { limit: 500 }), ToolError);
  assert.throws(() => validateInput(s, { table: 'sys_user' }), /unknown property/);
  assert.throws(() => snow.queryIncidents(BASE, { query: "caller_id=javascript:new GlideRecord('x')" }), /is not allowed/);
  assert.throws(() => snow.queryIncidents(BASE, { query: 'a=javascript:gs.getUserID()^b=JavaScript:eval(1)' }), /eval\(1\)/);
  snow.queryIncidents(BASE, { query: 'assignment_groupINjavascript:gs.getUser().getMyGroups()' });
  assert.throws(() => snow.queryIncidents(BASE, { fields: 'number,sys_id&x=1' }), /not a field name/);
  snow.queryIncidents(BASE, { fields: 'number, assigned_to.email' });
  snow.queryIncidents(BASE, { query: 'category=HR^NQpriority=1' });
});

test('paging follows next links until limit rows', () => {
  const q = snow.queryIncidents(BASE, { query: 'active=true', limit: 5 });
  assert.ok(q.page(5).url.includes('&sysparm_limit=5&sysparm_offset=5&'));
  const next = '<https://x/api/now/table/incident?sysparm_offset=0>;rel="first",<https://x/api/now/table/incident?sysparm_offset=5>;rel="next"';
  const lastOnly = '<https://x/api/now/table/incident?sysparm_offset=0>;rel="first", <https://x/...>; rel="prev"';
  const page = (ns) => ({ result: ns.map((number) => ({ number })) });
  let rows = [];
  assert.equal(q.absorb(rows, page(['a', 'b', 'c', 'd']), 0, next), 5);
  assert.equal(q.absorb(rows, page(['e', 'f']), 5, next), undefined);
  assert.deepEqual(rows.map((r) => r.number), ['a', 'b', 'c', 'd', 'e']);
  rows = [];
  assert.equal(q.absorb(rows, page(['a']), 0, lastOnly), undefined);
  assert.equal(q.absorb(rows, page([]), 0, undefined), undefined);
  rows = [];
  assert.equal(q.absorb(rows, page([]), 10, '<u>; rel=next'), 15);
});

test('get_incident by number', () => {
  const p = snow.getIncident(BASE, { number: 'inc0012345' });
  assert.equal(
    p.url,
    'https://dev.example.com/api/now/table/incident?sysparm_query=number%3DINC0012345&sysparm_limit=1' +
      '&sysparm_display_value=true&sysparm_exclude_reference_link=true',
  );
  assert.throws(() => snow.getIncident(BASE, { number: 'INC0012345^NQcategory=HR' }), /must not contain `\^`/);
  for (const bad of ['INC001234', 'INC00123456', 'CHG0012345', 'INC001234X', '', 'INC 012345']) {
    assert.throws(() => snow.getIncident(BASE, { number: bad }), ToolError, bad);
  }
  assert.throws(() => validateInput(snow.getIncidentSchema(), {}), { message: '`number` is required' });
});

test('update_incident patches allowed fields', () => {
  const id = '46D44A5DC0A8010E0100C8F1A9D6A3C0';
  const input = checked(snow.updateIncidentSchema(), { sys_id: id, updates: { urgency: 1, work_notes: 'called the user', state: '2' } });
  const p = snow.updateIncident(BASE, input);
  assert.equal(p.method, 'PATCH');
  assert.equal(
    p.url,
    'https://dev.example.com/api/now/table/incident/46d44a5dc0a8010e0100c8f1a9d6a3c0?sysparm_display_value=true&sysparm_exclude_reference_link=true',
  );
  assert.deepEqual(JSON.parse(p.body), { urgency: '1', work_notes: 'called the user', state: '2' });
  for (const bad of ['', '46d44a5dc0a8010e0100c8f1a9d6a3c', '46d44a5dc0a8010e0100c8f1a9d6a3cz', '../../sys_user/x']) {
    assert.throws(() => snow.updateIncident(BASE, { sys_id: bad, updates: { urgency: '1' } }), /32 hexadecimal/);
  }
  assert.throws(() => snow.updateIncident(BASE, { sys_id: id, updates: { sys_created_by: 'x' } }), /cannot be updated/);
  assert.throws(() => validateInput(snow.updateIncidentSchema(), { sys_id: id, updates: { number: 'INC1' } }), /unknown property `updates.number`/);
  assert.throws(() => snow.updateIncident(BASE, { sys_id: id, updates: {} }), ToolError);
  assert.throws(() => snow.updateIncident(BASE, { sys_id: id, updates: { state: ['2'] } }), ToolError);
  assert.throws(() => snow.updateIncident(BASE, { sys_id: id, updates: { comments: 'x'.repeat(4001) } }), ToolError);
  assert.throws(() => snow.updateIncident(BASE, { sys_id: id }), ToolError);
});

test('choice labels become values', () => {
  const cases = [
    ['state', 'In Progress', '2'],
    ['state', ' resolved ', '6'],
    ['state', 'Cancelled', '8'],
    ['state', '2', '2'],
    ['state', '10', '10'],
    ['state', 'Awaiting Vendor', 'Awaiting Vendor'],
    ['urgency', '1 - High', '1'],
    ['impact', 'low', '3'],
    ['priority', 'P2', '2'],
    ['priority', '4 - Low', '4'],
    ['urgency', '9 - High', '9 - High'],
    ['short_description', 'High', 'High'],
  ];
  for (const [field, text, want] of cases) assert.equal(snow.choiceValue(field, text), want, `${field} ${text}`);
  const p = snow.updateIncident(BASE, { sys_id: '46d44a5dc0a8010e0100c8f1a9d6a3c0', updates: { state: 'On Hold' } });
  assert.equal(p.body, '{"state":"3"}');
});

test('responses and errors', () => {
  assert.equal(snow.interpret(200, undefined, '{"result":[{"number":"INC0012345"}]}').result[0].number, 'INC0012345');
  assert.throws(() => snow.interpret(200, undefined, '<html>hibernating</html>'), /not Table API JSON/);
  const envelope = (m, d) => JSON.stringify({ error: { message: m, detail: d }, status: 'failure' });
  assert.throws(() => snow.interpret(401, undefined, envelope('User Not Authenticated', 'Required to provide Auth information')), /^Error: your session has expired, sign in again/);
  assert.throws(() => snow.interpret(403, undefined, envelope('Operation Failed', 'ACL Exception Update Failed')), {
    message: 'access denied: ServiceNow does not allow you to do this (ServiceNow: Operation Failed: ACL Exception Update Failed)',
  });
  assert.throws(() => snow.interpret(404, undefined, envelope('No Record found', 'x')), { message: 'not found or not visible to you' });
  assert.throws(() => snow.interpret(429, '30', ''), /retry in 30 seconds$/);
  assert.throws(() => snow.interpret(429, undefined, ''), /retry in a little while/);
  assert.throws(() => snow.interpret(429, 'Wed, 21 Oct 2026 07:28:00 GMT', ''), /retry after Wed, 21 Oct 2026 07:28:00 GMT$/);
  assert.throws(() => snow.interpret(500, undefined, envelope('Internal server error', '')), { message: 'ServiceNow returned HTTP 500 (ServiceNow: Internal server error)' });
  assert.throws(() => snow.interpret(502, undefined, 'bad gateway'), { message: 'ServiceNow returned HTTP 502' });
});

test('transport errors', () => {
  const p = snow.getIncident(BASE, { number: 'INC0012345' });
  assert.equal(
    snow.transportError('denied', 'x', p).message,
    "the host's egress policy does not allow this request (GET https://dev.example.com/api/now/table/incident); ask the operator to allow it",
  );
  assert.match(snow.transportError('transport', 'timeout', p).message, /could not reach/);
  const patch = snow.updateIncident(BASE, { sys_id: '46d44a5dc0a8010e0100c8f1a9d6a3c0', updates: { urgency: '1' } });
  const m = snow.transportError('transport', 'reset', patch).message;
  assert.ok(m.includes('may have been applied') && !m.includes('could not reach'), m);
});

test('base urls', () => {
  assert.equal(snow.normalizeBaseUrl(' https://x.service-now.com/ '), 'https://x.service-now.com');
  assert.equal(snow.normalizeBaseUrl('http://127.0.0.1:8443/sn'), 'http://127.0.0.1:8443/sn');
  for (const bad of ['x.service-now.com', 'https://', 'https://u:p@x.com', 'https://x.com?a=1']) {
    assert.throws(() => snow.normalizeBaseUrl(bad), Error, bad);
  }
});

test('writable fields match the schema', () => {
  assert.equal(Object.keys(snow.updateIncidentSchema().properties.updates.properties).length, snow.WRITABLE_FIELDS.length);
});
