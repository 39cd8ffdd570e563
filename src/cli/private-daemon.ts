/**
 * A kvmchand of our own in a temporary runtime directory: what `kvmchan demo`
 * (and the tests) run so nothing needs a system daemon or root.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { native } from '../native.js';
import { socketPath } from '../paths.js';
import { KvmchanError } from '../errors.js';

export const DAEMON_MAIN = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'daemon', 'main.js');

export interface PrivateDaemonOptions {
  runtimeDir?: string;
  logLevel?: string;
  /** Where the daemon's log lines go (default: discarded). */
  logFile?: string;
  extraArgs?: string[];
  startTimeoutMs?: number;
  /**
   * Called with the daemon as soon as its process exists, before it listens: a caller that may
   * give up meanwhile (a watchdog) can then kill it and remove its directory itself.
   */
  onSpawn?: (d: PrivateDaemon) => void;
}

export class PrivateDaemon {
  readonly runtimeDir: string;
  readonly child: ChildProcess;
  readonly #ownDir: boolean;
  #exited: Promise<number | null>;

  private constructor(dir: string, ownDir: boolean, child: ChildProcess) {
    this.runtimeDir = dir;
    this.#ownDir = ownDir;
    this.child = child;
    this.#exited = new Promise((resolve) =>
      child.once('exit', (code) => {
        resolve(code);
      }),
    );
  }

  get pid(): number {
    return this.child.pid ?? -1;
  }

  static async start(opts: PrivateDaemonOptions = {}): Promise<PrivateDaemon> {
    const ownDir = opts.runtimeDir === undefined;
    const dir = opts.runtimeDir ?? fs.mkdtempSync(path.join(os.tmpdir(), 'kvmchan-'));
    const out = opts.logFile === undefined ? 'ignore' : fs.openSync(opts.logFile, 'a');
    const child = spawn(
      process.execPath,
      [DAEMON_MAIN, '--runtime-dir', dir, '--log-level', opts.logLevel ?? 'warn', ...(opts.extraArgs ?? [])],
      { stdio: ['ignore', out, 'pipe'] },
    );
    if (typeof out === 'number') fs.closeSync(out);
    let stderr = '';
    child.stderr?.on('data', (d: Buffer) => {
      stderr += d.toString();
    });
    const d = new PrivateDaemon(dir, ownDir, child);
    opts.onSpawn?.(d);
    const deadline = Date.now() + (opts.startTimeoutMs ?? 15000);
    for (;;) {
      if (child.exitCode !== null || child.signalCode !== null) {
        if (ownDir) fs.rmSync(dir, { recursive: true, force: true });
        throw new KvmchanError(`kvmchand exited during start-up: ${stderr.trim()}`, 'KVMCHAN_E_DAEMON_START');
      }
      try {
        native.close(native.connectUnix(socketPath(dir), 'seqpacket'));
        return d;
      } catch {
        // not listening yet
      }
      if (Date.now() > deadline) {
        await d.stop();
        throw new KvmchanError(`kvmchand did not start within the timeout: ${stderr.trim()}`, 'KVMCHAN_E_DAEMON_START');
      }
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  /** SIGTERM, wait (SIGKILL after a grace period), then remove our temporary directory. */
  async stop(graceMs = 5000): Promise<number | null> {
    if (this.child.exitCode === null && this.child.signalCode === null) {
      this.child.kill('SIGTERM');
      const t = setTimeout(() => this.child.kill('SIGKILL'), graceMs);
      await this.#exited;
      clearTimeout(t);
    }
    if (this.#ownDir) fs.rmSync(this.runtimeDir, { recursive: true, force: true });
    return this.child.exitCode;
  }

  /** SIGKILL without cleanup (for crash tests): the runtime dir keeps its stale files. */
  async kill(): Promise<void> {
    this.child.kill('SIGKILL');
    await this.#exited;
  }
}
