/**
 * kvmchand: composes the components (DESIGN.md §2) — runtime dir, registry,
 * local client socket — and runs them in this process.
 */
import type { Logger } from 'pino';
import { Registry } from './registry/registry.js';
import { MemfdChannelFactory } from './registry/channel-resources.js';
import { RuntimeDir } from './runtime-dir.js';
import { LocalServer } from './local/local-server.js';
import { HostVchanService } from './registry/host-service.js';
import type { Config } from './config.js';
import { defaultRuntimeDir } from './config.js';

export class Daemon {
  readonly log: Logger;
  readonly config: Config;
  readonly runtime: RuntimeDir;
  readonly registry: Registry;
  #local: LocalServer | null = null;
  #stopped = false;

  constructor(config: Config, log: Logger) {
    this.config = config;
    this.log = log;
    this.runtime = new RuntimeDir(config.runtimeDir ?? defaultRuntimeDir());
    this.registry = new Registry(log.child({ component: 'registry' }), new MemfdChannelFactory(), config.limits);
  }

  start(): void {
    this.runtime.acquire();
    try {
      this.#local = new LocalServer({
        socketPath: this.runtime.socketPath,
        service: new HostVchanService(this.registry),
        limits: this.config.limits,
        socketGroup: this.config.socketGroup,
        log: this.log.child({ component: 'local' }),
      });
    } catch (err) {
      this.runtime.release();
      throw err;
    }
    this.log.info({ runtimeDir: this.runtime.dir, socket: this.runtime.socketPath, mode: 'host' }, 'kvmchand ready');
  }

  /** Clean shutdown: tell clients, mark every vchan closed, release all resources. */
  stop(): void {
    if (this.#stopped) return;
    this.#stopped = true;
    this.#local?.close();
    this.registry.shutdown();
    this.runtime.release();
    this.log.info('kvmchand stopped');
  }
}
