/**
 * The service manager's file descriptor store (docs/operations.md, "systemd"; the protocol of
 * systemd's sd_notify with FDSTORE=1): the daemon parks the fds of every device a VM holds there
 * (vmm/device-fds.ts), so a kvmchand restarted while the VM runs gets the very same memfd and
 * eventfds back and can adopt the VM (docs/vms-qmp.md, "Restarts") —
 * QEMU keeps what it was sent once and never reconnects its chardev.
 *
 * - store: `FDSTORE=1` + `FDNAME=<name>`, the fd as SCM_RIGHTS on a datagram to $NOTIFY_SOCKET;
 * - remove: `FDSTOREREMOVE=1` + `FDNAME=<name>` when the device is gone;
 * - at start: `LISTEN_PID` (must be ours), `LISTEN_FDS` (count, first fd 3), `LISTEN_FDNAMES`
 *   (colon-separated). Whatever we cannot use is closed and removed from the store.
 *
 * Nothing here waits for the service manager: notifications go through a NotifyQueue
 * (notify-queue.ts), which queues them in order while the manager's socket is full, and a store
 * still queued when its name is removed is cancelled instead (the manager never sees either).
 *
 * The notify socket is trusted as the service manager only because the environment named it
 * (docs/security.md, "The service manager's fd store"). Names are ours: `kvmchan/...`, printable
 * ASCII without ':' (systemd's rule), at most 255 bytes.
 */
import type { Logger } from 'pino';
import fs from 'node:fs';
import { native } from '../native.js';
import { NotifyQueue } from './notify-queue.js';

/** First fd the service manager passes (SD_LISTEN_FDS_START). */
export const LISTEN_FDS_START = 3;
/** Every name we store starts with this. */
export const FD_NAME_PREFIX = 'kvmchan/';
/** More than this many passed fds is not a service manager talking to us. */
const MAX_LISTEN_FDS = 65536;
const NAME_RE = /^[\x21-\x39\x3b-\x7e]{1,255}$/;

/** Whether systemd would accept `name` as an FDNAME (printable ASCII, no ':' or space, ≤ 255). */
export function validFdName(name: string): boolean {
  return NAME_RE.test(name);
}

export interface FdStoreOptions {
  /** $NOTIFY_SOCKET; none: nothing is stored (the daemon runs without a service manager). */
  notifySocket?: string | undefined;
  /** What the service manager passed at start (LISTEN_* of the environment). */
  listen?: { pid?: string | undefined; fds?: string | undefined; names?: string | undefined };
  /** Our pid, compared with LISTEN_PID. */
  pid?: number;
  log?: Logger | undefined;
  /** Notifications waiting for room in the manager's queue at most (default: NotifyQueue's). */
  maxQueued?: number | undefined;
}

export class FdStore {
  readonly #socket: string | undefined;
  readonly #log: Logger | undefined;
  /** Passed at start and not yet claimed: name → fd (ours to close). */
  readonly #received = new Map<string, number>();
  /** Names the store holds an fd under (stored by us, or passed back and claimed). */
  readonly #stored = new Set<string>();
  /** Sends to the manager; undefined without one. */
  readonly #queue: NotifyQueue | undefined;
  /** Stores that went into the queue: name → cancels it if it is still there. */
  readonly #queuedStores = new Map<string, () => boolean>();

  /** From the process environment; LISTEN_* are removed from it (they were for us only). */
  static fromEnvironment(log?: Logger): FdStore {
    const env = process.env;
    const store = new FdStore({
      notifySocket: env['NOTIFY_SOCKET'],
      listen: { pid: env['LISTEN_PID'], fds: env['LISTEN_FDS'], names: env['LISTEN_FDNAMES'] },
      pid: process.pid,
      log,
    });
    delete env['LISTEN_PID'];
    delete env['LISTEN_FDS'];
    delete env['LISTEN_FDNAMES'];
    return store;
  }

  constructor(opts: FdStoreOptions) {
    this.#socket = opts.notifySocket !== undefined && opts.notifySocket !== '' ? opts.notifySocket : undefined;
    this.#log = opts.log?.child({ component: 'fd-store' });
    this.#queue =
      this.#socket === undefined ? undefined : new NotifyQueue({ socket: this.#socket, log: this.#log, maxQueued: opts.maxQueued });
    if (opts.listen !== undefined) this.#takeListened(opts.listen, opts.pid ?? process.pid);
  }

  /** A service manager is there to store fds. */
  get enabled(): boolean {
    return this.#socket !== undefined;
  }

