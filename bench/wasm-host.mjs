#!/usr/bin/env -S node --no-warnings
// A minimal proxy-wasm host (ABI 0.2.1) in JavaScript, to run a filter module in V8 without
// Envoy: it plays whole HTTP exchanges through the module's callbacks, counts host calls, and
// times them. With `node --cpu-prof` it shows where the module spends its time (build with
// `--profile profiling` to keep function names).
//
//   node bench/wasm-host.mjs MODULE.wasm [--config JSON] [--scenario chat-1k|sse-20|sse-20-strip] [--n 2000]
// Environment: WASM_HOST_LOG=1 prints the module's log lines; WASM_HOST_REAL_CLOCK=1 gives it
// the real clock (e.g. the reference filter's "timing" mode).
import { readFile } from 'node:fs/promises';
import { WASI } from 'node:wasi';

const args = Object.fromEntries(process.argv.slice(3).reduce((acc, v, i, a) => (v.startsWith('--') ? acc.push([v.slice(2), a[i + 1]]) : acc, acc), []));
const file = process.argv[2];
const config = new TextEncoder().encode(args.config ?? '{}');
const scenario = args.scenario ?? 'chat-1k';
const n = Number(args.n ?? 2000);

const enc = new TextEncoder();
const dec = new TextDecoder();
const calls = {};
const count = (name) => { calls[name] = (calls[name] ?? 0) + 1; };

let inst, mem;
const u8 = () => new Uint8Array(mem.buffer);
const dv = () => new DataView(mem.buffer);
const str = (ptr, len) => dec.decode(u8().subarray(ptr, ptr + len));
const give = (bytes, ptrPtr, sizePtr) => {
  const ptr = inst.exports.proxy_on_memory_allocate(bytes.length);
  u8().set(bytes, ptr);
  dv().setUint32(ptrPtr, ptr, true);
  dv().setUint32(sizePtr, bytes.length, true);
  return 0;
};

// Shared data (one VM here): key → {value, cas}.
const shared = new Map();
let casCounter = 0;

// Per-exchange state.
let reqHeaders, respHeaders, reqBody, respChunk, props, now = 1e9;
const headerMap = (t) => (t === 0 ? reqHeaders : t === 2 ? respHeaders : new Map());

const env = {
  proxy_log: (lvl, p, l) => { count('log'); if (process.env.WASM_HOST_LOG) console.error(str(p, l)); return 0; },
  proxy_get_log_level: (p) => { dv().setUint32(p, 2, true); return 0; },
  proxy_get_current_time_nanoseconds: (p) => {
    count('time');
    // WASM_HOST_REAL_CLOCK=1: the real clock (for modules that time themselves).
    dv().setBigUint64(p, process.env.WASM_HOST_REAL_CLOCK ? process.hrtime.bigint() : BigInt(Math.round(now)), true);
    return 0;
  },
  proxy_set_tick_period_milliseconds: () => 0,
  proxy_get_buffer_bytes: (type, start, max, pp, sp) => {
    count('get_buffer');
    const b = type === 0 ? reqBody : type === 1 ? respChunk : type === 7 ? config : new Uint8Array();
    return give(b.subarray(start >>> 0, Math.min(b.length, (start >>> 0) + (max >>> 0))), pp, sp);
  },
  proxy_set_buffer_bytes: (type, start, size, p, l) => {
    count('set_buffer');
    const v = u8().slice(p, p + l);
    if (type === 0) reqBody = v; else if (type === 1) respChunk = v;
    return 0;
  },
  proxy_get_header_map_value: (t, kp, kl, pp, sp) => {
    count('get_header');
    const v = headerMap(t).get(str(kp, kl));
    return v === undefined ? 1 : give(enc.encode(v), pp, sp);
  },
  proxy_replace_header_map_value: (t, kp, kl, vp, vl) => { count('set_header'); headerMap(t).set(str(kp, kl), str(vp, vl)); return 0; },
  proxy_remove_header_map_value: (t, kp, kl) => { count('set_header'); headerMap(t).delete(str(kp, kl)); return 0; },
  proxy_add_header_map_value: (t, kp, kl, vp, vl) => { count('set_header'); headerMap(t).set(str(kp, kl), str(vp, vl)); return 0; },
  proxy_get_header_map_pairs: (t, pp, sp) => {
    count('get_headers');
    const entries = [...headerMap(t)].map(([k, v]) => [enc.encode(k), enc.encode(v)]);
    const size = 4 + entries.length * 8 + entries.reduce((n, [k, v]) => n + k.length + v.length + 2, 0);
    const out = new Uint8Array(size);
    const view = new DataView(out.buffer);
    view.setUint32(0, entries.length, true);
    let at = 4;
    for (const [k, v] of entries) { view.setUint32(at, k.length, true); view.setUint32(at + 4, v.length, true); at += 8; }
    for (const [k, v] of entries) { out.set(k, at); at += k.length + 1; out.set(v, at); at += v.length + 1; }
    return give(out, pp, sp);
  },
  proxy_set_header_map_pairs: () => 0,
  proxy_get_property: (p, l, pp, sp) => { count('get_property'); const v = props.get(str(p, l)); return v === undefined ? 1 : give(enc.encode(v), pp, sp); },
  proxy_set_property: (p, l, vp, vl) => { count('set_property'); props.set(str(p, l), str(vp, vl)); return 0; },
  proxy_send_local_response: () => { count('local_reply'); return 0; },
  proxy_define_metric: (t, p, l, idp) => { count('define_metric'); dv().setUint32(idp, 1, true); return 0; },
  proxy_increment_metric: () => { count('metric'); return 0; },
  proxy_record_metric: () => { count('metric'); return 0; },
  proxy_get_metric: () => 0,
  proxy_get_shared_data: (kp, kl, pp, sp, casp) => {
    count('get_shared');
    const e = shared.get(str(kp, kl));
    if (e === undefined) return 1;
    dv().setUint32(casp, e.cas, true);
    return give(e.value, pp, sp);
  },
  proxy_set_shared_data: (kp, kl, vp, vl, cas) => {
    count('set_shared');
    const k = str(kp, kl), e = shared.get(k);
    if (e !== undefined && cas !== 0 && e.cas !== cas) return 8;
    shared.set(k, { value: u8().slice(vp, vp + vl), cas: ++casCounter });
    return 0;
  },
  proxy_continue_stream: () => 0,
  proxy_close_stream: () => 0,
  proxy_done: () => 0,
};
const envProxy = new Proxy(env, { get: (t, k) => t[k] ?? (() => { count(`unexpected:${String(k)}`); return 2; }) });

