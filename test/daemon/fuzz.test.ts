/**
 * 50,000 fuzzed local frames (docs/security.md, "Passed fds"): random sizes, valid ids with
 * random payloads, bad sequence numbers, and 0–8 passed fds of six kinds (memfd, eventfd, FIFO,
 * socket, /dev/null, a directory) on many connections. The daemon stays up, answers an honest
 * client, and its fd table comes back to exactly what it was.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { Vchan } from '../../src/client/index.js';
import { native } from '../../src/native.js';
import { Prng, seedFromEnv } from '../helpers/prng.js';
import {
  expectFdsBackTo,
  RawClient,
  rawFrame,
  settledFds,
  sleep,
  startDaemon,
  teardown,
  within,
  type TestDaemon,
} from '../helpers/daemon-fixture.js';

const SEED = seedFromEnv(0xf022f00d);
const FRAMES = 50_000;
const PER_CONNECTION = 200;

let d: TestDaemon;
let work: string;
const passable: number[] = [];

before(async () => {
  d = await startDaemon({ config: { limits: { handshakeTimeoutMs: 2000 } } });
  work = fs.mkdtempSync(path.join(os.tmpdir(), 'kvmchan-fuzz-'));
  const fifo = path.join(work, 'fifo');
  execFileSync('mkfifo', [fifo]);
  const [s1, s2] = native.socketpair('stream');
  passable.push(
    native.memfdCreate('fuzz', 4096, false),
    native.eventfd(0, 0x800 /* EFD_NONBLOCK */),
    fs.openSync(fifo, fs.constants.O_RDWR | fs.constants.O_NONBLOCK),
    s1,
    s2,
    fs.openSync('/dev/null', 'r'),
    fs.openSync(work, 'r'),
  );
});

after(() =>
  teardown(
    () => {
      for (const fd of passable) native.close(fd);
    },
    () => d?.stop(),
    () => fs.rmSync(work, { recursive: true, force: true }),
  ),
);

/** Reads whatever the daemon sent so far without waiting; false once it closed the connection. */
function drain(raw: RawClient): boolean {
  for (;;) {
    let r;
    try {
      r = native.recvmsg(raw.fd, 1 << 16, 16);
    } catch {
      return false;
    }
    if (r === null) return true;
    for (const fd of r.fds) native.close(fd); // a fuzzed SERVER_INIT may really succeed
    if (r.eof) return false;
  }
}

/** Sends, waiting a little while the daemon catches up; false if it is gone or will not read. */
async function send(raw: RawClient, frame: Buffer, fds: number[]): Promise<boolean> {
  for (let tries = 0; tries < 50; tries++) {
    try {
      return raw.send(frame, fds);
    } catch (err) {
      if ((err as { code?: string }).code !== 'EAGAIN') throw err;
      if (!drain(raw)) return false;
      await sleep(2);
    }
  }
  return false; // it stopped reading us (requests in flight): enough for this connection
}

test(`${FRAMES} fuzzed frames with passed fds: the daemon's fds come back exactly`, async (t) => {
  const pid = d.daemon.pid;
  const baseline = await settledFds(pid);
  const rng = new Prng(SEED);
  const ids = [0x0001, 0x0002, 0x0010, 0x0011, 0x0012, 0x0020, 0x0021, 0x0030, 0x8001, 0x7777];
  let sent = 0;
  let cut = 0;
  while (sent < FRAMES) {
    const raw = new RawClient(d.runtimeDir);
    try {
      let seq = rng.next();
      for (let i = 0; i < PER_CONNECTION && sent < FRAMES; i++, sent++) {
        const kind = rng.int(0, 9);
        let frame: Buffer;
        if (kind < 2) {
          frame = Buffer.from(rng.bytes(rng.int(0, 300))); // noise of any size
        } else {
          const id = kind < 8 ? rng.pick(ids) : rng.int(0, 0xffff);
          const payload = Buffer.from(rng.bytes(rng.pick([0, 4, 8, 16, 16, 24, rng.int(0, 512)])));
          const s = rng.int(0, 9) < 7 ? seq : rng.next(); // bad sequence numbers too
          const size = rng.int(0, 9) < 8 ? payload.length : rng.int(0, 0xffff);
          frame = rawFrame(id, s, payload, size);
          if (s === seq) seq = (seq + 1) >>> 0;
        }
        const fds = Array.from({ length: rng.int(0, 8) }, () => rng.pick(passable));
        if (!(await send(raw, frame, fds))) {
          cut++;
          break;
        }
        if ((i & 15) === 15 && !drain(raw)) {
          cut++;
          break;
        }
      }
      drain(raw);
    } finally {
      raw.close();
    }
  }
  t.diagnostic(`${sent} fuzzed frames (seed ${SEED}), ${cut} connections ended by the daemon`);
  assert.ok(cut > 0, 'the fuzzer should make the daemon end connections');
  assert.equal(d.daemon.child.exitCode, null, 'the daemon is still up');
  // An honest client is served, then every fd of the fuzz is gone.
  const s = await within(Vchan.listen({ runtimeDir: d.runtimeDir, port: 77 }), 10_000, 'listen after the fuzz');
  const c = await within(Vchan.connect({ runtimeDir: d.runtimeDir, port: 77, timeout: 10_000 }), 10_000, 'connect after the fuzz');
  await c.send(Buffer.from('ok'));
  assert.equal((await s.recv(2))?.toString(), 'ok');
  c.close();
  s.close();
  await expectFdsBackTo(pid, baseline, 15_000, 'the daemon to hold exactly its fds from before the fuzz');
});
