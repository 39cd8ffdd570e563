/**
 * vchan setup latency across simulated domains, every direction (docs/testing.md, "Benchmarks
 * and targets": p50 ≤ 2 ms between host processes and simulated guests). Measured as
 * server_init → client connected: a client already waits in another process
 * (VCHAN_CLIENT_INIT with a timeout), then this process calls listen() and waits until the
 * client is attached. Was a test; timing belongs to the benchmark (docs/testing.md, "Tiers").
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { Vchan } from '../src/client/index.js';
import { PeerProcess } from '../test/helpers/peer-process.js';
import { quantile, startGuests, startHost, type TestGuest } from '../test/helpers/guest-fixture.js';
import type { Watchdog } from './watchdog.js';

/**
 * `n` setups (after 20 not counted: JIT, pools, sockets): a client in `clientDir`'s domain
 * waits for port p, then this process, in `serverDir`'s domain, listens on p and waits for it.
 * Milliseconds per setup, sorted.
 */
async function measure(
  serverDir: string,
  serverDomain: number,
  clientDir: string,
  clientDomain: number,
  basePort: number,
  n: number,
  dog: Watchdog,
): Promise<number[]> {
  const client = await PeerProcess.spawn(clientDir);
  const out: number[] = [];
  try {
    for (let i = -20; i < n; i++) {
      const port = basePort + i + 20;
      const name = `c${port}`;
      dog.waiting(`setup ${i} of port ${port}: server in domain ${serverDomain}, client in domain ${clientDomain}`);
      const waiting = client.call({ op: 'connect', name, domain: serverDomain, port, timeout: 10000 });
      // Let the request reach the host's registry and wait there (no hook to observe that).
      await sleep(3);
      const t0 = process.hrtime.bigint();
      const server = await Vchan.listen({ runtimeDir: serverDir, domain: clientDomain, port });
      await server.waitConnected({ timeout: 10000 });
      const ms = Number(process.hrtime.bigint() - t0) / 1e6;
      const r = await waiting;
      if (!r.ok) throw new Error(`client in domain ${clientDomain} failed: ${JSON.stringify(r.error)}`);
      if (i >= 0) out.push(ms);
      server.close();
      await client.ok({ op: 'close', name });
      dog.progress();
    }
  } finally {
    await client.end();
  }
  return out.sort((a, b) => a - b);
}

/** Benchmark rows [what, p50, baseline, p99] for host↔guest both ways and guest↔guest. */
export async function crossDomainSetup(n: number, dog: Watchdog): Promise<string[][]> {
  const host = await startHost({ guests: 2, guestPairs: [[1, 2]], logLevel: 'warn' });
  let guests: TestGuest[] = [];
  try {
    guests = await startGuests(host, 2, { logLevel: 'warn' });
    const [g1, g2] = guests as [TestGuest, TestGuest];
    const cases: [string, number[]][] = [
      ['setup: server guest 1, client host', await measure(g1.runtimeDir, 1, host.runtimeDir, 0, 40000, n, dog)],
      ['setup: server host, client guest 1', await measure(host.runtimeDir, 0, g1.runtimeDir, 1, 41000, n, dog)],
      ['setup: server guest 1, client guest 2', await measure(g1.runtimeDir, 1, g2.runtimeDir, 2, 42000, n, dog)],
    ];
    return cases.map(([what, ms]) => [
      `${what} p50 (${ms.length})`,
      `${quantile(ms, 0.5).toFixed(2)} ms`,
      'target 2 ms',
      `p99 ${quantile(ms, 0.99).toFixed(2)} ms`,
    ]);
  } finally {
    for (const g of guests) await g.stop();
    await host.stop();
  }
}
