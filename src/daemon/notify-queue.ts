/**
 * Notifications to the service manager that never block the daemon (docs/operations.md,
 * "systemd"): every datagram to $NOTIFY_SOCKET is sent without waiting. When the manager is not
 * reading (busy, stuck, or a receiver that never reads) its queue is full and the send fails
 * with EAGAIN; the notification then waits here, in order, and is retried on a timer with
 * backoff. Everything sent later queues behind it, so the manager sees what we said in the order
 * we said it — a removal never overtakes the store it undoes.
 *
 * An fd that travels with a notification is duplicated while it waits (the caller's stays the
 * caller's, as with a direct send) and closed once sent, dropped or cancelled. The queue is
 * bounded (`maxQueued`): beyond it a notification is dropped with a rate-limited warning. Any
 * other error (ECONNREFUSED, ENOENT: the manager is gone) drops the notification and is logged
 * once until a send succeeds again; nothing is thrown to the caller.
 */
import type { Logger } from 'pino';
import { native } from '../native.js';
import { RateLimitedLog } from './rate-limited-log.js';

/** As many as the unit lets the store hold (FileDescriptorStoreMax= in contrib/systemd). */
export const DEFAULT_MAX_QUEUED = 8192;
/** First retry after EAGAIN, then doubled up to `maxRetryMs`. */
export const DEFAULT_FIRST_RETRY_MS = 10;
export const DEFAULT_MAX_RETRY_MS = 1000;

export interface NotifyQueueOptions {
  /** $NOTIFY_SOCKET: a path, or '@' + an abstract name. */
  socket: string;
  log?: Logger | undefined;
  maxQueued?: number | undefined;
  firstRetryMs?: number;
  maxRetryMs?: number;
}

/** A queued notification; `fd` (ours, a duplicate) is closed when it leaves the queue. */
interface Entry {
  text: string;
  fd: number | undefined;
  /** Set when sent, cancelled or dropped: skipped, its fd already closed. */
  dead: boolean;
  /** Called if it is dropped after all (the manager went away, or close()). */
  onDropped: (() => void) | undefined;
}

/** What a send attempt came to. */
export type SendOutcome = 'sent' | 'queued' | 'dropped';

export class NotifyQueue {
  readonly #socket: string;
  readonly #log: Logger | undefined;
  readonly #dropLog: RateLimitedLog | undefined;
  readonly #max: number;
  readonly #firstRetryMs: number;
  readonly #maxRetryMs: number;
  /** Pending entries from #head on (cancelled ones included until they reach the head). */
  #entries: Entry[] = [];
  #head = 0;
  /** Live (not cancelled) entries. */
  #live = 0;
  #retryMs: number;
  #timer: NodeJS.Timeout | undefined;
  /** Error codes logged since the last successful send (each is logged once). */
  readonly #failures = new Set<string>();
  #closed = false;
  /** The "not reading" warning was logged and the queue has not emptied since. */
  #backlogged = false;

  constructor(opts: NotifyQueueOptions) {
    this.#socket = opts.socket;
    this.#log = opts.log;
    this.#dropLog = opts.log === undefined ? undefined : new RateLimitedLog(opts.log, { burst: 1, intervalMs: 60_000 });
    this.#max = opts.maxQueued ?? DEFAULT_MAX_QUEUED;
    this.#firstRetryMs = opts.firstRetryMs ?? DEFAULT_FIRST_RETRY_MS;
    this.#maxRetryMs = opts.maxRetryMs ?? DEFAULT_MAX_RETRY_MS;
    this.#retryMs = this.#firstRetryMs;
  }

  /** Notifications waiting for room in the manager's queue. */
  get pending(): number {
    return this.#live;
  }

