// The three incident tools as plain data (a port of guest/servicenow-agent/src/snow.rs): input
// validation, the Table API request each call makes, and how a ServiceNow response (or a
// refused request) becomes a tool result. No I/O here: test/snow.test.js runs it under node.
// No request carries credentials: the host's egress layer attaches the caller's delegated
// ServiceNow token itself.

import { ToolError } from './agent.js';

const INCIDENT_PATH = '/api/now/table/incident';

/** Fields `query_incidents` returns when the model does not ask for others (the article's). */
export const DEFAULT_FIELDS = 'number,short_description,priority,state,assigned_to';

/** Incident fields `update_incident` may write (see snow.rs for why these). */
export const WRITABLE_FIELDS = [
  'short_description',
  'description',
  'state',
  'impact',
  'urgency',
  'priority',
  'category',
  'subcategory',
  'assigned_to',
  'assignment_group',
  'caller_id',
  'contact_type',
  'work_notes',
  'comments',
  'close_code',
  'close_notes',
];

const MAX_VALUE_CHARS = 4000;

/** Server-side `javascript:` values allowed in an encoded query: the "current user" helpers. */
const ALLOWED_SCRIPTS = [
  'gs.getUserID()',
  'gs.getUser().getID()',
  'gs.getUserName()',
  'gs.getUser().getName()',
  'gs.getUser().getMyGroups()',
];

/** Pages `query_incidents` reads at most to collect `limit` visible rows. */
export const MAX_PAGES = 10;

export function queryIncidentsSchema() {
  return {
    type: 'object',
    properties: {
      query: {
        type: 'string',
        maxLength: 2000,
        default: '',
        description:
          'ServiceNow encoded query: conditions joined by ^ (AND) or ^OR, e.g. `assigned_to=javascript:gs.getUserID()^active=true^ORDERBYnumber` for the user\'s own active incidents. Operators: = != < <= > >= LIKE STARTSWITH ENDSWITH IN ISEMPTY ISNOTEMPTY, sorting with ORDERBY<field> / ORDERBYDESC<field>. Empty for no filter.',
      },
      limit: {
        type: 'integer',
        minimum: 1,
        maximum: 100,
        default: 10,
        description: 'Maximum number of incidents to return (1-100).',
      },
      fields: {
        type: 'string',
        maxLength: 1000,
        default: DEFAULT_FIELDS,
        description: 'Comma-separated incident fields to return (dot-walking like `assigned_to.email` is allowed); empty for all fields.',
      },
    },
    additionalProperties: false,
  };
}

export function getIncidentSchema() {
  return {
    type: 'object',
    properties: {
      number: { type: 'string', maxLength: 32, description: 'The incident number: INC followed by 7 digits, e.g. INC0012345.' },
    },
    required: ['number'],
    additionalProperties: false,
  };
}

export function updateIncidentSchema() {
  const properties = {};
  for (const f of WRITABLE_FIELDS) properties[f] = { type: ['string', 'integer', 'number', 'boolean', 'null'] };
  return {
    type: 'object',
    properties: {
      sys_id: {
        type: 'string',
        description: "The incident's sys_id (32 hexadecimal characters), as returned by get_incident or query_incidents.",
      },
      updates: {
        type: 'object',
        properties,
        additionalProperties: false,
        description:
          'Fields to change and their new values. Choice fields take their values (standard labels are translated): state 1 New, 2 In Progress, 3 On Hold, 6 Resolved, 7 Closed, 8 Canceled; impact and urgency 1 High, 2 Medium, 3 Low (priority is usually computed from them). work_notes and comments add a journal entry. Reference fields (assigned_to, assignment_group, caller_id) take a sys_id. Resolving usually needs close_code and close_notes.',
      },
    },
    required: ['sys_id', 'updates'],
    additionalProperties: false,
  };
}

/** The base URL setting, checked and without a trailing `/`. Throws Error(message). */
export function normalizeBaseUrl(raw) {
  const url = raw.trim().replace(/\/+$/, '');
  let rest;
  if (url.startsWith('https://')) rest = url.slice(8);
  else if (url.startsWith('http://')) rest = url.slice(7);
  else throw new Error(`servicenow_url must start with https:// (got ${JSON.stringify(raw)})`);
  const host = rest.split('/')[0];
  if (host === '' || /[?# @]/.test(url)) {
    throw new Error(`servicenow_url must be a plain base URL like https://instance.service-now.com (got ${JSON.stringify(raw)})`);
  }
  return url;
}

/** Percent-encodes everything but RFC 3986 unreserved characters (UTF-8 bytes). */
export function encode(s) {
  let out = '';
  for (const b of new TextEncoder().encode(s)) {
    const c = String.fromCharCode(b);
    out += /[A-Za-z0-9\-._~]/.test(c) ? c : `%${b.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  return out;
}

/** The full URL for `path` with `params` plus the display options every call uses. */
function tableUrl(base, path, params) {
  const all = [...params, ['sysparm_display_value', 'true'], ['sysparm_exclude_reference_link', 'true']];
  return `${base}${path}?${all.map(([k, v]) => `${encode(k)}=${encode(v)}`).join('&')}`;
}

function checkScripts(query) {
  const lower = query.toLowerCase();
  let from = 0;
  for (;;) {
    const i = lower.indexOf('javascript:', from);
    if (i < 0) return;
    const start = i + 'javascript:'.length;
    const j = query.indexOf('^', start);
    const end = j < 0 ? query.length : j;
    const script = query.slice(start, end).trim();
    if (!ALLOWED_SCRIPTS.includes(script)) {
      throw ToolError.invalidInput(
        `\`javascript:${script}\` is not allowed in a query; only ${ALLOWED_SCRIPTS.map((s) => `javascript:${s}`).join(', ')} are`,
      );
    }
    from = end;
  }
}

