/**
 * An independent, deliberately minimal ivshmem client for the test suite. It shares no code
 * with src/ivshmem (only the addon facade), so a bug in the protocol code there
 * cannot hide itself here: it reads the server's byte stream one message at a time, never
 * more than the rest of the current 8 bytes per recvmsg (as QEMU does), and hands back the raw
 * value, the raw bytes and the fd (if any) for the test to check.
 */
import fs from 'node:fs';
import { native, READABLE, DISCONNECT, type Poller } from '../../src/native.js';
import { sleep } from './wait.js';

export interface RawMessage {
  /** The 8 bytes as received. */
  bytes: Buffer;
  /** Signed little-endian interpretation. */
  value: bigint;
  /** The fd that came with the message, or null. The caller owns it. */
  fd: number | null;
}

/** Expected message, for expectSequence(): a value and whether an fd must be attached. */
export interface Expect {
  value: number;
  fd: boolean;
}

export class IvshmemTestClient {
  readonly fd: number;
  #poller: Poller;
  #wake: (() => void) | null = null;
  #closed = false;
  /** fds received and not yet handed out or closed. */
  readonly received: number[] = [];

  private constructor(fd: number) {
    this.fd = fd;
    this.#poller = new native.Poller(fd, () => {
      const w = this.#wake;
      this.#wake = null;
      w?.();
    });
  }

  static connect(socketPath: string): IvshmemTestClient {
    return new IvshmemTestClient(native.connectUnix(socketPath, 'stream'));
  }

  async #waitReadable(deadline: number): Promise<void> {
    const left = deadline - Date.now();
    if (left <= 0) throw new Error('ivshmem test client: timed out waiting for data');
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#wake = null;
        this.#poller.stop();
        reject(new Error('ivshmem test client: timed out waiting for data'));
      }, left);
      this.#wake = () => {
        clearTimeout(timer);
        this.#poller.stop();
        resolve();
      };
      this.#poller.start(READABLE | DISCONNECT);
    });
  }

  /** Read exactly one message. Throws on EOF, on a second fd, on timeout. */
  async next(timeoutMs = 2000): Promise<RawMessage> {
    const deadline = Date.now() + timeoutMs;
    const bytes = Buffer.alloc(8);
    let have = 0;
    let fd: number | null = null;
    while (have < 8) {
      const r = native.recvmsg(this.fd, 8 - have, 1);
      if (r === null) {
        await this.#waitReadable(deadline);
        continue;
      }
      if (r.fdsTruncated) throw new Error('ivshmem test client: more than one fd on a message');
      for (const f of r.fds) {
        if (fd !== null) throw new Error('ivshmem test client: two fds on one message');
        fd = f;
      }
      if (r.eof) throw new Error(`ivshmem test client: EOF after ${have} bytes of a message`);
      r.data.copy(bytes, have);
      have += r.data.length;
    }
    return { bytes, value: bytes.readBigInt64LE(0), fd };
  }

  /**
   * Read messages and compare them with `expected` one by one; returns the fds in order
   * (null where none was expected). Fails on the first mismatch with the position.
   */
  async expectSequence(expected: readonly Expect[], timeoutMs = 2000): Promise<(number | null)[]> {
    const fds: (number | null)[] = [];
    for (let i = 0; i < expected.length; i++) {
      const e = expected[i]!;
      const m = await this.next(timeoutMs);
      if (m.fd !== null) this.received.push(m.fd);
      const want = Buffer.alloc(8);
      want.writeBigInt64LE(BigInt(e.value));
      if (!m.bytes.equals(want)) {
        throw new Error(`message #${i}: got bytes ${m.bytes.toString('hex')} (${m.value}), want ${want.toString('hex')} (${e.value})`);
      }
      if ((m.fd !== null) !== e.fd) {
        throw new Error(`message #${i} (value ${e.value}): fd ${m.fd === null ? 'missing' : 'unexpected'}`);
      }
      fds.push(m.fd);
    }
    return fds;
  }

  /** Resolve if nothing at all arrives within `ms`; throw with what arrived otherwise. */
  async expectSilence(ms = 50): Promise<void> {
    await sleep(ms);
    const r = native.recvmsg(this.fd, 8, 1);
    if (r === null) return;
    for (const f of r.fds) native.close(f);
    throw new Error(`expected silence, got ${r.eof ? 'EOF' : `${r.data.length} bytes ${r.data.toString('hex')}`}`);
  }

  /** Wait for EOF (the server closed us); bytes before it are returned. */
  async expectEof(timeoutMs = 2000): Promise<Buffer> {
    const deadline = Date.now() + timeoutMs;
    const chunks: Buffer[] = [];
    for (;;) {
      let r;
      try {
        r = native.recvmsg(this.fd, 4096, 8);
      } catch (err) {
        if ((err as { code?: string }).code === 'ECONNRESET') return Buffer.concat(chunks);
        throw err;
      }
      if (r === null) {
        await this.#waitReadable(deadline);
        continue;
      }
      for (const f of r.fds) native.close(f);
      if (r.eof) return Buffer.concat(chunks);
      chunks.push(r.data);
    }
  }

  /** Misbehave: send bytes (QEMU never does). */
  send(data: Uint8Array, fds: number[] = []): void {
    native.sendmsg(this.fd, data, fds);
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#poller.close();
    native.close(this.fd);
    for (const f of this.received) native.close(f);
    this.received.length = 0;
  }
}

/** Number of open fds of this process. */
export function openFdCount(): number {
  return fs.readdirSync('/proc/self/fd').length;
}

/** What an fd points at (e.g. 'anon_inode:[eventfd]', '/memfd:x (deleted)'). */
export function fdKind(fd: number): string {
  return fs.readlinkSync(`/proc/self/fd/${fd}`);
}

/** Expected initial sequence for a client with id `own` on a device with `peers` (ids, ascending). */
export function initialSequence(own: number, peers: readonly number[], vectors: number): Expect[] {
  const out: Expect[] = [
    { value: 0, fd: false },
    { value: own, fd: false },
    { value: -1, fd: true },
  ];
  for (const p of peers) for (let v = 0; v < vectors; v++) out.push({ value: p, fd: true });
  for (let v = 0; v < vectors; v++) out.push({ value: own, fd: true });
  return out;
}

/** Messages announcing a join of `id`. */
export function joinSequence(id: number, vectors: number): Expect[] {
  return Array.from({ length: vectors }, () => ({ value: id, fd: true }));
}
