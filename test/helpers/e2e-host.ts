/**
 * The host side of the end-to-end VMM tests (test/e2e/kvmchand-qmp.test.ts,
 * kvmchand-libvirt.test.ts): a private kvmchand with a given configuration in a temporary
 * directory, its status through the CLI's `status --json`, its JSON log lines and its fd count.
 */
import { execFileSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { PrivateDaemon } from '../../src/cli/private-daemon.js';
import type { StatusJson as CliStatusJson } from '../../src/cli/status-json.js';
import { fromStatusJson } from './guest-fixture.js';
import { FakeServiceManager, stopDaemon } from './fake-service-manager.js';

const CLI = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));

export class E2eHost<Status, Line> {
  readonly dir: string;
  readonly runtimeDir: string;
  readonly logFile: string;
  daemon: PrivateDaemon | null = null;
  readonly #managers: FakeServiceManager[] = [];
  readonly #managed: ChildProcess[] = [];

  constructor(prefix: string) {
    this.dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
    this.runtimeDir = path.join(this.dir, 'run');
    this.logFile = path.join(this.dir, 'kvmchand.log');
  }

  /** kvmchand with `config` as its configuration file. */
  async startWith(config: object): Promise<PrivateDaemon> {
    const cfg = path.join(this.dir, 'kvmchand.json');
    fs.writeFileSync(cfg, JSON.stringify(config));
    fs.mkdirSync(this.runtimeDir, { recursive: true });
    this.daemon = await PrivateDaemon.start({
      runtimeDir: this.runtimeDir,
      extraArgs: ['-c', cfg],
      logLevel: 'info',
      logFile: this.logFile,
    });
    return this.daemon;
  }

  /**
   * kvmchand under a fake service manager (test/helpers/fake-service-manager.ts) that keeps the
   * fds it stores, with `config` as its configuration: `start()` starts it, each time with what
   * the store holds. Daemons and manager go with closeManaged().
   */
  managed(config: object): { sm: FakeServiceManager; start: () => Promise<ChildProcess> } {
    const sm = new FakeServiceManager(this.dir);
    this.#managers.push(sm);
    const cfg = path.join(this.dir, 'kvmchand.json');
    fs.writeFileSync(cfg, JSON.stringify(config));
    const start = async (): Promise<ChildProcess> => {
      fs.mkdirSync(this.runtimeDir, { recursive: true });
      const child = await sm.startDaemon({ runtimeDir: this.runtimeDir, args: ['-c', cfg], logFile: this.logFile });
      this.#managed.push(child);
      return child;
    };
    return { sm, start };
  }

  /** SIGKILL what managed() started that still runs, and close its managers. */
  async closeManaged(): Promise<void> {
    for (const child of this.#managed.splice(0)) await stopDaemon(child, 'SIGKILL');
    for (const sm of this.#managers.splice(0)) sm.close();
  }

  status(): Status {
    return fromStatusJson(
      JSON.parse(
        execFileSync(process.execPath, [CLI, '--runtime-dir', this.runtimeDir, 'status', '--json'], { encoding: 'utf8' }),
      ) as CliStatusJson,
    ) as unknown as Status;
  }

  logs(): Line[] {
    if (!fs.existsSync(this.logFile)) return [];
    return fs
      .readFileSync(this.logFile, 'utf8')
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as Line);
  }

  daemonFds(): number {
    return fs.readdirSync(`/proc/${this.daemon!.pid}/fd`).length;
  }

  /**
   * The daemon's fd count without its transient ones: the fewest seen over `ms`. A daemon that
   * retries a VM's monitor holds a connecting socket now and then; a baseline taken at such a
   * moment is one too high, and the count "back to baseline" after a VM goes would then never
   * be seen. A leak still shows: the count never comes down to this floor again.
   */
  async quietFds(ms = 600): Promise<number> {
    let least = this.daemonFds();
    for (const end = Date.now() + ms; Date.now() < end;) {
      await new Promise((resolve) => setTimeout(resolve, 10));
      least = Math.min(least, this.daemonFds());
    }
    return least;
  }
}
