// The registry with a PoolManager as its VchanResourceFactory: the contract of
// vchan-resources.ts as the registry uses it (EAGAIN → whenCapacity → retry once,
// death marking through `control`, kicks, release after a domain is gone).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import pino from 'pino';
import { Registry, type Caller } from '../../src/daemon/registry/registry.js';
import { Policy } from '../../src/daemon/registry/policy.js';
import { configSchema } from '../../src/daemon/config.js';
import { OFF_CLIENT_STATE, STATE_CLOSED } from '../../src/ring/layout.js';
import { native } from '../../src/native.js';
import { fixture, readable } from './fixture.js';
import { sleep } from '../helpers/wait.js';

const caller = (connId: number, domain: number): Caller => ({
  connId,
  domain,
  scope: 'local',
  pid: process.pid,
  uid: 0,
  gid: 0,
  privileged: true,
});

test('registry over pools: a request waits for the pool, grants are usable, a guest death is marked and kicked', async () => {
  const f = fixture({ poolSize: 1 << 20, poolVectors: 8 });
  const registry = new Registry(pino({ level: 'silent' }), f.pm, configSchema.parse({}).limits, new Policy({ guestPairs: 'all' }));
  try {
    registry.addDomain({ id: 1, name: 'g1' });
    f.pm.addDomain(1);
    const host = caller(1, 0);
    // The guest has not attached to its pool yet: serverInit waits, then succeeds.
    const pending = registry.serverInit(host, 1, 77, 4096, 4096);
    await sleep(20);
    await f.join(f.of(1)[0]!);
    const server = await pending;
    assert.equal(server.access.kind, 'fds');
    if (server.access.kind !== 'fds') return;
    // What the local socket does: SCM_RIGHTS gives the host process its own copy.
    const wait = native.dup(server.access.wait);
    const shm = native.dup(server.access.shm);
    const view = native.mmap(shm, 4096, server.shmOffset, true);
    const client = await registry.clientInit(caller(2, 1), 0, 77, 0);
    assert.equal(client.access.kind, 'device');
    if (client.access.kind !== 'device') return;
    assert.equal(client.shmOffset, server.shmOffset);
    assert.equal(client.access.peerId, 0);

    // The guest dies: the registry marks its side closed in the control page and kicks the host process.
    registry.removeDomain(1);
    f.pm.removeDomain(1);
    assert.equal(await readable(wait), 1);
    native.close(wait);
    const ctl = new Int32Array(view);
    assert.equal(Atomics.load(ctl, OFF_CLIENT_STATE / 4), STATE_CLOSED);
    assert.deepEqual(
      f.pm.pools().map((p) => [p.state, p.vchans]),
      [['retired', 1]],
    );
    // The host process closes its side: the vchan is freed and the retired pool with it.
    registry.close(host, server.handle);
    assert.equal(registry.vchanCount, 0);
    assert.equal(f.pm.poolCount, 0);
    assert.equal(Atomics.load(ctl, 0), 0, 'the region is wiped (magic gone)');
    native.munmap(view);
    native.close(shm);

    // Pair pools through the registry: A↔B waits for the pair pool, EAGAIN is never seen.
    registry.addDomain({ id: 2, name: 'a' });
    registry.addDomain({ id: 3, name: 'b' });
    f.pm.addDomain(2);
    f.pm.addDomain(3);
    const pairWait = registry.serverInit(caller(3, 2), 3, 1, 1024, 1024);
    await sleep(10);
    for (const a of f.announced.filter((x) => x.domain === 2 || x.domain === 3)) await f.join(a);
    const g = await pairWait;
    assert.equal(g.access.kind, 'device');
    assert.equal(g.access.kind === 'device' && g.access.peerId, 2, 'A (peer 1) rings B (peer 2)');
    registry.shutdown();
    f.close();
  } finally {
    registry.shutdown();
    f.dispose();
  }
});