function checkFields(fields) {
  const names = fields
    .split(',')
    .map((f) => f.trim())
    .filter((f) => f !== '');
  if (names.length > 50) throw ToolError.invalidInput('`fields` lists more than 50 fields');
  for (const name of names) {
    const ok = name.length <= 80 && /^[A-Za-z0-9_.]+$/.test(name) && !name.startsWith('.') && !name.endsWith('.');
    if (!ok) throw ToolError.invalidInput(`\`${name}\` in \`fields\` is not a field name`);
  }
  return names.join(',');
}

/** A validated `query_incidents` call; `page(offset)` gives the request for each page. */
export class Query {
  constructor(base, query, limit, fields) {
    this.base = base;
    this.query = query;
    this.limit = limit;
    this.fields = fields;
  }

  page(offset) {
    const params = [
      ['sysparm_query', this.query],
      ['sysparm_limit', String(this.limit)],
    ];
    if (offset > 0) params.push(['sysparm_offset', String(offset)]);
    if (this.fields !== '') params.push(['sysparm_fields', this.fields]);
    return { method: 'GET', url: tableUrl(this.base, INCIDENT_PATH, params), body: undefined };
  }

  /**
   * Adds a page's rows to `rows` (at most `limit` in all) and returns the next page's offset,
   * or undefined when done: enough rows, or ServiceNow announced no next page. ServiceNow
   * removes rows the user may not read after paging, so a short page is not the end.
   */
  absorb(rows, page, offset, link) {
    const items = page && Array.isArray(page.result) ? page.result : [];
    rows.push(...items.slice(0, Math.max(0, this.limit - rows.length)));
    const full = rows.length >= this.limit;
    return !full && link !== undefined && link !== null && hasNextLink(link) ? offset + this.limit : undefined;
  }
}

function hasNextLink(link) {
  const compact = link.replace(/\s+/g, '').toLowerCase();
  return compact.includes(';rel="next"') || compact.includes(';rel=next');
}

/** `query_incidents`: the incident list for the model's encoded query. */
export function queryIncidents(base, input) {
  const query = (typeof input.query === 'string' ? input.query : '').trim();
  checkScripts(query);
  const limit = Number.isInteger(input.limit) && input.limit >= 0 ? input.limit : 10;
  if (limit < 1 || limit > 100) throw ToolError.invalidInput('`limit` must be between 1 and 100');
  const fields = checkFields(typeof input.fields === 'string' ? input.fields : DEFAULT_FIELDS);
  return new Query(base, query, limit, fields);
}

export function checkNumber(raw) {
  if (raw.includes('^')) {
    throw ToolError.invalidInput('`number` must not contain `^`: it would change the ServiceNow query instead of naming one incident');
  }
  const number = raw.toUpperCase();
  if (!/^INC[0-9]{7}$/.test(number)) {
    throw ToolError.invalidInput(`\`number\` must be INC followed by 7 digits, like INC0012345 (got ${JSON.stringify(raw)})`);
  }
  return number;
}

export function checkSysId(raw) {
  const id = raw.trim();
  if (!/^[0-9A-Fa-f]{32}$/.test(id)) {
    throw ToolError.invalidInput(
      `\`sys_id\` must be 32 hexadecimal characters (got ${JSON.stringify(raw)}); look the incident up with get_incident first`,
    );
  }
  return id.toLowerCase();
}

/** `get_incident`: the incident with this number (all fields), as a one-element list. */
export function getIncident(base, input) {
  const number = checkNumber((typeof input.number === 'string' ? input.number : '').trim());
  return {
    method: 'GET',
    url: tableUrl(base, INCIDENT_PATH, [
      ['sysparm_query', `number=${number}`],
      ['sysparm_limit', '1'],
    ]),
    body: undefined,
  };
}

