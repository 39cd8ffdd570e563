/**
 * A scriptable shared-memory region user in its own process (docs/shmem.md), driven like
 * vchan-peer.ts: `PeerProcess.spawn(runtimeDir, { main: SHMEM_PEER_MAIN })`, one JSON command
 * per stdin line, one JSON answer per command. Ops:
 *   share {domain, pages}      → {region, ownerDomain, pages}  (mapped here, under its id)
 *   map {domain, region}       → {region}                      (the library maps it)
 *   params {domain, region}    → {offset, length}              (we mmap the fd ourselves, then close it)
 *   fill {region, seed}        → {sha256}                      (the whole mapping, seeded bytes)
 *   hash {region}              → {sha256}
 *   unmap {region}, release {region}, resources
 *   list                       → {regions}                     (Shmem.list(): what this process may see)
 * (`id` is PeerProcess's message id, so region ids travel as `region`.)
 * The process exits when stdin closes.
 */
import { createHash } from 'node:crypto';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';
import { Shmem, type ShmRegion } from '../../src/client/index.js';
import { native } from '../../src/native.js';
import { Prng } from './prng.js';

export const SHMEM_PEER_MAIN = fileURLToPath(import.meta.url);

type Json = Record<string, unknown>;

interface Mapping {
  buffer: ArrayBuffer;
  /** Mapped by the library (share/map), or by us from mmap parameters. */
  region: ShmRegion | null;
  ownerDomain: number;
}

function errorJson(err: unknown): Json {
  const e = err as { name?: string; code?: string; message?: string; errno?: number };
  return { name: e.name ?? 'Error', code: e.code ?? null, message: e.message ?? String(err), errno: e.errno ?? null };
}

async function main(runtimeDir: string): Promise<void> {
  const shm = await Shmem.open({ runtimeDir });
  const maps = new Map<number, Mapping>();
  const mappingOf = (cmd: Json): Mapping => {
    const m = maps.get(Number(cmd['region']));
    if (m === undefined) throw new Error(`no mapping of region ${String(cmd['region'])}`);
    return m;
  };
  const sha = (b: ArrayBuffer): string => createHash('sha256').update(new Uint8Array(b)).digest('hex');

  async function run(cmd: Json): Promise<Json> {
    switch (cmd['op']) {
      case 'share': {
        const r = await shm.share(Number(cmd['domain']), Number(cmd['pages']));
        maps.set(r.id, { buffer: r.buffer, region: r, ownerDomain: r.ownerDomain });
        return { region: r.id, ownerDomain: r.ownerDomain, pages: r.pages };
      }
      case 'map': {
        const r = await shm.map(Number(cmd['domain']), Number(cmd['region']));
        maps.set(r.id, { buffer: r.buffer, region: r, ownerDomain: r.ownerDomain });
        return { region: r.id, pages: r.pages };
      }
      case 'params': {
        // What a native consumer does: its own mmap() at the offset, then close the fd it owns.
        const p = await shm.mmapParams(Number(cmd['domain']), Number(cmd['region']));
        let buffer: ArrayBuffer;
        try {
          buffer = native.mmap(p.fd, p.length, p.offset, true);
        } finally {
          native.close(p.fd);
        }
        maps.set(p.id, { buffer, region: null, ownerDomain: p.ownerDomain });
        return { offset: p.offset, length: p.length };
      }
      case 'fill': {
        const m = mappingOf(cmd);
        new Uint8Array(m.buffer).set(new Prng(Number(cmd['seed'])).bytes(m.buffer.byteLength));
        return { sha256: sha(m.buffer) };
      }
      case 'hash':
        return { sha256: sha(mappingOf(cmd).buffer) };
      case 'unmap': {
        const m = mappingOf(cmd);
        maps.delete(Number(cmd['region']));
        if (m.region !== null) await shm.unmap(m.region);
        else {
          native.munmap(m.buffer);
          await shm.unmap({ domain: m.ownerDomain, id: Number(cmd['region']) });
        }
        return {};
      }
      case 'release':
        await shm.release(Number(cmd['region']));
        return {};
      case 'resources':
        return { mappings: native.mappingCount() };
      case 'list':
        return { regions: await shm.list() };
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
        process.stdout.write(`${JSON.stringify({ id: cmd['id'], ok: true, ...result })}\n`);
      },
      (err: unknown) => {
        process.stdout.write(`${JSON.stringify({ id: cmd['id'], ok: false, error: errorJson(err) })}\n`);
      },
    );
  });
  rl.on('close', () => process.exit(0));
  process.stdout.write(`${JSON.stringify({ event: 'ready', pid: process.pid, uid: process.getuid?.() ?? -1 })}\n`);
}

if (process.argv[1] !== undefined && path.resolve(process.argv[1]) === SHMEM_PEER_MAIN) {
  const dir = process.argv[2];
  if (dir === undefined) {
    process.stderr.write('usage: shmem-peer <runtimeDir>\n');
    process.exit(2);
  }
  main(dir).catch((err: unknown) => {
    process.stderr.write(`shmem-peer: ${String(err)}\n`);
    process.exit(1);
  });
}
