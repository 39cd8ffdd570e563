/** Creating vchans: server init and client init through the local daemon (docs/api.md). */
import { DaemonConnection } from './daemon-connection.js';
import { Vchan, type VchanOptions } from './vchan.js';
import { Command, TIMEOUT_INFINITE } from '../protocol/constants.js';
import type { VchanInfo } from '../protocol/types.js';
import { fromWireInfo } from '../protocol/views.js';
import { AbortError, DaemonError, InvalidArgumentError, TimeoutError } from '../errors.js';
import type { VchanSetup } from './setup.js';
import { checkDomain, resolveDomain } from './domains.js';

export interface ListenOptions extends VchanOptions {
  /** Port (u32), chosen by the server as in Qubes. */
  port: number;
  /** The domain allowed to connect (default 0, the host): an id, or its name (resolved by the daemon's domain list). */
  domain?: number | string;
  /** Minimum bytes of the ring this side reads / writes (rounded up to a power of two, ≥ 1 KiB). */
  readMin?: number;
  writeMin?: number;
  runtimeDir?: string;
  signal?: AbortSignal;
}

export interface ConnectOptions extends VchanOptions {
  port: number;
  /** The server's domain (default 0, the host): an id, or its name. */
  domain?: number | string;
  /** Milliseconds to wait for the server to appear (default: forever; 0: do not wait). */
  timeout?: number;
  runtimeDir?: string;
  signal?: AbortSignal;
}

function checkU32(v: number, what: string): number {
  if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) throw new InvalidArgumentError(`${what} must be a u32, got ${v}`);
  return v;
}

/**
 * An already aborted signal fails like one aborted later (AbortError, KVMCHAN_E_ABORTED):
 * `signal.throwIfAborted()` would throw a DOMException, which has no kvmchan `code`.
 */
function checkAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted === true) throw new AbortError(undefined, { cause: signal.reason });
}

/**
 * The wire carries only an errno (wire-protocol.md §4.2): "VCHAN_SERVER_INIT failed: EEXIST"
 * tells a user little. Say what it means for this call; class, code and errno stay the same.
 */
function explain(err: unknown, what: Readonly<Record<string, string>>): unknown {
  if (!(err instanceof DaemonError)) return err;
  const name = err.code.replace(/^KVMCHAN_E_DAEMON_/, '');
  const meaning = what[name];
  if (meaning === undefined) return err;
  return new DaemonError(`${meaning} (${err.message})`, name, err.errno ?? 0);
}

function toSetup(info: VchanInfo, fds: readonly number[], conn: DaemonConnection): VchanSetup {
  const [shm, wait, kick] = fds as [number, number, number];
  return {
    info: fromWireInfo(info),
    fds: { shm, wait, kick },
    session: conn,
  };
}

/** Serve a vchan: resolves as soon as it exists; use `waitConnected()` to wait for the client. */
export async function listen(options: ListenOptions): Promise<Vchan> {
  const port = checkU32(options.port, 'port');
  const named = checkDomain(options.domain);
  const readMin = checkU32(options.readMin ?? 0, 'readMin');
  const writeMin = checkU32(options.writeMin ?? 0, 'writeMin');
  checkAborted(options.signal);
  const conn = await DaemonConnection.open(options.runtimeDir);
  let reply;
  let domain: number | string = named;
  try {
    domain = await resolveDomain(conn, named, options.signal);
    reply = await conn.request(Command.VCHAN_SERVER_INIT, { peerDomain: domain, port, readMin, writeMin }, options.signal);
  } catch (err) {
    conn.close();
    throw explain(err, {
      EEXIST: `port ${port} toward domain ${domain} is already served`,
      ESRCH: `domain ${domain} is not known to kvmchand`,
      EINVAL: `ring sizes ${readMin}/${writeMin} refused by kvmchand (above its limit?)`,
      EMSGSIZE: `ring sizes ${readMin}/${writeMin} are above the maximum`,
      ENOSPC:
        'kvmchand refused: a limit was reached (limits.maxVchans or maxVchansPerConnection, or every pool between these domains is full and pools.maxPoolsPerSet or pools.maxPoolsPerDomain allows no more; the daemon log names which)',
      EDQUOT:
        'kvmchand refused: this user\'s quota is used up (limits.maxVchansPerUid or limits.maxShmBytesPerUid; docs/security.md, "Quotas")',
    });
  }
  return new Vchan(toSetup(reply.body, reply.fds, conn), options);
}

/** Connect to the vchan served on `port` by `domain`, waiting for the server if needed. */
export async function connect(options: ConnectOptions): Promise<Vchan> {
  const port = checkU32(options.port, 'port');
  const named = checkDomain(options.domain);
  const timeout = options.timeout ?? Infinity;
  if (timeout !== Infinity && (!Number.isInteger(timeout) || timeout < 0 || timeout >= TIMEOUT_INFINITE)) {
    throw new InvalidArgumentError(`timeout must be a non-negative integer number of ms, got ${timeout}`);
  }
  checkAborted(options.signal);
  const conn = await DaemonConnection.open(options.runtimeDir);
  let reply;
  let domain: number | string = named;
  try {
    domain = await resolveDomain(conn, named, options.signal);
    reply = await conn.request(
      Command.VCHAN_CLIENT_INIT,
      { serverDomain: domain, port, timeoutMs: timeout === Infinity ? TIMEOUT_INFINITE : timeout, flags: 0 },
      options.signal,
    );
  } catch (err) {
    conn.close();
    if (err instanceof DaemonError && err.code === 'KVMCHAN_E_DAEMON_ETIMEDOUT') {
      throw new TimeoutError(`no server on port ${port} of domain ${domain} within ${timeout} ms`);
    }
    throw explain(err, {
      ENOENT: `no server on port ${port} of domain ${domain}`,
      EBUSY: `the vchan on port ${port} of domain ${domain} already has a client`,
      ECONNREFUSED: `the server on port ${port} of domain ${domain} went away before a client attached`,
      ESRCH: `domain ${domain} is not known to kvmchand`,
      ENOSPC:
        'kvmchand refused: a limit was reached (limits.maxVchans or maxVchansPerConnection, or every pool between these domains is full and pools.maxPoolsPerSet or pools.maxPoolsPerDomain allows no more; the daemon log names which)',
      EDQUOT:
        'kvmchand refused: this user\'s quota is used up (limits.maxVchansPerUid or limits.maxShmBytesPerUid; docs/security.md, "Quotas")',
    });
  }
  return new Vchan(toSetup(reply.body, reply.fds, conn), options);
}
