/**
 * vchan setup latency across domains (DESIGN.md §9: p50 ≤ 2 ms between host processes and
 * simulated guests). Measured as server_init → client connected: a client already waits in
 * another process (VCHAN_CLIENT_INIT with a timeout), then this process calls listen() and
 * waits until the client is attached. Reported, not asserted: timing goals are benchmark
 * material, never pass/fail (DESIGN.md §8).
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { Vchan } from '../../src/client/index.js';
import { PeerProcess } from '../helpers/peer-process.js';
import { sleep, type TestDaemon } from '../helpers/daemon-fixture.js';
import { quantile, startGuests, startHost, type TestGuest } from '../helpers/guest-fixture.js';

const N = Number(process.env['KVMCHAN_GUEST_LATENCY_SETUPS'] ?? 300);

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

/**
 * `n` setups: a client in `clientDir`'s domain waits for port p, then this process (in
 * `serverDir`'s domain) listens on p and waits for it. Milliseconds per setup.
 */
async function measure(serverDir: string, serverDomain: number, clientDir: string, clientDomain: number, basePort: number, n: number): Promise<number[]> {
  const client = await PeerProcess.spawn(clientDir);
  const out: number[] = [];
  try {
    for (let i = -20; i < n; i++) {
      // The first 20 warm up (JIT, pools, sockets) and are not counted.
      const port = basePort + i + 20;
      const name = `c${port}`;
      const waiting = client.call({ op: 'connect', name, domain: serverDomain, port, timeout: 10000 });
      // Let the request reach the host's registry and wait there.
      await sleep(3);
      const t0 = process.hrtime.bigint();
      const server = await Vchan.listen({ runtimeDir: serverDir, domain: clientDomain, port });
      await server.waitConnected({ timeout: 10000 });
      const ms = Number(process.hrtime.bigint() - t0) / 1e6;
      const r = await waiting;
      assert.equal(r.ok, true, JSON.stringify(r.error));
      if (i >= 0) out.push(ms);
      server.close();
      await client.ok({ op: 'close', name });
    }
  } finally {
    await client.end();
  }
  return out.sort((a, b) => a - b);
}

function summary(ms: number[]): string {
  return `p50 ${quantile(ms, 0.5).toFixed(2)} ms, p99 ${quantile(ms, 0.99).toFixed(2)} ms, max ${ms[ms.length - 1]!.toFixed(2)} ms (n=${ms.length})`;
}

test(`vchan setup latency across domains, ${N} setups each (server_init → client connected, client waiting in another process)`, async (t) => {
  const hostToGuest = await measure(g1.runtimeDir, 1, host.runtimeDir, 0, 40000, N);
  t.diagnostic(`server in guest 1, client waiting on the host: ${summary(hostToGuest)}`);
  const guestToHost = await measure(host.runtimeDir, 0, g1.runtimeDir, 1, 41000, N);
  t.diagnostic(`server on the host, client waiting in guest 1: ${summary(guestToHost)}`);
  const guestToGuest = await measure(g1.runtimeDir, 1, g2.runtimeDir, 2, 42000, N);
  t.diagnostic(`server in guest 1, client waiting in guest 2: ${summary(guestToGuest)}`);
  const hostToHost = await measure(host.runtimeDir, 0, host.runtimeDir, 0, 43000, N);
  t.diagnostic(`(reference) host processes only: ${summary(hostToHost)}`);
  for (const l of [hostToGuest, guestToHost, guestToGuest, hostToHost]) assert.equal(l.length, N);
});
