/**
 * VM tier pieces shared by the QMP-backend tests (docs/vms-qmp.md): a host kvmchand whose
 * config names test guests under `vms`, a guest booted with a second QMP monitor for it, the
 * guest's own `kvmchand --guest`, and host/guest vchan peers checked with SHA-256.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { PrivateDaemon } from '../../src/cli/private-daemon.js';
import { stopDaemon, type FakeServiceManager } from './fake-service-manager.js';
import { Vchan } from '../../src/client/index.js';
import { fetchStatus } from '../../src/cli/commands/status.js';
import { Pattern, PATTERN_PERIOD } from './pattern.js';
import { REPO_ROOT, bootVm, type BootVmOptions, type GuestProcess, type GuestShell, type TestVm } from './vm.js';
import { waitFor } from './wait.js';

export const MiB = 1 << 20;
export const PEER = path.join(REPO_ROOT, 'dist', 'test', 'helpers', 'vchan-hash-peer.js');
export const KVMCHAND = path.join(REPO_ROOT, 'dist', 'src', 'daemon', 'main.js');
export const GUEST_RUNTIME = '/run/kvmchand-test';

/** Whatever ends the test process, `child` (a daemon) does not outlive it. */
function reapOnExit(child: ChildProcess): void {
  const reap = (): void => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  };
  process.once('exit', reap);
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.once(sig, () => {
      reap();
      // Default action again unless another handler (vm.ts's) still does that.
      if (process.listenerCount(sig) === 0) process.kill(process.pid, sig);
    });
  }
}

/** A host kvmchand with the QMP backend, in a temporary directory of its own. */
export class QmpHost {
  readonly dir: string;
  readonly runtimeDir: string;
  readonly logFile: string;
  readonly configFile: string;
  daemon: PrivateDaemon | null = null;
  /** The daemon when a (fake) service manager started it (startManaged). */
  managed: ChildProcess | null = null;

  constructor() {
    this.dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kvmchan-vmq-'));
    this.runtimeDir = path.join(this.dir, 'run');
    this.logFile = path.join(this.dir, 'kvmchand.log');
    this.configFile = path.join(this.dir, 'kvmchand.json');
    fs.mkdirSync(this.runtimeDir, { mode: 0o700 });
  }

  /** Where the daemon looks for VM `name`'s monitor (a symlink to QEMU's socket once it runs). */
  qmpLink(name: string): string {
    return path.join(this.dir, `${name}.qmp`);
  }

  async start(config: Record<string, unknown>): Promise<PrivateDaemon> {
    fs.writeFileSync(this.configFile, JSON.stringify(config));
    this.daemon = await PrivateDaemon.start({
      runtimeDir: this.runtimeDir,
      extraArgs: ['-c', this.configFile],
      logLevel: 'info',
      logFile: this.logFile,
    });
    reapOnExit(this.daemon.child);
    return this.daemon;
  }

  /**
   * Start kvmchand as a service manager would (test/helpers/fake-service-manager.ts): it stores
   * its devices' fds there and gets them back on its next start.
   */
  async startManaged(sm: FakeServiceManager, config: Record<string, unknown>): Promise<ChildProcess> {
    fs.writeFileSync(this.configFile, JSON.stringify(config));
    const child = await sm.startDaemon({
      runtimeDir: this.runtimeDir,
      args: ['-c', this.configFile],
      logFile: this.logFile,
      startTimeoutMs: 60_000,
    });
    this.managed = child;
    reapOnExit(child);
    return child;
  }

  /** Whether a daemon of ours runs (either way it was started). */
  get running(): boolean {
    return this.daemon !== null || this.managed !== null;
  }

  log(): string {
    try {
      return fs.readFileSync(this.logFile, 'utf8');
    } catch {
      return '';
    }
  }

