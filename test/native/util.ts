/**
 * Shared helpers of the native addon tests: leak accounting, errno assertions, GC access and
 * child processes that load the addon.
 */
import assert from 'node:assert/strict';
import { spawnSync, type SpawnSyncReturns } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before } from 'node:test';
import { fileURLToPath } from 'node:url';
import v8 from 'node:v8';
import vm from 'node:vm';
import { native, type NativeBinding } from '../../src/native.js';

export function openFdCount(): number {
  return fs.readdirSync('/proc/self/fd').length;
}

/** Open-file flags of `fd` as the kernel reports them (octal in /proc/self/fdinfo). */
export function fdFlags(fd: number): number {
  const info = fs.readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8');
  const m = /^flags:\s+([0-7]+)$/m.exec(info);
  assert.ok(m?.[1] !== undefined, `no flags line in fdinfo of ${fd}`);
  return parseInt(m[1], 8);
}

export const O_NONBLOCK = fs.constants.O_NONBLOCK;
export const O_CLOEXEC = 0o2000000;

export function isOpen(fd: number): boolean {
  return fs.existsSync(`/proc/self/fd/${fd}`);
}

// Spawning once up front lets libuv create its lazily opened, process-lifetime fds (the
// signal pipe) before any snapshot is taken.
spawnSync(process.execPath, ['-e', '0']);

/**
 * Call inside a describe(): asserts that the group closes every fd it opened and releases
 * every mapping it made.
 */
export function checkLeaks(): void {
  let fds = 0;
  let maps = 0;
  before(() => {
    fds = openFdCount();
    maps = native.mappingCount();
  });
  after(() => {
    assert.equal(openFdCount(), fds, 'file descriptors leaked');
    assert.equal(native.mappingCount(), maps, 'mappings leaked');
  });
}

/** Asserts that `fn` throws the errno-style Error of the contract (src/native.ts). */
export function assertErrno(fn: () => unknown, code: string, syscall?: string): void {
  const errno = (os.constants.errno as Record<string, number | undefined>)[code];
  assert.ok(errno !== undefined, `unknown errno name ${code}`);
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof Error, 'not an Error');
    const e = err as NodeJS.ErrnoException;
    assert.equal(e.code, code);
    assert.equal(e.errno, errno);
    if (syscall !== undefined) assert.equal(e.syscall, syscall);
    assert.match(e.message, new RegExp(`^${code}: `));
    return true;
  });
}

export function assertTypeError(fn: () => unknown, code = 'ERR_INVALID_ARG_TYPE'): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof TypeError, `not a TypeError: ${String(err)}`);
    assert.equal((err as NodeJS.ErrnoException).code, code);
    return true;
  });
}

export function assertRangeError(fn: () => unknown): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof RangeError, `not a RangeError: ${String(err)}`);
    assert.equal((err as NodeJS.ErrnoException).code, 'ERR_OUT_OF_RANGE');
    return true;
  });
}

type Fn = (...args: unknown[]) => unknown;

/** Calls an addon function with arguments its TypeScript signature would reject. */
export function callRaw(name: Exclude<keyof NativeBinding, 'Poller'>, ...args: unknown[]): unknown {
  const fn = (native as unknown as Record<string, Fn>)[name];
  assert.ok(fn !== undefined);
  return fn(...args);
}

v8.setFlagsFromString('--expose-gc');
const gcFn = vm.runInNewContext('gc') as () => void;

/** Full GC, then lets the finalizers Node defers to the event loop run. */
export async function collectGarbage(): Promise<void> {
  for (let i = 0; i < 3; i++) {
    gcFn();
    await new Promise((resolve) => setImmediate(resolve));
  }
}

const here = path.dirname(fileURLToPath(import.meta.url));
/** URL of the compiled facade, for child processes (dist/test/native → dist/src/native.js). */
export const nativeModuleUrl = new URL('../../src/native.js', `file://${here}/`).href;

/** An ES module snippet with `native` and `READABLE` in scope, for `node --input-type=module -e`. */
export function childCode(body: string): string {
  return `import { native, READABLE } from ${JSON.stringify(nativeModuleUrl)};\n${body}`;
}

/** Runs an ES module snippet in a child Node process; `native` and `READABLE` are in scope. */
export function runChild(body: string, options: { timeoutMs?: number; nodeFlags?: string[] } = {}): SpawnSyncReturns<string> {
  const code = childCode(body);
  const flags = options.nodeFlags ?? [];
  return spawnSync(process.execPath, [...flags, '--input-type=module', '-e', code], {
    encoding: 'utf8',
    timeout: options.timeoutMs ?? 10000,
  });
}

/** A fresh private directory for socket paths; removed by the returned cleanup. */
export function tempDir(): { dir: string; cleanup: () => void } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kvmchan-native-'));
  return { dir, cleanup: () => fs.rmSync(dir, { recursive: true, force: true }) };
}
