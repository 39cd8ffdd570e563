// Builds the C programs the TypeScript tests drive (clib/Makefile `test-drivers`), once per
// process and serialised with flock(1): test files run concurrently and share clib/build.
import { spawnSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

export const clibDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../clib');
export const testBinDir = path.join(clibDir, 'build', 'test');

let built = false;

export function buildClibDrivers(): void {
  if (built) return;
  mkdirSync(path.join(clibDir, 'build'), { recursive: true });
  const lock = path.join(clibDir, 'build', '.make.lock');
  const r = spawnSync('flock', [lock, 'make', '-s', '-C', clibDir, 'test-drivers'], { encoding: 'utf8' });
  if (r.status !== 0) {
    throw new Error(`building the C test programs failed (${r.error?.message ?? `exit ${r.status}`}):\n${r.stdout}\n${r.stderr}`);
  }
  built = true;
}
