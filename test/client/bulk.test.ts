/**
 * Integrity of large full-duplex transfers between two real processes through the real
 * daemon (docs/testing.md tier 2): random data, random write and read sizes across every wrap
 * point, SHA-256 compared end to end in both directions at once.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { startDaemon, teardown, within, type TestDaemon } from '../helpers/daemon-fixture.js';
import { PeerProcess } from '../helpers/peer-process.js';
import { seedFromEnv } from '../helpers/prng.js';

let d: TestDaemon;
before(async () => {
  d = await startDaemon();
});
after(() => teardown(() => d?.stop()));

const SEED = seedFromEnv(0x5eed1);

async function duplex(
  port: number,
  bytes: number,
  readMin: number,
  writeMin: number,
  timeoutMs: number,
): Promise<{ mbps: number; ms: number }> {
  const server = await PeerProcess.spawn(d.runtimeDir);
  const client = await PeerProcess.spawn(d.runtimeDir);
  try {
    const ls = await server.ok({ op: 'listen', port, readMin, writeMin });
    const cs = await client.ok({ op: 'connect', port, timeout: 5000 });
    assert.equal(cs['readSize'], ls['writeSize']);
    assert.equal(cs['writeSize'], ls['readSize']);
    const [s, c] = await within(
      Promise.all([server.ok({ op: 'bulk', bytes, seed: SEED }), client.ok({ op: 'bulk', bytes, seed: SEED + 1 })]),
      timeoutMs,
      `full-duplex transfer of ${bytes} bytes each way (seed ${SEED})`,
    );
    assert.equal(s['sent'], bytes);
    assert.equal(c['received'], bytes);
    assert.equal(c['sent'], bytes);
    assert.equal(s['received'], bytes);
    // Different data each way, so a crossed or looped-back stream cannot pass.
    assert.notEqual(s['sentSha'], c['sentSha']);
    assert.equal(c['recvSha'], s['sentSha'], 'server → client stream corrupted');
    assert.equal(s['recvSha'], c['sentSha'], 'client → server stream corrupted');
    const ms = Math.max(Number(s['ms']), Number(c['ms']));
    return { ms, mbps: (2 * bytes) / 2 ** 20 / (ms / 1000) };
  } finally {
    await Promise.all([server.end(), client.end()]);
  }
}

test('1 GiB each way at once, 1 MiB rings, random chunk sizes: SHA-256 matches on both ends', async (t) => {
  const r = await duplex(100, 2 ** 30, 2 ** 20, 2 ** 20, 120_000);
  t.diagnostic(`2 GiB moved in ${r.ms.toFixed(0)} ms: ${r.mbps.toFixed(0)} MiB/s aggregate`);
});

test('32 MiB each way at once through small asymmetric rings (1 KiB / 8 KiB): every write spans many wraps', async (t) => {
  const r = await duplex(101, 32 * 2 ** 20, 128, 8192, 60_000);
  t.diagnostic(`64 MiB moved in ${r.ms.toFixed(0)} ms: ${r.mbps.toFixed(0)} MiB/s aggregate`);
});
