/**
 * A hostile guest floods its control ring (docs/security.md, "Guests"): domain 1 is
 * test/helpers/hostile-guest.ts. What it makes the host daemon hold stays bounded — `conn`
 * entries (only successful inits create one, at most maxConnectionsPerGuest), log lines
 * (refusals are rate-limited), replies it does not read (the host stops reading its requests,
 * then cuts the session) — while guest 2, an honest guest daemon, and host clients are served.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { after, before, test } from 'node:test';
import { Vchan } from '../../src/client/index.js';
import { Errno } from '../../src/protocol/constants.js';
import { PeerProcess } from '../helpers/peer-process.js';
import { HOSTILE_GUEST_MAIN } from '../helpers/hostile-guest.js';
import { rssKiB, sleep, within, type TestDaemon } from '../helpers/daemon-fixture.js';
import { deviceDir, logged, startGuest, startHost, type TestGuest } from '../helpers/guest-fixture.js';

const HOSTILE = 1;
const HONEST = 2;
const MAX_CONNS = 8;
// The default: a hostile guest starved of CPU on a loaded machine still reads within it.
const SLOW_MS = 10_000;

let host: TestDaemon;
let g2: TestGuest;
let hostile: PeerProcess;

before(async () => {
  host = await startHost({ guests: 2, config: { limits: { maxConnectionsPerGuest: MAX_CONNS, slowPeerTimeoutMs: SLOW_MS } } });
  g2 = await startGuest(host, HONEST);
  hostile = await PeerProcess.spawn(deviceDir(host, HOSTILE), { main: HOSTILE_GUEST_MAIN });
  await session();
});

after(async () => {
  await hostile?.end();
  await g2?.stop();
  await host?.stop();
});

async function session(): Promise<void> {
  await hostile.ok({ op: 'attach' });
  assert.equal((await hostile.ok({ op: 'hello' }))['err'], 0);
  await hostile.ok({ op: 'waitPools', count: 1 });
}

function logBytes(): number {
  return fs.statSync(host.logFile).size;
}

/** Guest 2 and the host still set vchans up with each other. */
async function honestServed(what: string, port: number): Promise<void> {
  const gs = await within(Vchan.listen({ runtimeDir: g2.runtimeDir, domain: 0, port }), 10_000, `${what}: guest 2 listen`);
  const hc = await within(
    Vchan.connect({ runtimeDir: host.runtimeDir, domain: HONEST, port, timeout: 10_000 }),
    10_000,
    `${what}: host connect`,
  );
  await gs.send(Buffer.from('pong'));
  assert.equal((await within(hc.recv(4), 10_000, `${what}: data`))?.toString(), 'pong');
  hc.close();
  gs.close();
}

test('GUEST_VCHAN_CLOSE under 100,000 fresh conns: no conn entries, a bounded log', async () => {
  const rss0 = rssKiB(host.daemon.child.pid!);
  const log0 = logBytes();
  const N = Number(process.env.FLOOD_N ?? 100_000);
  const got0 = Number((await hostile.ok({ op: 'received' }))['received']);
  await hostile.ok({ op: 'spray', kind: 'close', count: N, firstConn: 1000 });
  // The hostile guest counts what it receives: every close is answered (with an error).
  const deadline = Date.now() + 120_000;
  while (Number((await hostile.ok({ op: 'received' }))['received']) < got0 + N) {
    assert.ok(
      Date.now() < deadline,
      `the host answers every close: ${host
        .log()
        .split('\n')
        .filter((l) => !l.includes('guest request refused'))
        .slice(-8)
        .join('\n')}`,
    );
    await sleep(50);
  }
  const grewKiB = rssKiB(host.daemon.child.pid!) - rss0;
  const logGrew = logBytes() - log0;
  console.log(`# ${N} closes under fresh conns: host RSS +${grewKiB} KiB, log +${logGrew} bytes`);
  // Before: one info line per refusal (~150 bytes each: ~15 MB here) and a `conn` entry each.
  assert.ok(logGrew < 64 * 1024, `the log grew by ${logGrew} bytes`);
  assert.ok(logged(host.log(), 'log lines suppressed (rate limit)', { domain: HOSTILE }).length > 0 || logGrew < 8 * 1024);
  await honestServed('after the close flood', 700);
});

test('only successful inits make a guest conn, at most maxConnectionsPerGuest of them', async () => {
  // 500 refused inits, each under a fresh conn, leave nothing behind...
  assert.equal((await hostile.ok({ op: 'serverInit', conn: 1, port: 800, map: false }))['err'], 0);
  for (let i = 0; i < 500; i++) {
    const r = await hostile.ok({ op: 'serverInit', conn: 5000 + i, port: 800, map: false });
    assert.equal(r['err'], -Errno.EEXIST);
  }
  // ...so the quota still has room for MAX_CONNS - 1 more conns (conn 1 holds one).
  for (let c = 2; c <= MAX_CONNS; c++) {
    assert.equal((await hostile.ok({ op: 'serverInit', conn: c, port: 800 + c, map: false }))['err'], 0, `conn ${c}`);
  }
  assert.equal((await hostile.ok({ op: 'serverInit', conn: 99, port: 899, map: false }))['err'], -Errno.EDQUOT, 'one conn too many');
  // A conn that has one can open more vchans; a conn closed by the guest frees its place.
  assert.equal((await hostile.ok({ op: 'serverInit', conn: 1, port: 898, map: false }))['err'], 0);
  assert.equal((await hostile.ok({ op: 'connClosed', conn: 2 }))['err'], 0);
  assert.equal((await hostile.ok({ op: 'serverInit', conn: 99, port: 899, map: false }))['err'], 0, 'room again');
  await honestServed('at the conn quota', 701);
});

test('a guest that never reads its replies: the host stops reading it, stays small, then cuts the session', async () => {
  const pid = host.daemon.child.pid!;
  const rss0 = rssKiB(pid);
  const log0 = logBytes();
  await hostile.ok({ op: 'reading', on: false });
  const disconnected = hostile.call({ op: 'waitDisconnect', timeout: SLOW_MS + 60_000 });
  // Every LIST_VCHANS reply lists the guest's vchans (~0.5 KiB): 100,000 of them were ~+100 MiB
  // of queued replies before; now the host queues at most 1 MiB and then waits.
  await hostile.ok({ op: 'spray', kind: 'list', count: 100_000 });
  let peakKiB = 0;
  const sampler = setInterval(() => {
    peakKiB = Math.max(peakKiB, rssKiB(pid) - rss0);
  }, 100);
  try {
    await honestServed('while the guest does not read', 702);
    const r = await within(disconnected, SLOW_MS + 70_000, 'the host to cut the session');
    assert.equal(r['ok'], true, `still attached: ${JSON.stringify(r)}`);
  } finally {
    clearInterval(sampler);
  }
  const why = logged(host.log(), 'guest control channel closed', { domain: HOSTILE }).at(-1)?.['why'];
  assert.match(String(why), /KVMCHAN_E_SLOW_PEER/);
  console.log(`# guest not reading: host RSS peak +${peakKiB} KiB, log +${logBytes() - log0} bytes`);
  assert.ok(peakKiB < 48 * 1024, `host RSS grew by ${peakKiB} KiB`);
  await honestServed('after the session was cut', 703);
  // The guest may come back and is served again.
  await session();
  assert.equal((await hostile.ok({ op: 'listVchans' }))['err'], 0);
});
