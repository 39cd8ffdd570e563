/**
 * `kvmchan status` (the real CLI, `--runtime-dir <dir> status --json`) across domains
 * (wire-protocol.md §6.6, §6.7, §6.10): on the host it shows every domain, every pool and every
 * vchan — host↔host, host↔guest and guest↔guest — with states and byte counts; in a guest it
 * shows the vchans and pools that guest is part of and nothing else, and marks its own domain.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { after, before, test } from 'node:test';
import { Vchan } from '../../src/client/index.js';
import { DomainFlag } from '../../src/protocol/constants.js';
import { CLI_MAIN, cliStatus, startGuests, startHost, type CliVchan, type TestGuest } from '../helpers/guest-fixture.js';
import type { TestDaemon } from '../helpers/daemon-fixture.js';

let host: TestDaemon;
let g1: TestGuest;
let g2: TestGuest;
const open: Vchan[] = [];

interface Spec {
  port: number;
  serverDir: () => string;
  serverDomain: number;
  clientDir: () => string;
  clientDomain: number;
  s2c: number;
  c2s: number;
}

const SPECS: Spec[] = [
  { port: 600, serverDir: () => host.runtimeDir, serverDomain: 0, clientDir: () => host.runtimeDir, clientDomain: 0, s2c: 1000, c2s: 10 },
  { port: 601, serverDir: () => g1.runtimeDir, serverDomain: 1, clientDir: () => host.runtimeDir, clientDomain: 0, s2c: 2000, c2s: 20 },
  { port: 602, serverDir: () => g1.runtimeDir, serverDomain: 1, clientDir: () => g2.runtimeDir, clientDomain: 2, s2c: 3000, c2s: 30 },
  { port: 603, serverDir: () => host.runtimeDir, serverDomain: 0, clientDir: () => g2.runtimeDir, clientDomain: 2, s2c: 4000, c2s: 40 },
];

before(async () => {
  host = await startHost({ guests: 2, guestPairs: [[1, 2]] });
  [g1, g2] = (await startGuests(host, 2)) as [TestGuest, TestGuest];
  for (const s of SPECS) {
    const server = await Vchan.listen({ runtimeDir: s.serverDir(), domain: s.clientDomain, port: s.port, readMin: 8192, writeMin: 16384 });
    const client = await Vchan.connect({ runtimeDir: s.clientDir(), domain: s.serverDomain, port: s.port, timeout: 5000 });
    await server.waitConnected({ timeout: 5000 });
    await server.write(Buffer.alloc(s.s2c, 1));
    assert.equal((await client.recv(s.s2c))?.length, s.s2c);
    await client.write(Buffer.alloc(s.c2s, 2));
    assert.equal((await server.recv(s.c2s))?.length, s.c2s);
    open.push(server, client);
  }
  // A server still waiting for its guest client.
  open.push(await Vchan.listen({ runtimeDir: host.runtimeDir, domain: 1, port: 604 }));
});
after(async () => {
  for (const v of open) v.close();
  await g1?.stop();
  await g2?.stop();
  await host?.stop();
});

function find(vchans: CliVchan[], s: Pick<Spec, 'port' | 'serverDomain' | 'clientDomain'>): CliVchan | undefined {
  return vchans.find((v) => v.port === s.port && v.serverDomain === s.serverDomain && v.clientDomain === s.clientDomain);
}

test('on the host: every domain, every pool, every vchan with states, ring sizes and byte counts', async () => {
  const st = await cliStatus(host.runtimeDir);
  assert.deepEqual(
    st.domains.map((d) => [d.domain, d.name, d.vchans]),
    [
      [0, st.domains[0]!.name, 4],
      [1, 'sim-1', 3],
      [2, 'sim-2', 2],
    ],
  );
  assert.equal(
    st.domains[0]!.flags & (DomainFlag.HOST | DomainFlag.SELF),
    DomainFlag.HOST | DomainFlag.SELF,
    'domain 0 is the host, and us',
  );
  for (const d of st.domains.slice(1)) assert.equal(d.flags & (DomainFlag.HOST | DomainFlag.SELF), 0);
  assert.equal(st.vchans.length, SPECS.length + 1);
  for (const s of SPECS) {
    const v = find(st.vchans, s);
    assert.ok(v !== undefined, `host lists ${s.serverDomain}→${s.clientDomain}:${s.port}`);
    assert.equal(v.serverState, 1);
    assert.equal(v.clientState, 1);
    assert.equal(v.readOrder, 13, 'server read ring 8 KiB');
    assert.equal(v.writeOrder, 14, 'server write ring 16 KiB');
    assert.equal(v.bytesServerToClient, s.s2c);
    assert.equal(v.bytesClientToServer, s.c2s);
    // Pids are known for endpoints of the host's own domain only (guest pids are the guests').
    if (s.serverDomain === 0) assert.equal(v.serverPid, process.pid);
    if (s.clientDomain === 0) assert.equal(v.clientPid, process.pid);
  }
  const waiting = find(st.vchans, { port: 604, serverDomain: 0, clientDomain: 1 });
  assert.equal(waiting?.clientState, 2, 'a server without its client: client WAITING');
  // Pools: each guest's own, plus the pair pool of 1 and 2; every member attached.
  assert.deepEqual(st.pools.map((p) => [p.memberA, p.memberB, p.state, p.joined]).sort(), [
    [1, 0, 0, 1],
    [1, 2, 0, 3],
    [2, 0, 0, 1],
  ]);
  const vchansIn = (a: number, b: number): number =>
    st.pools.filter((p) => p.memberA === a && p.memberB === b).reduce((n, p) => n + p.vchans, 0);
  assert.equal(vchansIn(1, 0), 2, "guest 1's pool: host↔guest 1 and the waiting one");
  assert.equal(vchansIn(2, 0), 1);
  assert.equal(vchansIn(1, 2), 1);
});

test('in a guest: the vchans and pools it is part of, nothing else; its own domain marked', async () => {
  for (const [g, d] of [
    [g1, 1],
    [g2, 2],
  ] as const) {
    const st = await cliStatus(g.runtimeDir);
    const mine = [...SPECS, { port: 604, serverDomain: 0, clientDomain: 1 }].filter((s) => s.serverDomain === d || s.clientDomain === d);
    assert.equal(st.vchans.length, mine.length, `guest ${d} lists ${JSON.stringify(st.vchans)}`);
    for (const s of mine) {
      const v = find(st.vchans, s);
      assert.ok(v !== undefined, `guest ${d} lists ${s.serverDomain}→${s.clientDomain}:${s.port}`);
      if ('s2c' in s) assert.equal(v.bytesServerToClient, s.s2c);
    }
    const self = st.domains.find((x) => x.domain === d);
    assert.ok(self !== undefined && (self.flags & DomainFlag.SELF) !== 0, `guest ${d} marks itself`);
    assert.equal((st.domains.find((x) => x.domain === 0)?.flags ?? 0) & DomainFlag.HOST, DomainFlag.HOST);
    assert.ok(st.pools.length > 0 && st.pools.every((p) => p.memberA === d || p.memberB === d), `guest ${d} sees only its pools`);
  }
});

test('the table output works in a guest too', async () => {
  const { stdout } = await promisify(execFile)(process.execPath, [CLI_MAIN, '--runtime-dir', g1.runtimeDir, 'status'], { timeout: 20000 });
  assert.match(stdout, /Domains \(3\)/);
  assert.match(stdout, /sim-1/);
  assert.match(stdout, /Vchans \(3\)/);
  assert.match(stdout, /\b602\b/);
  assert.doesNotMatch(stdout, /\b603\b/, 'guest 1 must not see host↔guest 2');
});

test('LIST_DOMAINS as specified (wire-protocol.md §6.6): CONTROL_UP for the host and guests whose daemon is attached, "dom0" for the host', async () => {
  for (const dir of [host.runtimeDir, g1.runtimeDir]) {
    const st = await cliStatus(dir);
    assert.equal(st.domains[0]!.name, 'dom0');
    assert.ok(st.domains.length >= 3);
    for (const d of st.domains) assert.notEqual(d.flags & DomainFlag.CONTROL_UP, 0, `${dir}: domain ${d.domain} has its daemon attached`);
  }
});
