#!/usr/bin/env -S node --no-warnings
// Cargo runner for wasm32-wasip1: runs a test binary under Node's built-in WASI, with the
// working directory preopened (fixtures are read with std::fs). A panic is a wasm trap: it is
// reported and the exit code is non-zero.
import { readFile } from 'node:fs/promises';
import { WASI } from 'node:wasi';
import { basename } from 'node:path';

const [file, ...args] = process.argv.slice(2);
const wasi = new WASI({
  version: 'preview1',
  args: [basename(file), ...args],
  env: process.env,
  preopens: { '.': process.cwd(), '/': '/' },
  returnOnExit: true,
});
const module = await WebAssembly.compile(await readFile(file));
const instance = await WebAssembly.instantiate(module, wasi.getImportObject());
let code;
try {
  code = wasi.start(instance);
} catch (e) {
  console.error('wasm trap:', e.message);
  code = 134;
}
process.exitCode = code;
