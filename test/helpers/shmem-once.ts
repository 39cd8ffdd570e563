/**
 * One shared-memory region use from the command line, for places without a stdin to drive
 * (a program started inside a real VM, test/vm/): maps region `id` of `domain` from its mmap
 * parameters with its own mmap() at the offset, prints the SHA-256 of what it finds, fills the
 * region with seeded bytes (test/helpers/prng.ts), prints their SHA-256, unmaps and reports it.
 *
 * Usage: node dist/test/helpers/shmem-once.js <runtimeDir> <domain> <id> <seed>
 * Output: `DONE {"offset", "length", "found", "wrote"}` or `FAILED <message>`.
 */
import { createHash } from 'node:crypto';
import { Shmem } from '../../src/client/index.js';
import { native } from '../../src/native.js';
import { Prng } from './prng.js';

async function main(runtimeDir: string, domain: number, id: number, seed: number): Promise<void> {
  const shm = await Shmem.open({ runtimeDir });
  try {
    const p = await shm.mmapParams(domain, id);
    let buffer: ArrayBuffer;
    try {
      buffer = native.mmap(p.fd, p.length, p.offset, true);
    } finally {
      native.close(p.fd);
    }
    const found = createHash('sha256').update(new Uint8Array(buffer)).digest('hex');
    const bytes = new Prng(seed).bytes(p.length);
    new Uint8Array(buffer).set(bytes);
    const wrote = createHash('sha256').update(bytes).digest('hex');
    native.munmap(buffer);
    await shm.unmap({ domain, id });
    process.stdout.write(`DONE ${JSON.stringify({ offset: p.offset, length: p.length, found, wrote })}\n`);
  } finally {
    shm.close();
  }
}

const [dir, domain, id, seed] = process.argv.slice(2);
if (dir === undefined || seed === undefined) {
  process.stderr.write('usage: shmem-once <runtimeDir> <domain> <id> <seed>\n');
  process.exit(2);
}
main(dir, Number(domain), Number(id), Number(seed)).catch((err: unknown) => {
  process.stdout.write(`FAILED ${String(err)}\n`);
  process.exit(1);
});
