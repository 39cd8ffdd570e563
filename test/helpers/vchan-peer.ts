/**
 * A scriptable vchan endpoint in its own process, for the daemon/client integration tests.
 * Usage: node dist/test/helpers/vchan-peer.js <runtimeDir>
 *
 * It reads one JSON command per line on stdin and answers each with one JSON line on stdout,
 * `{"id": n, "ok": true, ...result}` or `{"id": n, "ok": false, "error": {name, code, message}}`.
 * Commands run concurrently (a pending `recv` does not hold back a `state`); unsolicited
 * progress lines are `{"event": "progress", "name": …, "written": n}`. The process exits when
 * stdin closes, so a test that dies never leaves peers behind. See test/helpers/peer-process.ts
 * for the driving side.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import readline from 'node:readline';
import { Vchan, DaemonConnection } from '../../src/client/index.js';
import { Command } from '../../src/protocol/constants.js';
import { native } from '../../src/native.js';
import { Prng } from './prng.js';
import { Pattern } from './pattern.js';

const runtimeDirArg = process.argv[2];
if (runtimeDirArg === undefined) {
  process.stderr.write('usage: vchan-peer <runtimeDir>\n');
  process.exit(2);
}
const runtimeDir: string = runtimeDirArg;

type Json = Record<string, unknown>;

const vchans = new Map<string, Vchan>();
/** The many-vchan scale test's client ends, by port order. */
let many: Vchan[] = [];
const stops = new Map<string, () => void>();
/** Raw vchan setups (rawInit): their daemon connection (the vchan lives with it) and the shm fd. */
const raws = new Map<string, { conn: DaemonConnection; shm: number; fds: readonly number[] }>();

function out(obj: Json): void {
  process.stdout.write(`${JSON.stringify(obj)}\n`);
}

function errorJson(err: unknown): Json {
  const e = err as { name?: string; code?: string; message?: string; errno?: number };
  return { name: e.name ?? 'Error', code: e.code ?? null, message: e.message ?? String(err), errno: e.errno ?? null };
}

function vchanOf(cmd: Json): Vchan {
  const name = (cmd['name'] as string | undefined) ?? 'v';
  const v = vchans.get(name);
  if (v === undefined) throw new Error(`no vchan named ${name}`);
  return v;
}

/** The peer domain of listen / server domain of connect (`domain`, default 0: the host). */
function domainOf(cmd: Json): { domain?: number } {
  return cmd['domain'] === undefined ? {} : { domain: Number(cmd['domain']) };
}

function describe(v: Vchan): Json {
  return { handle: v.handle, role: v.role, port: v.port, readSize: v.readSize, writeSize: v.writeSize, state: v.state };
}

/** Chunk sizes: mostly 1..5000 bytes, sometimes up to 64 KiB, rarely up to 1 MiB. */
function chunkSize(rng: Prng, small: number): number {
  const r = rng.int(0, 99);
  if (r < 85) return rng.int(1, small);
  if (r < 95) return rng.int(small, 65536);
  return rng.int(65536, 1 << 20);
}

/**
 * Full duplex: writes `bytes` bytes of random data in random chunks while reading `bytes`
 * bytes in random read sizes; SHA-256 of both directions.
 */
async function bulk(v: Vchan, cmd: Json): Promise<Json> {
  const bytes = Number(cmd['bytes']);
  const seed = Number(cmd['seed']);
  const small = Number(cmd['small'] ?? 5000);
  // Random source data: a pool read at random offsets (generating 1 GiB of fresh random
  // bytes would cost more than the transfer).
  const pool = Buffer.from(new Prng(seed).bytes(8 << 20));
  const wrng = new Prng(seed ^ 0x1234567);
  const rrng = new Prng(seed ^ 0x7654321);
  const sentHash = createHash('sha256');
  const recvHash = createHash('sha256');
  let sent = 0;
  let received = 0;
  const t0 = process.hrtime.bigint();
  const fail = (err: unknown): never => {
    v.close(); // unblock the other direction
    throw err;
  };
  const writer = (async () => {
    while (sent < bytes) {
      const n = Math.min(chunkSize(wrng, small), bytes - sent);
      const off = wrng.int(0, pool.length - n);
      const chunk = pool.subarray(off, off + n);
      sentHash.update(chunk);
      await v.write(chunk);
      sent += n;
    }
  })().catch(fail);
  const reader = (async () => {
    const buf = Buffer.allocUnsafe(1 << 20);
    while (received < bytes) {
      const want = Math.min(chunkSize(rrng, small), bytes - received);
      const n = await v.readInto(buf.subarray(0, want));
      if (n < 0) throw new Error(`end of stream after ${received} of ${bytes} bytes`);
      recvHash.update(buf.subarray(0, n));
      received += n;
    }
  })().catch(fail);
  await Promise.all([writer, reader]);
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  return { sent, received, sentSha: sentHash.digest('hex'), recvSha: recvHash.digest('hex'), ms };
}

