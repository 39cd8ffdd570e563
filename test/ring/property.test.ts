// Property tests of the ring engine against a plain reference model
// (docs/ring-protocol.md §4–§5): random operation sequences, random ring sizes,
// random chunk lengths, indices starting near the 2^32 wrap.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { RingEndpoint, EOF } from '../../src/ring/endpoint.js';
import { initializeRegion, regionLength } from '../../src/ring/layout.js';
import { KvmchanError } from '../../src/errors.js';
import { Prng, seedFromEnv } from '../helpers/prng.js';

interface Side {
  ep: RingEndpoint;
  kicksReceived: number;
  waitingRead: number; // min bytes it sleeps for, 0 = not sleeping
  waitingWrite: number;
}

function makePair(c2sOrder: number, s2cOrder: number, start: number) {
  const buf = new ArrayBuffer(regionLength({ c2sOrder, s2cOrder }));
  initializeRegion(buf, 0, { c2sOrder, s2cOrder });
  // Start both rings at the same arbitrary index (as if much traffic had passed).
  const ctl = new DataView(buf);
  for (const off of [64, 68, 128, 132]) ctl.setUint32(off, start, true);
  const server: Side = { ep: undefined as unknown as RingEndpoint, kicksReceived: 0, waitingRead: 0, waitingWrite: 0 };
  const client: Side = { ep: undefined as unknown as RingEndpoint, kicksReceived: 0, waitingRead: 0, waitingWrite: 0 };
  server.ep = new RingEndpoint(
    buf,
    0,
    { role: 'server', c2sOrder, s2cOrder },
    () => {
      client.kicksReceived++;
    },
    { readCons: start, writeProd: start },
  );
  client.ep = new RingEndpoint(
    buf,
    0,
    { role: 'client', c2sOrder, s2cOrder },
    () => {
      server.kicksReceived++;
    },
    { readCons: start, writeProd: start },
  );
  client.ep.attach();
  server.kicksReceived = 0;
  // Both sides start with a standing WRITE request (§3): the allocator's
  // client_notify and the client's attach.
  server.waitingRead = 1;
  client.waitingRead = 1;
  return { server, client };
}

