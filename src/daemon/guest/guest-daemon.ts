/**
 * kvmchand --guest (docs/architecture.md "Guests"): attaches to the control device, then serves
 * the same local socket as the host daemon. If the guest link is lost the
 * daemon stops with an error (its supervisor restarts it; the host has already
 * closed every vchan this guest held). In a real VM the devices outlive the host daemon: when
 * the host ends the session (it stopped, or a restarted one started a new session in the same
 * control device, wire-protocol.md §3.2) every local connection ends — no vchan survives a
 * session — and the daemon attaches to the host's next session and serves again.
 */
import type { Logger } from 'pino';
import { RuntimeDir } from '../runtime-dir.js';
import { LocalServer } from '../local/local-server.js';
import { GuestLinkDownError, GuestVchanService } from './guest-service.js';
import { GuestRegionService } from './guest-regions.js';
import { SocketDevices, VfioDevices, type GuestDevices } from './guest-devices.js';
import type { Config } from '../config.js';
import { defaultRuntimeDir } from '../../paths.js';
import type { KvmchanError } from '../../errors.js';

/** Where the guest's devices are: sockets in a directory (simulated guests) or PCI devices over VFIO. */
export type GuestDeviceSource = { kind: 'socket'; deviceDir: string } | { kind: 'vfio' };

export class GuestDaemon {
  readonly log: Logger;
  readonly runtime: RuntimeDir;
  readonly service: GuestVchanService;
  readonly #config: Config;
  #local: LocalServer | null = null;
  #stopped = false;
  #onFatal: (err: KvmchanError) => void;

  constructor(config: Config, log: Logger, source: GuestDeviceSource, onFatal: (err: KvmchanError) => void) {
    this.#config = config;
    this.log = log;
    this.#onFatal = onFatal;
    this.runtime = new RuntimeDir(config.runtimeDir ?? defaultRuntimeDir());
    const devices: GuestDevices = source.kind === 'socket' ? new SocketDevices(source.deviceDir, log) : new VfioDevices({ log });
    this.service = new GuestVchanService({
      devices,
      log: log.child({ component: 'guest-link' }),
      onDown: (err) => {
        this.stop();
        this.#onFatal(err);
      },
      onSessionEnd: () => {
        this.#newSession();
      },
    });
  }

  #newSession(): void {
    // Clients hear EVENT_SHUTDOWN and their vchans end; requests fail until the next session.
    this.#local?.endConnections();
    this.service.resume().then(
      () => {
        if (!this.#stopped) this.log.info({ domain: this.service.localDomain }, "serving again in the host's new session");
      },
      (err: unknown) => {
        if (this.#stopped) return;
        const e = err instanceof GuestLinkDownError ? err : new GuestLinkDownError((err as Error).message);
        this.stop();
        this.#onFatal(e);
      },
    );
  }

  #localServer(): LocalServer {
    return new LocalServer({
      socketPath: this.runtime.socketPath,
      service: this.service,
      regions: new GuestRegionService(this.service, this.log.child({ component: 'regions' })),
      limits: this.#config.limits,
      socketGroup: this.#config.socketGroup,
      adminGroup: this.#config.adminGroup,
      log: this.log.child({ component: 'local' }),
    });
  }

  async start(): Promise<void> {
    this.runtime.acquire();
    try {
      await this.service.start();
      this.#local = this.#localServer();
    } catch (err) {
      this.service.shutdown();
      this.runtime.release();
      throw err;
    }
    this.log.info(
      { runtimeDir: this.runtime.dir, domain: this.service.localDomain, mode: 'guest', devices: this.service.devicesKind },
      'kvmchand ready',
    );
  }

  stop(): void {
    if (this.#stopped) return;
    this.#stopped = true;
    this.#local?.close();
    this.service.shutdown();
    this.runtime.release();
    this.log.info('kvmchand stopped');
  }
}
