/**
 * Guest daemon death and restart (docs/security.md: "survives VM crashes ... cleans up after
 * itself"): a guest daemon SIGKILLed while its applications stream to the host and to another
 * guest — the host ends the session, every vchan the guest held is closed on the surviving side
 * (readers drain then see end of stream, writers fail), `kvmchan status` forgets them, and a
 * guest daemon restarted over the dead one's runtime dir gets a working control channel and its
 * pools back, with no fd left behind in the host daemon. And the other way round: when the host
 * daemon goes (SIGKILL or SIGTERM), guest daemons stop cleanly.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { after, before, test } from 'node:test';
import { Vchan } from '../../src/client/index.js';
import { DaemonUnavailableError } from '../../src/errors.js';
import { PID_NAME, SOCKET_NAME } from '../../src/paths.js';
import { PeerProcess, type PeerReply } from '../helpers/peer-process.js';
import { settledFds, waitFor, within, type TestDaemon } from '../helpers/daemon-fixture.js';
import { cliStatus, expectHostFds, logged, poolsCreated, startGuest, startHost, type TestGuest } from '../helpers/guest-fixture.js';
import { sleep } from '../helpers/wait.js';

let host: TestDaemon;
let g1: TestGuest;
let g2: TestGuest;
const dead: TestGuest[] = [];

before(async () => {
  host = await startHost({ guests: 2, guestPairs: [[1, 2]] });
  g1 = await startGuest(host, 1);
  g2 = await startGuest(host, 2);
});
after(async () => {
  await g1?.stop();
  for (const g of dead) await g.stop();
  await g2?.stop();
  await host?.stop();
});

/** A pair of vchans host↔guest 1 and guest 1↔guest 2 exchange a message (pools attached and working). */
async function works(guest1: TestGuest, port: number): Promise<void> {
  const s = await Vchan.listen({ runtimeDir: guest1.runtimeDir, domain: 0, port });
  const c = await Vchan.connect({ runtimeDir: host.runtimeDir, domain: 1, port, timeout: 5000 });
  await c.send(Buffer.from('host to guest 1'));
  assert.equal((await within(s.recv(15), 5000, 'host to guest 1'))?.toString(), 'host to guest 1');
  await s.send(Buffer.from('guest 1 to host'));
  assert.equal((await within(c.recv(15), 5000, 'guest 1 to host'))?.toString(), 'guest 1 to host');
  c.close();
  s.close();
  const ps = await Vchan.listen({ runtimeDir: guest1.runtimeDir, domain: 2, port: port + 1 });
  const pc = await Vchan.connect({ runtimeDir: g2.runtimeDir, domain: 1, port: port + 1, timeout: 5000 });
  await pc.send(Buffer.from('guest 2 to guest 1'));
  assert.equal((await within(ps.recv(18), 5000, 'guest 2 to guest 1'))?.toString(), 'guest 2 to guest 1');
  pc.close();
  ps.close();
}

function code(r: PeerReply): string | null {
  return (r['error'] as { code?: string } | null)?.code ?? null;
}

