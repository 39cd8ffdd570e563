/**
 * The benchmark's watchdog: every phase reports progress (each byte-moving call, each
 * accepted vchan, each line of the C benchmark); a phase that makes none for `stallMs`
 * aborts the whole run with a message naming the phase and what it was waiting for, after
 * killing every process and daemon the run started and removing their temporary files.
 */
import type { ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import type { PrivateDaemon } from '../src/cli/private-daemon.js';
import type { Chan } from './channels.js';

export class Watchdog {
  readonly stallMs: number;
  #phase = 'start-up';
  #waitingFor = 'nothing yet';
  #ticks = 0;
  #seen = -1;
  #since = Date.now();
  #timer: NodeJS.Timeout | null = null;
  readonly #children = new Set<ChildProcess>();
  readonly #groups = new Set<ChildProcess>();
  readonly #daemons = new Set<PrivateDaemon>();
  readonly #paths = new Set<string>();

  constructor(stallMs: number) {
    this.stallMs = stallMs;
  }

  start(): void {
    this.#since = Date.now();
    this.#timer = setInterval(
      () => {
        this.#check();
      },
      Math.min(1000, Math.max(50, this.stallMs / 10)),
    );
    const stop = (sig: NodeJS.Signals): void => {
      this.abort(`interrupted (${sig})`, 130);
    };
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  }

  stop(): void {
    if (this.#timer !== null) clearInterval(this.#timer);
    this.#timer = null;
  }

  phase(name: string): void {
    this.#phase = name;
    this.#waitingFor = 'nothing yet';
    this.progress();
  }

  /** Counts as progress; cheap enough for every read and write of a 64-byte message. */
  progress(): void {
    this.#ticks++;
  }

  waiting(what: string): void {
    this.#waitingFor = what;
  }

  /** Processes to kill on abort (`group`: its whole process group, for forking programs). */
  child<T extends ChildProcess>(c: T, group = false): T {
    (group ? this.#groups : this.#children).add(c);
    c.once('exit', () => {
      this.#children.delete(c);
      this.#groups.delete(c);
    });
    return c;
  }

  daemon(d: PrivateDaemon): PrivateDaemon {
    this.#daemons.add(d);
    return d;
  }

  forgetDaemon(d: PrivateDaemon): void {
    this.#daemons.delete(d);
  }

  /** A file or directory to remove on abort. */
  path(p: string): string {
    this.#paths.add(p);
    return p;
  }

  forgetPath(p: string): void {
    this.#paths.delete(p);
  }

  /** Kills and removes everything still registered (also the normal-exit safety net). */
  cleanUp(): void {
    this.stop();
    for (const c of this.#groups) {
      try {
        process.kill(-c.pid!, 'SIGKILL');
      } catch {
        c.kill('SIGKILL');
      }
    }
    for (const c of this.#children) c.kill('SIGKILL');
    for (const d of this.#daemons) {
      d.child.kill('SIGKILL');
      fs.rmSync(d.runtimeDir, { recursive: true, force: true });
    }
    for (const p of this.#paths) fs.rmSync(p, { recursive: true, force: true });
    // Whatever a phase started without registering it here (the simulated-domain fixtures of
    // cross-domain-setup.ts, their peers): every descendant of this process still alive.
    for (const pid of descendants(process.pid)) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // gone meanwhile
      }
    }
    this.#groups.clear();
    this.#children.clear();
    this.#daemons.clear();
    this.#paths.clear();
  }

  abort(reason: string, code = 2): never {
    process.stderr.write(`bench: ${reason}\n`);
    this.cleanUp();
    process.exit(code);
  }

  #check(): void {
    const now = Date.now();
    if (this.#ticks !== this.#seen) {
      this.#seen = this.#ticks;
      this.#since = now;
      return;
    }
    if (now - this.#since < this.stallMs) return;
    this.abort(
      `phase "${this.#phase}" made no progress for ${((now - this.#since) / 1000).toFixed(1)} s ` +
        `(waiting for: ${this.#waitingFor}); aborted, its processes killed`,
    );
  }

  /** `ch` reporting every byte it moves as progress and every wait as what we wait for. */
  watch(ch: Chan, name: string): Chan {
    return {
      tryWrite: (b) => {
        const n = ch.tryWrite(b);
        if (n > 0) this.#ticks++;
        return n;
      },
      trySendBatch: (c) => {
        const n = ch.trySendBatch(c);
        if (n > 0) this.#ticks++;
        return n;
      },
      tryRead: (b) => {
        const n = ch.tryRead(b);
        if (n !== 0) this.#ticks++;
        return n;
      },
      waitReadable: (min = 1) => {
        this.#waitingFor = `${name}: ${min} byte(s) to read`;
        return ch.waitReadable(min);
      },
      waitWritable: (min = 1) => {
        this.#waitingFor = `${name}: room to write ${min} byte(s)`;
        return ch.waitWritable(min);
      },
      close: () => {
        ch.close();
      },
    };
  }
}

/** Pids of every live descendant of `root`, from /proc (children before grandchildren). */
function descendants(root: number): number[] {
  const children = new Map<number, number[]>();
  let entries: string[];
  try {
    entries = fs.readdirSync('/proc');
  } catch {
    return [];
  }
  for (const e of entries) {
    if (!/^\d+$/.test(e)) continue;
    let stat: string;
    try {
      stat = fs.readFileSync(`/proc/${e}/stat`, 'utf8');
    } catch {
      continue; // exited
    }
    // "pid (comm) state ppid …": comm may hold spaces and parentheses, so parse after the last ')'.
    const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
    const list = children.get(ppid) ?? [];
    list.push(Number(e));
    children.set(ppid, list);
  }
  const out: number[] = [];
  const queue = [...(children.get(root) ?? [])];
  while (queue.length > 0) {
    const pid = queue.shift()!;
    out.push(pid);
    queue.push(...(children.get(pid) ?? []));
  }
  return out;
}
