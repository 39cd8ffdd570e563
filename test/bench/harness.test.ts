/**
 * The benchmark harness (bench/) as a program that must finish: run back to back in its smoke
 * mode (every phase, tiny sizes), every run must complete and leave no process, daemon or
 * temporary file behind; and a phase that stalls must be aborted by the watchdog with a message
 * naming it, again leaving nothing behind. A correctness test: no timing is asserted.
 *
 * KVMCHAN_BENCH_LOOP_RUNS sets the number of runs (default 8: each run starts ~10 processes,
 * 4 of them daemons, which takes 3-9 s on 2 busy cores; set it higher for a longer soak).
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { fileURLToPath } from 'node:url';

const MAIN = fileURLToPath(new URL('../../bench/main.js', import.meta.url));
const RUNS = Number(process.env['KVMCHAN_BENCH_LOOP_RUNS'] ?? '8');
/** A run that takes longer than this is hung (the harness's own watchdog should have fired). */
const RUN_LIMIT_MS = 120_000;

const tmpRoot = fs.mkdtempSync(path.join(os.tmpdir(), 'kvmchan-bench-test-'));
after(() => {
  fs.rmSync(tmpRoot, { recursive: true, force: true });
});

interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Processes whose environment carries `tag` (the harness passes its env to every child). */
function tagged(tag: string): string[] {
  const found: string[] = [];
  for (const pid of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(pid)) continue;
    try {
      if (fs.readFileSync(`/proc/${pid}/environ`, 'latin1').includes(tag)) {
        found.push(`${pid}: ${fs.readFileSync(`/proc/${pid}/cmdline`, 'latin1').replaceAll('\0', ' ')}`);
      }
    } catch {
      // gone, or not ours to read
    }
  }
  return found;
}

/**
 * Runs the harness with its own TMPDIR (where its runtime dirs and sockets go) and a marker
 * in its environment, then checks that nothing it started survives and TMPDIR is empty again.
 */
async function runHarness(args: string[], env: Record<string, string> = {}): Promise<RunResult> {
  const tag = `KVMCHAN_BENCH_TEST_TAG=${randomUUID()}`;
  const tmp = fs.mkdtempSync(path.join(tmpRoot, 'run-'));
  const child = spawn(process.execPath, [MAIN, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, ...env, TMPDIR: tmp, [tag.split('=')[0]!]: tag.split('=')[1]! },
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  let hung = false;
  const limit = setTimeout(() => {
    hung = true;
    child.kill('SIGKILL');
  }, RUN_LIMIT_MS);
  const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((resolve) =>
    child.once('close', (c, s) => {
      resolve([c, s]);
    }),
  );
  clearTimeout(limit);
  assert.ok(!hung, `bench ${args.join(' ')} did not finish:\n${stderr}`);
  // Children killed by the harness on its way out may take a moment to be reaped.
  let left = tagged(tag);
  for (let i = 0; i < 50 && left.length > 0; i++) {
    await new Promise((r) => setTimeout(r, 100));
    left = tagged(tag);
  }
  assert.deepEqual(left, [], `processes left behind by bench ${args.join(' ')}:\n${stderr}`);
  assert.deepEqual(fs.readdirSync(tmp), [], `files left in TMPDIR by bench ${args.join(' ')}`);
  fs.rmSync(tmp, { recursive: true, force: true });
  return { code, signal, stdout, stderr };
}

test(`${RUNS} smoke runs of the benchmark back to back all complete`, async () => {
  for (let i = 0; i < RUNS; i++) {
    const r = await runHarness(['--smoke']);
    assert.equal(r.code, 0, `run ${i + 1} of ${RUNS} failed (${r.code ?? r.signal}):\n${r.stderr}`);
    // Every phase ran and the table was printed.
    for (const row of [
      '64 B messages: ring',
      'bulk 64 KiB writes: vchan',
      'vchan setup p50',
      'setup host→sim. guest p50',
      'setup+teardown p50, 200 vchans held',
    ]) {
      assert.ok(r.stdout.includes(row), `run ${i + 1}: no "${row}" row:\n${r.stdout}\n${r.stderr}`);
    }
  }
});

// ring: a wait on an eventfd; net: the baseline's socket waits, with the vchan phase's daemon
// still running (so its cleanup is checked too). The stall bound leaves room for a slow peer
// start-up on busy cores: an earlier phase must not be mistaken for the stalled one.
for (const transport of ['ring', 'net']) {
  test(`a stalled ${transport} phase is aborted by the watchdog, naming the phase, leaving nothing behind`, async () => {
    const r = await runHarness(['--smoke', '--stall-timeout', '8'], { KVMCHAN_BENCH_PEER_HANG: transport });
    assert.equal(r.code, 2, r.stderr);
    const phase = { ring: 'ring (memfd', net: 'node net over a UNIX socket' }[transport]!;
    assert.match(r.stderr, /bench: phase ".*" made no progress for [\d.]+ s \(waiting for: .+\)/);
    assert.ok(r.stderr.includes(`phase "${phase}`), r.stderr);
  });
}