/** Writes the Pattern stream of `seed` until `stop` (or an error), reporting progress. */
async function source(v: Vchan, cmd: Json): Promise<Json> {
  const name = (cmd['name'] as string | undefined) ?? 'v';
  const pattern = new Pattern(Number(cmd['seed']));
  const maxChunk = Number(cmd['maxChunk'] ?? 16384);
  const limit = cmd['bytes'] === undefined ? Infinity : Number(cmd['bytes']);
  const rng = new Prng(Number(cmd['seed']) + 1);
  const hash = createHash('sha256');
  let stopped = false;
  stops.set(name, () => {
    stopped = true;
  });
  let written = 0;
  let lastReport = 0;
  let error: Json | null = null;
  try {
    while (!stopped && written < limit) {
      const n = Math.min(rng.int(1, maxChunk), limit - written);
      const chunk = pattern.slice(written, n);
      await v.write(chunk);
      hash.update(chunk);
      written += n;
      const now = Date.now();
      if (now - lastReport >= 10) {
        lastReport = now;
        out({ event: 'progress', name, written });
        // A write that finds room resolves without leaving the microtask queue: when the reader
        // keeps up, this loop would never let stdin (a `stop`, or its closing) be read.
        await new Promise((resolve) => setImmediate(resolve));
      }
    }
  } catch (err) {
    error = errorJson(err);
  }
  stops.delete(name);
  out({ event: 'progress', name, written });
  if (cmd['closeAfter'] === true) v.close();
  return { written, sha256: hash.digest('hex'), error };
}

/**
 * Reads until end of stream (or `bytes` bytes, then closes if `closeAfter`); checks the
 * Pattern of `seed` when given.
 */
async function sink(v: Vchan, cmd: Json): Promise<Json> {
  const pattern = cmd['seed'] === undefined ? null : new Pattern(Number(cmd['seed']));
  const limit = cmd['bytes'] === undefined ? Infinity : Number(cmd['bytes']);
  const hash = createHash('sha256');
  const buf = Buffer.allocUnsafe(256 * 1024);
  let received = 0;
  let mismatchAt = -1;
  let error: Json | null = null;
  try {
    while (received < limit) {
      const n = await v.readInto(buf.subarray(0, Math.min(buf.length, limit - received)));
      if (n < 0) break;
      const data = buf.subarray(0, n);
      if (pattern !== null && mismatchAt < 0) {
        const m = pattern.mismatch(received, data);
        if (m >= 0) mismatchAt = received + m;
      }
      hash.update(data);
      received += n;
    }
  } catch (err) {
    error = errorJson(err);
  }
  if (cmd['closeAfter'] === true) v.close();
  return { received, sha256: hash.digest('hex'), mismatchAt, error };
}

/** One request on a fresh daemon connection (used by the credential tests). */
async function daemonRequest(cmd: Json): Promise<Json> {
  const conn = await DaemonConnection.open(runtimeDir);
  try {
    switch (cmd['request']) {
      case 'close':
        await conn.request(Command.VCHAN_CLOSE, { handle: Number(cmd['handle']) });
        return {};
      case 'listVchans': {
        const r = await conn.request(Command.LIST_VCHANS, { start: 0 });
        return { entries: r.body.entries };
      }
      default:
        throw new Error(`unknown daemon request ${String(cmd['request'])}`);
    }
  } finally {
    conn.close();
  }
}

/**
 * VCHAN_SERVER_INIT (or CLIENT_INIT with `role: 'client'`) on a connection of its own, keeping
 * the fds the reply carries as they are — what an attacker gets. Answers the identity of the
 * shm object (inode, size) and the vchan's place in it.
 */
async function rawInit(name: string, cmd: Json): Promise<Json> {
  const conn = await DaemonConnection.open(runtimeDir);
  try {
    const domain = Number(cmd['domain'] ?? 0);
    const port = Number(cmd['port']);
    const r =
      cmd['role'] === 'client'
        ? await conn.request(Command.VCHAN_CLIENT_INIT, { serverDomain: domain, port, timeoutMs: Number(cmd['timeout'] ?? 0), flags: 0 })
        : await conn.request(Command.VCHAN_SERVER_INIT, { peerDomain: domain, port, readMin: 1024, writeMin: 1024 });
    const shm = r.fds[0]!;
    raws.set(name, { conn, shm, fds: r.fds });
    const st = fs.fstatSync(shm);
    return { ino: st.ino, dev: st.dev, size: st.size, shmOffset: r.body.shmOffset, shmLength: r.body.shmLength };
  } catch (err) {
    conn.close();
    throw err;
  }
}

/** Maps the whole shm object of a rawInit vchan and counts where `marker` (base64) occurs. */
function rawScan(name: string, cmd: Json): Json {
  const r = raws.get(name);
  if (r === undefined) throw new Error(`no raw vchan named ${name}`);
  const marker = Buffer.from(cmd['marker'] as string, 'base64');
  const size = fs.fstatSync(r.shm).size;
  const map = native.mmap(r.shm, size, 0, false);
  try {
    const all = Buffer.from(map);
    const at: number[] = [];
    for (let i = all.indexOf(marker); i >= 0; i = all.indexOf(marker, i + 1)) at.push(i);
    return { size, found: at };
  } finally {
    native.munmap(map);
  }
}

