// A scripted, deliberately wrong ivshmem server for testing the client side's validation.
import fs from 'node:fs';
import { native, READABLE, type Poller } from '../../src/native.js';

export interface Scripted {
  value: bigint | number;
  /** fds to attach (duplicated at send time; the script keeps ownership). */
  fds?: number[];
  /** Raw bytes instead of the 8-byte encoding of value. */
  raw?: Buffer;
}

export class FakeServer {
  readonly path: string;
  readonly #fd: number;
  readonly #poller: Poller;
  readonly conns: number[] = [];

  constructor(path: string, script: (conn: number) => Scripted[], opts: { closeAfter?: boolean } = {}) {
    this.path = path;
    this.#fd = native.listenUnix(path, 'stream', 4, 0o600);
    this.#poller = new native.Poller(this.#fd, () => {
      for (;;) {
        const c = native.accept(this.#fd);
        if (c === null) return;
        this.conns.push(c);
        for (const m of script(c)) {
          let buf = m.raw;
          if (buf === undefined) {
            buf = Buffer.alloc(8);
            buf.writeBigInt64LE(BigInt(m.value));
          }
          native.sendmsg(c, buf, m.fds ?? []);
        }
        if (opts.closeAfter === true) native.shutdown(c);
      }
    });
    this.#poller.start(READABLE);
  }

  close(): void {
    this.#poller.close();
    native.close(this.#fd);
    for (const c of this.conns) native.close(c);
    this.conns.length = 0;
    fs.rmSync(this.path, { force: true });
  }
}

export const msg = (value: bigint | number, ...fds: number[]): Scripted => ({ value, fds });
