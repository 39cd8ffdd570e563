/**
 * Integrity of large full-duplex transfers across domains (docs/testing.md tier 2): a host and two
 * simulated guests (policy allows 1↔2), 1 GiB each way at once host↔guest 1 AND guest 1↔guest 2,
 * both transfers running concurrently, every endpoint its own process talking to the daemon of
 * its domain; random data, random write and read sizes, SHA-256 compared on both ends.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { within, type TestDaemon } from '../helpers/daemon-fixture.js';
import { cliStatus, startGuests, startHost, type TestGuest } from '../helpers/guest-fixture.js';
import { PeerProcess } from '../helpers/peer-process.js';
import { seedFromEnv } from '../helpers/prng.js';

const SEED = seedFromEnv(0x6e57);
/** Bytes each way per vchan (KVMCHAN_GUEST_BULK_BYTES overrides, for quick local runs). */
const BYTES = Number(process.env['KVMCHAN_GUEST_BULK_BYTES'] ?? 2 ** 30);
const RING = 2 ** 20;

let host: TestDaemon;
let g1: TestGuest;
let g2: TestGuest;
before(async () => {
  host = await startHost({ guests: 2, guestPairs: [[1, 2]], logLevel: 'warn' });
  [g1, g2] = (await startGuests(host, 2, { logLevel: 'warn' })) as [TestGuest, TestGuest];
});
after(async () => {
  await g1?.stop();
  await g2?.stop();
  await host?.stop();
});

interface Pair {
  what: string;
  server: PeerProcess;
  client: PeerProcess;
  port: number;
  seed: number;
}

/** Server process in `serverDir`'s domain serving `clientDomain`; client process in `clientDir`. */
async function pair(
  what: string,
  serverDir: string,
  serverDomain: number,
  clientDir: string,
  clientDomain: number,
  port: number,
  seed: number,
): Promise<Pair> {
  const server = await PeerProcess.spawn(serverDir);
  const client = await PeerProcess.spawn(clientDir);
  const ls = await server.ok({ op: 'listen', port, domain: clientDomain, readMin: RING, writeMin: RING });
  const cs = await client.ok({ op: 'connect', port, domain: serverDomain, timeout: 10000 });
  await server.ok({ op: 'waitConnected' });
  assert.equal(cs['readSize'], ls['writeSize']);
  assert.equal(cs['writeSize'], ls['readSize']);
  assert.equal(ls['readSize'], RING);
  return { what, server, client, port, seed };
}

async function transfer(p: Pair): Promise<{ ms: number; mibps: number }> {
  const [s, c] = await Promise.all([
    p.server.ok({ op: 'bulk', bytes: BYTES, seed: p.seed }),
    p.client.ok({ op: 'bulk', bytes: BYTES, seed: p.seed + 1 }),
  ]);
  for (const [side, r] of [
    ['server', s],
    ['client', c],
  ] as const) {
    assert.equal(r['sent'], BYTES, `${p.what}: ${side} sent`);
    assert.equal(r['received'], BYTES, `${p.what}: ${side} received`);
  }
  // Different data each way, so a crossed or looped-back stream cannot pass.
  assert.notEqual(s['sentSha'], c['sentSha']);
  assert.equal(c['recvSha'], s['sentSha'], `${p.what}: server → client stream corrupted (seed ${SEED})`);
  assert.equal(s['recvSha'], c['sentSha'], `${p.what}: client → server stream corrupted (seed ${SEED})`);
  const ms = Math.max(Number(s['ms']), Number(c['ms']));
  return { ms, mibps: (2 * BYTES) / 2 ** 20 / (ms / 1000) };
}

test('1 GiB each way at once host↔guest 1 and guest 1↔guest 2, concurrently: SHA-256 matches on every end', async (t) => {
  // Server in guest 1 for the host; server in guest 1 for guest 2 (pair pool).
  const hg = await pair('host↔guest1', g1.runtimeDir, 1, host.runtimeDir, 0, 100, SEED);
  const gg = await pair('guest1↔guest2', g1.runtimeDir, 1, g2.runtimeDir, 2, 101, SEED + 100);
  const peers = [hg.server, hg.client, gg.server, gg.client];
  try {
    const t0 = Date.now();
    const [a, b] = await within(
      Promise.all([transfer(hg), transfer(gg)]),
      240_000,
      `two concurrent ${BYTES}-byte full-duplex transfers (seed ${SEED})`,
    );
    const wall = (Date.now() - t0) / 1000;
    t.diagnostic(`host↔guest1: 2×${BYTES / 2 ** 20} MiB in ${a.ms.toFixed(0)} ms = ${a.mibps.toFixed(0)} MiB/s aggregate`);
    t.diagnostic(`guest1↔guest2: 2×${BYTES / 2 ** 20} MiB in ${b.ms.toFixed(0)} ms = ${b.mibps.toFixed(0)} MiB/s aggregate`);
    t.diagnostic(
      `all four streams (${(4 * BYTES) / 2 ** 30} GiB) in ${wall.toFixed(1)} s wall: ${((4 * BYTES) / 2 ** 20 / wall).toFixed(0)} MiB/s total`,
    );

    // The host daemon's accounting (from the rings' counters) agrees, for both vchans.
    const st = await cliStatus(host.runtimeDir);
    for (const [port, server, client] of [
      [100, 1, 0],
      [101, 1, 2],
    ] as const) {
      const v = st.vchans.find((x) => x.port === port && x.serverDomain === server && x.clientDomain === client);
      assert.ok(v !== undefined, `host status lists the vchan on port ${port}: ${JSON.stringify(st.vchans)}`);
      assert.equal(v.bytesClientToServer, BYTES);
      assert.equal(v.bytesServerToClient, BYTES);
    }
  } finally {
    await Promise.all(peers.map((p) => p.end()));
  }
});
