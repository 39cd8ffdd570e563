/**
 * Scale and leaks (docs/testing.md: tier 2, the scale targets): 1,000 concurrent vchans all moving data,
 * then 200 back-to-back open/transfer/close cycles (the qrexec burst pattern), with the
 * daemon's fds and RSS and this process's fds and mappings checked before and after.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { Vchan } from '../../src/client/index.js';
import { fetchStatus } from '../../src/cli/commands/status.js';
import { EndpointState } from '../../src/protocol/constants.js';
import { native } from '../../src/native.js';
import { Pattern } from '../helpers/pattern.js';
import { PeerProcess } from '../helpers/peer-process.js';
import { expectFdsBackTo, fdCount, rssKiB, settledFds, startDaemon, teardown, within, type TestDaemon } from '../helpers/daemon-fixture.js';

const MiB = 1024;

let d: TestDaemon;
let peer: PeerProcess;
before(async () => {
  d = await startDaemon({ logLevel: 'warn' });
  peer = await PeerProcess.spawn(d.runtimeDir);
});
after(() =>
  teardown(
    () => peer?.end(),
    () => d?.stop(),
  ),
);

test('1,000 concurrent vchans between two processes, all transferring; everything released afterwards', async (t) => {
  const N = 1000;
  const BASE = 10000;
  const BYTES = 1024;
  const daemonFds = await settledFds(d.daemon.pid);
  const rss0 = rssKiB(d.daemon.pid);
  const servers: Vchan[] = [];
  const t0 = Date.now();
  try {
    for (let i = 0; i < N; i += 100) {
      servers.push(
        ...(await Promise.all(
          Array.from({ length: Math.min(100, N - i) }, (_, k) =>
            Vchan.listen({ runtimeDir: d.runtimeDir, port: BASE + i + k, readMin: 4096, writeMin: 4096 }),
          ),
        )),
      );
    }
    await within(peer.ok({ op: 'connectMany', basePort: BASE, count: N }), 60000, 'the client process to connect 1000 vchans');
    await Promise.all(servers.map((s) => s.waitConnected({ timeout: 10000 })));
    const setupMs = Date.now() - t0;

    // Every vchan carries its own data both ways at the same time.
    const echo = peer.ok({ op: 'echoMany', bytes: BYTES });
    await within(
      Promise.all(
        servers.map(async (s) => {
          const mine = new Pattern(s.port).slice(0, BYTES);
          await s.write(mine);
          const back = await s.recv(BYTES);
          assert.ok(back !== null && back.equals(mine), `vchan on port ${s.port} echoed the wrong bytes`);
        }),
      ),
      60000,
      '1000 echoes',
    );
    await echo;

    const st = await fetchStatus(d.runtimeDir); // pages through LIST_VCHANS (341 per reply)
    const ours = st.vchans.filter((v) => v.port >= BASE && v.port < BASE + N);
    assert.equal(ours.length, N, 'LIST_VCHANS (paged) should report all 1000 vchans');
    assert.equal(new Set(ours.map((v) => v.handle)).size, N, 'handles are unique');
    for (const v of ours) {
      assert.equal(v.serverState, EndpointState.CONNECTED);
      assert.equal(v.clientState, EndpointState.CONNECTED);
      assert.equal(v.bytesServerToClient, BYTES);
      assert.equal(v.bytesClientToServer, BYTES);
    }
    assert.equal(st.domains.find((x) => x.domain === 0)?.vchans, N);
    const peakFds = fdCount(d.daemon.pid);
    const growthMiB = (rssKiB(d.daemon.pid) - rss0) / MiB;
    t.diagnostic(
      `1000 vchans set up in ${setupMs} ms; daemon holds ${peakFds - daemonFds.size} more fds, RSS +${growthMiB.toFixed(1)} MiB`,
    );
    assert.ok(growthMiB < 50, `daemon RSS grew by ${growthMiB.toFixed(1)} MiB for 1000 vchans (limit 50)`);
    // A connected host↔host vchan costs the daemon its two connections and nothing else: the
    // memfd and eventfds went to the client at attach (docs/pools.md §1). A few fds of slack
    // for the daemon's own transient ones.
    const extra = peakFds - daemonFds.size;
    assert.ok(extra <= 2 * N + 16, `the daemon holds ${extra} more fds for ${N} connected vchans (${2 * N} connections)`);
  } finally {
    for (const s of servers) s.close();
    await peer.call({ op: 'closeMany' });
  }
  await expectFdsBackTo(d.daemon.pid, daemonFds, 10000, 'the daemon to release all 1000 vchans');
  const after = await fetchStatus(d.runtimeDir);
  assert.equal(after.vchans.length, 0);
  const res = await peer.ok({ op: 'resources' });
  assert.equal(res['mappings'], 0, 'the client process still maps vchan memory');
});

test('200 back-to-back open/transfer/close cycles leak no fds, mappings or memory', async (t) => {
  const cycle = async (port: number, latencies?: number[]): Promise<void> => {
    const t0 = process.hrtime.bigint();
    const server = await Vchan.listen({ runtimeDir: d.runtimeDir, port, readMin: 16384, writeMin: 16384 });
    const client = await Vchan.connect({ runtimeDir: d.runtimeDir, port, timeout: 5000 });
    await server.waitConnected({ timeout: 5000 });
    latencies?.push(Number(process.hrtime.bigint() - t0) / 1e6);
    const data = new Pattern(port).slice(0, 10000);
    await server.write(data);
    const got = await client.recv(10000);
    assert.ok(got !== null && got.equals(data), `cycle on port ${port}: data corrupted`);
    await client.send(got);
    assert.ok((await server.recv(10000))?.equals(data));
    client.close();
    assert.equal(await server.read(), null, 'server sees end of stream after the client closed');
    server.close();
  };
  // Warm up (JIT, buffer pools, the daemon's heap), then take the baselines.
  for (let i = 0; i < 20; i++) await cycle(20000 + i);
  const daemonFds = await settledFds(d.daemon.pid);
  const daemonRss = rssKiB(d.daemon.pid);
  const selfFds = await settledFds('self');
  const mappings = native.mappingCount();

  const latencies: number[] = [];
  for (let i = 0; i < 200; i++) await cycle(30000 + i, latencies);

  await expectFdsBackTo(d.daemon.pid, daemonFds, 5000, 'the daemon to hold the same fds after 200 cycles');
  await expectFdsBackTo('self', selfFds, 5000, 'this process to hold the same fds after 200 cycles');
  assert.equal(native.mappingCount(), mappings, 'vchan mappings leaked in this process');
  const growthMiB = (rssKiB(d.daemon.pid) - daemonRss) / MiB;
  latencies.sort((a, b) => a - b);
  const p = (q: number): string => latencies[Math.floor(q * (latencies.length - 1))]!.toFixed(2);
  t.diagnostic(
    `setup (listen → connected, same process): p50 ${p(0.5)} ms, p99 ${p(0.99)} ms; daemon RSS ${growthMiB >= 0 ? '+' : ''}${growthMiB.toFixed(1)} MiB over 200 cycles`,
  );
  assert.ok(growthMiB < 50, `daemon RSS grew by ${growthMiB.toFixed(1)} MiB over 200 cycles`);
  assert.equal((await fetchStatus(d.runtimeDir)).vchans.length, 0);
});