test('guest daemon SIGKILLed mid-stream: the host closes its vchans (drain, then end of stream), forgets them; a restarted daemon works', async (t) => {
  // Warm up (the 1↔2 pair pool appears with the first guest↔guest vchan), then the baseline.
  await works(g1, 490);
  const poolsAtStart = poolsCreated(host.log()).length;
  const hostFds = await settledFds(host.daemon.pid);

  const hostSink = await PeerProcess.spawn(host.runtimeDir);
  const hostSrc = await PeerProcess.spawn(host.runtimeDir);
  const g1app = await PeerProcess.spawn(g1.runtimeDir);
  const g2src = await PeerProcess.spawn(g2.runtimeDir);
  const progress = new Map<string, number>();
  for (const p of [g1app, hostSrc, g2src])
    p.on('progress', (m: { name: string; written: number }) => progress.set(`${p.pid}:${m.name}`, m.written));
  const wrote = (p: PeerProcess, name: string): number => progress.get(`${p.pid}:${name}`) ?? 0;
  try {
    // A: guest 1 → host; B: host → guest 1; C: guest 2 → guest 1.
    await hostSink.ok({ op: 'listen', name: 'a', domain: 1, port: 500, readMin: 65536 });
    await g1app.ok({ op: 'connect', name: 'a', domain: 0, port: 500, timeout: 5000 });
    await g1app.ok({ op: 'listen', name: 'b', domain: 0, port: 501, readMin: 65536 });
    await hostSrc.ok({ op: 'connect', name: 'b', domain: 1, port: 501, timeout: 5000 });
    await g1app.ok({ op: 'listen', name: 'c', domain: 2, port: 502, readMin: 65536 });
    await g2src.ok({ op: 'connect', name: 'c', domain: 1, port: 502, timeout: 5000 });
    const a = { src: g1app.call({ op: 'source', name: 'a', seed: 500 }), dst: hostSink.call({ op: 'sink', name: 'a', seed: 500 }) };
    const b = { src: hostSrc.call({ op: 'source', name: 'b', seed: 501 }), dst: g1app.call({ op: 'sink', name: 'b', seed: 501 }) };
    const c = { src: g2src.call({ op: 'source', name: 'c', seed: 502 }), dst: g1app.call({ op: 'sink', name: 'c', seed: 502 }) };
    await waitFor(
      () => wrote(g1app, 'a') > 2 ** 20 && wrote(hostSrc, 'b') > 2 ** 20 && wrote(g2src, 'c') > 2 ** 20,
      20000,
      'all three streams to flow',
    );
    const before = wrote(g1app, 'a');
    const listed = (await cliStatus(host.runtimeDir)).vchans.filter((v) => v.serverDomain === 1 || v.clientDomain === 1);
    assert.equal(listed.length, 3);

    const t0 = Date.now();
    await g1.kill();

    // A: the host reader drains everything guest 1 wrote, then sees end of stream.
    const aDst = await within(a.dst, 10000, 'the host reader of guest 1 to see end of stream');
    t.diagnostic(
      `host reader: end of stream ${Date.now() - t0} ms after the guest daemon was killed, ${aDst['received'] as number} bytes intact`,
    );
    assert.equal(aDst['error'], null, `host reader: ${JSON.stringify(aDst['error'])}`);
    assert.equal(aDst['mismatchAt'], -1);
    assert.ok(Number(aDst['received']) >= before);
    // B and C: writers toward guest 1 fail (the peer is closed), in bounded time.
    const bSrc = await within(b.src, 10000, 'the host writer to guest 1 to fail');
    assert.equal(code(bSrc), 'KVMCHAN_E_CLOSED', JSON.stringify(bSrc));
    const cSrc = await within(c.src, 10000, 'guest 2 writer to guest 1 to fail');
    assert.equal(code(cSrc), 'KVMCHAN_E_CLOSED', JSON.stringify(cSrc));
    // Guest 1's applications lost their daemon: a clear error, never a hang.
    for (const r of [
      await within(a.src, 10000, 'guest app writer'),
      await within(b.dst, 10000, 'guest app reader'),
      await within(c.dst, 10000, 'guest app reader'),
    ]) {
      assert.equal(code(r), 'KVMCHAN_E_NO_DAEMON', JSON.stringify(r));
    }
    await waitFor(
      () => logged(host.log(), 'guest control channel closed', { domain: 1 }).length > 0,
      5000,
      'the host to log the end of the session',
    );

    // Until the host applications close, their vchans show the guest 1 side CLOSED...
    const during = (await cliStatus(host.runtimeDir)).vchans.filter((v) => v.serverDomain === 1 || v.clientDomain === 1);
    for (const v of during) assert.equal(v.serverDomain === 1 ? v.serverState : v.clientState, 0, `guest 1's side of ${JSON.stringify(v)}`);
    await hostSink.ok({ op: 'close', name: 'a' });
    await hostSrc.ok({ op: 'close', name: 'b' });
    await g2src.ok({ op: 'close', name: 'c' });
    // ...then they are gone; the domain itself stays (its VM did not stop).
    const afterClose = await cliStatus(host.runtimeDir);
    assert.deepEqual(
      afterClose.vchans.filter((v) => v.serverDomain === 1 || v.clientDomain === 1),
      [],
    );
    assert.ok(afterClose.domains.some((d) => d.domain === 1 && d.name === 'sim-1'));
  } finally {
    await Promise.all([hostSink, hostSrc, g1app, g2src].map((p) => p.kill()));
  }

  // The dead daemon left its socket and pid file; a new one takes them over and works.
  assert.ok(fs.existsSync(`${g1.runtimeDir}/${SOCKET_NAME}`), 'stale socket missing: the restart would prove nothing');
  dead.push(g1);
  g1 = await startGuest(host, 1, { runtimeDir: dead[0]!.runtimeDir, logFile: dead[0]!.logFile });
  assert.equal(fs.readFileSync(`${g1.runtimeDir}/${PID_NAME}`, 'utf8').trim(), String(g1.daemon.pid));
  await works(g1, 510);
  // No pool was added or lost, and the host holds what it held before the streams.
  assert.equal(poolsCreated(host.log()).length, poolsAtStart);
  const pools = (await cliStatus(host.runtimeDir)).pools;
  assert.ok(
    pools.every((p) => p.state === 0 && p.joined === (p.memberB === 0 ? 1 : 3)),
    `pools re-attached: ${JSON.stringify(pools)}`,
  );
  await expectHostFds(host.daemon.pid, hostFds, [], 5000, 'the host daemon to hold what it held before the guest daemon died');
});

