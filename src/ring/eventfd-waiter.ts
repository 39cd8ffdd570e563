/**
 * Wait hook over eventfds (the host's event objects, architecture.md rule 1):
 * `waitFd` becomes readable when the peer kicks us; `kick()` writes the peer's.
 * One fd serves every waiter of a vchan (data, space and close all arrive on
 * it), so an event wakes all pending waits and each re-checks the ring.
 */
import { ClosedError } from '../errors.js';
import { native, READABLE, type Poller } from '../native.js';
import { abortable, type WaitHook } from './async-ring.js';

interface Pending {
  resolve: () => void;
  reject: (err: Error) => void;
}

export class EventFdWaiter implements WaitHook {
  readonly waitFd: number;
  readonly kickFd: number;
  readonly #poller: Poller;
  #pending: Pending[] = [];
  #keepAlive = false;
  #closed = false;

  /** Takes ownership of both fds: close() closes them. */
  constructor(waitFd: number, kickFd: number) {
    this.waitFd = waitFd;
    this.kickFd = kickFd;
    this.#poller = new native.Poller(waitFd, (err) => {
      this.#onEvent(err);
    });
    // Watching all the time costs nothing; refs are what keep a process alive,
    // and they are only held while someone waits (an idle vchan lets Node exit).
    this.#poller.start(READABLE);
    this.#poller.unref();
  }

  readonly kick = (): void => {
    if (!this.#closed) native.eventfdWrite(this.kickFd, 1);
  };

  #onEvent(err: Error | null): void {
    if (this.#closed) return;
    if (err === null) native.eventfdRead(this.waitFd);
    const woken = this.#pending;
    if (woken.length === 0) return;
    this.#pending = [];
    this.#updateRef();
    for (const p of woken) {
      if (err !== null) p.reject(err);
      else p.resolve();
    }
  }

  /**
   * Wake every pending wait as an event on the wait fd would, without touching it: the daemon
   * reports a dead peer over our own connection (wire-protocol.md §7.3), never through the
   * eventfd a peer shares.
   */
  wake(): void {
    if (this.#closed) return;
    const woken = this.#pending;
    if (woken.length === 0) return;
    this.#pending = [];
    this.#updateRef();
    for (const p of woken) p.resolve();
  }

  #updateRef(): void {
    if (this.#closed) return;
    if (this.#pending.length > 0 || this.#keepAlive) this.#poller.ref();
    else this.#poller.unref();
  }

  /** Keep the process alive even while nobody waits (a server awaiting clients, say). */
  set keepAlive(on: boolean) {
    this.#keepAlive = on;
    this.#updateRef();
  }

  wait(signal?: AbortSignal): Promise<void> {
    if (this.#closed) return Promise.reject(new ClosedError('vchan closed locally'));
    let entry: Pending | undefined;
    const p = new Promise<void>((resolve, reject) => {
      entry = { resolve, reject };
    });
    this.#pending.push(entry!);
    this.#updateRef();
    return abortable(p, signal, () => {
      this.#pending = this.#pending.filter((e) => e !== entry);
      this.#updateRef();
    });
  }

  /** Consume any pending event without waiting (libvchan wait() semantics after poll). */
  drain(): boolean {
    return native.eventfdRead(this.waitFd) !== null;
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#poller.close();
    const pending = this.#pending;
    this.#pending = [];
    for (const p of pending) p.reject(new ClosedError('vchan closed locally'));
    native.close(this.waitFd);
    native.close(this.kickFd);
  }
}