const wasi = new WASI({ version: 'preview1', args: [], env: {}, returnOnExit: true });
const module = await WebAssembly.compile(await readFile(file));
inst = await WebAssembly.instantiate(module, { env: envProxy, wasi_snapshot_preview1: wasi.getImportObject().wasi_snapshot_preview1 });
mem = inst.exports.memory;
wasi.initialize(inst);
const x = inst.exports;
x.proxy_on_context_create(1, 0);
x.proxy_on_vm_start?.(1, 0);
if (!x.proxy_on_configure(1, config.length)) throw new Error('configuration refused');

const chatBody = enc.encode(JSON.stringify({ model: 'gpt-4.1', messages: [{ role: 'system', content: 'You are a helpful assistant.' }, { role: 'user', content: 'The gateway reads each request once. '.repeat(25) }] }));
const jsonResponse = await readFile(new URL('../tests/fixtures/responses/openai/chat.json', import.meta.url));
const sse = await readFile(new URL('../tests/fixtures/responses/openai/chat-stream-20.sse', import.meta.url));
const sseEvents = dec.decode(sse).split('\n\n').filter((e) => e.trim()).map((e) => enc.encode(e + '\n\n'));
// sse-20: the client asked for usage (observed); sse-20-strip: it did not (injected, stripped).
const streamBody = enc.encode(JSON.stringify({ model: 'gpt-4o-mini', stream: true, ...(scenario === 'sse-20-strip' ? {} : { stream_options: { include_usage: true } }), messages: [{ role: 'user', content: 'Explain streaming.' }] }));

let ctx = 2;
function exchange() {
  const id = ctx++;
  const stream = scenario.startsWith('sse');
  reqBody = stream ? streamBody : chatBody;
  reqHeaders = new Map([[':method', 'POST'], [':path', '/v1/chat/completions'], [':authority', 'gw'], ['content-type', 'application/json'], ['content-length', String(reqBody.length)], ['authorization', 'Bearer sk-bench']]);
  respHeaders = new Map([[':status', '200'], ['content-type', stream ? 'text/event-stream' : 'application/json']]);
  props = new Map([['xds\0route_name', 'llm']]);
  x.proxy_on_context_create(id, 1);
  x.proxy_on_request_headers(id, 5, 0);
  x.proxy_on_request_body(id, reqBody.length, 1);
  x.proxy_on_response_headers(id, 2, 0);
  const chunks = stream ? sseEvents : [jsonResponse];
  chunks.forEach((c, i) => { now += 1e6; respChunk = c; x.proxy_on_response_body(id, c.length, i === chunks.length - 1 ? 1 : 0); });
  x.proxy_on_log(id);
  x.proxy_on_done(id);
  x.proxy_on_delete(id);
}

for (let i = 0; i < 200; i++) exchange(); // warm up (V8 tiers up)
for (const k of Object.keys(calls)) delete calls[k];
const t0 = process.hrtime.bigint();
for (let i = 0; i < n; i++) exchange();
const us = Number(process.hrtime.bigint() - t0) / 1e3 / n;
const perExchange = Object.fromEntries(Object.entries(calls).map(([k, v]) => [k, +(v / n).toFixed(2)]));
console.log(JSON.stringify({ module: file.split('/').pop(), scenario, us_per_exchange: +us.toFixed(2), host_calls_per_exchange: perExchange }));
