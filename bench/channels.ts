/**
 * The byte channels the benchmark compares, behind one small interface:
 * the raw ring over a memfd, a daemon-made vchan, and
 * Node's `net` over a UNIX socket (the baseline).
 */
import net from 'node:net';
import { native } from '../src/native.js';
import { RingEndpoint } from '../src/ring/endpoint.js';
import { AsyncRing } from '../src/ring/async-ring.js';
import { EventFdWaiter } from '../src/ring/eventfd-waiter.js';
import { initializeRegion, regionLength, type Role } from '../src/ring/layout.js';
import type { Vchan } from '../src/client/vchan.js';

export interface Chan {
  tryWrite(b: Uint8Array): number;
  /** Writes whole messages from `chunks`, as many as fit; returns how many. */
  trySendBatch(chunks: readonly Uint8Array[]): number;
  tryRead(b: Uint8Array): number;
  waitReadable(min?: number): Promise<void>;
  waitWritable(min?: number): Promise<void>;
  close(): void;
}

export function ringChan(mapping: ArrayBuffer, role: Role, order: number, waitFd: number, kickFd: number, spin: number): Chan {
  const waiter = new EventFdWaiter(waitFd, kickFd);
  const ep = new RingEndpoint(mapping, 0, { role, c2sOrder: order, s2cOrder: order, bulkCopy: native.copyBytes }, waiter.kick);
  if (role === 'client') ep.attach();
  const ring = new AsyncRing(ep, waiter, { spin });
  return {
    tryWrite: (b) => ep.tryWrite(b),
    trySendBatch: (c) => ep.trySendBatch(c),
    tryRead: (b) => ep.tryRead(b),
    waitReadable: (min) => ring.waitReadable(min),
    waitWritable: (min) => ring.waitWritable(min),
    close: () => {
      ep.close();
      waiter.close();
      native.munmap(mapping);
    },
  };
}

export function createRegion(order: number): { shm: number; mapping: ArrayBuffer; a: number; b: number } {
  const g = { c2sOrder: order, s2cOrder: order };
  const shm = native.memfdCreate('bench', regionLength(g), true);
  const mapping = native.mmap(shm, regionLength(g), 0, true);
  initializeRegion(mapping, 0, g);
  return { shm, mapping, a: native.eventfd(0, 0o4000), b: native.eventfd(0, 0o4000) };
}

export function vchanChan(v: Vchan): Chan {
  return {
    tryWrite: (b) => v.tryWrite(b),
    trySendBatch: (c) => v.trySendBatch(c),
    tryRead: (b) => v.tryRead(b),
    waitReadable: (min) => v.waitReadable(min),
    waitWritable: (min) => v.waitWritable(min),
    close: () => {
      v.close();
    },
  };
}

/**
 * `net.Socket` seen through the same interface (writes are queued by Node, reads buffered here).
 *
 * Every wait re-checks its condition after each socket event instead of awaiting one
 * particular event: an event that fired while nobody listened (a 'drain' during the await of
 * the previous step, say) must not be waited for again. Whether a write must wait comes from
 * the socket itself (`writableNeedDrain`, cleared exactly when 'drain' is emitted), not from
 * the result of some earlier write().
 */
export function netChan(sock: net.Socket): Chan {
  const chunks: Buffer[] = [];
  let buffered = 0;
  let ended = false;
  let failure: Error | null = null;
  let waiters: (() => void)[] = [];
  const wake = (): void => {
    const w = waiters;
    waiters = [];
    for (const f of w) f();
  };
  const next = (): Promise<void> => new Promise<void>((r) => waiters.push(r));
  sock.on('data', (d: Buffer) => {
    chunks.push(d);
    buffered += d.length;
    wake();
  });
  sock.on('end', () => {
    ended = true;
    wake();
  });
  sock.on('drain', wake);
  sock.on('error', (err) => {
    failure = err;
    wake();
  });
  sock.on('close', () => {
    ended = true;
    failure ??= new Error('socket closed');
    wake();
  });
  const check = (): void => {
    if (failure !== null || sock.destroyed) throw failure ?? new Error('socket destroyed');
  };
  return {
    tryWrite: (b) => {
      check();
      if (sock.writableNeedDrain) return 0;
      // Node copies nothing on write: hand it a fresh buffer so the caller may reuse its own.
      sock.write(Buffer.from(b));
      return b.length;
    },
    trySendBatch: (c) => {
      check();
      if (sock.writableNeedDrain) return 0;
      // The socket equivalent of a batch: cork, write each message, uncork (one syscall).
      sock.cork();
      for (const b of c) sock.write(Buffer.from(b));
      sock.uncork();
      return c.length;
    },
    tryRead: (b) => {
      if (buffered === 0) return ended ? -1 : 0;
      let n = 0;
      while (n < b.length && chunks.length > 0) {
        const head = chunks[0]!;
        const k = Math.min(head.length, b.length - n);
        b.set(head.subarray(0, k), n);
        n += k;
        if (k === head.length) chunks.shift();
        else chunks[0] = head.subarray(k);
      }
      buffered -= n;
      return n;
    },
    waitReadable: async (min = 1) => {
      while (buffered < min && !ended) await next();
    },
    waitWritable: async () => {
      while (sock.writableNeedDrain) {
        check();
        await next();
      }
    },
    close: () => {
      sock.destroy();
    },
  };
}

/** Writes `total` bytes in `size`-byte writes; returns when all are handed over. */
export async function writeBulk(ch: Chan, total: number, size: number): Promise<void> {
  const chunk = Buffer.alloc(size, 0x5a);
  let sent = 0;
  while (sent < total) {
    const n = ch.tryWrite(size <= total - sent ? chunk : chunk.subarray(0, total - sent));
    if (n === 0) await ch.waitWritable(1);
    sent += n;
  }
}

/** Writes `total` bytes as 64-byte messages in batches of `batch`. */
export async function writeBatched(ch: Chan, total: number, size: number, batch: number): Promise<void> {
  const msgs = Array.from({ length: batch }, () => Buffer.alloc(size, 0x5a));
  let sent = 0;
  while (sent < total) {
    const want = Math.min(batch, Math.ceil((total - sent) / size));
    const group = want === batch ? msgs : msgs.slice(0, want);
    const n = ch.trySendBatch(group);
    if (n === 0) await ch.waitWritable(size);
    sent += n * size;
  }
}

/** Reads exactly `total` bytes (stream reads into a 256 KiB buffer). */
export async function readBulk(ch: Chan, total: number): Promise<void> {
  const buf = Buffer.allocUnsafe(256 * 1024);
  let got = 0;
  while (got < total) {
    const n = ch.tryRead(buf.subarray(0, Math.min(buf.length, total - got)));
    if (n < 0) throw new Error('stream ended early');
    if (n === 0) await ch.waitReadable(1);
    got += n;
  }
}

/** Reads exactly b.length bytes. */
export async function readExact(ch: Chan, b: Uint8Array): Promise<void> {
  let got = 0;
  while (got < b.length) {
    const n = ch.tryRead(b.subarray(got));
    if (n < 0) throw new Error('stream ended early');
    if (n === 0) await ch.waitReadable(1);
    got += n;
  }
}

export async function writeExact(ch: Chan, b: Uint8Array): Promise<void> {
  let sent = 0;
  while (sent < b.length) {
    const n = ch.tryWrite(b.subarray(sent));
    if (n === 0) await ch.waitWritable(1);
    sent += n;
  }
}
