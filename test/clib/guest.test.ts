// The C library inside (simulated) guests: a host kvmchand with simulated domains 1 and 2 and
// their guest daemons, so a C program "runs in" a guest by using that guest daemon's runtime
// dir. Vchans there live in pool slots (a shm descriptor with a non-zero offset) signalled
// through the pool's doorbells: the same library code, a different setup underneath.
// KVMCHAN_GUEST_BYTES sets the bytes per direction (default 64 MiB).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import path from 'node:path';
import { createHash, randomFillSync } from 'node:crypto';
import { Vchan } from '../../src/index.js';
import type { TestDaemon } from '../helpers/daemon-fixture.js';
import { startHost, startGuest, type TestGuest } from '../helpers/guest-fixture.js';
import { buildClibDrivers, testBinDir } from './build-clib.js';

const peerBin = path.join(testBinDir, 'vchan_peer');
const BYTES = Number(process.env['KVMCHAN_GUEST_BYTES'] ?? 64 * 2 ** 20);

let host: TestDaemon;
let guests: TestGuest[] = [];

before(async () => {
  buildClibDrivers();
  host = await startHost({ guests: 2, guestPairs: 'all' });
  guests = [await startGuest(host, 1), await startGuest(host, 2)];
});

after(async () => {
  for (const g of guests) await g.stop();
  await host.stop();
});

interface PeerReport {
  event: string;
  sent: number;
  sent_sha256: string;
  received: number;
  received_sha256: string;
}

/** Runs vchan_peer against the daemon of `runtimeDir`; resolves with its final report. */
function runPeer(runtimeDir: string, args: string[], seed: number, onListening?: () => void): Promise<PeerReport> {
  const child = spawn(peerBin, args, {
    env: { ...process.env, KVMCHAN_RUNTIME_DIR: runtimeDir, KVMCHAN_TEST_SEED: String(seed) },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  return new Promise((resolve, reject) => {
    let report: PeerReport | undefined;
    createInterface({ input: child.stdout }).on('line', (line) => {
      const msg = JSON.parse(line) as PeerReport;
      if (msg.event === 'listening') onListening?.();
      if (msg.event === 'done') report = msg;
    });
    // 'close', not 'exit': the last stdout lines may still be unread when the process exits.
    child.on('close', (code, signal) => {
      if (code === 0 && report !== undefined) resolve(report);
      else reject(new Error(`vchan_peer ${args.join(' ')} exited with ${code ?? signal}: ${stderr}`));
    });
  });
}

/** C server in one domain, C client in another; both directions at once. */
async function cToC(server: { dir: string; domain: number }, client: { dir: string; domain: number }, port: number): Promise<void> {
  const n = String(BYTES);
  let listening!: () => void;
  const up = new Promise<void>((resolve) => (listening = resolve));
  const srv = runPeer(server.dir, ['server', String(client.domain), String(port), n, n, '65536', '65536'], 11, listening);
  await up;
  const cli = runPeer(client.dir, ['client', String(server.domain), String(port), n, n], 22);
  const [s, c] = await Promise.all([srv, cli]);
  assert.equal(s.sent, BYTES);
  assert.equal(c.sent, BYTES);
  assert.equal(c.received_sha256, s.sent_sha256, 'client received what the server sent');
  assert.equal(s.received_sha256, c.sent_sha256, 'server received what the client sent');
}

test('C server in guest 1 ↔ C client on the host', async () => {
  await cToC({ dir: guests[0]!.runtimeDir, domain: 1 }, { dir: host.runtimeDir, domain: 0 }, 5101);
});

test('C server on the host ↔ C client in guest 1', async () => {
  await cToC({ dir: host.runtimeDir, domain: 0 }, { dir: guests[0]!.runtimeDir, domain: 1 }, 5102);
});

test('C server in guest 1 ↔ C client in guest 2', async () => {
  await cToC({ dir: guests[0]!.runtimeDir, domain: 1 }, { dir: guests[1]!.runtimeDir, domain: 2 }, 5103);
});

test('TS server on the host ↔ C client in guest 2, SHA-256 both ways', async () => {
  const port = 5104;
  const v = await Vchan.listen({ port, domain: 2, readMin: 65536, writeMin: 65536, runtimeDir: host.runtimeDir });
  const n = String(BYTES);
  const peer = runPeer(guests[1]!.runtimeDir, ['client', '0', String(port), n, n], 33);
  await v.waitConnected({ timeout: 10_000 });
  const pool = randomFillSync(Buffer.allocUnsafe(1 << 20));
  const sent = createHash('sha256');
  const recv = createHash('sha256');
  await Promise.all([
    (async () => {
      for (let done = 0; done < BYTES;) {
        const k = Math.min(BYTES - done, 1 + ((done * 7919) % 70000));
        const off = done % (pool.length - k);
        const chunk = pool.subarray(off, off + k);
        sent.update(chunk);
        await v.write(chunk);
        done += k;
      }
    })(),
    (async () => {
      const buf = Buffer.allocUnsafe(65536);
      for (let done = 0; done < BYTES;) {
        const k = await v.readInto(buf);
        assert.ok(k > 0, `end of stream after ${done} bytes`);
        recv.update(buf.subarray(0, k));
        done += k;
      }
    })(),
  ]);
  const report = await peer;
  v.close();
  assert.equal(report.received_sha256, sent.digest('hex'));
  assert.equal(report.sent_sha256, recv.digest('hex'));
});