/** `update_incident`: PATCH the allowed fields of one incident. */
export function updateIncident(base, input) {
  const sysId = checkSysId(typeof input.sys_id === 'string' ? input.sys_id : '');
  const updates = input.updates;
  if (updates === null || typeof updates !== 'object' || Array.isArray(updates)) {
    throw ToolError.invalidInput('`updates` must be an object of field names to new values');
  }
  const entries = Object.entries(updates);
  if (entries.length === 0) throw ToolError.invalidInput('`updates` is empty: name at least one field to change');
  const body = {};
  for (const [field, value] of entries) {
    if (!WRITABLE_FIELDS.includes(field)) {
      throw ToolError.invalidInput(`\`${field}\` cannot be updated by this tool; writable fields: ${WRITABLE_FIELDS.join(', ')}`);
    }
    let text;
    if (typeof value === 'string') text = value;
    else if (typeof value === 'number' || typeof value === 'boolean') text = String(value);
    else if (value === null) text = '';
    else throw ToolError.invalidInput(`\`${field}\` must be a string value`);
    if ([...text].length > MAX_VALUE_CHARS) throw ToolError.invalidInput(`the value of \`${field}\` is longer than ${MAX_VALUE_CHARS} characters`);
    body[field] = choiceValue(field, text);
  }
  return { method: 'PATCH', url: tableUrl(base, `${INCIDENT_PATH}/${sysId}`, []), body: JSON.stringify(body) };
}

/** Standard labels of the incident choice fields: field -> [value, labels][]. */
const CHOICE_LABELS = {
  state: [
    ['1', ['new']],
    ['2', ['in progress']],
    ['3', ['on hold']],
    ['6', ['resolved']],
    ['7', ['closed']],
    ['8', ['canceled', 'cancelled']],
  ],
  impact: [
    ['1', ['high']],
    ['2', ['medium']],
    ['3', ['low']],
  ],
  urgency: [
    ['1', ['high']],
    ['2', ['medium']],
    ['3', ['low']],
  ],
  priority: [
    ['1', ['critical', 'p1']],
    ['2', ['high', 'p2']],
    ['3', ['moderate', 'p3']],
    ['4', ['low', 'p4']],
    ['5', ['planning', 'p5']],
  ],
};

/** The value of a choice field given either its value or a standard label ("In Progress", "1 - High"). */
export function choiceValue(field, text) {
  const choices = Object.prototype.hasOwnProperty.call(CHOICE_LABELS, field) ? CHOICE_LABELS[field] : undefined;
  if (!choices) return text;
  const lower = text.trim().replace(/[A-Z]/g, (c) => c.toLowerCase());
  let label = lower;
  const dash = lower.indexOf(' - ');
  if (dash >= 0) {
    const v = lower.slice(0, dash).trim();
    if (choices.some(([value]) => value === v)) label = lower.slice(dash + 3).trim();
  }
  const hit = choices.find(([, labels]) => labels.includes(label));
  return hit ? hit[0] : text;
}

/**
 * A ServiceNow response as a tool result: the Table API JSON on success, else a ToolError the
 * model can explain. `retryAfter` is the response's `Retry-After` header.
 */
export function interpret(status, retryAfter, body) {
  if (status >= 200 && status < 300) {
    let v;
    try {
      v = JSON.parse(body);
    } catch {
      v = undefined;
    }
    if (v === null || typeof v !== 'object' || Array.isArray(v)) {
      throw new ToolError(
        `ServiceNow answered HTTP ${status} with something that is not Table API JSON (the instance may be hibernating or unavailable)`,
      );
    }
    return v;
  }
  const sn = servicenowMessage(body);
  const withSn = (text) => (sn !== undefined ? `${text} (ServiceNow: ${sn})` : text);
  let message;
  if (status === 401) message = withSn('your session has expired, sign in again');
  else if (status === 403) message = withSn('access denied: ServiceNow does not allow you to do this');
  else if (status === 404) message = 'not found or not visible to you';
  else if (status === 429) {
    const when = typeof retryAfter === 'string' ? retryAfter.trim() : '';
    if (when === '') message = 'ServiceNow is rate-limiting your requests; retry in a little while';
    else if (/^[0-9]+$/.test(when)) message = `ServiceNow is rate-limiting your requests; retry in ${when} seconds`;
    else message = `ServiceNow is rate-limiting your requests; retry after ${when}`;
  } else message = withSn(`ServiceNow returned HTTP ${status}`);
  throw new ToolError(message);
}

function servicenowMessage(body) {
  let v;
  try {
    v = JSON.parse(body);
  } catch {
    return undefined;
  }
  const err = v !== null && typeof v === 'object' ? v.error : undefined;
  if (err === null || typeof err !== 'object') return undefined;
  const message = typeof err.message === 'string' ? err.message.trim() : '';
  if (message === '') return undefined;
  const detail = typeof err.detail === 'string' ? err.detail.trim() : '';
  const text = detail !== '' ? `${message}: ${detail}` : message;
  return [...text].slice(0, 300).join('');
}

/**
 * A request that never got a response, as a tool error. `kind` is 'denied' (the host's egress
 * policy refused it) or 'transport'; `detail` says what happened.
 */
export function transportError(kind, detail, planned) {
  const target = planned.url.split('?')[0];
  if (kind === 'denied') {
    return new ToolError(
      `the host's egress policy does not allow this request (${planned.method} ${target}); ask the operator to allow it`,
    );
  }
  if (planned.method !== 'GET') {
    return new ToolError(
      `ServiceNow did not confirm the update (${detail}); it may have been applied: check the record before trying again`,
    );
  }
  return new ToolError(`could not reach ServiceNow (${detail})`);
}