test('random operation sequences match the reference model', () => {
  const seed = seedFromEnv(0xc0ffee);
  const rng = new Prng(seed);
  for (let round = 0; round < 60; round++) {
    const c2sOrder = rng.int(10, 14);
    const s2cOrder = rng.int(10, 14);
    const start = rng.pick([0, 0xffffffff - rng.int(0, 5000), rng.next()]);
    const { server, client } = makePair(c2sOrder, s2cOrder, start);
    // queue[0]: bytes in c2s (client → server), queue[1]: s2c.
    const model = { c2s: [] as number[], s2c: [] as number[] };
    const sizeOf = { c2s: 2 ** c2sOrder, s2c: 2 ** s2cOrder };
    for (let step = 0; step < 3000; step++) {
      const isServer = rng.next() % 2 === 0;
      const me = isServer ? server : client;
      const peer = isServer ? client : server;
      const rxName = isServer ? 'c2s' : 's2c';
      const txName = isServer ? 's2c' : 'c2s';
      const rx = model[rxName];
      const tx = model[txName];
      const maxN = rng.pick([16, 300, 5000, 2 * sizeOf[txName]]);
      const n = rng.int(0, maxN);
      const kind = rng.int(0, 5);
      const ctx = `seed=${seed} round=${round} step=${step} kind=${kind} n=${n}`;
      const peerKicksBefore = peer.kicksReceived;
      if (kind === 0 || kind === 1) {
        const data = rng.bytes(n);
        const free = sizeOf[txName] - tx.length;
        let got: number;
        try {
          got = kind === 0 ? me.ep.tryWrite(data) : me.ep.trySend(data);
        } catch (err) {
          assert.ok(kind === 1 && n > sizeOf[txName], ctx);
          assert.equal((err as KvmchanError).code, 'KVMCHAN_E_MSGSIZE');
          continue;
        }
        const expected = kind === 0 ? Math.min(n, free) : n <= free ? n : 0;
        assert.equal(got, expected, ctx);
        for (let i = 0; i < got; i++) tx.push(data[i]!);
        // No lost wake-up: a peer sleeping for data is kicked exactly once when data arrives.
        if (got > 0 && peer.waitingRead > 0) {
          assert.equal(peer.kicksReceived, peerKicksBefore + 1, `${ctx}: sleeping reader kicked`);
          peer.waitingRead = 0;
        } else {
          assert.equal(peer.kicksReceived, peerKicksBefore, `${ctx}: no spurious kick`);
        }
      } else if (kind === 2 || kind === 3) {
        const n2 = Math.min(n, 2 * sizeOf[rxName]);
        const out = new Uint8Array(n2);
        let got: number;
        try {
          got = kind === 2 ? me.ep.tryRead(out) : me.ep.tryRecv(out);
        } catch (err) {
          assert.ok(kind === 3 && n2 > sizeOf[rxName], ctx);
          assert.equal((err as KvmchanError).code, 'KVMCHAN_E_MSGSIZE');
          continue;
        }
        const expected = kind === 2 ? Math.min(n2, rx.length) : rx.length >= n2 ? n2 : 0;
        assert.equal(got, expected, ctx);
        const want = rx.splice(0, got);
        assert.deepEqual(Array.from(out.subarray(0, got)), want, ctx);
        if (got > 0 && peer.waitingWrite > 0) {
          assert.equal(peer.kicksReceived, peerKicksBefore + 1, `${ctx}: sleeping writer kicked`);
          peer.waitingWrite = 0;
        } else {
          assert.equal(peer.kicksReceived, peerKicksBefore, `${ctx}: no spurious kick`);
        }
      } else if (kind === 4) {
        // Going to sleep for data: the re-check must agree with the model.
        const sleeps = me.ep.prepareWaitReadable(1);
        assert.equal(sleeps, rx.length === 0, ctx);
        assert.equal(me.ep.dataReady(), rx.length, ctx);
        // Both calls arm the request (§5.1), whether or not the side then sleeps.
        me.waitingRead = 1;
      } else {
        const sleeps = me.ep.prepareWaitWritable(1);
        assert.equal(sleeps, tx.length === sizeOf[txName], ctx);
        assert.equal(me.ep.bufferSpace(), sizeOf[txName] - tx.length, ctx);
        me.waitingWrite = 1;
      }
    }
  }
});

test('peer close: reader drains then sees EOF, writer fails at once', () => {
  const { server, client } = makePair(10, 10, 0);
  assert.equal(client.ep.tryWrite(new Uint8Array([1, 2, 3])), 3);
  const kicks = server.kicksReceived;
  client.ep.close();
  assert.equal(server.kicksReceived, kicks + 1, 'close kicks unconditionally');
  assert.equal(server.ep.peerState, 'closed');
  const out = new Uint8Array(10);
  assert.equal(server.ep.tryRead(out), 3);
  assert.equal(server.ep.tryRead(out), EOF);
  assert.throws(() => server.ep.tryWrite(new Uint8Array(1)), { code: 'KVMCHAN_E_CLOSED' });
  assert.throws(() => client.ep.tryRead(out), { code: 'KVMCHAN_E_CLOSED' });
  assert.equal(server.ep.prepareWaitReadable(), false, 'a closed peer never makes us sleep');
});

