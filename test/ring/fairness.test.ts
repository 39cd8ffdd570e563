// The event loop keeps running under a transfer that never has to wait (docs/ring-protocol.md
// §8.2): against a peer that keeps pace every read and write completes at once, and
// without a yield the loop would never reach its I/O phase — a lost daemon socket, timers and
// other streams would go unserved for as long as the transfer lasts.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { AsyncRing, type WaitHook } from '../../src/ring/async-ring.js';
import type { RingEndpoint } from '../../src/ring/endpoint.js';

/** An endpoint whose ring always has room and data: a peer that never falls behind. */
function tirelessPeer(): RingEndpoint {
  const ep = {
    tryWrite: (_src: Uint8Array, _off: number, len: number) => len,
    tryRead: (dst: Uint8Array) => dst.length,
    trySend: (src: Uint8Array) => src.length,
    tryRecv: (dst: Uint8Array) => dst.length,
    trySendBatch: (chunks: readonly Uint8Array[], from: number) => chunks.length - from,
  };
  return ep as unknown as RingEndpoint;
}

const neverKicked: WaitHook = { wait: () => new Promise(() => undefined) };

for (const op of ['write', 'read', 'send', 'recv', 'sendBatch'] as const) {
  test(`${op}: a timer fires while a transfer that never waits goes on`, async () => {
    const ring = new AsyncRing(tirelessPeer(), neverKicked);
    const buf = new Uint8Array(64);
    let timerFired = false;
    setTimeout(() => {
      timerFired = true;
    }, 1);
    const started = performance.now();
    let calls = 0;
    // Bounded: without the yield this loop would run to its end with the timer still pending.
    while (!timerFired && performance.now() - started < 2000) {
      if (op === 'sendBatch') await ring.sendBatch([buf, buf]);
      else await ring[op](buf);
      calls++;
    }
    assert.ok(timerFired, `the timer did not fire during ${calls} ${op} calls over 2 s`);
  });
}
