/**
 * `kvmchan proxy` (docs/cli.md "proxy"): sockets through vchans, one vchan per connection.
 * - socket → vchan: a local TCP or UNIX listener; each accepted connection becomes a vchan to
 *   DOMAIN:PORT (Vchan.connect).
 * - vchan → socket: a vchan port served for many clients (createServer); each vchan becomes
 *   a connection to a local TCP or UNIX address.
 * vchans have no half-close (docs/api.md "Semantics"), so a connection ends as a whole: when
 * one side ends its sending, what it sent is delivered and the vchan closed; the far proxy then
 * delivers what is left and ends its socket (end of stream, then close), as `kvmchan connect -N`.
 */
import net from 'node:net';
import { once } from 'node:events';
import { Vchan } from '../client/index.js';
import { createServer, type VchanServer } from '../client/server.js';
import { KvmchanError } from '../errors.js';

export type SocketAddress = { kind: 'tcp'; host: string; port: number } | { kind: 'unix'; path: string };
export interface VchanAddress {
  kind: 'vchan';
  domain: number;
  port: number;
}
export type ProxyAddress = SocketAddress | VchanAddress;

function u32(text: string, what: string, max = 0xffffffff): number {
  if (!/^\d+$/.test(text) || Number(text) > max)
    throw new KvmchanError(`${what} must be an integer in [0, ${max}], got '${text}'`, 'KVMCHAN_E_USAGE');
  return Number(text);
}

/**
 * `tcp:[HOST:]PORT` (HOST defaults to 127.0.0.1; `[::1]` for IPv6), `unix:PATH`,
 * `vchan:[DOMAIN:]PORT` (DOMAIN defaults to 0, the host).
 */
export function parseAddress(text: string): ProxyAddress {
  const colon = text.indexOf(':');
  const scheme = colon < 0 ? '' : text.slice(0, colon);
  const rest = text.slice(colon + 1);
  if (scheme === 'unix') {
    if (rest === '') throw new KvmchanError(`'${text}': unix: needs a path`, 'KVMCHAN_E_USAGE');
    return { kind: 'unix', path: rest };
  }
  if (scheme === 'tcp') {
    const m = /^(?:(\[[^\]]+\]|[^:]+):)?(\d+)$/.exec(rest);
    if (m === null) throw new KvmchanError(`'${text}': expected tcp:[HOST:]PORT`, 'KVMCHAN_E_USAGE');
    const host = (m[1] ?? '127.0.0.1').replace(/^\[(.*)\]$/, '$1');
    return { kind: 'tcp', host, port: u32(m[2] ?? '', 'TCP port', 65535) };
  }
  if (scheme === 'vchan') {
    const parts = rest.split(':');
    if (parts.length > 2) throw new KvmchanError(`'${text}': expected vchan:[DOMAIN:]PORT`, 'KVMCHAN_E_USAGE');
    const port = u32(parts[parts.length - 1] ?? '', 'vchan port');
    const domain = parts.length === 2 ? u32(parts[0] ?? '', 'domain', 0x7fffffff) : 0;
    return { kind: 'vchan', domain, port };
  }
  throw new KvmchanError(`'${text}': an address is tcp:[HOST:]PORT, unix:PATH or vchan:[DOMAIN:]PORT`, 'KVMCHAN_E_USAGE');
}

export function describe(a: ProxyAddress): string {
  if (a.kind === 'unix') return `unix:${a.path}`;
  if (a.kind === 'tcp') return `tcp:${a.host.includes(':') ? `[${a.host}]` : a.host}:${a.port}`;
  return `vchan:${a.domain}:${a.port}`;
}

export interface Splice {
  /** Resolves when both are closed; never rejects (failures close both ends). */
  done: Promise<{ sent: number; received: number; error: unknown }>;
}

/** Copies a socket and a vchan into each other until either side ends; then closes both. */
export function splice(socket: net.Socket, vchan: Vchan): Splice {
  let error: unknown = null;
  const counts = { sent: 0, received: 0 };
  socket.setNoDelay(true);

  const toVchan = (async () => {
    for await (const chunk of socket as AsyncIterable<Buffer>) {
      await vchan.write(chunk);
      counts.sent += chunk.length;
    }
    // The socket ended its sending: what it sent is in the ring; the peer drains it and ends.
    vchan.close();
  })();

  const fromVchan = (async () => {
    for await (const chunk of vchan) {
      counts.received += chunk.length;
      if (!socket.write(chunk)) await Promise.race([once(socket, 'drain'), once(socket, 'close')]);
    }
    // The peer closed: deliver what is written, then end of stream on the socket.
    socket.end();
  })();

  const settle = (p: Promise<void>): Promise<void> =>
    p.catch((err: unknown) => {
      // Closing one side makes the other loop fail with a closed/destroyed error: not news.
      const quiet = vchan.state === 'closed' || socket.destroyed;
      if (!quiet && error === null) error = err;
      vchan.close();
      socket.destroy();
    });

  const done = Promise.all([settle(toVchan), settle(fromVchan)]).then(async () => {
    vchan.close();
    if (!socket.destroyed) {
      // end() was called by one side: let the socket flush, then release it.
      if (!socket.writableFinished) await Promise.race([once(socket, 'finish'), once(socket, 'close')]).catch(() => undefined);
      socket.destroy();
    }
    return { ...counts, error };
  });
  // Both loops end on their own when either side closes: a socket that closes stops the
  // async iterator, a vchan closed by us ends the vchan loop (ClosedError, settled above).
  socket.on('close', () => {
    vchan.close();
  });
  return { done };
}

