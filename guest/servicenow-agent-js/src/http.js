// Outbound HTTP on the raw wasi:http bindings (not `fetch`): StarlingMonkey's `fetch` turns
// every wasi:http error code into "NetworkError when attempting to fetch resource", and the
// agent must tell a denial by the host's egress policy (`HTTP-request-denied`) from a network
// failure, as the Rust SDK does. No credentials: the host attaches them.

import { handle } from 'wasi:http/outgoing-handler@0.2.12';
import { Fields, OutgoingBody, OutgoingRequest } from 'wasi:http/types@0.2.12';

/** Thrown when no response arrived: `kind` is 'denied', 'invalid' or 'transport'. */
export class HttpError extends Error {
  constructor(kind, message) {
    super(message);
    this.kind = kind;
  }
}

const enc = new TextEncoder();
const dec = new TextDecoder();

function codeError(code) {
  const tag = code && typeof code === 'object' ? code.tag : String(code);
  return tag === 'HTTP-request-denied' ? new HttpError('denied', tag) : new HttpError('transport', tag);
}

function payloadOf(e) {
  return e && typeof e === 'object' && Object.prototype.hasOwnProperty.call(e, 'payload') ? e.payload : e;
}

/** Sends `{method, url, headers, body}`; resolves to `{status, headers: Map, body: string}`. */
export function send({ method, url, headers = {}, body }) {
  let u;
  try {
    u = new URL(url);
  } catch {
    throw new HttpError('invalid', `invalid URL: ${url}`);
  }
  let fields;
  try {
    fields = Fields.fromList(Object.entries(headers).map(([k, v]) => [k, enc.encode(v)]));
  } catch (e) {
    throw new HttpError('invalid', `header refused: ${JSON.stringify(payloadOf(e))}`);
  }
  const req = new OutgoingRequest(fields);
  const known = ['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'CONNECT', 'OPTIONS', 'TRACE', 'PATCH'];
  req.setMethod(known.includes(method) ? { tag: method.toLowerCase() } : { tag: 'other', val: method });
  req.setScheme(u.protocol === 'https:' ? { tag: 'HTTPS' } : { tag: 'HTTP' });
  req.setAuthority(u.host);
  req.setPathWithQuery(`${u.pathname}${u.search}`);
  const outBody = req.body();
  let future;
  try {
    future = handle(req, undefined);
  } catch (e) {
    throw codeError(payloadOf(e));
  }
  const stream = outBody.write();
  if (body !== undefined) {
    const bytes = enc.encode(body);
    for (let i = 0; i < bytes.length; i += 4096) stream.blockingWriteAndFlush(bytes.subarray(i, i + 4096));
  }
  stream[Symbol.dispose]?.();
  try {
    OutgoingBody.finish(outBody, undefined);
  } catch (e) {
    throw codeError(payloadOf(e));
  }
  future.subscribe().block();
  const got = future.get();
  if (got === undefined || got.tag === 'err') throw new HttpError('transport', 'response unavailable');
  if (got.val.tag === 'err') throw codeError(got.val.val);
  const resp = got.val.val;
  const respHeaders = new Map();
  for (const [k, v] of resp.headers().entries()) respHeaders.set(k.toLowerCase(), dec.decode(v));
  const incoming = resp.consume();
  const input = incoming.stream();
  const chunks = [];
  for (;;) {
    try {
      chunks.push(input.blockingRead(65536n));
    } catch (e) {
      const p = payloadOf(e);
      if (p && p.tag === 'closed') break;
      throw new HttpError('transport', p && p.tag === 'last-operation-failed' ? p.val.toDebugString() : String(p));
    }
  }
  input[Symbol.dispose]?.();
  const total = chunks.reduce((n, c) => n + c.length, 0);
  const all = new Uint8Array(total);
  let at = 0;
  for (const c of chunks) {
    all.set(c, at);
    at += c.length;
  }
  return { status: resp.status(), headers: respHeaders, body: dec.decode(all) };
}
