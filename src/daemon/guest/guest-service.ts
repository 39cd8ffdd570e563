/**
 * kvmchand --guest: the same local socket and API as on the host (apps do not
 * care where they run), with every request forwarded to the host over the
 * guest link (docs/architecture.md "Guests"). Grants come back as pool-device coordinates;
 * here they become fds: the pool's shared memory, our interrupt eventfd for the
 * vchan's vector, and the doorbell eventfd that rings the peer.
 */
import type { Logger } from 'pino';
import { native } from '../../native.js';
import { RingEndpoint } from '../../ring/endpoint.js';
import { EventFdWaiter } from '../../ring/eventfd-waiter.js';
import { HEADER_SIZE, OFF_CLIENT_STATE, STATE_CLOSED, STATE_CONNECTED, STATE_WAITING, MAGIC } from '../../ring/layout.js';
import { RingLink } from '../../transport/ring-link.js';
import { ClientSequencer } from '../../protocol/sequencer.js';
import { Command, DomainFlag, POOL_STATE_NAMES, TIMEOUT_INFINITE, VchanRole, type CommandId } from '../../protocol/constants.js';
import type { AnyEvent, ReplyOkOf, RequestBodies, GuestVchanInfo } from '../../protocol/types.js';
import type { Device } from '../../ivshmem/device.js';
import type { GuestDevices } from './guest-devices.js';
import { KvmchanError, DaemonError } from '../../errors.js';
import type { Caller, VchanSnapshot } from '../registry/registry.js';
import { RegistryError } from '../registry/registry-error.js';
import type { Grant, VchanService, DomainStatus, PoolStatus } from '../vchan-service.js';
import { CONTROL_GEOMETRY, readSessionWord } from '../guest-link/host-link.js';
import { Event } from '../../protocol/constants.js';

/** How long a pool may take to appear after its announcement (hot-plug into a real VM included). */
export const POOL_ATTACH_TIMEOUT_MS = 15_000;

export class GuestLinkDownError extends KvmchanError {
  constructor(message: string) {
    super(message, 'KVMCHAN_E_NO_HOST');
    this.name = 'GuestLinkDownError';
  }
}

export interface GuestServiceOptions {
  /** Where the control device and the pools come from (sockets or VFIO). */
  devices: GuestDevices;
  log: Logger;
  /** Called when the guest link is lost (the daemon then reconnects or exits). */
  onDown: (err: KvmchanError) => void;
  /**
   * Called when the host ended the session but the control device stays (a real VM: its
   * devices belong to QEMU, which outlives a restart of the host daemon): every local vchan must
   * end, then resume() attaches to the host's next session (wire-protocol.md §3.2).
   */
  onSessionEnd?: (err: KvmchanError) => void;
}

/** Rejections from the host carry its errno; keep it so the local reply repeats it. */
function asRegistryError(err: unknown): Error {
  if (err instanceof DaemonError && err.errno !== undefined) {
    const name = err.code.replace('KVMCHAN_E_DAEMON_', '') as `E${string}`;
    return new RegistryError(name, err.message);
  }
  return err instanceof Error ? err : new Error(String(err));
}

