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
}

export interface NetcatResult {
  sent: number;
  received: number;
}

async function writeAll(out: Writable, chunk: Buffer): Promise<void> {
  if (!out.write(chunk)) await once(out, 'drain');
}

export async function netcat(vchan: Vchan, opts: NetcatOptions): Promise<NetcatResult> {
  const result: NetcatResult = { sent: 0, received: 0 };
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
        await vchan.write(chunk);
        result.sent += chunk.length;
      }
    } catch (err) {
      if (peerDone || (err instanceof ClosedError && vchan.state === 'closed')) return;
      throw err;
    }
    if (opts.closeOnEof) vchan.close();
  })();

  try {
    await Promise.all([toVchan, fromVchan]);
  } catch (err) {
    // Our own close after input EOF ends the read loop with ClosedError: that is success.
    if (!(err instanceof ClosedError && opts.closeOnEof)) throw err;
  }
  await new Promise<void>((resolve) => {
    if (opts.output.writableNeedDrain) opts.output.once('drain', resolve);
    else resolve();
  });
  return result;
}
