// Builds the component: node build.mjs [out.wasm]
// (default: <repo>/target/wasm-guests/js/servicenow_agent_js.wasm). Run `npm ci` first.
import { componentize } from '@bytecodealliance/componentize-js';
import { mkdir, writeFile } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const repo = resolve(here, '../..');
const out = resolve(process.argv[2] ?? resolve(repo, 'target/wasm-guests/js/servicenow_agent_js.wasm'));
const started = Date.now();
const { component } = await componentize({
  sourcePath: resolve(here, 'src/index.js'),
  witPath: resolve(repo, 'wit'),
  worldName: 'agent',
  // The agent calls wasi:http/outgoing-handler itself (src/http.js) and serves no incoming
  // requests, so StarlingMonkey's fetch-event handler (wasi:http/incoming-handler) is left out.
  disableFeatures: ['fetch-event'],
});
await mkdir(dirname(out), { recursive: true });
await writeFile(out, component);
console.log(`wrote ${out}: ${component.length} bytes in ${((Date.now() - started) / 1000).toFixed(1)} s`);
