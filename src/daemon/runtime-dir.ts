/**
 * The runtime directory: client socket and pid file (docs/security.md, docs/operations.md). A stale
 * socket or pid file from a killed daemon never blocks a restart; a second
 * daemon on the same directory is refused with a clear error.
 */
import fs from 'node:fs';
import path from 'node:path';
import { native } from '../native.js';
import { KvmchanError } from '../errors.js';
import { PID_NAME, SOCKET_NAME } from '../paths.js';

export class AlreadyRunningError extends KvmchanError {
  constructor(dir: string, pid: number | undefined) {
    super(
      `another kvmchand${pid === undefined ? '' : ` (pid ${pid})`} is running on ${dir}; stop it or use --runtime-dir`,
      'KVMCHAN_E_ALREADY_RUNNING',
    );
    this.name = 'AlreadyRunningError';
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function readPid(file: string): number | undefined {
  try {
    const n = Number.parseInt(fs.readFileSync(file, 'utf8').trim(), 10);
    return Number.isInteger(n) && n > 0 ? n : undefined;
  } catch {
    return undefined;
  }
}

export class UnsafeRuntimeDirError extends KvmchanError {
  constructor(message: string) {
    super(message, 'KVMCHAN_E_RUNTIME_DIR_UNSAFE');
    this.name = 'UnsafeRuntimeDirError';
  }
}

/**
 * The runtime directory is a trust anchor (docs/security.md, "Trust anchors"): whoever can
 * write it can replace our socket and read every client's data. Refuse a directory that is a
 * symlink, that another user owns (e.g. pre-created in /tmp), or that others may write.
 */
export function checkOwnDirectory(dir: string, euid: number): void {
  const st = fs.lstatSync(dir);
  if (!st.isDirectory()) throw new UnsafeRuntimeDirError(`runtime directory ${dir} is not a directory (a symlink?): refusing to use it`);
  if (st.uid !== euid) {
    throw new UnsafeRuntimeDirError(
      `runtime directory ${dir} belongs to uid ${st.uid}, not to this user (uid ${euid}): refusing to use it; remove it, or set XDG_RUNTIME_DIR or --runtime-dir`,
    );
  }
  if ((st.mode & 0o022) !== 0) {
    throw new UnsafeRuntimeDirError(
      `runtime directory ${dir} is writable by group or others (mode ${(st.mode & 0o777).toString(8)}): refusing to use it; chmod go-w it`,
    );
  }
}

export class RuntimeDir {
  readonly dir: string;
  readonly socketPath: string;
  readonly pidPath: string;
  #locked = false;

  constructor(dir: string) {
    this.dir = path.resolve(dir);
    this.socketPath = path.join(this.dir, SOCKET_NAME);
    this.pidPath = path.join(this.dir, PID_NAME);
  }

  /** Create the directory and take the pid-file lock, clearing stale files. */
  acquire(): void {
    // root's directory must be traversable by the clients it serves (the socket itself is
    // 0660 root:kvmchan); a user's own daemon keeps its directory private.
    const euid = process.geteuid?.() ?? 0;
    fs.mkdirSync(this.dir, { recursive: true, mode: euid === 0 ? 0o755 : 0o700 });
    checkOwnDirectory(this.dir, euid);
    for (let attempt = 0; attempt < 2; attempt++) {
      try {
        const fd = fs.openSync(this.pidPath, 'wx', 0o644);
        fs.writeSync(fd, `${process.pid}\n`);
        fs.closeSync(fd);
        this.#locked = true;
        break;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
        const pid = readPid(this.pidPath);
        if (pid !== undefined && pid !== process.pid && alive(pid) && this.#socketAnswers()) {
          throw new AlreadyRunningError(this.dir, pid);
        }
        // Stale: the owner is dead (or the pid was reused by something that is not serving the socket).
        fs.rmSync(this.pidPath, { force: true });
      }
    }
    if (!this.#locked) throw new AlreadyRunningError(this.dir, readPid(this.pidPath));
    // We hold the lock, so a socket file left here belongs to a dead daemon.
    fs.rmSync(this.socketPath, { force: true });
  }

  #socketAnswers(): boolean {
    try {
      const fd = native.connectUnix(this.socketPath, 'seqpacket');
      native.close(fd);
      return true;
    } catch {
      return false;
    }
  }

  /** Remove our socket and pid file (only if they are still ours). */
  release(): void {
    if (!this.#locked) return;
    this.#locked = false;
    fs.rmSync(this.socketPath, { force: true });
    if (readPid(this.pidPath) === process.pid) fs.rmSync(this.pidPath, { force: true });
  }
}
