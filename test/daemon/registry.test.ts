/**
 * The registry and the policy in-process (docs/testing.md tier 1): a fake VchanResourceFactory
 * hands out plain ArrayBuffers and counts kicks and releases, so no fd, memfd or daemon is
 * involved and every rule is checked directly.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import pino from 'pino';
import { Registry, type Caller, type CallerScope } from '../../src/daemon/registry/registry.js';
import { Policy } from '../../src/daemon/registry/policy.js';
import { RegistryError } from '../../src/daemon/registry/registry-error.js';
import type { VchanResourceFactory, VchanResources } from '../../src/daemon/registry/vchan-resources.js';
import { configSchema } from '../../src/daemon/config.js';
import {
  HEADER_SIZE,
  initializeRegion,
  OFF_CLIENT_STATE,
  OFF_SERVER_STATE,
  regionLength,
  STATE_CLOSED,
  type RingGeometry,
} from '../../src/ring/layout.js';

interface FakeResources extends VchanResources {
  kicks: { server: number; client: number };
  released: number;
  handedOver: () => void;
  handovers: number;
}

class FakeFactory implements VchanResourceFactory {
  readonly made: FakeResources[] = [];
  create(geometry: RingGeometry, serverDomain: number, clientDomain: number): VchanResources {
    const buf = new ArrayBuffer(regionLength(geometry));
    initializeRegion(buf, 0, geometry);
    const access = (d: number): VchanResources['server'] =>
      d === 0 ? { kind: 'fds', shm: -1, wait: -1, kick: -1 } : { kind: 'device', pool: 1, vector: 0, peerId: 0, peerVector: 0 };
    const r: FakeResources = {
      geometry,
      shmOffset: 0,
      shmLength: buf.byteLength,
      control: new Int32Array(buf, 0, HEADER_SIZE / 4),
      server: access(serverDomain),
      client: access(clientDomain),
      kicks: { server: 0, client: 0 },
      released: 0,
      handovers: 0,
      handedOver: () => {
        r.handovers++;
      },
      kickServer: () => {
        r.kicks.server++;
      },
      kickClient: () => {
        r.kicks.client++;
      },
      release: () => {
        r.released++;
      },
    };
    this.made.push(r);
    return r;
  }
}

const limits = configSchema.parse({}).limits;
const silent = pino({ level: 'silent' });

function caller(connId: number, opts: { domain?: number; uid?: number; scope?: CallerScope; privileged?: boolean } = {}): Caller {
  return {
    connId,
    domain: opts.domain ?? 0,
    scope: opts.scope ?? 'local',
    pid: 1000 + connId,
    uid: opts.uid ?? 1000,
    gid: 1000,
    privileged: opts.privileged ?? false,
  };
}

async function refused(p: Promise<unknown> | (() => unknown), errno: string): Promise<void> {
  const check = (e: unknown): boolean => e instanceof RegistryError && e.errnoName === errno;
  if (typeof p === 'function') assert.throws(p, check);
  else await assert.rejects(p, check);
}

function setup(policy = new Policy({ reservedPortsBelow: 0 })): { reg: Registry; f: FakeFactory } {
  const f = new FakeFactory();
  const reg = new Registry(silent, f, limits, policy);
  reg.addDomain({ id: 1, name: 'g1' });
  reg.addDomain({ id: 2, name: 'g2' });
  return { reg, f };
}

describe('policy', () => {
  it('host↔anything always; guest↔guest only for configured pairs, in either order; never a guest to itself', () => {
    const none = new Policy();
    assert.equal(none.refuses(0, 0), null);
    assert.equal(none.refuses(0, 3), null);
    assert.equal(none.refuses(3, 0), null);
    assert.match(none.refuses(1, 2)!, /does not allow/);
    assert.match(none.refuses(1, 1)!, /itself/);
    const pairs = new Policy({ guestPairs: [[2, 1]] });
    assert.equal(pairs.refuses(1, 2), null);
    assert.equal(pairs.refuses(2, 1), null);
    assert.notEqual(pairs.refuses(1, 3), null);
    const all = new Policy({ guestPairs: 'all' });
    assert.equal(all.refuses(4, 7), null);
    assert.match(all.refuses(4, 4)!, /itself/);
  });
});

describe('host uid policy', () => {
  const subject = (uid: number, gid = uid, groups: number[] = []): { uid: number; gid: number; groups: number[] } => ({ uid, gid, groups });
  const groups = new Map([['ops', 3000]]);
  const p = new Policy(
    {
      hostRules: [
        { ports: '5000-5099', allowUids: [1001], allowGroups: ['ops', 'nosuchgroup'] },
        { ports: 6000, serverUid: 1000, allowUids: [1002] },
        { ports: 80, serverUid: 1000 },
      ],
      guestServices: [{ ports: '7000-7009', hostUid: 1000 }],
    },
    { groupId: (n) => groups.get(n), daemonUid: 0 },
  );

  it('clients: the server’s uid and root always; others only through a matching rule', () => {
    assert.equal(p.refusesHostClient(1000, subject(1000), 4000), null);
    assert.equal(p.refusesHostClient(1000, subject(0), 4000), null);
    assert.match(p.refusesHostClient(1000, subject(1001), 4000)!, /does not accept clients of uid 1001/);
    assert.equal(p.refusesHostClient(1000, subject(1001), 5099), null);
    assert.notEqual(p.refusesHostClient(1000, subject(1001), 5100), null);
    // allowGroups: primary or supplementary group; an unknown group name matches nobody.
    assert.equal(p.refusesHostClient(1000, subject(1005, 3000), 5000), null);
    assert.equal(p.refusesHostClient(1000, subject(1005, 1005, [3000]), 5000), null);
    assert.notEqual(p.refusesHostClient(1000, subject(1005), 5000), null);
    assert.deepEqual(p.unknownGroups, ['nosuchgroup']);
    // A rule with serverUid applies to that server's clients only.
    assert.equal(p.refusesHostClient(1000, subject(1002), 6000), null);
    assert.notEqual(p.refusesHostClient(1003, subject(1002), 6000), null);
  });

  it('servers: ports below 1024 are root’s; a serverUid rule reserves its ports to that uid', () => {
    assert.match(p.refusesServer(subject(1001), 22)!, /below 1024/);
    assert.equal(p.refusesServer(subject(0), 22), null);
    assert.equal(p.refusesServer(subject(1000), 80), null);
    assert.match(p.refusesServer(subject(1001), 6000)!, /reserved to uid 1000/);
    assert.equal(p.refusesServer(subject(1000), 6000), null);
    assert.equal(p.refusesServer(subject(1001), 1024), null);
    assert.equal(new Policy({ reservedPortsBelow: 0 }, { daemonUid: 0 }).refusesServer(subject(1001), 22), null);
    // The daemon's own uid counts like root (a user's own daemon).
    assert.equal(new Policy({}, { daemonUid: 1001 }).refusesServer(subject(1001), 22), null);
  });

  it('guest servers: their host side belongs to the uid of their port’s entry, else the daemon’s', () => {
    assert.equal(p.guestServiceUid(7005), 1000);
    assert.equal(p.guestServiceUid(7010), 0);
    assert.equal(p.refusesGuestServiceClient(1000, subject(1000), 7005), null);
    assert.equal(p.refusesGuestServiceClient(1000, subject(0), 7005), null);
    assert.notEqual(p.refusesGuestServiceClient(1000, subject(1001), 7005), null);
  });

  it('configuration: ports and ranges validated with clear messages', () => {
    const issues = (policy: unknown): string[] => {
      const r = configSchema.safeParse({ policy });
      return r.success ? [] : r.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`);
    };
    assert.deepEqual(issues({ hostRules: [{ ports: '10-20', allowUids: [5] }], reservedPortsBelow: 0 }), []);
    assert.match(
      issues({ hostRules: [{ ports: '20-10', allowUids: [5] }] }).join(),
      /hostRules\.0\.ports: "20-10": the range ends before it starts/,
    );
    assert.match(issues({ hostRules: [{ ports: 'http', allowUids: [5] }] }).join(), /is not a port or a range/);
    assert.match(issues({ hostRules: [{ ports: 2 ** 32, allowUids: [5] }] }).join(), /not a u32/);
    assert.match(issues({ hostRules: [{ ports: 5 }] }).join(), /needs serverUid, allowUids or allowGroups/);
    assert.match(issues({ hostRules: [{ ports: 5, allowUids: [5], extra: 1 }] }).join(), /Unrecognized key/);
    assert.match(issues({ guestServices: [{ ports: 5 }] }).join(), /guestServices\.0\.hostUid/);
    assert.equal(configSchema.parse({}).policy.reservedPortsBelow, 1024);
  });
});

describe('registry', () => {
  it('server init, a waiting client attached when the server appears, close marks the side CLOSED and kicks the other', async () => {
    const { reg, f } = setup();
    const waiting = reg.clientInit(caller(2), 0, 7, Infinity);
    const s = await reg.serverInit(caller(1), 0, 7, 1024, 4096);
    assert.deepEqual([s.role, s.readOrder, s.writeOrder, s.access.kind], ['server', 10, 12, 'fds']);
    const c = await waiting;
    assert.deepEqual([c.role, c.handle, c.readOrder, c.writeOrder], ['client', s.handle, 12, 10]);
    const r = f.made[0]!;
    reg.close(caller(2), c.handle);
    assert.equal(Atomics.load(r.control, OFF_CLIENT_STATE / 4), STATE_CLOSED);
    assert.equal(r.kicks.server, 1);
    assert.equal(r.released, 0, 'the server still holds it');
    reg.dropConnection(1);
    assert.equal(Atomics.load(r.control, OFF_SERVER_STATE / 4), STATE_CLOSED);
    assert.equal(r.released, 1);
    assert.equal(reg.vchanCount, 0);
  });

  it('refusals: duplicate port, busy vchan, no server, timeout, policy, unknown domain, someone else’s close', async () => {
    const { reg } = setup();
    const s = await reg.serverInit(caller(1), 0, 9, 1024, 1024);
    await refused(reg.serverInit(caller(3), 0, 9, 1024, 1024), 'EEXIST');
    await reg.clientInit(caller(2), 0, 9, 0);
    await refused(reg.clientInit(caller(4), 0, 9, 0), 'EBUSY');
    await refused(reg.clientInit(caller(4), 0, 10, 0), 'ENOENT');
    await refused(reg.clientInit(caller(4), 0, 11, 20), 'ETIMEDOUT');
    await refused(reg.serverInit(caller(5, { domain: 1 }), 2, 1, 1024, 1024), 'EPERM');
    await refused(reg.serverInit(caller(5), 42, 1, 1024, 1024), 'ESRCH');
    await refused(() => reg.close(caller(4), s.handle), 'EPERM');
    await refused(() => reg.close(caller(4), 999), 'ENOENT');
  });

  it('a dropped connection cancels its waits; a removed domain fails the waits for it', async () => {
    const { reg } = setup();
    const w = reg.clientInit(caller(1), 0, 5, Infinity);
    reg.dropConnection(1);
    await refused(w, 'ECANCELED');
    const g = reg.clientInit(caller(2), 1, 5, Infinity);
    reg.removeDomain(1);
    await refused(g, 'ESRCH');
  });

  it('waiting clients: matched per port in arrival order, cancelled per connection only', async () => {
    const { reg } = setup();
    const w1 = reg.clientInit(caller(1), 0, 20, Infinity);
    const w2 = reg.clientInit(caller(2), 0, 21, Infinity);
    const w3 = reg.clientInit(caller(3), 0, 20, Infinity);
    const w4 = reg.clientInit(caller(1), 0, 21, Infinity);
    const w5 = reg.clientInit(caller(4), 0, 20, Infinity);
    reg.dropConnection(1);
    await refused(w1, 'ECANCELED');
    await refused(w4, 'ECANCELED');
    const s20 = await reg.serverInit(caller(5), 0, 20, 1024, 1024);
    assert.equal((await w3).handle, s20.handle, 'the first remaining waiter of port 20');
    const s21 = await reg.serverInit(caller(6), 0, 21, 1024, 1024);
    assert.equal((await w2).handle, s21.handle);
    // w5 still waits for port 20 (its vchan is taken), and only its own connection's end cancels it.
    reg.dropConnection(2);
    reg.dropConnection(3);
    reg.dropConnection(4);
    await refused(w5, 'ECANCELED');
  });

  it('the server may re-init its port once the old server left, while the old client drains', async () => {
    const { reg, f } = setup();
    const s = await reg.serverInit(caller(1), 0, 3, 1024, 1024);
    await reg.clientInit(caller(2), 0, 3, 0);
    reg.close(caller(1), s.handle);
    const again = await reg.serverInit(caller(1), 0, 3, 1024, 1024);
    assert.notEqual(again.handle, s.handle);
    assert.equal(f.made[0]!.released, 0, 'the first vchan lives until its client leaves');
  });

  it('LIST_VCHANS by scope: an unprivileged local caller sees its uid’s, a privileged one all, a guest its domain’s', async () => {
    const { reg } = setup(new Policy({ guestPairs: 'all', reservedPortsBelow: 0 }));
    await reg.serverInit(caller(1, { uid: 1000 }), 0, 1, 1024, 1024);
    await reg.serverInit(caller(2, { uid: 0 }), 0, 2, 1024, 1024);
    await reg.serverInit(caller(3, { uid: 0 }), 1, 3, 1024, 1024);
    await reg.serverInit(caller(4, { domain: 1, scope: 'guest', uid: 0 }), 2, 4, 1024, 1024);
    const ports = (c: Caller): number[] => reg.listVchans(c).map((v) => v.port);
    assert.deepEqual(ports(caller(9, { uid: 1000 })), [1]);
    assert.deepEqual(ports(caller(9, { uid: 0, privileged: true })), [1, 2, 3, 4]);
    assert.deepEqual(ports(caller(9, { domain: 1, scope: 'guest', uid: 0 })), [3, 4]);
    assert.deepEqual(ports(caller(9, { domain: 2, scope: 'guest', uid: 0 })), [4]);
    assert.equal(reg.vchansOfDomain(1), 2);
  });

  it('limits: rings above maxRingOrder are EMSGSIZE, vchans per connection are capped', async () => {
    const f = new FakeFactory();
    const reg = new Registry(silent, f, { ...limits, maxVchansPerConnection: 2 }, new Policy({ reservedPortsBelow: 0 }));
    await refused(reg.serverInit(caller(1), 0, 1, 2 ** limits.maxRingOrder + 1, 1024), 'EMSGSIZE');
    await reg.serverInit(caller(1), 0, 1, 1024, 1024);
    await reg.serverInit(caller(1), 0, 2, 1024, 1024);
    await refused(reg.serverInit(caller(1), 0, 3, 1024, 1024), 'ENOSPC');
    reg.shutdown();
    assert.deepEqual(
      f.made.map((r) => r.released),
      [1, 1],
    );
  });
});

describe('host vchan fds and death reports (docs/pools.md §1, wire-protocol.md §7.3)', () => {
  it('the fds go once both grants were handed over, whichever goes first', async () => {
    const { reg, f } = setup();
    // A client waiting for the port is granted inside the server's init: its grant is first.
    const waiting = reg.clientInit(caller(2), 0, 70, 5000);
    const s = reg.serverInitNow(caller(1), 0, 70, 1024, 1024);
    const c = await waiting;
    c.handedOver();
    assert.equal(f.made[0]!.handovers, 0, 'the server has not been sent its fds yet');
    s.handedOver();
    s.handedOver();
    assert.equal(f.made[0]!.handovers, 1);
  });

  it('a side that leaves is reported to the local survivor only, after its state is CLOSED', async () => {
    const { reg, f } = setup();
    const told: [connId: number, handle: number, clientState: number][] = [];
    reg.onPeerClosed = (connId, handle) => {
      told.push([connId, handle, Atomics.load(f.made.at(-1)!.control, OFF_CLIENT_STATE / 4)]);
    };
    const s = reg.serverInitNow(caller(1), 0, 71, 1024, 1024);
    await reg.clientInit(caller(2), 0, 71, 0);
    reg.dropConnection(2);
    // The server's connection hears of vchan s.handle, once the client's state is CLOSED.
    assert.deepEqual(told, [[1, s.handle, STATE_CLOSED]]);
    reg.dropConnection(1);
    assert.equal(told.length, 1, 'nobody is left to tell');
    // With a guest on the other side: the host server is told; the guest gets its interrupt.
    reg.serverInitNow(caller(3), 1, 72, 1024, 1024);
    await reg.clientInit(caller(9, { domain: 1, scope: 'guest' }), 0, 72, 0);
    reg.dropConnection(9);
    assert.equal(told.length, 2, 'the host server of a guest client is told');
    reg.dropConnection(3);
    assert.equal(told.length, 2, 'the guest client is not told over a connection');
    assert.equal(f.made[1]!.kicks.client, 1, 'the guest client is kicked through its interrupt');
  });
});