export interface ProxyOptions {
  /** Ring sizes of each vchan (bytes; server side only), and the client timeout. */
  readMin?: number;
  writeMin?: number;
  /** ms a connection waits for the vchan server (socket → vchan); default 10 s. */
  connectTimeout?: number;
  runtimeDir?: string;
  log?: (msg: string) => void;
}

export interface Proxy {
  /** Where it listens (the socket address, with the real TCP port) or the vchan it serves. */
  readonly address: string;
  /** Connections being carried now. */
  readonly active: number;
  /** Stops accepting; carried connections are closed. Resolves when everything is released. */
  close(): Promise<void>;
}

function listenSocket(server: net.Server, a: SocketAddress): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    const ok = (): void => {
      server.off('error', reject);
      resolve();
    };
    if (a.kind === 'unix') server.listen(a.path, ok);
    else server.listen(a.port, a.host, ok);
  });
}

/** A local listener whose connections become vchans to `to`. */
export async function proxySocketToVchan(from: SocketAddress, to: VchanAddress, opts: ProxyOptions = {}): Promise<Proxy> {
  const live = new Set<{ socket: net.Socket; vchan: Vchan | null }>();
  const server = net.createServer({ allowHalfOpen: true, pauseOnConnect: true }, (socket) => {
    const entry: { socket: net.Socket; vchan: Vchan | null } = { socket, vchan: null };
    live.add(entry);
    socket.on('error', () => undefined);
    socket.once('close', () => {
      entry.vchan?.close();
      live.delete(entry);
    });
    Vchan.connect({
      domain: to.domain,
      port: to.port,
      timeout: opts.connectTimeout ?? 10000,
      ...(opts.runtimeDir === undefined ? {} : { runtimeDir: opts.runtimeDir }),
    }).then(
      (vchan) => {
        if (socket.destroyed) {
          vchan.close();
          return;
        }
        entry.vchan = vchan;
        socket.resume();
        void splice(socket, vchan).done.then((r) => {
          if (r.error !== null) opts.log?.(`connection failed: ${(r.error as Error).message}`);
        });
      },
      (err: unknown) => {
        opts.log?.(`cannot reach ${describe(to)}: ${(err as Error).message}`);
        socket.destroy();
      },
    );
  });
  await listenSocket(server, from);
  const addr = server.address();
  const address =
    from.kind === 'tcp' && addr !== null && typeof addr === 'object' ? describe({ ...from, port: addr.port }) : describe(from);
  return {
    address,
    get active() {
      return live.size;
    },
    async close() {
      const closed = new Promise<void>((resolve) =>
        server.close(() => {
          resolve();
        }),
      );
      for (const e of live) {
        e.vchan?.close();
        e.socket.destroy();
      }
      await closed;
    },
  };
}

/** Serves a vchan port; each vchan becomes a connection to `to`. */
export async function proxyVchanToSocket(from: VchanAddress, to: SocketAddress, opts: ProxyOptions = {}): Promise<Proxy> {
  const live = new Set<{ socket: net.Socket; vchan: Vchan }>();
  const server: VchanServer = await createServer({
    domain: from.domain,
    port: from.port,
    readMin: opts.readMin ?? 65536,
    writeMin: opts.writeMin ?? 65536,
    ...(opts.runtimeDir === undefined ? {} : { runtimeDir: opts.runtimeDir }),
  });
  server.on('connection', (vchan) => {
    const socket =
      to.kind === 'unix'
        ? net.connect({ path: to.path, allowHalfOpen: true })
        : net.connect({ host: to.host, port: to.port, allowHalfOpen: true });
    const entry = { socket, vchan };
    live.add(entry);
    socket.once('close', () => {
      vchan.close();
      live.delete(entry);
    });
    socket.on('error', (err) => {
      // Once connected, splice() sees failures through the socket's iterator.
      if (socket.connecting) opts.log?.(`cannot reach ${describe(to)}: ${err.message}`);
    });
    socket.once('connect', () => {
      void splice(socket, vchan).done.then((r) => {
        if (r.error !== null) opts.log?.(`connection failed: ${(r.error as Error).message}`);
      });
    });
  });
  const stopped = new Promise<void>((resolve) => server.once('close', resolve));
  server.on('error', (err) => opts.log?.(`stopped serving ${describe(from)}: ${err.message}`));
  return {
    address: describe(from),
    get active() {
      return live.size;
    },
    async close() {
      server.close();
      for (const e of live) {
        e.vchan.close();
        e.socket.destroy();
      }
      await stopped;
    },
  };
}