async function run(cmd: Json): Promise<Json> {
  const name = (cmd['name'] as string | undefined) ?? 'v';
  switch (cmd['op']) {
    case 'listen': {
      const v = await Vchan.listen({
        runtimeDir,
        ...domainOf(cmd),
        port: Number(cmd['port']),
        readMin: Number(cmd['readMin'] ?? 0),
        writeMin: Number(cmd['writeMin'] ?? 0),
      });
      vchans.set(name, v);
      return describe(v);
    }
    case 'connect': {
      const opts = {
        runtimeDir,
        ...domainOf(cmd),
        port: Number(cmd['port']),
        ...(cmd['timeout'] === undefined ? {} : { timeout: Number(cmd['timeout']) }),
      };
      const v = await Vchan.connect(opts);
      vchans.set(name, v);
      return { ...describe(v), bufferSpace: v.bufferSpace(), dataReady: v.dataReady() };
    }
    case 'waitConnected':
      await vchanOf(cmd).waitConnected({ timeout: Number(cmd['timeout'] ?? 10000) });
      return {};
    case 'write':
      await vchanOf(cmd).write(Buffer.from(cmd['data'] as string, 'base64'));
      return {};
    case 'writePattern': {
      const pattern = new Pattern(Number(cmd['seed']));
      const at = Number(cmd['at'] ?? 0);
      await vchanOf(cmd).write(pattern.slice(at, Number(cmd['bytes'])));
      return {};
    }
    case 'send':
      await vchanOf(cmd).send(Buffer.alloc(Number(cmd['size']), Number(cmd['fill'] ?? 0)));
      return {};
    case 'recv': {
      const data = await vchanOf(cmd).recv(Number(cmd['size']));
      return data === null ? { eof: true } : { eof: false, data: data.toString('base64') };
    }
    case 'state': {
      const v = vchanOf(cmd);
      const st = v.state;
      return st === 'closed' ? { state: st } : { state: st, dataReady: v.dataReady(), bufferSpace: v.bufferSpace() };
    }
    case 'bulk':
      return bulk(vchanOf(cmd), cmd);
    case 'source':
      return source(vchanOf(cmd), cmd);
    case 'stop':
      stops.get(name)?.();
      return {};
    case 'sink':
      return sink(vchanOf(cmd), cmd);
    case 'close':
      vchanOf(cmd).close();
      vchans.delete(name);
      return {};
    case 'daemon':
      return daemonRequest(cmd);
    case 'connectMany': {
      // Connect to ports basePort .. basePort+count-1, `concurrency` at a time.
      const base = Number(cmd['basePort']);
      const count = Number(cmd['count']);
      const concurrency = Number(cmd['concurrency'] ?? 50);
      const out: Vchan[] = new Array<Vchan>(count);
      for (let i = 0; i < count; i += concurrency) {
        const batch = Array.from({ length: Math.min(concurrency, count - i) }, (_, k) =>
          Vchan.connect({ runtimeDir, ...domainOf(cmd), port: base + i + k, timeout: Number(cmd['timeout'] ?? 10000) }).then((v) => {
            out[i + k] = v;
          }),
        );
        await Promise.all(batch);
      }
      many = out;
      return { count: many.length };
    }
    case 'echoMany': {
      // Every client end reads `bytes` bytes and writes them back, all at once.
      const bytes = Number(cmd['bytes']);
      await Promise.all(
        many.map(async (v) => {
          const data = await v.recv(bytes);
          if (data === null) throw new Error(`vchan on port ${v.port} ended early`);
          await v.write(data);
        }),
      );
      return { echoed: many.length };
    }
    case 'closeMany':
      for (const v of many) v.close();
      many = [];
      return {};
    case 'rawInit':
      return rawInit(name, cmd);
    case 'rawScan':
      return rawScan(name, cmd);
    case 'rawClose': {
      const r = raws.get(name);
      raws.delete(name);
      if (r !== undefined) {
        for (const fd of r.fds) native.close(fd);
        r.conn.close();
      }
      return {};
    }
    case 'resources':
      // What this process holds, for leak checks from the outside.
      return { mappings: native.mappingCount(), vchans: vchans.size };
    default:
      throw new Error(`unknown op ${String(cmd['op'])}`);
  }
}

const rl = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
rl.on('line', (line) => {
  if (line.trim() === '') return;
  const cmd = JSON.parse(line) as Json;
  run(cmd).then(
    (result) => {
      out({ id: cmd['id'], ok: true, ...result });
    },
    (err: unknown) => {
      out({ id: cmd['id'], ok: false, error: errorJson(err) });
    },
  );
});
// The test that drives us is gone (or done): leave at once, vchans and all.
rl.on('close', () => process.exit(0));
out({ event: 'ready', pid: process.pid, uid: process.getuid?.() ?? -1 });