test('server sees waiting, then connected', () => {
  const buf = new ArrayBuffer(regionLength({ c2sOrder: 10, s2cOrder: 10 }));
  initializeRegion(buf, 0, { c2sOrder: 10, s2cOrder: 10 });
  let serverKicks = 0;
  const server = new RingEndpoint(buf, 0, { role: 'server', c2sOrder: 10, s2cOrder: 10 }, () => undefined);
  const client = new RingEndpoint(buf, 0, { role: 'client', c2sOrder: 10, s2cOrder: 10 }, () => {
    serverKicks++;
  });
  assert.equal(server.peerState, 'waiting');
  assert.equal(server.bufferSpace(), 1024, 'buffer_space right after init is the real ring size');
  assert.equal(server.tryWrite(new Uint8Array(5)), 5, 'server may write before the client attaches');
  client.attach();
  assert.equal(serverKicks, 1);
  assert.equal(server.peerState, 'connected');
  assert.equal(client.peerState, 'connected');
  assert.equal(client.tryRead(new Uint8Array(10)), 5);
});

test('trySendBatch writes whole chunks in order, as many as fit, one kick at most', () => {
  const rng = new Prng(2024);
  for (let round = 0; round < 200; round++) {
    const { server, client } = makePair(10, 10, rng.pick([0, 0xffffff00]));
    const model: number[] = [];
    for (let step = 0; step < 50; step++) {
      const chunks = Array.from({ length: rng.int(0, 20) }, () => rng.bytes(rng.int(0, 300)));
      const free = 1024 - model.length;
      let fit = 0;
      let used = 0;
      for (const c of chunks) {
        if (used + c.length > free) break;
        used += c.length;
        fit++;
      }
      const kicks = server.kicksReceived;
      const sleeping = server.waitingRead > 0;
      assert.equal(client.ep.trySendBatch(chunks), fit);
      for (const c of chunks.slice(0, fit)) model.push(...c);
      assert.equal(server.kicksReceived, kicks + (sleeping && used > 0 ? 1 : 0), 'one kick per batch, only if asked');
      if (sleeping && used > 0) server.waitingRead = 0;
      if (rng.next() % 2 === 0) {
        const out = new Uint8Array(rng.int(0, 1024));
        const n = server.ep.tryRead(out);
        assert.deepEqual(Array.from(out.subarray(0, n)), model.splice(0, n));
      }
    }
  }
});

test('the bulk-copy path (large copies through an injected copy function) matches the model across the wrap', () => {
  const rng = new Prng(777);
  let bulkCalls = 0;
  const bulkCopy = (dst: Uint8Array, dstOff: number, src: Uint8Array, srcOff: number, len: number): void => {
    bulkCalls++;
    assert.ok(srcOff + len <= src.length && dstOff + len <= dst.length, 'bulk copy stays inside both buffers');
    dst.set(src.subarray(srcOff, srcOff + len), dstOff);
  };
  for (let round = 0; round < 20; round++) {
    const order = rng.int(12, 15);
    const buf = new ArrayBuffer(regionLength({ c2sOrder: order, s2cOrder: order }));
    initializeRegion(buf, 0, { c2sOrder: order, s2cOrder: order });
    const g = { c2sOrder: order, s2cOrder: order, bulkCopy };
    const server = new RingEndpoint(buf, 0, { role: 'server', ...g }, () => undefined);
    const client = new RingEndpoint(buf, 0, { role: 'client', ...g }, () => undefined);
    client.attach();
    const model: number[] = [];
    for (let step = 0; step < 300; step++) {
      if (rng.next() % 2 === 0) {
        const data = rng.bytes(rng.int(0, 2 ** order));
        const off = rng.int(0, Math.min(100, data.length));
        const n = client.tryWrite(data, off, data.length - off);
        model.push(...data.subarray(off, off + n));
      } else {
        const out = new Uint8Array(rng.int(0, 2 ** order));
        const n = server.tryRead(out);
        assert.deepEqual(Array.from(out.subarray(0, Math.max(n, 0))), model.splice(0, Math.max(n, 0)));
      }
    }
  }
  assert.ok(bulkCalls > 100, `bulk path exercised (${bulkCalls} calls)`);
});
