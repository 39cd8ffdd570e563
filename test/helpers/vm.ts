/**
 * Test helper: boot a REAL Linux guest under QEMU TCG (docs/vms.md) and run commands in it.
 *
 * The guest is the kernel + initramfs built by scripts/vm/build-image.sh into .cache/vm/ (found,
 * with its QEMU command line, by the product module src/vm/guest-image.ts). Its
 * /init mounts this host's root read-only over virtio-9p, so `node` and this checkout are at the
 * same paths inside the guest, and a per-VM directory (`vm.shareDir` here, /run/kvmchanvm in
 * the guest) read-write. Commands travel as files through that directory: the host writes
 * req/<id>.sh (with a rename), the guest agent moves it to out/<id>.sh and runs it chrooted
 * into the host root, writing out/<id>.stdout, out/<id>.stderr and finally out/<id>.status.
 * Files and renames are the only thing 9p and a busybox agent get right every time under TCG;
 * a console channel would need framing and flow control for no gain.
 *
 * Every QEMU started here is SIGKILLed and its directory removed on process exit (and on
 * SIGINT/SIGTERM), whatever the test did.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { QmpClient, ensureQemu, type QemuExit } from './qemu.js';
import {
  PACKAGE_ROOT,
  VM_CACHE,
  GUEST_SHARE,
  READY_MARKER,
  FAILED_MARKER,
  vmImage,
  guestQemuArgs,
  type VmImage,
  type IvshmemAttachment,
  type GuestQemuOptions,
} from '../../src/vm/guest-image.js';

/** The checkout. */
export const REPO_ROOT = PACKAGE_ROOT;
export { VM_CACHE, GUEST_SHARE, READY_MARKER, FAILED_MARKER, vmImage, type VmImage, type IvshmemAttachment };

/** True when KVMCHAN_REQUIRE_QEMU=1 (CI): a missing prerequisite fails instead of skipping. */
export function qemuRequired(): boolean {
  return process.env.KVMCHAN_REQUIRE_QEMU === '1';
}

export interface VmPrerequisites {
  qemu: string;
  image: VmImage;
}

/**
 * QEMU and the guest image, or a skip reason. With KVMCHAN_REQUIRE_QEMU=1 a missing
 * prerequisite throws, so the test file fails at load instead of being skipped.
 */
export function vmPrerequisites(): VmPrerequisites | { reason: string } {
  const q = ensureQemu();
  const image = vmImage();
  const reason = 'reason' in q ? q.reason : 'reason' in image ? image.reason : null;
  if (reason !== null) {
    if (qemuRequired()) throw new Error(`KVMCHAN_REQUIRE_QEMU=1 and the VM tier cannot run: ${reason}`);
    console.error(`\n#####\n# SKIPPING VM tests: ${reason}\n#####\n`);
    return { reason };
  }
  return { qemu: (q as { path: string }).path, image: image as VmImage };
}

export interface BootVmOptions extends GuestQemuOptions {
  /** Default: vmPrerequisites(). */
  qemu?: string;
  image?: VmImage;
  /** Spawn → ready marker. Default 300 s (TCG on a shared 2-core machine). */
  readyTimeoutMs?: number;
  /** Each console line (no newline), e.g. `(l) => t.diagnostic(l)`. */
  onConsoleLine?: (line: string) => void;
}

export interface ExecOptions {
  /** Guest working directory (same paths as the host). Default REPO_ROOT. */
  cwd?: string;
  env?: Readonly<Record<string, string>>;
  /** Default 300 s. */
  timeoutMs?: number;
}

export interface ExecResult {
  /** Exit status as the guest shell reports it (128+N after signal N). */
  code: number;
  stdout: string;
  stderr: string;
  /** Host-side ms from request to status file. */
  ms: number;
}

export class VmExecError extends Error {
  readonly result: ExecResult;
  constructor(what: string, result: ExecResult) {
    super(`guest command ${what} exited ${result.code}\n--- stdout\n${result.stdout}\n--- stderr\n${result.stderr}`);
    this.name = 'VmExecError';
    this.result = result;
  }
}

/** POSIX sh single-quoting. */
export function shellQuote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

const POLL_MS = 20;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** A command started in the guest; `done` settles when its status file appears. */
export class GuestProcess {
  readonly id: string;
  readonly done: Promise<ExecResult>;
  readonly #vm: GuestShell;

  constructor(vm: GuestShell, id: string, done: Promise<ExecResult>) {
    this.#vm = vm;
    this.id = id;
    this.done = done;
    // Callers that only use waitForOutput() must not get an unhandled rejection on shutdown.
    done.catch(() => undefined);
  }

