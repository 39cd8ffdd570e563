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
const BYTES = 1 << 20;

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
    // (s2c_cons = s2c_prod) so that the server always has room to write.
    hostile = spawn(
      python!,
      [
        '-c',
        [
          'import os, fcntl, mmap, struct',
          'm = mmap.mmap(3, 0)',
          "struct.pack_into('<I', m, 72, 1)",
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
          "    struct.pack_into('<I', m, 196, 3)",
          "    struct.pack_into('<I', m, 68, struct.unpack_from('<I', m, 128)[0])",
        ].join('\n'),
      ],
      { stdio: ['ignore', 'pipe', 'inherit', shm, wait] },
    );
    children.push(hostile);
    const ready = new Promise<void>((resolve) => hostile!.stdout!.once('data', () => resolve()));
    await within(ready, 10_000, 'the hostile peer to saturate the counter');
    await within(serverEvent('connected'), 10_000, 'the C server to see its client');
    const done = await within(serverEvent('done'), 60_000, 'the C server to finish its writes (it would hang in a kick)');
    assert.ok(Number(done.bytes) >= BYTES, 'every byte went through');
    console.log(`# ${String(done.calls)} writes and sends (${String(done.bytes)} bytes) against the hostile peer in ${String(done.ms)} ms`);
    for (const fd of r.fds) native.close(fd);
  } finally {
    hostile?.kill('SIGKILL');
    raw.close();
  }
  const exit = await within(
    new Promise<number | null>((resolve) => server.once('close', (code) => resolve(code))),
    10_000,
    'the C server to exit',
  );
  assert.equal(exit, 0);
});