  /**
   * Send `text` (with a duplicate of `fd`, if given) now, or queue it behind what is waiting.
   * The returned handle cancels it while it is still queued; `onDropped` runs if a queued
   * notification is dropped after all.
   */
  send(text: string, fd?: number, onDropped?: () => void): { outcome: SendOutcome; cancel: () => boolean } {
    if (this.#closed) {
      // After close nothing waits any more: one attempt, as a stopping daemon's last words.
      const r = this.#trySend(text, fd);
      return { outcome: r === 'sent' ? 'sent' : 'dropped', cancel: () => false };
    }
    if (this.#live === 0) {
      const r = this.#trySend(text, fd);
      if (r !== 'again') {
        if (r === 'sent') this.#caughtUp();
        return { outcome: r === 'sent' ? 'sent' : 'dropped', cancel: () => false };
      }
      if (!this.#backlogged) {
        this.#backlogged = true;
        this.#log?.warn(
          { socket: this.#socket },
          'the service manager is not reading its notification socket: notifications are queued and retried',
        );
      }
    }
    if (this.#live >= this.#max) {
      this.#dropLog?.warn({ max: this.#max, text: text.trim() }, 'notification queue full: notification dropped');
      return { outcome: 'dropped', cancel: () => false };
    }
    let copy: number | undefined;
    if (fd !== undefined) {
      try {
        copy = native.dup(fd);
      } catch (err) {
        this.#dropLog?.warn(
          { err: (err as Error).message, text: text.trim() },
          'cannot keep an fd for the service manager: notification dropped',
        );
        return { outcome: 'dropped', cancel: () => false };
      }
    }
    const entry: Entry = { text, fd: copy, dead: false, onDropped };
    // Cancelled entries wait for the head to pass them; a store and removal of the same name
    // over and over while the manager is not reading must not grow the array without end.
    if (this.#entries.length - this.#head > 2 * this.#live + 64) {
      this.#entries = this.#entries.slice(this.#head).filter((e) => !e.dead);
      this.#head = 0;
    }
    this.#entries.push(entry);
    this.#live++;
    this.#schedule();
    return {
      outcome: 'queued',
      cancel: () => {
        if (entry.dead) return false;
        this.#kill(entry);
        return true;
      },
    };
  }

  /**
   * Stop retrying: one last attempt at what is queued (the manager may be reading again), then
   * drop the rest, closing its fds. Later sends are tried once and never queued.
   */
  close(): void {
    if (this.#closed) return;
    clearTimeout(this.#timer);
    this.#timer = undefined;
    if (this.#live > 0) this.#flush();
    this.#closed = true;
    clearTimeout(this.#timer);
    this.#timer = undefined;
    const lost = this.#live;
    for (let i = this.#head; i < this.#entries.length; i++) {
      const e = this.#entries[i]!;
      if (e.dead) continue;
      this.#kill(e);
      e.onDropped?.();
    }
    this.#entries = [];
    this.#head = 0;
    if (lost > 0) this.#log?.warn({ lost }, 'notifications the service manager never read were dropped');
    this.#dropLog?.flush();
  }

  #kill(e: Entry): void {
    e.dead = true;
    this.#live--;
    if (e.fd !== undefined) native.close(e.fd);
    e.fd = undefined;
  }

  #schedule(): void {
    if (this.#timer !== undefined || this.#closed) return;
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.#flush();
    }, this.#retryMs);
    // Retrying must not keep a stopping daemon alive; close() reports what was lost.
    this.#timer.unref();
  }

  #flush(): void {
    let progress = false;
    while (this.#head < this.#entries.length) {
      const e = this.#entries[this.#head]!;
      if (!e.dead) {
        const r = this.#trySend(e.text, e.fd);
        if (r === 'again') {
          // A manager that took some is reading again: come back soon. One that took none
          // is asked less and less often.
          this.#retryMs = progress ? this.#firstRetryMs : Math.min(this.#retryMs * 2, this.#maxRetryMs);
          this.#compact();
          this.#schedule();
          return;
        }
        this.#kill(e);
        if (r === 'failed') e.onDropped?.();
        progress = true;
      }
      this.#head++;
    }
    this.#entries = [];
    this.#head = 0;
    this.#retryMs = this.#firstRetryMs;
    this.#caughtUp();
  }

  #caughtUp(): void {
    if (!this.#backlogged) return;
    this.#backlogged = false;
    this.#log?.info('the service manager reads its notification socket again: queued notifications sent');
  }

  /** Forget the entries already sent once they are most of the array. */
  #compact(): void {
    if (this.#head > 1024 && this.#head * 2 > this.#entries.length) {
      this.#entries = this.#entries.slice(this.#head);
      this.#head = 0;
    }
  }

  #trySend(text: string, fd: number | undefined): 'sent' | 'again' | 'failed' {
    try {
      native.sendDatagram(this.#socket, Buffer.from(text), fd === undefined ? undefined : [fd]);
      this.#failures.clear();
      return 'sent';
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code ?? 'unknown';
      if (code === 'EAGAIN') return 'again';
      if (!this.#failures.has(code)) {
        this.#failures.add(code);
        this.#log?.warn(
          { socket: this.#socket, code, err: (err as Error).message },
          'cannot notify the service manager: notification dropped (logged once until a notification gets through)',
        );
      }
      return 'failed';
    }
  }
}
