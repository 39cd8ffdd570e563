/**
 * The driving side of test/helpers/vchan-peer.ts: spawns a peer process on a runtime dir
 * and exchanges JSON commands with it.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { EventEmitter } from 'node:events';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';
import { ForeignUidTree } from './foreign-uid.js';

export const PEER_MAIN = path.join(path.dirname(fileURLToPath(import.meta.url)), 'vchan-peer.js');

export interface PeerError {
  name: string;
  code: string | null;
  message: string;
  errno: number | null;
}

export type PeerReply = Record<string, unknown> & { ok: boolean; error?: PeerError };

export interface SpawnPeerOptions {
  uid?: number;
  gid?: number;
  /** Another program speaking the same JSON-lines protocol (default: vchan-peer.js). */
  main?: string;
}

/** Does `uid` differ from ours (so the child may not be able to read the checkout)? */
function otherUid(uid: number | undefined): boolean {
  return uid !== undefined && uid !== process.getuid?.();
}

export class PeerProcess extends EventEmitter {
  readonly child: ChildProcess;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  readonly ready: Promise<{ pid: number; uid: number }>;
  stderr = '';
  #nextId = 1;
  readonly #pending = new Map<number, (r: PeerReply) => void>();

  private constructor(child: ChildProcess) {
    super();
    this.child = child;
    this.exited = new Promise((resolve) => {
      child.once('exit', (code, signal) => {
        resolve({ code, signal });
      });
      // spawn() itself failed (EAGAIN, ENOMEM...): there will be no 'exit'.
      child.once('error', (err) => {
        this.stderr += `[spawn error] ${err.message}\n`;
        resolve({ code: null, signal: null });
      });
    });
    let onReady: (v: { pid: number; uid: number }) => void = () => undefined;
    this.ready = new Promise((resolve) => {
      onReady = resolve;
    });
    child.stderr?.on('data', (d: Buffer) => {
      this.stderr += d.toString();
    });
    const rl = readline.createInterface({ input: child.stdout! });
    rl.on('line', (line) => {
      let msg: Record<string, unknown>;
      try {
        msg = JSON.parse(line) as Record<string, unknown>;
      } catch {
        this.stderr += `[non-JSON stdout] ${line}\n`;
        return;
      }
      if (msg['event'] === 'ready') onReady(msg as { pid: number; uid: number });
      else if (typeof msg['event'] === 'string') this.emit(msg['event'], msg);
      else {
        const id = msg['id'] as number;
        const resolve = this.#pending.get(id);
        this.#pending.delete(id);
        resolve?.(msg as PeerReply);
      }
    });
    void this.exited.then(({ code, signal }) => {
      // Whatever is still pending will never be answered.
      for (const [, resolve] of this.#pending) {
        resolve({ ok: false, error: { name: 'PeerExited', code: null, message: `peer exited (${code ?? signal})`, errno: null } });
      }
      this.#pending.clear();
    });
  }

  static async spawn(runtimeDir: string, opts: SpawnPeerOptions = {}): Promise<PeerProcess> {
    const main = opts.main ?? PEER_MAIN;
    // Another uid may not be able to traverse the checkout: run a world-readable copy of
    // what the peer imports (removed when the peer exits).
    const tree = otherUid(opts.uid) ? ForeignUidTree.create([main]) : null;
    let child: ChildProcess;
    try {
      child = spawn(process.execPath, [tree === null ? main : tree.path(main), runtimeDir], {
        stdio: ['pipe', 'pipe', 'pipe'],
        ...(tree === null ? {} : { cwd: tree.dir }),
        ...(opts.uid === undefined ? {} : { uid: opts.uid }),
        ...(opts.gid === undefined ? {} : { gid: opts.gid }),
      });
    } catch (err) {
      tree?.remove();
      throw err;
    }
    const p = new PeerProcess(child);
    if (tree !== null)
      void p.exited.then(() => {
        tree.remove();
      });
    const ready = await Promise.race([p.ready, p.exited.then(() => null)]);
    if (ready === null) throw new Error(`${path.basename(main)} exited during start-up: ${p.stderr}`);
    return p;
  }

  get pid(): number {
    return this.child.pid ?? -1;
  }

  /** Sends a command; resolves with its reply (ok or not). */
  call(cmd: Record<string, unknown>): Promise<PeerReply> {
    const id = this.#nextId++;
    return new Promise((resolve) => {
      this.#pending.set(id, resolve);
      this.child.stdin!.write(`${JSON.stringify({ ...cmd, id })}\n`);
    });
  }

  /** Sends a command and throws if it failed. */
  async ok(cmd: Record<string, unknown>): Promise<PeerReply> {
    const r = await this.call(cmd);
    if (!r.ok) {
      throw new Error(`peer ${String(cmd['op'])} failed: ${r.error?.name} ${r.error?.code} ${r.error?.message}\n${this.stderr}`);
    }
    return r;
  }

  /** Ends the peer politely (stdin EOF), or by signal. */
  async end(): Promise<void> {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.stdin?.end();
    await this.exited;
  }

  async kill(signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill(signal);
    await this.exited;
  }
}
