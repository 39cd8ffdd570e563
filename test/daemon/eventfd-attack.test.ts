// Shared eventfds are hostile (docs/security.md, "Shared eventfds"): O_NONBLOCK belongs to the
// open file description that every holder of a passed fd shares. A client that clears it on its
// vchan's eventfds, saturates their counters and leaves must not freeze the daemon (which tells
// the survivor over its own connection when it marks the vchan dead, and holds no eventfd of a
// connected host vchan) nor the honest peer — and neither must a process
// that keeps clearing the flag while we kick and read.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import { after, before, test } from 'node:test';
import { Vchan } from '../../src/client/index.js';
import { native } from '../../src/native.js';
import { Command } from '../../src/protocol/constants.js';
import { encodeRequest } from '../../src/protocol/codec.js';
import { RawClient, startDaemon, teardown, within, type TestDaemon } from '../helpers/daemon-fixture.js';

const python = ['/usr/bin/python3', '/usr/bin/python3.11'].find((p) => fs.existsSync(p));
const skip = python === undefined ? 'needs /usr/bin/python3 for the hostile fd holder' : false;
const SATURATED = '0xfffffffffffffffe';

let d: TestDaemon;
const children: ChildProcess[] = [];

before(async () => {
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

/** Runs `body` in a python process that holds `fds` as 3, 4, …; resolves with its stdout. */
function hostile(fds: number[], body: string, keepRunning = false): { child: ChildProcess; done: Promise<string>; ready: Promise<void> } {
  const script = [
    'import os, fcntl, sys',
    'def blocking(fd):',
    '    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)',
    body,
  ].join('\n');
  const child = spawn(python!, ['-c', script], { stdio: ['ignore', 'pipe', 'inherit', ...fds] });
  children.push(child);
  let out = '';
  let onReady!: () => void;
  const ready = new Promise<void>((resolve) => (onReady = resolve));
  child.stdout!.on('data', (b: Buffer) => {
    out += b.toString();
    if (out.includes('ready')) onReady();
  });
  const done = new Promise<string>((resolve, reject) => {
    child.once('close', (code, signal) => {
      if (code === 0 || (keepRunning && signal === 'SIGKILL')) resolve(out);
      else reject(new Error(`hostile helper exited ${String(code ?? signal)}`));
    });
  });
  return { child, done, ready };
}

test('a client that makes its eventfds blocking and saturated, then leaves, freezes nobody', { skip }, async () => {
  const port = 4242;
  const server = await Vchan.listen({ runtimeDir: d.runtimeDir, port, domain: 0 });
  const raw = new RawClient(d.runtimeDir);
  try {
    assert.ok(raw.send(encodeRequest(Command.VCHAN_CLIENT_INIT, 1, { serverDomain: 0, port, timeoutMs: 0, flags: 0 })));
    const r = await raw.reply();
    assert.equal(r.err, 0);
    assert.equal(r.fds.length, 3, '[shm, wait, kick]');
    const [shm, wait, kick] = r.fds as [number, number, number];
    // Our wait fd and our kick fd (= the server's wait fd): both blocking, both saturated.
    const h = hostile(
      [wait, kick],
      [
        'for fd in (3, 4):',
        '    blocking(fd)',
        `    os.write(fd, (${SATURATED}).to_bytes(8, 'little'))`,
        'print("ready", flush=True)',
      ].join('\n'),
    );
    await h.done;
    native.close(shm);
    native.close(wait);
    native.close(kick);
  } finally {
    raw.close(); // the daemon marks the vchan dead and tells the server: its wait fd is hostile
  }
  // The honest server sees the end of the stream; the daemon keeps serving and stops on SIGTERM.
  const chunk = await within(server.read(4096), 10_000, 'the honest server to see the peer gone');
  assert.equal(chunk, null, 'end of stream');
  const probe = new RawClient(d.runtimeDir);
  try {
    assert.ok(probe.send(encodeRequest(Command.GET_VERSION, 1, {})));
    assert.equal((await probe.reply(5000)).err, 0, 'the daemon still answers');
  } finally {
    probe.close();
  }
  server.close();
});

test('kicks and reads return while another process keeps clearing O_NONBLOCK', { skip }, async () => {
  const efd = native.eventfd(0, 0x800 /* EFD_NONBLOCK */);
  // The attacker saturates the counter once, then clears O_NONBLOCK in a tight loop.
  const h = hostile(
    [efd],
    [
      'blocking(3)',
      `os.write(3, (${SATURATED}).to_bytes(8, 'little'))`,
      'print("ready", flush=True)',
      'while True:',
      '    blocking(3)',
    ].join('\n'),
    true,
  );
  try {
    await h.ready;
    // A write to a saturated counter would block: each must return (the reader has its wake-up).
    for (let i = 0; i < 2000; i++) native.eventfdWrite(efd, 1);
    assert.equal(native.eventfdRead(efd), Number(BigInt(SATURATED)), 'the attacker’s count, once');
    // Now the counter is 0: a read would block; each must answer "nothing".
    for (let i = 0; i < 2000; i++) assert.equal(native.eventfdRead(efd), null);
  } finally {
    h.child.kill('SIGKILL');
    await h.done;
    native.close(efd);
  }
});