export class GuestVchanService implements VchanService {
  localDomain = -1;
  name = '';
  readonly #opts: GuestServiceOptions;
  readonly #log: Logger;
  #control: Device | null = null;
  #link: RingLink | null = null;
  #waiter: EventFdWaiter | null = null;
  #mapping: ArrayBuffer | null = null;
  /** One per session: a session's end fails its requests for good. */
  #seq = new ClientSequencer({
    onOrphanReply: () => undefined,
  });
  readonly #pools = new Map<number, Device>();
  readonly #poolWaiters = new Map<number, (() => void)[]>();
  readonly #attaching = new Set<number>();
  #down = false;
  /** The control device's session word when this session began (wire-protocol.md §3.2). */
  #session = 0;

  constructor(opts: GuestServiceOptions) {
    this.#opts = opts;
    this.#log = opts.log;
  }

  /** 'socket' (simulated guest) or 'vfio' (real VM). */
  get devicesKind(): 'socket' | 'vfio' {
    return this.#opts.devices.kind;
  }

  /** Attach to the control device, wait for the host to offer the ring, then HELLO. */
  async start(timeoutMs = 15000): Promise<void> {
    const control = await this.#opts.devices.control(timeoutMs);
    this.#control = control;
    control.on('close', () => {
      this.#fail(new GuestLinkDownError('control device disconnected'));
    });
    control.on('peer-leave', (id) => {
      if (id === 0) this.#fail(new GuestLinkDownError('the host left the control device'));
    });
    this.#waiter = new EventFdWaiter(native.dup(control.interruptFd(0)), native.dup(this.#hostDoorbell(control)));
    const mapping = control.map(0, control.shm.size);
    this.#mapping = mapping;
    const ctl = new Int32Array(mapping, 0, HEADER_SIZE / 4);
    // A session a previous guest daemon left open (it died; in a VM the device stays, so the
    // host cannot see that): close its client end, and the host offers a fresh one.
    if (Atomics.load(ctl, 0) === (MAGIC | 0) && Atomics.load(ctl, OFF_CLIENT_STATE / 4) === STATE_CONNECTED) {
      this.#log.info('closing the control channel a previous guest daemon left open');
      Atomics.store(ctl, OFF_CLIENT_STATE / 4, STATE_CLOSED);
      this.#waiter.kick();
    }
    await this.#openSession(Date.now() + timeoutMs);
  }

  /**
   * After onSessionEnd: wait (as long as it takes: the host daemon is restarting) for the host
   * to offer a new session, and say hello again. Pools stay attached; the host announces them again.
   */
  async resume(): Promise<void> {
    if (this.#down || this.#mapping === null) throw new GuestLinkDownError('no control device');
    await this.#openSession(null);
  }

  async #openSession(deadline: number | null): Promise<void> {
    const waiter = this.#waiter!;
    const mapping = this.#mapping!;
    // The host initialises the region and then rings us (host-link.ts); until then it may hold
    // a previous session's state. Wait for a fresh region: our state still WAITING.
    const ctl = new Int32Array(mapping, 0, HEADER_SIZE / 4);
    while (!(Atomics.load(ctl, 0) === (MAGIC | 0) && Atomics.load(ctl, OFF_CLIENT_STATE / 4) === STATE_WAITING)) {
      if (this.#down) throw new GuestLinkDownError('guest daemon stopping');
      if (deadline === null) {
        await waiter.wait();
        continue;
      }
      if (Date.now() > deadline) throw new GuestLinkDownError('the host never offered the control channel');
      try {
        await waiter.wait(AbortSignal.timeout(Math.max(1, deadline - Date.now())));
      } catch (err) {
        if (Date.now() > deadline) throw new GuestLinkDownError('the host never offered the control channel');
        throw err;
      }
    }
    // Read after the ring: the host bumps the word before it initialises the ring.
    this.#session = readSessionWord(mapping);
    const seq = new ClientSequencer({ onOrphanReply: () => undefined });
    this.#seq = seq;
    const endpoint = new RingEndpoint(mapping, 0, { role: 'client', ...CONTROL_GEOMETRY }, waiter.kick);
    endpoint.attach();
    // Every wake-up first checks that the host has not started another session in this ring.
    const hook = {
      wait: async (signal?: AbortSignal): Promise<void> => {
        await waiter.wait(signal);
        if (this.#sessionChanged()) throw new GuestLinkDownError('the host started a new session');
      },
    };
    const link = new RingLink(endpoint, hook, {
      onFrame: (frame) => {
        let ev: AnyEvent | undefined;
        try {
          ev = seq.receive(frame);
        } catch (err) {
          if (this.#sessionChanged()) this.#endSession(new GuestLinkDownError('the host started a new session'), true);
          else this.#fail(new GuestLinkDownError(`protocol error from the host: ${(err as Error).message}`));
          return;
        }
        if (ev !== undefined) this.#onEvent(ev);
      },
      onClose: (err) => {
        if (this.#link !== link) return;
        if (this.#sessionChanged()) this.#endSession(new GuestLinkDownError('the host started a new session'), true);
        else if (err === null) this.#hostEnded(new GuestLinkDownError('the host closed the control channel'));
        else this.#fail(new GuestLinkDownError(err.message));
      },
    });
    this.#link = link;
    const hello = await this.#request(Command.GUEST_HELLO, { version: 1 });
    this.localDomain = hello.body.domain;
    this.name = hello.body.name;
    this.#log.info({ domain: this.localDomain, domainName: this.name, session: this.#session }, 'attached to the host');
  }

  #sessionChanged(): boolean {
    return this.#mapping !== null && !this.#down && readSessionWord(this.#mapping) !== this.#session;
  }

  /** The host ended the session in order (closed its end, or said SHUTDOWN). */
  #hostEnded(err: KvmchanError): void {
    if (this.#opts.onSessionEnd !== undefined && this.#opts.devices.kind === 'vfio') this.#endSession(err, false);
    else this.#fail(err);
  }

  /**
   * The session is over but the devices stay: requests in flight fail, the ring is let go (not
   * even marked closed when the host already started the next session in it: `abandon`).
   */
  #endSession(err: KvmchanError, abandon: boolean): void {
    if (this.#down || this.#link === null) return;
    if (this.#opts.onSessionEnd === undefined) {
      this.#fail(err);
      return;
    }
    const link = this.#link;
    this.#link = null;
    if (abandon) link.abandon();
    else link.close();
    this.#seq.close(err);
    this.#log.warn({ err: err.message }, 'control channel session ended; waiting for the host to offer a new one');
    this.#opts.onSessionEnd(err);
  }

  #hostDoorbell(control: Device): number {
    const fd = control.doorbellFd(0, 0);
    if (fd === null) throw new GuestLinkDownError('the control device has no host doorbell');
    return fd;
  }

  #onEvent(ev: AnyEvent): void {
    if (ev.id === Event.POOL_ADDED) {
      const p = ev.body;
      if (this.#pools.has(p.pool) || this.#attaching.has(p.pool)) return;
      this.#attaching.add(p.pool);
      // A hot-plugged pool device may take a while to show up in the guest: the device source
      // retries until this deadline.
      this.#opts.devices
        .pool(p, POOL_ATTACH_TIMEOUT_MS)
        .finally(() => this.#attaching.delete(p.pool))
        .then(
          (dev) => {
            if (this.#down) {
              dev.close();
              return;
            }
            this.#pools.set(p.pool, dev);
            dev.on('close', (err) => {
              this.#pools.delete(p.pool);
              if (err !== null)
                this.#log.warn({ pool: p.pool, code: (err as { code?: string }).code, err: err.message }, 'pool device gone');
            });
            for (const w of this.#poolWaiters.get(p.pool) ?? []) w();
            this.#poolWaiters.delete(p.pool);
            this.#log.info({ pool: p.pool, size: dev.shm.size, vectors: dev.vectors }, 'pool attached');
          },
          (err: unknown) => {
            this.#log.error({ pool: p.pool, err: (err as Error).message }, 'cannot attach pool');
          },
        );
    } else if (ev.id === Event.SHUTDOWN) {
      this.#hostEnded(new GuestLinkDownError('the host daemon is shutting down'));
    }
  }

  async #request<K extends CommandId>(id: K, body: RequestBodies[K]): Promise<ReplyOkOf<K>> {
    if (this.#down || this.#link === null) throw new GuestLinkDownError('no control channel to the host');
    const sent = this.#seq.request(id, body);
    this.#link.send(sent.frame);
    try {
      return await sent.reply;
    } catch (err) {
      throw asRegistryError(err);
    }
  }

  /** A request to the host on the guest link (for the guest's region service, guest-regions.ts). */
  request<K extends CommandId>(id: K, body: RequestBodies[K]): Promise<ReplyOkOf<K>> {
    return this.#request(id, body);
  }

  /** The attached pool device `id`, waiting a little for one still being attached. */
  poolDevice(id: number): Promise<Device> {
    return this.#pool(id);
  }

  async #pool(id: number): Promise<Device> {
    const dev = this.#pools.get(id);
    if (dev !== undefined) return dev;
    // The announcement may still be connecting: wait a little.
    await new Promise<void>((resolve, reject) => {
      const t = setTimeout(() => {
        reject(new RegistryError('ENODEV', `pool ${id} is not attached`));
      }, POOL_ATTACH_TIMEOUT_MS);
      const list = this.#poolWaiters.get(id) ?? [];
      list.push(() => {
        clearTimeout(t);
        resolve();
      });
      this.#poolWaiters.set(id, list);
    });
    return this.#pools.get(id)!;
  }

  async #toGrant(info: GuestVchanInfo): Promise<Grant> {
    const dev = await this.#pool(info.pool);
    if (info.shmOffset + info.shmLength > dev.shm.size || info.vector >= dev.vectors) {
      throw new RegistryError('EIO', 'host sent a vchan outside its pool');
    }
    const kick = dev.doorbellFd(info.peerId, info.peerVector) ?? (await this.#awaitPeer(dev, info.peerId, info.peerVector));
    const fds = { shm: native.dup(dev.shm.fd), wait: native.dup(dev.interruptFd(info.vector)), kick: native.dup(kick) };
    return {
      handle: info.handle,
      role: info.role === VchanRole.SERVER ? 'server' : 'client',
      readOrder: info.readOrder,
      writeOrder: info.writeOrder,
      localDomain: info.localDomain,
      peerDomain: info.peerDomain,
      port: info.port,
      // A VFIO device fd holds the shared memory at its BAR2 region offset (docs/ivshmem.md §8).
      shmOffset: (dev.shm.offset ?? 0) + info.shmOffset,
      shmLength: info.shmLength,
      access: { kind: 'fds', ...fds },
      release: () => {
        native.close(fds.shm);
        native.close(fds.wait);
        native.close(fds.kick);
      },
    };
  }

  /**
   * The host counts a pair pool ready when both guests joined, but we learn the
   * other guest's eventfds a moment later (its join notice travels separately):
   * wait briefly for them instead of failing the grant.
   */
  async #awaitPeer(dev: Device, peerId: number, vector: number): Promise<number> {
    const deadline = Date.now() + 5000;
    for (;;) {
      const fd = dev.doorbellFd(peerId, vector);
      if (fd !== null) return fd;
      if (Date.now() > deadline || dev.closed) throw new RegistryError('EIO', `no doorbell for peer ${peerId} vector ${vector}`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(done, 100);
        function done(): void {
          clearTimeout(t);
          dev.off('peer-join', done);
          resolve();
        }
        dev.on('peer-join', done);
      });
    }
  }

  async serverInit(caller: Caller, peerDomain: number, port: number, readMin: number, writeMin: number): Promise<Grant> {
    const r = await this.#request(Command.GUEST_VCHAN_SERVER_INIT, { conn: caller.connId, peerDomain, port, readMin, writeMin });
    return this.#toGrant(r.body);
  }

  async clientInit(caller: Caller, serverDomain: number, port: number, timeoutMs: number): Promise<Grant> {
    const r = await this.#request(Command.GUEST_VCHAN_CLIENT_INIT, {
      conn: caller.connId,
      serverDomain,
      port,
      timeoutMs: timeoutMs === Infinity ? TIMEOUT_INFINITE : timeoutMs,
      flags: 0,
    });
    return this.#toGrant(r.body);
  }

  async close(caller: Caller, handle: number): Promise<void> {
    await this.#request(Command.GUEST_VCHAN_CLOSE, { conn: caller.connId, handle });
  }

  dropConnection(connId: number): void {
    if (this.#down || this.#link === null) return;
    this.#request(Command.GUEST_CONN_CLOSED, { conn: connId }).catch((err: unknown) => {
      this.#log.warn({ conn: connId, err: (err as Error).message }, 'could not report a closed connection');
    });
  }

  async listDomains(): Promise<DomainStatus[]> {
    const out: DomainStatus[] = [];
    for (let start = 0; ;) {
      const r = await this.#request(Command.LIST_DOMAINS, { start });
      out.push(
        ...r.body.entries.map((e) => ({
          id: e.domain,
          name: e.name,
          vchans: e.vchans,
          controlUp: (e.flags & DomainFlag.CONTROL_UP) !== 0,
        })),
      );
      if (r.body.next === 0) return out;
      start = r.body.next;
    }
  }

  async listPools(): Promise<PoolStatus[]> {
    const out: PoolStatus[] = [];
    for (let start = 0; ;) {
      const r = await this.#request(Command.LIST_POOLS, { start });
      for (const e of r.body.entries) {
        const members = [e.memberA, e.memberB].filter((m) => m !== 0);
        out.push({
          pool: e.pool,
          members,
          joined: members.filter((_, i) => (e.joined & (1 << i)) !== 0),
          state: POOL_STATE_NAMES[e.state] ?? 'retired',
          size: e.size,
          vectors: e.vectors,
          freeBytes: e.freeBytes,
          freeVectors: e.freeVectors,
          vchans: e.vchans,
        });
      }
      if (r.body.next === 0) return out;
      start = r.body.next;
    }
  }

  async listVchans(): Promise<VchanSnapshot[]> {
    const out: VchanSnapshot[] = [];
    for (let start = 0; ;) {
      const r = await this.#request(Command.LIST_VCHANS, { start });
      out.push(
        ...r.body.entries.map((e) => ({
          handle: e.handle,
          serverDomain: e.serverDomain,
          clientDomain: e.clientDomain,
          port: e.port,
          serverState: e.serverState,
          clientState: e.clientState,
          c2sOrder: e.readOrder,
          s2cOrder: e.writeOrder,
          serverPid: e.serverPid,
          clientPid: e.clientPid,
          bytesClientToServer: e.bytesClientToServer,
          bytesServerToClient: e.bytesServerToClient,
          serverUid: 0,
          clientUid: 0,
        })),
      );
      if (r.body.next === 0) return out;
      start = r.body.next;
    }
  }

  #fail(err: KvmchanError): void {
    if (this.#down) return;
    this.#down = true;
    this.#log.warn({ err: err.message }, 'control channel down');
    this.#seq.close(err);
    this.#teardown();
    this.#opts.onDown(err);
  }

  #teardown(): void {
    // When the host went away (its daemon died or cut us off), the control device closed itself
    // first and already unmapped the ring (SocketDevice.#teardown): marking our side CLOSED would
    // touch a detached buffer, and unmap() would refuse a buffer it no longer knows. Either threw
    // out of the device's 'close' listener and crashed the daemon before its orderly stop (socket
    // and pid file left behind, no "lost the host" log). Closing the waiter below still ends the
    // link's read loop.
    if (this.#control !== null && !this.#control.closed) {
      this.#link?.close();
      if (this.#mapping !== null) this.#control.unmap(this.#mapping);
    }
    this.#waiter?.close();
    this.#mapping = null;
    for (const dev of this.#pools.values()) dev.close();
    this.#pools.clear();
    this.#control?.close();
  }

  /** Guest daemon stopping: detach from the host and every device. */
  shutdown(): void {
    if (this.#down) return;
    this.#down = true;
    this.#seq.close(new GuestLinkDownError('guest daemon stopping'));
    this.#teardown();
  }
}
