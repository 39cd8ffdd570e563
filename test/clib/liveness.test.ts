// libvchan-kvm notices its daemon's loss (docs/wire-protocol.md §7.1), as the TypeScript API
// does: a C reader whose daemon is SIGKILLed, and whose peer is then SIGKILLed too, must not
// sleep forever — nobody is left to report the peer's death. Checked for a blocking reader and
// for one that waits like Qubes programs (select() on libvchan_fd_for_select(), libvchan_wait()).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import path from 'node:path';
import { PrivateDaemon } from '../../src/cli/private-daemon.js';
import { buildClibDrivers, testBinDir } from './build-clib.js';

const peerBin = path.join(testBinDir, 'vchan_peer');
const children: ChildProcess[] = [];

before(() => {
  buildClibDrivers();
});

after(() => {
  for (const c of children) c.kill('SIGKILL');
});

interface Peer {
  child: ChildProcess;
  stderr: () => string;
  event: (name: string) => Promise<void>;
  exit: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

function startPeer(runtimeDir: string, args: string[], env: Record<string, string> = {}): Peer {
  const child = spawn(peerBin, args, {
    env: { ...process.env, ...env, KVMCHAN_RUNTIME_DIR: runtimeDir },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.push(child);
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const seen = new Set<string>();
  const waiters = new Map<string, () => void>();
  createInterface({ input: child.stdout }).on('line', (line) => {
    const ev = (JSON.parse(line) as { event: string }).event;
    seen.add(ev);
    waiters.get(ev)?.();
  });
  const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once('close', (code, signal) => {
      resolve({ code, signal });
    });
  });
  return {
    child,
    stderr: () => stderr,
    event: (name) =>
      seen.has(name)
        ? Promise.resolve()
        : Promise.race([
            new Promise<void>((resolve) => waiters.set(name, resolve)),
            exit.then(({ code, signal }) => {
              throw new Error(`vchan_peer ${args.join(' ')} exited (${code ?? signal}) before '${name}': ${stderr}`);
            }),
          ]),
    exit,
  };
}

async function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => {
          reject(new Error(`timed out after ${ms} ms waiting for ${what}`));
        }, ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

for (const mode of ['blocking read', 'select + libvchan_wait'] as const) {
  test(`C reader (${mode}): daemon SIGKILLed, then its peer SIGKILLed → the read fails, no hang`, async () => {
    const daemon = await PrivateDaemon.start({});
    try {
      const env: Record<string, string> = mode === 'blocking read' ? {} : { KVMCHAN_PEER_SELECT: '1' };
      // Both sides only read (0 bytes to send, 1 GiB to receive): each sleeps in its read.
      const server = startPeer(daemon.runtimeDir, ['server', '0', '6100', '0', String(2 ** 30)], env);
      await server.event('listening');
      const client = startPeer(daemon.runtimeDir, ['client', '0', '6100', '0', String(2 ** 30)], env);
      await client.event('connected');
      await daemon.kill();
      server.child.kill('SIGKILL');
      const r = await within(client.exit, 15_000, 'the C reader to give up after losing its daemon');
      assert.equal(r.code, 1, `exit ${String(r.code ?? r.signal)}: ${client.stderr()}`);
      assert.match(client.stderr(), /Transport endpoint is not connected/);
    } finally {
      await daemon.stop();
    }
  });
}