  /** Names passed at start and not claimed yet. */
  get unclaimed(): string[] {
    return [...this.#received.keys()].sort();
  }

  /** Names currently held by the store (as far as we know). */
  get stored(): string[] {
    return [...this.#stored].sort();
  }

  /** Notifications waiting for the manager to read its socket (docs/operations.md, "systemd"). */
  get pending(): number {
    return this.#queue?.pending ?? 0;
  }

  /**
   * Park a duplicate of `fd` under `name` (once: a name already stored is left as it is). Never
   * blocks: while the manager is not reading, a duplicate waits in the queue; `fd` stays the
   * caller's either way.
   */
  store(name: string, fd: number): void {
    if (this.#queue === undefined || this.#stored.has(name)) return;
    this.#checkName(name);
    const { outcome, cancel } = this.#queue.send(`FDSTORE=1\nFDNAME=${name}\n`, fd, () => {
      // Never reached the manager: the name is not stored after all.
      if (this.#queuedStores.get(name) !== cancel) return;
      this.#queuedStores.delete(name);
      this.#stored.delete(name);
    });
    if (outcome === 'dropped') return;
    this.#stored.add(name);
    if (outcome === 'queued') this.#queuedStores.set(name, cancel);
  }

  /** Drop `name` from the store (the device is gone). */
  remove(name: string): void {
    if (!this.#stored.delete(name) && !this.#received.has(name)) return;
    const cancel = this.#queuedStores.get(name);
    this.#queuedStores.delete(name);
    // Still queued: the manager never got it, so there is nothing to remove there.
    if (cancel?.() === true) return;
    this.#send(name);
  }

  /** Drop every stored or passed name under `prefix`, closing passed fds nobody claimed. */
  removeUnder(prefix: string): void {
    for (const [name, fd] of [...this.#received]) {
      if (!name.startsWith(prefix)) continue;
      this.#received.delete(name);
      native.close(fd);
      this.#send(name);
    }
    for (const name of [...this.#stored]) if (name.startsWith(prefix)) this.remove(name);
  }

  /**
   * Claim the passed fds under `prefix`: name (without the prefix) → fd, now the caller's. They
   * stay in the store (a later remove() or removeUnder() drops them).
   */
  take(prefix: string): Map<string, number> {
    const out = new Map<string, number>();
    for (const [name, fd] of [...this.#received]) {
      if (!name.startsWith(prefix)) continue;
      this.#received.delete(name);
      this.#stored.add(name);
      out.set(name.slice(prefix.length), fd);
    }
    return out;
  }

  /** Close and remove every passed fd nobody claimed and `keep` does not keep. */
  discardUnclaimed(why: string, keep: (name: string) => boolean = () => false): void {
    for (const [name, fd] of [...this.#received]) {
      if (keep(name)) continue;
      this.#received.delete(name);
      native.close(fd);
      this.#send(name);
      this.#log?.info({ name, why }, 'stored fd dropped');
    }
  }

  /**
   * Close passed fds nobody claimed, leaving them in the store (daemon stopping); what still
   * waits for the manager gets one last try and is then dropped, its fds closed.
   */
  close(): void {
    for (const fd of this.#received.values()) native.close(fd);
    this.#received.clear();
    this.#queue?.close();
    this.#queuedStores.clear();
  }

  #checkName(name: string): void {
    if (!validFdName(name)) throw new Error(`not a valid fd store name: ${JSON.stringify(name)}`);
  }

  #send(name: string): void {
    if (this.#queue === undefined || !validFdName(name)) return;
    this.#queue.send(`FDSTOREREMOVE=1\nFDNAME=${name}\n`);
  }

  #takeListened(listen: NonNullable<FdStoreOptions['listen']>, pid: number): void {
    if (listen.fds === undefined || listen.fds === '') return;
    // Fds 3.. belong to whoever LISTEN_PID names: a variable inherited from a parent that was
    // itself socket-activated must not make us close our own fds.
    if (listen.pid === undefined || !/^[1-9][0-9]*$/.test(listen.pid) || Number(listen.pid) !== pid) {
      this.#log?.warn({ listenPid: listen.pid, pid }, 'LISTEN_FDS is not for this process: ignored');
      return;
    }
    if (!/^[0-9]+$/.test(listen.fds) || Number(listen.fds) > MAX_LISTEN_FDS) {
      this.#log?.warn({ listenFds: listen.fds }, 'LISTEN_FDS is not a count: ignored');
      return;
    }
    const n = Number(listen.fds);
    const names = listen.names === undefined || listen.names === '' ? [] : listen.names.split(':');
    const dropped: string[] = [];
    /** Names seen twice: every fd under them is dropped, a third one too. */
    const twice = new Set<string>();
    for (let i = 0; i < n; i++) {
      const fd = LISTEN_FDS_START + i;
      if (!fdOpen(fd)) continue;
      const name = names.length === n ? names[i]! : undefined;
      if (name === undefined || !name.startsWith(FD_NAME_PREFIX) || !validFdName(name)) {
        native.close(fd);
        if (name !== undefined) this.#send(name);
        dropped.push(name ?? `(fd ${fd} without a name)`);
        continue;
      }
      if (twice.has(name)) {
        native.close(fd);
        continue;
      }
      const dup = this.#received.get(name);
      if (dup !== undefined) {
        twice.add(name);
        // Two fds under one name: we never store that, so neither can be trusted to be the right one.
        native.close(dup);
        native.close(fd);
        this.#received.delete(name);
        this.#send(name);
        dropped.push(name);
        continue;
      }
      this.#received.set(name, fd);
    }
    if (dropped.length > 0) this.#log?.warn({ dropped }, 'fds passed by the service manager that are not ours: closed and removed');
    if (this.#received.size > 0) this.#log?.info({ fds: this.#received.size }, 'stored fds passed back by the service manager');
  }
}

function fdOpen(fd: number): boolean {
  try {
    fs.fstatSync(fd);
    return true;
  } catch {
    return false;
  }
}
