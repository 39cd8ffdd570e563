/**
 * netcat over a vchan: input → vchan and vchan → output at the same time, with
 * backpressure both ways. vchans have no half-close (docs/api.md "Semantics"),
 * so input EOF closes the vchan only when asked to (--close-on-eof), as `nc -N`.
 */
import type { Readable, Writable } from 'node:stream';
import { once } from 'node:events';
import type { Vchan } from '../client/vchan.js';
import { ClosedError } from '../errors.js';

export interface NetcatOptions {
  input: Readable;
  output: Writable;
  closeOnEof: boolean;
  /** Bytes of input left after `consumed` were read, when knowable (a regular file). */
  unreadInput?: (consumed: number) => number;
}

export interface NetcatResult {
  sent: number;
  received: number;
  /**
   * Set when the peer closed before our input ended: bytes read from the input but never
   * delivered, plus, for a regular file, what was left unread; `inputEnded` false.
   */
  undelivered: number;
  inputEnded: boolean;
}

async function writeAll(out: Writable, chunk: Buffer): Promise<void> {
  if (!out.write(chunk)) await once(out, 'drain');
}

export async function netcat(vchan: Vchan, opts: NetcatOptions): Promise<NetcatResult> {
  const result: NetcatResult = { sent: 0, received: 0, undelivered: 0, inputEnded: false };
  let consumed = 0;
  let peerDone = false;

  const fromVchan = (async () => {
    for await (const chunk of vchan) {
      result.received += chunk.length;
      await writeAll(opts.output, chunk);
    }
    peerDone = true;
    // The peer is gone: nothing we read from input could be delivered any more.
    opts.input.destroy();
  })();

  const toVchan = (async () => {
    try {
      for await (const chunk of opts.input as AsyncIterable<Buffer>) {
        consumed += chunk.length;
        const before = vchan.bytesWritten;
        try {
          await vchan.write(chunk);
        } finally {
          // A write cut short by the peer's close put part of the chunk in the ring at most.
          result.sent += Math.max(0, Math.min(chunk.length, vchan.bytesWritten - before));
        }
      }
    } catch (err) {
      if (peerDone || (err instanceof ClosedError && vchan.state === 'closed')) return;
      throw err;
    }
    if (!peerDone) result.inputEnded = true;
    if (opts.closeOnEof) vchan.close();
  })();

  try {
    await Promise.all([toVchan, fromVchan]);
  } catch (err) {
    // Our own close after input EOF ends the read loop with ClosedError: that is success.
    if (!(err instanceof ClosedError && opts.closeOnEof)) throw err;
  }
  if (!result.inputEnded) result.undelivered = consumed - result.sent + (opts.unreadInput?.(consumed) ?? 0);
  await new Promise<void>((resolve) => {
    if (opts.output.writableNeedDrain) opts.output.once('drain', resolve);
    else resolve();
  });
  return result;
}
