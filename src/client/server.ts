/**
 * Serving many clients on one port, the way `net.createServer` does (docs/api.md "Serving
 * many clients"). A vchan has exactly one client, so the server keeps one vchan waiting on
 * the port at all times: as soon as a client attaches, it serves the port again (the daemon
 * lets the port's owner do that while the earlier vchan runs) and hands the connected vchan
 * to the 'connection' listeners. Clients arriving meanwhile wait for the next vchan.
 */
import { EventEmitter } from 'node:events';
import { listen, type ListenOptions } from './connect.js';
import type { Vchan } from './vchan.js';
import { KvmchanError } from '../errors.js';

export type ServerOptions = Omit<ListenOptions, 'signal'>;

export interface VchanServerEvents {
  /** A client attached: the vchan is yours (close it when done). */
  connection: [vchan: Vchan];
  /** Serving the port again failed (daemon lost, limits): the server has stopped. */
  error: [err: KvmchanError];
  /** The server stopped serving (close(), or after 'error'). */
  close: [];
}

export class VchanServer extends EventEmitter<VchanServerEvents> implements AsyncDisposable {
  readonly port: number;
  readonly domain: number;
  readonly #options: ServerOptions;
  readonly #stop = new AbortController();
  #waiting: Vchan | null = null;
  #closed = false;
  #connections = 0;

  /** @internal use createServer() */
  constructor(options: ServerOptions, first: Vchan) {
    super();
    this.#options = options;
    this.port = first.port;
    this.domain = first.peerDomain;
    this.#waiting = first;
    void this.#serve(first);
  }

  /** Clients handed out so far. */
  get connections(): number {
    return this.#connections;
  }

  get listening(): boolean {
    return !this.#closed;
  }

  async #serve(first: Vchan): Promise<void> {
    let waiting = first;
    for (;;) {
      try {
        await waiting.waitConnected({ signal: this.#stop.signal });
      } catch (err) {
        this.#fail(err);
        return;
      }
      if (this.#closed) return;
      // Serve the port again before handing this vchan out, so the next client waits the
      // shortest time; the request is under way while the listeners run.
      const next = listen({ ...this.#options, signal: this.#stop.signal });
      this.#waiting = null;
      this.#connections++;
      this.emit('connection', waiting);
      try {
        waiting = await next;
      } catch (err) {
        this.#fail(err);
        return;
      }
      if (this.#closed) {
        waiting.close();
        return;
      }
      this.#waiting = waiting;
    }
  }

  #fail(err: unknown): void {
    if (this.#closed) return;
    this.#finish();
    const e = err instanceof KvmchanError ? err : new KvmchanError(String(err), 'KVMCHAN_E_UNKNOWN', { cause: err });
    this.emit('error', e);
    this.emit('close');
  }

  #finish(): void {
    this.#closed = true;
    this.#stop.abort();
    this.#waiting?.close();
    this.#waiting = null;
  }

  /** Stop serving: the waiting vchan goes; vchans already handed out stay open. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#finish();
    this.emit('close');
  }

  [Symbol.asyncDispose](): Promise<void> {
    this.close();
    return Promise.resolve();
  }
}

/**
 * Serve `options.port` for any number of clients, one vchan each. Resolves once the port is
 * served (so a refusal such as `KVMCHAN_E_DAEMON_EEXIST` rejects here).
 */
export async function createServer(options: ServerOptions, onConnection?: (vchan: Vchan) => void): Promise<VchanServer> {
  const first = await listen(options);
  const server = new VchanServer(options, first);
  if (onConnection !== undefined) server.on('connection', onConnection);
  return server;
}
