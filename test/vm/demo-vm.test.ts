// VM tier (docs/vms.md §1.5): the CLI's real-guest demo end to end.
// `kvmchan demo --vm --size 4M` must exit 0, print matching SHA-256 lines for both directions
// (host and guest print the same hash), and leave nothing behind: no QEMU, no daemon, no
// temporary directory. A SIGTERM while the guest boots, or QEMU dying, must clean up the same way; a
// missing image must name the command that builds it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { vmPrerequisites, REPO_ROOT } from '../helpers/vm.js';

const pre = vmPrerequisites();
const skip = 'reason' in pre ? pre.reason : false;
const CLI = path.join(REPO_ROOT, 'dist', 'src', 'cli', 'main.js');

interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  tmp: string;
}

/** Run the CLI with its own TMPDIR (so "nothing left behind" means: that directory is empty). */
function runCli(
  args: string[],
  opts: { env?: Record<string, string>; onStdout?: (all: string, kill: (s: NodeJS.Signals) => void) => void } = {},
): Promise<Run> {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'kvmchan-demo-test-'));
  const child = spawn(process.execPath, [CLI, ...args], {
    env: { ...process.env, TMPDIR: tmp, ...opts.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (s: string) => {
    stdout += s;
    opts.onStdout?.(stdout, (sig) => child.kill(sig));
  });
  child.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s));
  return new Promise((resolve) =>
    child.once('exit', (code, signal) => {
      resolve({ code, signal, stdout, stderr, tmp });
    }),
  );
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  // A zombie still answers kill(0); it is gone for our purposes.
  try {
    return !/^\S+ \(.*\) Z/.test(fs.readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}

function assertNothingLeft(r: Run): void {
  const qemu = /QEMU started \(pid (\d+)\)/.exec(r.stdout);
  const daemon = /kvmchand started \(pid (\d+)\)/.exec(r.stdout);
  assert.ok(daemon !== null, r.stdout);
  assert.equal(alive(Number(daemon[1])), false, 'host kvmchand still running');
  if (qemu !== null) assert.equal(alive(Number(qemu[1])), false, 'QEMU still running');
  assert.deepEqual(fs.readdirSync(r.tmp), [], 'temporary files left behind');
  assert.match(r.stdout, /cleaned up/);
  fs.rmdirSync(r.tmp);
}

test('kvmchan demo --vm --size 4M: exit 0, SHA-256 checked both ways, nothing left', { skip }, async (t) => {
  const r = await runCli(['demo', '--vm', '--size', '4M', '--pings', '200']);
  t.diagnostic(r.stdout);
  assert.equal(r.code, 0, `exit ${r.code}\n${r.stdout}\n${r.stderr}`);
  const h2g = /host → guest: moved 4\.00 MiB .* SHA-256 ([0-9a-f]{64}) matches/.exec(r.stdout);
  const g2h = /guest → host: moved 4\.00 MiB .* SHA-256 ([0-9a-f]{64}) matches/.exec(r.stdout);
  assert.ok(h2g !== null && g2h !== null, r.stdout);
  assert.match(r.stdout, new RegExp(`guest: received 4194304 bytes, SHA-256 ${h2g[1]}`));
  assert.match(r.stdout, new RegExp(`guest: sent 4194304 bytes, SHA-256 ${g2h[1]}`));
  assert.match(r.stdout, /64-byte round trip host ↔ guest over 200 pings: p50 [0-9.]+ µs, p99 [0-9.]+ µs/);
  assertNothingLeft(r);
});

test('kvmchan demo --vm: SIGTERM while the guest boots cleans everything up', { skip }, async () => {
  let sent = false;
  const r = await runCli(['demo', '--vm', '--size', '4M'], {
    onStdout: (all, kill) => {
      if (!sent && /QEMU started/.test(all)) {
        sent = true;
        setTimeout(() => {
          kill('SIGTERM');
        }, 2000);
      }
    },
  });
  assert.ok(sent, r.stdout + r.stderr);
  assert.equal(r.code, 143, `exit ${r.code} ${r.signal}\n${r.stdout}\n${r.stderr}`);
  assertNothingLeft(r);
});

test('kvmchan demo --vm without the image names the build command', async () => {
  const r = await runCli(['demo', '--vm'], { env: { KVMCHAN_VM_CACHE: path.join(os.tmpdir(), 'kvmchan-no-such-cache') } });
  fs.rmSync(r.tmp, { recursive: true, force: true });
  assert.equal(r.code, 1);
  assert.match(r.stderr, /no guest image .*build it with: bash \S+scripts\/vm\/build-image\.sh/);
});

test('kvmchan demo --vm: QEMU dying mid-run fails with a clear error and cleans up', { skip }, async () => {
  let killed = false;
  const r = await runCli(['demo', '--vm', '--size', '4M'], {
    onStdout: (all) => {
      const m = /QEMU started \(pid (\d+)\)/.exec(all);
      if (!killed && m !== null) {
        killed = true;
        setTimeout(() => {
          process.kill(Number(m[1]), 'SIGKILL');
        }, 2000);
      }
    },
  });
  assert.ok(killed, r.stdout + r.stderr);
  assert.equal(r.code, 1, `exit ${r.code}\n${r.stdout}\n${r.stderr}`);
  assert.match(r.stderr, /QEMU exited \(signal SIGKILL\) before the demo finished/);
  assertNothingLeft(r);
});