test('guest daemon SIGKILLed while an application waits for a host server: the wait fails, a restarted daemon serves it', async () => {
  const app = await PeerProcess.spawn(g1.runtimeDir);
  try {
    const waiting = app.call({ op: 'connect', domain: 0, port: 520, timeout: 60000 });
    await sleep(200);
    await g1.kill();
    const r = await within(waiting, 5000, 'the waiting connect to fail');
    assert.equal(code(r), 'KVMCHAN_E_NO_DAEMON');
    dead.push(g1);
    g1 = await startGuest(host, 1);
    // The dead waiter is gone from the host: the new server is not taken by it.
    const hs = await Vchan.listen({ runtimeDir: host.runtimeDir, domain: 1, port: 520 });
    await new Promise((res) => setTimeout(res, 100));
    assert.equal(hs.state, 'waiting');
    const gc = await Vchan.connect({ runtimeDir: g1.runtimeDir, domain: 0, port: 520, timeout: 5000 });
    await hs.waitConnected({ timeout: 5000 });
    await gc.send(Buffer.from('ok'));
    assert.equal((await hs.recv(2))?.toString(), 'ok');
    gc.close();
    hs.close();
  } finally {
    await app.kill();
  }
});

async function exited(g: TestGuest, ms: number): Promise<{ code: number | null; signal: string | null }> {
  const child = g.daemon.child;
  if (child.exitCode !== null || child.signalCode !== null) return { code: child.exitCode, signal: child.signalCode };
  return within(
    new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal }))),
    ms,
    `guest ${g.domain}'s daemon to exit`,
  );
}

for (const how of ['SIGKILL', 'SIGTERM'] as const) {
  test(`host daemon stopped by ${how}: guest daemons stop cleanly (logged, runtime dir released); guest applications end, new setups get KVMCHAN_E_NO_DAEMON`, async () => {
    const h2 = await startHost({ guests: 1 });
    const guest = await startGuest(h2, 1);
    try {
      const s = await Vchan.listen({ runtimeDir: guest.runtimeDir, domain: 0, port: 530 });
      const c = await Vchan.connect({ runtimeDir: h2.runtimeDir, domain: 1, port: 530, timeout: 5000 });
      await s.waitConnected({ timeout: 5000 });
      const reading = s.read();
      reading.catch(() => undefined);
      if (how === 'SIGKILL') await h2.daemon.kill();
      else await h2.daemon.stop();
      const r = await exited(guest, 10000);
      assert.equal(r.signal, null, `guest daemon killed by ${r.signal}: ${guest.log().slice(-2000)}`);
      assert.equal(r.code, 1, 'a guest daemon that lost its host exits 1');
      assert.equal(logged(guest.log(), 'lost the host; exiting').length, 1, guest.log().slice(-2000));
      assert.equal(fs.existsSync(`${guest.runtimeDir}/${SOCKET_NAME}`), false, 'the guest daemon removed its socket');
      assert.equal(fs.existsSync(`${guest.runtimeDir}/${PID_NAME}`), false, 'the guest daemon removed its pid file');
      // The pending read ends: end of stream (the host application's library closed its side when
      // its own daemon died) or the loss of the guest daemon, whichever the guest app saw first.
      const got = await within(
        reading.then(
          (v) => (v === null ? 'eof' : 'data'),
          (err: unknown) => (err instanceof DaemonUnavailableError ? 'no-daemon' : String(err)),
        ),
        5000,
        "the guest application's pending read",
      );
      assert.ok(got === 'eof' || got === 'no-daemon', got);
      // Nothing new can be set up in the guest until a daemon is back.
      await assert.rejects(Vchan.listen({ runtimeDir: guest.runtimeDir, domain: 0, port: 531 }), DaemonUnavailableError);
      s.close();
      c.close();
    } finally {
      await guest.stop();
      await h2.stop();
    }
  });
}