  logLines(): Record<string, unknown>[] {
    return this.log()
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as Record<string, unknown>);
  }

  status(): ReturnType<typeof fetchStatus> {
    return fetchStatus(this.runtimeDir);
  }

  /** Waits until VM `name` is a domain whose first pool has its member attached; its domain id. */
  async waitDomain(name: string, timeoutMs = 120_000): Promise<number> {
    let id = -1;
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const st = await this.status();
      const d = st.domains.find((x) => x.name === name);
      if (d !== undefined) {
        id = d.domain;
        if (st.pools.some((p) => (p.memberA === id && (p.joined & 1) !== 0) || (p.memberB === id && (p.joined & 2) !== 0))) return id;
      }
      if (Date.now() > deadline)
        throw new Error(`domain ${name} not served within ${timeoutMs} ms (id ${id}); log:\n${this.log().slice(-4000)}`);
      await new Promise((r) => setTimeout(r, 250));
    }
  }

  async stop(signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
    await this.daemon?.stop();
    this.daemon = null;
    if (this.managed !== null) await stopDaemon(this.managed, signal);
    this.managed = null;
  }

  async close(): Promise<void> {
    await this.stop();
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

/**
 * Boots a guest with a second QMP monitor for kvmchand. The monitor's socket is linked to
 * `link` only once the guest is up, so whatever kvmchand plugs goes into a running guest.
 */
export async function bootForQmp(link: string, opts: BootVmOptions = {}): Promise<TestVm> {
  const sockDir = fs.mkdtempSync(path.join(os.tmpdir(), 'kvmchan-vmqs-'));
  const sock = path.join(sockDir, 'kvmchand.qmp');
  let vm: TestVm;
  try {
    vm = await bootVm({ rootPorts: 6, ...opts, extraArgs: ['-qmp', `unix:${sock},server=on,wait=off`, ...(opts.extraArgs ?? [])] });
  } catch (err) {
    fs.rmSync(sockDir, { recursive: true, force: true });
    throw err;
  }
  void vm.exited.then(() => fs.rmSync(sockDir, { recursive: true, force: true }));
  fs.rmSync(link, { force: true });
  fs.symlinkSync(sock, link);
  return vm;
}

/** `kvmchand --guest` in `vm`; resolves once it is ready and attached to a pool. */
export async function startGuestDaemon(vm: GuestShell, extraArgs: string[] = []): Promise<GuestProcess> {
  const g = vm.start(['node', KVMCHAND, '--guest', '--runtime-dir', GUEST_RUNTIME, '--log-level', 'info', ...extraArgs]);
  await g.waitForOutput(/kvmchand ready/, 600_000);
  await g.waitForOutput(/"msg":"pool attached"/, 180_000);
  return g;
}

export function expectedHash(seed: number, n: number): string {
  const h = createHash('sha256');
  const p = new Pattern(seed);
  for (let pos = 0; pos < n; pos += PATTERN_PERIOD) h.update(p.slice(pos, Math.min(PATTERN_PERIOD, n - pos)));
  return h.digest('hex');
}

export interface PeerResult {
  role: string;
  bytes: number;
  sent: string;
  received: string;
  ms: number;
}

export interface HostPeer {
  ready: Promise<void>;
  done: Promise<PeerResult>;
  /** Resolves with the process's stdout once it exits, whatever the status. */
  exited: Promise<{ code: number | null; out: string; err: string }>;
  pid: number;
}

/** The host end of vchan-hash-peer, as a child process (a client of the host daemon). */
export function hostPeer(args: string[]): HostPeer {
  const child = spawn(process.execPath, [PEER, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  process.once('exit', () => child.kill('SIGKILL'));
  let out = '';
  let err = '';
  child.stderr.on('data', (d: Buffer) => (err += d.toString()));
  let markReady: () => void = () => undefined;
  const ready = new Promise<void>((r) => (markReady = r));
  const exited = new Promise<{ code: number | null; out: string; err: string }>((resolve) => {
    child.on('exit', (code) => resolve({ code, out, err }));
  });
  child.stdout.on('data', (d: Buffer) => {
    out += d.toString();
    if (out.includes('READY ')) markReady();
  });
  const done = exited.then(({ code }) => {
    const m = /^DONE (.*)$/m.exec(out);
    if (code === 0 && m !== null) return JSON.parse(m[1]!) as PeerResult;
    throw new Error(`host peer exited ${code}: ${out}\n${err}`);
  });
  done.catch(() => undefined);
  return { ready, done, exited, pid: child.pid! };
}

export async function guestResult(p: GuestProcess, timeoutMs = 1_200_000): Promise<PeerResult> {
  const m = await p.waitForOutput(/^(DONE|FAILED) (.*)$/m, timeoutMs);
  if (m[1] === 'FAILED') assert.fail(`guest peer failed: ${m[2]}\n${p.stderr()}`);
  return JSON.parse(m[2]!) as PeerResult;
}

export const mbps = (r: PeerResult): string =>
  `${((2 * r.bytes) / MiB / (r.ms / 1000)).toFixed(2)} MiB/s both directions together (${r.ms.toFixed(0)} ms)`;

export { waitFor };

export interface GuestStream {
  v: Vchan;
  g: GuestProcess;
  got: () => number;
  /** How the host's reading ended (EOF or an error code), with the bytes read and when. */
  end: Promise<{ how: string; bytes: number; at: number }>;
}

/**
 * A host server on `port` toward `domain` whose peer is a vchan-hash-peer client in `vm` sending
 * 4 GiB: the host reads until the end and writes too (until the vchan fails), so both
 * directions are in flight when a test breaks something.
 */
export async function streamFrom(runtimeDir: string, vm: GuestShell, domain: number, port: number): Promise<GuestStream> {
  const v = await Vchan.listen({ runtimeDir, domain, port, readMin: 256 * 1024, writeMin: 256 * 1024 });
  const g = vm.start(['node', PEER, 'client', GUEST_RUNTIME, '0', String(port), String(4096 * MiB)], { timeoutMs: 1_200_000 });
  await v.waitConnected({ timeout: 600_000 });
  let got = 0;
  void (async () => {
    const out = new Pattern(7).slice(0, 32 * 1024);
    for (;;) await v.write(out);
  })().catch(() => undefined);
  const end = (async () => {
    try {
      for (;;) {
        const b = await v.read(256 * 1024);
        if (b === null) return { how: 'EOF', bytes: got, at: performance.now() };
        got += b.length;
      }
    } catch (err) {
      return { how: `${(err as { code?: string }).code ?? ''} ${String(err)}`, bytes: got, at: performance.now() };
    }
  })();
  return { v, g, got: () => got, end };
}
