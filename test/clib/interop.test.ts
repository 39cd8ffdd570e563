// Interop between the C library (libvchan-kvm, through clib/test/vchan_peer) and the
// TypeScript API through a real kvmchand: C server ↔ TS client and TS server ↔ C client,
// full duplex, random chunk sizes, SHA-256 of each direction compared on both sides.
// KVMCHAN_INTEROP_BYTES sets the bytes per direction (default 1 GiB).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomFillSync } from 'node:crypto';
import { createInterface } from 'node:readline';
import path from 'node:path';
import { Vchan } from '../../src/index.js';
import { PrivateDaemon } from '../../src/cli/private-daemon.js';
import { Prng, seedFromEnv } from '../helpers/prng.js';
import { buildClibDrivers, testBinDir } from './build-clib.js';

const peerBin = path.join(testBinDir, 'vchan_peer');
const BYTES = Number(process.env['KVMCHAN_INTEROP_BYTES'] ?? 2 ** 30);
const RING = 65536;

let daemon: PrivateDaemon;

before(async () => {
  buildClibDrivers();
  daemon = await PrivateDaemon.start({});
});

after(async () => {
  await daemon.stop();
});

interface PeerResult {
  sent: number;
  sent_sha256: string;
  received: number;
  received_sha256: string;
  seconds: number;
}

/** Starts vchan_peer; resolves `listening` once a C server exists, `done` with its report. */
function startPeer(args: string[], seed: number): { child: ChildProcess; listening: Promise<void>; done: Promise<PeerResult> } {
  const child = spawn(peerBin, args, {
    env: { ...process.env, KVMCHAN_RUNTIME_DIR: daemon.runtimeDir, KVMCHAN_TEST_SEED: String(seed) },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  let onListening!: () => void;
  const listening = new Promise<void>((resolve) => (onListening = resolve));
  const done = new Promise<PeerResult>((resolve, reject) => {
    let result: PeerResult | undefined;
    createInterface({ input: child.stdout }).on('line', (line) => {
      const msg = JSON.parse(line) as { event: string } & PeerResult;
      if (msg.event === 'listening') onListening();
      if (msg.event === 'done') result = msg;
    });
    // 'close', not 'exit': the last stdout lines may still be unread when the process exits.
    child.on('close', (code, signal) => {
      if (code === 0 && result !== undefined) resolve(result);
      else reject(new Error(`vchan_peer ${args.join(' ')} exited with ${code ?? signal}: ${stderr}`));
    });
  });
  return { child, listening, done };
}

/** The TS side: writes `total` random bytes in random chunks while reading `total` bytes. */
async function pump(v: Vchan, total: number, seed: number): Promise<{ sent: string; received: string }> {
  const rng = new Prng(seed);
  const pool = randomFillSync(Buffer.allocUnsafe(4 << 20));
  const sentHash = createHash('sha256');
  const recvHash = createHash('sha256');
  const writer = async (): Promise<void> => {
    let done = 0;
    while (done < total) {
      const n = Math.min(total - done, rng.pick([rng.int(1, 64), rng.int(1, 5000), rng.int(1, 256 * 1024)]));
      const off = rng.int(0, pool.length - n);
      const chunk = pool.subarray(off, off + n);
      sentHash.update(chunk);
      await v.write(chunk);
      done += n;
    }
  };
  const reader = async (): Promise<void> => {
    const buf = Buffer.allocUnsafe(256 * 1024);
    let done = 0;
    while (done < total) {
      const n = await v.readInto(buf.subarray(0, Math.min(buf.length, total - done)));
      assert.ok(n > 0, `end of stream after ${done} of ${total} bytes`);
      recvHash.update(buf.subarray(0, n));
      done += n;
    }
  };
  await Promise.all([writer(), reader()]);
  return { sent: sentHash.digest('hex'), received: recvHash.digest('hex') };
}

function mib(n: number, seconds: number): string {
  return `${((2 * n) / 2 ** 20 / seconds).toFixed(0)} MiB/s total`;
}

test(`C server ↔ TS client: ${BYTES} bytes each way at once, SHA-256 on both sides`, async () => {
  const seed = seedFromEnv(0xc5e7);
  const port = 41000;
  const peer = startPeer(['server', '0', String(port), String(BYTES), String(BYTES), String(RING), String(RING)], seed);
  await peer.listening;
  const t0 = performance.now();
  const v = await Vchan.connect({ port, runtimeDir: daemon.runtimeDir });
  assert.equal(v.writeSize, RING);
  const ours = await pump(v, BYTES, seed + 1);
  const theirs = await peer.done;
  v.close();
  const secs = (performance.now() - t0) / 1000;
  assert.equal(theirs.received, BYTES);
  assert.equal(theirs.sent, BYTES);
  assert.equal(theirs.received_sha256, ours.sent, 'C received what TS sent');
  assert.equal(theirs.sent_sha256, ours.received, 'TS received what C sent');
  console.log(`# C server <-> TS client: ${mib(BYTES, secs)} in ${secs.toFixed(2)} s`);
});

test(`TS server ↔ C client: ${BYTES} bytes each way at once, SHA-256 on both sides`, async () => {
  const seed = seedFromEnv(0x75e7) + 17;
  const port = 41001;
  const v = await Vchan.listen({ port, readMin: RING, writeMin: RING, runtimeDir: daemon.runtimeDir });
  const t0 = performance.now();
  const peer = startPeer(['client', '0', String(port), String(BYTES), String(BYTES)], seed);
  await v.waitConnected({ timeout: 10_000 });
  const ours = await pump(v, BYTES, seed + 1);
  const theirs = await peer.done;
  v.close();
  const secs = (performance.now() - t0) / 1000;
  assert.equal(theirs.received_sha256, ours.sent, 'C received what TS sent');
  assert.equal(theirs.sent_sha256, ours.received, 'TS received what C sent');
  console.log(`# TS server <-> C client: ${mib(BYTES, secs)} in ${secs.toFixed(2)} s`);
});

test('a C client killed mid-stream: the TS server drains what was sent, then sees end of stream', async () => {
  const port = 41002;
  const v = await Vchan.listen({ port, readMin: RING, writeMin: RING, runtimeDir: daemon.runtimeDir });
  // The C client sends far more than it will live to send, and reads nothing.
  const peer = startPeer(['client', '0', String(port), String(2 ** 40), '0'], 5);
  peer.done.catch(() => undefined);
  await v.waitConnected({ timeout: 10_000 });
  const buf = Buffer.allocUnsafe(RING);
  let got = 0;
  while (got < 4 * RING) got += await v.readInto(buf);
  peer.child.kill('SIGKILL');
  for (;;) {
    const n = await v.readInto(buf);
    if (n < 0) break;
    got += n;
  }
  assert.equal(v.state, 'closed');
  await assert.rejects(v.write(Buffer.from('x')), { code: 'KVMCHAN_E_CLOSED' });
  v.close();
});