  /** stdout written so far. */
  stdout(): string {
    return readOr(path.join(this.#vm.shareDir, 'out', `${this.id}.stdout`));
  }

  stderr(): string {
    return readOr(path.join(this.#vm.shareDir, 'out', `${this.id}.stderr`));
  }

  /** Resolve with the first stdout match of `re`; reject when the process ends or time runs out. */
  async waitForOutput(re: RegExp, timeoutMs = 300_000): Promise<RegExpMatchArray> {
    const deadline = Date.now() + timeoutMs;
    let finished = false;
    void this.done.then(
      () => (finished = true),
      () => (finished = true),
    );
    for (;;) {
      const m = re.exec(this.stdout());
      if (m !== null) return m;
      if (finished) {
        const m2 = re.exec(this.stdout());
        if (m2 !== null) return m2;
        const r = await this.done;
        throw new VmExecError(`${this.id} (before printing ${re})`, r);
      }
      if (Date.now() > deadline)
        throw new Error(`guest ${this.id}: no ${re} within ${timeoutMs} ms; stdout: ${this.stdout()}\nstderr: ${this.stderr()}`);
      await sleep(POLL_MS);
    }
  }

  /** Signal the command's shell (it `exec`s argv commands, so that is the command itself). */
  async kill(signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
    const pid = readOr(path.join(this.#vm.shareDir, 'out', `${this.id}.pid`)).trim();
    if (pid === '') return;
    await this.#vm.exec(`kill -s ${signal.replace(/^SIG/, '')} ${pid} 2>/dev/null || true`);
  }
}

function readOr(p: string): string {
  try {
    return fs.readFileSync(p, 'utf8');
  } catch {
    return '';
  }
}

interface Live {
  child: ChildProcess;
  dir: string;
}
const live = new Set<Live>();
let hooksInstalled = false;

function killAllSync(): void {
  for (const l of live) {
    try {
      if (l.child.exitCode === null && l.child.signalCode === null) l.child.kill('SIGKILL');
    } catch {
      // already gone
    }
    fs.rmSync(l.dir, { recursive: true, force: true });
  }
  live.clear();
}

function installExitHooks(): void {
  if (hooksInstalled) return;
  hooksInstalled = true;
  process.on('exit', killAllSync);
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.once(sig, () => {
      killAllSync();
      // Default action again, now that our handler is gone.
      process.kill(process.pid, sig);
    });
  }
}

/**
 * The guest agent's command protocol over the share directory (see the top of this file), for
 * any way of running the guest: QEMU started here (TestVm) or a libvirt domain (libvirt-vm.ts).
 */
export abstract class GuestShell {
  /** Host side of the guest's GUEST_SHARE. */
  abstract readonly shareDir: string;
  /** False once the guest is gone (or being shut down): waits on it fail. */
  abstract get running(): boolean;
  protected nextId = 1;

  /** Start `command` (a shell command line, or argv run with exec) in the guest. */
  start(command: string | readonly string[], opts: ExecOptions = {}): GuestProcess {
    if (!this.running) throw new Error('VM is shut down');
    const id = `c${this.nextId++}`;
    const cmd = typeof command === 'string' ? command : `exec ${command.map(shellQuote).join(' ')}`;
    const lines = [`echo $$ >${GUEST_SHARE}/out/${id}.pid`, `cd ${shellQuote(opts.cwd ?? REPO_ROOT)} || exit 126`];
    for (const [k, v] of Object.entries(opts.env ?? {})) {
      if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(k)) throw new Error(`bad env name ${k}`);
      lines.push(`export ${k}=${shellQuote(v)}`);
    }
    lines.push(cmd, '');
    const req = path.join(this.shareDir, 'req');
    fs.writeFileSync(path.join(req, `${id}.tmp`), lines.join('\n'));
    const t0 = performance.now();
    fs.renameSync(path.join(req, `${id}.tmp`), path.join(req, `${id}.sh`));
    const done = this.#waitStatus(id, t0, opts.timeoutMs ?? 300_000);
    return new GuestProcess(this, id, done);
  }

  async #waitStatus(id: string, t0: number, timeoutMs: number): Promise<ExecResult> {
    const out = path.join(this.shareDir, 'out');
    const statusFile = path.join(out, `${id}.status`);
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const status = readOr(statusFile);
      if (status !== '') {
        return {
          code: Number(status.trim()),
          stdout: readOr(path.join(out, `${id}.stdout`)),
          stderr: readOr(path.join(out, `${id}.stderr`)),
          ms: performance.now() - t0,
        };
      }
      if (!this.running) throw new Error(`guest command ${id}: VM gone before it finished`);
      if (Date.now() > deadline) {
        throw new Error(
          `guest command ${id} timed out after ${timeoutMs} ms; stdout so far: ${readOr(path.join(out, `${id}.stdout`))}\nstderr: ${readOr(path.join(out, `${id}.stderr`))}`,
        );
      }
      await sleep(POLL_MS);
    }
  }

  /** Run to completion; any exit code. */
  exec(command: string | readonly string[], opts: ExecOptions = {}): Promise<ExecResult> {
    return this.start(command, opts).done;
  }

  /** Run to completion; throws VmExecError on a non-zero exit. */
  async execOk(command: string | readonly string[], opts: ExecOptions = {}): Promise<ExecResult> {
    const r = await this.exec(command, opts);
    if (r.code !== 0) throw new VmExecError(typeof command === 'string' ? command : command.join(' '), r);
    return r;
  }
}

/** A booted guest. */
export class TestVm extends GuestShell {
  readonly dir: string;
  /** Host side of the guest's GUEST_SHARE. */
  override readonly shareDir: string;
  readonly qmpPath: string;
  readonly child: ChildProcess;
  readonly exited: Promise<QemuExit>;
  readonly image: VmImage;
  readonly args: readonly string[];
  /** ms from spawning QEMU to the ready marker. */
  bootMs = 0;
  /** Guest uptime (s) when the agent came up. */
  guestUptimeAtReady = 0;
  #qmp: QmpClient | null = null;
  #console = '';
  #lineBuf = '';
  #stderr = '';
  #exit: QemuExit | null = null;
  #gone = false;
  readonly #live: Live;
  readonly #onLine: ((line: string) => void) | undefined;

  private constructor(dir: string, child: ChildProcess, image: VmImage, args: string[], onLine: ((line: string) => void) | undefined) {
    super();
    this.dir = dir;
    this.shareDir = path.join(dir, 'share');
    this.qmpPath = path.join(dir, 'qmp.sock');
    this.child = child;
    this.image = image;
    this.args = args;
    this.#onLine = onLine;
    this.#live = { child, dir };
    live.add(this.#live);
    this.exited = new Promise<QemuExit>((resolve) => {
      child.once('exit', (code, signal) => {
        this.#exit = { code, signal };
        resolve({ code, signal });
      });
    });
    child.stdout?.setEncoding('utf8');
    child.stdout?.on('data', (s: string) => {
      this.#onConsole(s);
    });
    child.stderr?.setEncoding('utf8');
    child.stderr?.on('data', (s: string) => {
      this.#stderr += s;
    });
  }

  /** Launch QEMU; resolves once the guest agent is up. */
  static async boot(opts: BootVmOptions = {}): Promise<TestVm> {
    let qemu = opts.qemu;
    let image = opts.image;
    if (qemu === undefined || image === undefined) {
      const pre = vmPrerequisites();
      if ('reason' in pre) throw new Error(`cannot boot a VM: ${pre.reason}`);
      qemu ??= pre.qemu;
      image ??= pre.image;
    }
    installExitHooks();
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kvmchan-vm-'));
    const share = path.join(dir, 'share');
    fs.mkdirSync(path.join(share, 'req'), { recursive: true });
    fs.mkdirSync(path.join(share, 'out'));
    const args = guestQemuArgs(dir, image, opts);
    const t0 = performance.now();
    const child = spawn(qemu, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    const vm = new TestVm(dir, child, image, args, opts.onConsoleLine);
    try {
      await vm.#waitReady(opts.readyTimeoutMs ?? 300_000);
      vm.bootMs = performance.now() - t0;
      vm.#qmp = await QmpClient.connect(vm.qmpPath, 30_000);
    } catch (err) {
      const tail = vm.console().split('\n').slice(-40).join('\n');
      await vm.shutdown();
      throw new Error(`${String(err)}\n--- QEMU stderr\n${vm.#stderr}\n--- console (tail)\n${tail}`, { cause: err });
    }
    return vm;
  }

  get running(): boolean {
    return !this.#gone && this.#exit === null;
  }

  get qmp(): QmpClient {
    if (this.#qmp === null) throw new Error('QMP not connected');
    return this.#qmp;
  }

  get pid(): number {
    return this.child.pid!;
  }

  get exit(): QemuExit | null {
    return this.#exit;
  }

  /** Everything the guest wrote to its serial console so far. */
  console(): string {
    return this.#console;
  }

  get qemuStderr(): string {
    return this.#stderr;
  }

  #onConsole(s: string): void {
    this.#console += s;
    if (this.#onLine === undefined) return;
    this.#lineBuf += s;
    for (;;) {
      const nl = this.#lineBuf.indexOf('\n');
      if (nl < 0) break;
      this.#onLine(this.#lineBuf.slice(0, nl).replace(/\r$/, ''));
      this.#lineBuf = this.#lineBuf.slice(nl + 1);
    }
  }

  async #waitReady(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const m = new RegExp(`${READY_MARKER} ([0-9.]+)`).exec(this.#console);
      if (m !== null) {
        this.guestUptimeAtReady = Number(m[1]);
        return;
      }
      if (this.#console.includes(FAILED_MARKER)) throw new Error('guest init failed');
      if (this.#exit !== null) throw new Error(`QEMU exited before the guest was ready (${JSON.stringify(this.#exit)})`);
      if (Date.now() > deadline) throw new Error(`guest not ready within ${timeoutMs} ms`);
      await sleep(50);
    }
  }

  /** SIGKILL QEMU, wait for it, remove the VM directory. Idempotent. */
  async shutdown(): Promise<QemuExit> {
    this.#gone = true;
    this.#qmp?.close();
    if (this.#exit === null) this.child.kill('SIGKILL');
    const e = await this.exited;
    fs.rmSync(this.dir, { recursive: true, force: true });
    live.delete(this.#live);
    return e;
  }
}

/** Boot a guest (see TestVm.boot). */
export function bootVm(opts: BootVmOptions = {}): Promise<TestVm> {
  return TestVm.boot(opts);
}
