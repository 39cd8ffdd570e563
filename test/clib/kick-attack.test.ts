// Shared eventfds are hostile to the C library too (docs/security.md, "Shared eventfds"): a ring
// peer clears O_NONBLOCK on the eventfd the honest C side kicks (the flag belongs to the open
// file description both hold), saturates its counter and keeps asking for kicks. Every
// non-blocking libvchan_write()/libvchan_send() of the honest side must still return.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { after, before, test } from 'node:test';
import { native } from '../../src/native.js';
import { Command } from '../../src/protocol/constants.js';
import { encodeRequest } from '../../src/protocol/codec.js';
import { RawClient, startDaemon, teardown, within, type TestDaemon } from '../helpers/daemon-fixture.js';
import { buildClibDrivers, testBinDir } from './build-clib.js';

const python = ['/usr/bin/python3', '/usr/bin/python3.11'].find((p) => fs.existsSync(p));
const skip = python === undefined ? 'needs /usr/bin/python3 for the hostile peer' : false;
const kicker = path.join(testBinDir, 'vchan_kicker');
const BYTES = 1 << 18; // 16 Ki writes of 16 bytes: a few seconds of 20 ms stalls, even under load

let d: TestDaemon;
const children: ChildProcess[] = [];

before(async () => {
  buildClibDrivers();
  d = await startDaemon();
});
after(() =>
  teardown(
    () => {
      for (const c of children) c.kill('SIGKILL');
    },
    () => d?.stop(),
  ),
);

/** Resolves each JSON line's `event` as it appears on `child`'s stdout. */
function events(child: ChildProcess): (name: string) => Promise<Record<string, unknown>> {
  const seen = new Map<string, Record<string, unknown>>();
  const waiters = new Map<string, (v: Record<string, unknown>) => void>();
  createInterface({ input: child.stdout! }).on('line', (line) => {
    const ev = JSON.parse(line) as Record<string, unknown>;
    const name = String(ev.event);
    seen.set(name, ev);
    waiters.get(name)?.(ev);
  });
  return (name) => {
    const ev = seen.get(name);
    return ev !== undefined ? Promise.resolve(ev) : new Promise((resolve) => waiters.set(name, resolve));
  };
}

test('a C writer keeps returning while its peer makes the kick eventfd blocking and saturated', { skip }, async () => {
  const port = 7311;
  const server = spawn(kicker, ['0', String(port), String(BYTES)], {
    env: { ...process.env, KVMCHAN_RUNTIME_DIR: d.runtimeDir },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  children.push(server);
  const serverEvent = events(server);
  const serverExit = new Promise<number | string | null>((resolve) => server.once('close', (code, signal) => resolve(code ?? signal)));
  await within(serverEvent('listening'), 10_000, 'the C server to listen');

  const raw = new RawClient(d.runtimeDir);
  let hostile: ChildProcess | undefined;
  try {
    assert.ok(raw.send(encodeRequest(Command.VCHAN_CLIENT_INIT, 1, { serverDomain: 0, port, timeoutMs: 0, flags: 0 })));
    const r = await raw.reply();
    assert.equal(r.err, 0);
    assert.equal(r.fds.length, 3, '[shm, wait, kick]');
    const [shm, wait] = r.fds as [number, number, number];
    // The hostile client: attaches (client_state at 64+8, docs/ring-protocol.md §2), saturates
    // the eventfd the server kicks (our wait fd), then for ever: clears O_NONBLOCK on it, asks
    // the server for a kick on every write (server_notify at 196) and consumes everything
    // (s2c_cons at 68 = s2c_prod at 128) so that the server always has room to write. The
    // indices are read and written as whole 32-bit words (a memoryview of native 'I' items):
    // struct's '<I' copies byte by byte, and a torn s2c_cons is a corrupt ring, which the
    // server rightly reports as EPROTO — that is not the attack under test.
    hostile = spawn(
      python!,
      [
        '-c',
        [
          'import os, fcntl, mmap, sys',
          'm = mmap.mmap(3, 0)',
          "w = memoryview(m).cast('I')",
          "assert sys.byteorder == 'little'",
          'w[72 // 4] = 1',
          'fl = fcntl.fcntl(4, fcntl.F_GETFL)',
          'fcntl.fcntl(4, fcntl.F_SETFL, fl | os.O_NONBLOCK)',
          'try:',
          '    os.read(4, 8)',
          'except BlockingIOError:',
          '    pass',
          "os.write(4, (0xfffffffffffffffe).to_bytes(8, 'little'))",
          'print("ready", flush=True)',
          'while True:',
          '    fcntl.fcntl(4, fcntl.F_SETFL, fl & ~os.O_NONBLOCK)',
          '    w[196 // 4] = 3',
          '    w[68 // 4] = w[128 // 4]',
        ].join('\n'),
      ],
      { stdio: ['ignore', 'pipe', 'inherit', shm, wait] },
    );
    children.push(hostile);
    const ready = new Promise<void>((resolve) => hostile!.stdout!.once('data', () => resolve()));
    await within(ready, 10_000, 'the hostile peer to saturate the counter');
    await within(serverEvent('connected'), 10_000, 'the C server to see its client');
    // A server that exits before 'done' (a failed write) fails the test at once, not after 60 s.
    const done = await within(
      Promise.race([
        serverEvent('done'),
        serverExit.then((code) => {
          throw new Error(`the C server exited (${String(code)}) before finishing its writes`);
        }),
      ]),
      60_000,
      'the C server to finish its writes (it would hang in a kick)',
    );
    assert.ok(Number(done.bytes) >= BYTES, 'every byte went through');
    console.log(`# ${String(done.calls)} writes and sends (${String(done.bytes)} bytes) against the hostile peer in ${String(done.ms)} ms`);
    for (const fd of r.fds) native.close(fd);
  } finally {
    hostile?.kill('SIGKILL');
    raw.close();
  }
  const exit = await within(serverExit, 10_000, 'the C server to exit');
  assert.equal(exit, 0);
});
