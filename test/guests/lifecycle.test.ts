/**
 * Guest lifecycle and scale: a guest daemon killed with SIGKILL — the host cleans
 * up (host peers see end of stream, status no longer lists the guest's vchans) and a restarted
 * guest daemon gets a working control channel again; and 1,000 vchans across domains, with
 * pools added ahead of demand and announced, then all closed.
 *
 * This test process plays applications in several domains: it passes the host's runtime dir
 * for a host application and a guest daemon's for a guest application.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { Vchan } from '../../src/client/index.js';
import { DaemonUnavailableError } from '../../src/errors.js';
import { within, waitFor, type TestDaemon } from '../helpers/daemon-fixture.js';
import { cliStatus, logged, poolsCreated, startGuest, startHost, type TestGuest } from '../helpers/guest-fixture.js';
import { sleep } from '../helpers/wait.js';

let host: TestDaemon;
let g1: TestGuest | undefined;
let g2: TestGuest | undefined;

before(async () => {
  // 256-vector pools so 1,000 vchans need a handful of pools, not the per-domain maximum.
  host = await startHost({ guests: 2, guestPairs: [[1, 2]], config: { pools: { poolVectors: 256 } } });
  g1 = await startGuest(host, 1);
  g2 = await startGuest(host, 2);
});
after(async () => {
  await g1?.stop();
  await g2?.stop();
  await host?.stop();
});

test('guest daemon SIGKILLed: host peers see end of stream, status forgets its vchans, a restarted daemon works', async () => {
  const guest = g1!;
  // A guest server with a host client, and a host server with a guest client.
  const gs = await Vchan.listen({ port: 700, domain: 0, runtimeDir: guest.runtimeDir, readMin: 65536, writeMin: 65536 });
  const hc = await Vchan.connect({ port: 700, domain: 1, runtimeDir: host.runtimeDir, timeout: 5000 });
  const hs = await Vchan.listen({ port: 701, domain: 1, runtimeDir: host.runtimeDir });
  const gc = await Vchan.connect({ port: 701, domain: 0, runtimeDir: guest.runtimeDir, timeout: 5000 });
  await gs.waitConnected({ timeout: 5000 });
  await hs.waitConnected({ timeout: 5000 });
  const sent = Buffer.from('written by the guest before its daemon died');
  await gs.write(sent);
  await gc.write(Buffer.from('guest client data'));
  const before = await cliStatus(host.runtimeDir);
  assert.equal(before.vchans.filter((v) => v.serverDomain === 1 || v.clientDomain === 1).length, 2);

  const t0 = Date.now();
  await guest.kill();
  // The host side drains what the guest had written, then sees end of stream, in bounded time.
  const got: Buffer[] = [];
  for (;;) {
    const c = await within(hc.read(), 5000, 'host client read after the guest died');
    if (c === null) break;
    got.push(Buffer.from(c));
  }
  assert.deepEqual(Buffer.concat(got), sent);
  assert.deepEqual(await within(hs.read(), 5000, 'host server read'), Buffer.from('guest client data'));
  assert.equal(await within(hs.read(), 5000, 'host server end of stream'), null);
  assert.ok(Date.now() - t0 < 5000, 'the host noticed within 5 s');
  await assert.rejects(hc.write(Buffer.from('x')), { code: 'KVMCHAN_E_CLOSED' });
  // The guest applications lost their daemon: a clear error, not a hang.
  await assert.rejects(within(gs.read(), 5000, 'guest app read'), (err: unknown) => err instanceof DaemonUnavailableError);
  hc.close();
  hs.close();
  gs.close();
  gc.close();
  await waitFor(() => logged(host.log(), 'guest control channel closed', { domain: 1 }).length > 0, 5000, 'host log: session ended');
  const afterKill = await cliStatus(host.runtimeDir);
  assert.equal(afterKill.vchans.filter((v) => v.serverDomain === 1 || v.clientDomain === 1).length, 0, 'no vchan of domain 1 left');
  assert.ok(
    afterKill.domains.some((d) => d.domain === 1),
    'the domain itself still exists (its VM did not stop)',
  );

  // A restarted guest daemon attaches again and gets a working control channel.
  await guest.stop();
  g1 = await startGuest(host, 1);
  const s2 = await Vchan.listen({ port: 700, domain: 0, runtimeDir: g1.runtimeDir });
  const c2 = await Vchan.connect({ port: 700, domain: 1, runtimeDir: host.runtimeDir, timeout: 5000 });
  await s2.waitConnected({ timeout: 5000 });
  await c2.send(Buffer.from('after the restart'));
  assert.deepEqual(await s2.recv(17), Buffer.from('after the restart'));
  s2.close();
  c2.close();
});

test(
  '1,000 vchans across domains (host↔guest 1 and guest 1↔guest 2): pools grow ahead of demand, all carry data',
  { timeout: 600_000 },
  async (t) => {
    const poolsBefore = poolsCreated(host.log()).length;
    const N = 500;
    const pairs: [Vchan, Vchan][] = [];
    const t0 = Date.now();
    // Servers in guest 1; clients on the host (ports 10000+) and in guest 2 (ports 20000+).
    for (let i = 0; i < N; i++) {
      const s = await Vchan.listen({ port: 10000 + i, domain: 0, runtimeDir: g1!.runtimeDir });
      const c = await Vchan.connect({ port: 10000 + i, domain: 1, runtimeDir: host.runtimeDir, timeout: 10000 });
      pairs.push([s, c]);
    }
    for (let i = 0; i < N; i++) {
      const s = await Vchan.listen({ port: 20000 + i, domain: 2, runtimeDir: g1!.runtimeDir });
      const c = await Vchan.connect({ port: 20000 + i, domain: 1, runtimeDir: g2!.runtimeDir, timeout: 10000 });
      pairs.push([s, c]);
    }
    t.diagnostic(`1,000 cross-domain vchans set up in ${Date.now() - t0} ms`);
    // Every vchan carries its own message each way.
    await Promise.all(
      pairs.map(async ([s, c], i) => {
        const up = Buffer.from(`client ${i} → server`);
        const down = Buffer.from(`server ${i} → client, reply`);
        await c.send(up);
        assert.deepEqual(await s.recv(up.length), up);
        await s.send(down);
        assert.deepEqual(await c.recv(down.length), down);
      }),
    );
    const st = await cliStatus(host.runtimeDir);
    const cross = st.vchans.filter((v) => v.serverDomain === 1);
    assert.equal(cross.length, 1000, 'the host lists all 1,000');
    assert.ok(
      cross.every((v) => v.serverState === 1 && v.clientState === 1),
      'all connected',
    );
    const added = poolsCreated(host.log()).slice(poolsBefore);
    t.diagnostic(`pools created for them: ${added.length} (${added.map((p) => `#${p.pool}:[${p.members.join(',')}]`).join(' ')})`);
    assert.ok(
      added.some((p) => p.members.length === 2),
      'a pair pool for guest 1 ↔ guest 2',
    );
    assert.ok(added.length >= 2, 'pools were added as capacity ran low');
    for (const [s, c] of pairs) {
      s.close();
      c.close();
    }
    // Everything is released: no vchan left anywhere.
    for (let i = 0; i < 50; i++) {
      if ((await cliStatus(host.runtimeDir)).vchans.length === 0) break;
      await sleep(100);
    }
    assert.equal((await cliStatus(host.runtimeDir)).vchans.length, 0);
  },
);
