/**
 * Full-duplex transfer over one ring endpoint: sends `sendBytes` of a
 * pseudo-random stream in random chunks while receiving up to `recvBytes` (or
 * until end of stream), hashing both. Shared by the two-process ring tests and
 * their child (ring-peer.ts).
 */
import { createHash, randomBytes } from 'node:crypto';
import type { AsyncRing } from '../../src/ring/async-ring.js';
import { EOF } from '../../src/ring/endpoint.js';
import { Prng } from './prng.js';

export interface PumpResult {
  sent: number;
  received: number;
  sentHash: string;
  receivedHash: string;
  eof: boolean;
}

export interface PumpOptions {
  sendBytes: number;
  recvBytes: number;
  seed: number;
  maxChunk?: number;
  /** Called after each write (for progress / kill-mid-stream tests). */
  onSent?: (sent: number) => void;
}

const SOURCE = randomBytes(4 * 1024 * 1024);

export async function pump(ring: AsyncRing, opts: PumpOptions): Promise<PumpResult> {
  const rng = new Prng(opts.seed);
  const maxChunk = opts.maxChunk ?? 5000;
  const sendHash = createHash('sha256');
  const recvHash = createHash('sha256');
  let sent = 0;
  let received = 0;
  let eof = false;
  const writer = (async () => {
    let off = 0;
    while (sent < opts.sendBytes) {
      const n = Math.min(rng.int(1, maxChunk), opts.sendBytes - sent);
      if (off + n > SOURCE.length) off = rng.int(0, 4096);
      const chunk = SOURCE.subarray(off, off + n);
      off += n + (rng.next() & 7); // skip a few bytes so the stream never repeats in step with the ring
      await ring.write(chunk);
      sendHash.update(chunk);
      sent += n;
      opts.onSent?.(sent);
    }
  })();
  const reader = (async () => {
    const buf = Buffer.allocUnsafe(maxChunk);
    const rrng = new Prng(opts.seed ^ 0x5a5a5a5a);
    while (received < opts.recvBytes) {
      const want = Math.min(rrng.int(1, maxChunk), opts.recvBytes - received);
      const n = await ring.read(buf.subarray(0, want));
      if (n === EOF) {
        eof = true;
        return;
      }
      recvHash.update(buf.subarray(0, n));
      received += n;
    }
  })();
  await Promise.all([writer, reader]);
  return { sent, received, sentHash: sendHash.digest('hex'), receivedHash: recvHash.digest('hex'), eof };
}
