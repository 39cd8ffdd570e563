/**
 * A passed fd is hostile (docs/security.md, "Passed fds"). A client opens a file on a FUSE
 * filesystem it serves itself — its FLUSH, which the kernel sends on every close(), answers
 * -EIO, or never answers — and passes that fd (SCM_RIGHTS) to the daemon: on the first frame of
 * a connection, on every local command after the handshake (no request carries fds,
 * docs/wire-protocol.md §6), with a vchan held, eight copies at once, and on seeded fuzzed raw
 * frames. Had the fd entered the daemon, closing it would have thrown EIO (the daemon crashed)
 * or blocked its event loop for good. The daemon must end each such connection, stay up, serve
 * an honest client, never be the process a FLUSH comes from, and hold exactly its fds from
 * before.
 *
 * The filesystem and the attacker are clib/test/fuse_flush.c (raw /dev/fuse, no libfuse), in a
 * mount namespace of its own: its mount disappears with it on every path, and it aborts the
 * FUSE connection (by killing the serving process) before anything could block closing the
 * file. Needs root and /dev/fuse; skipped with the reason otherwise.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { Vchan } from '../../src/client/index.js';
import { socketPath } from '../../src/paths.js';
import { Command } from '../../src/protocol/constants.js';
import { expectFdsBackTo, rawFrame, settledFds, startDaemon, teardown, waitFor, within, words } from '../helpers/daemon-fixture.js';
import { Prng, seedFromEnv } from '../helpers/prng.js';
import { buildClibDrivers, testBinDir } from '../clib/build-clib.js';

const SEED = seedFromEnv(0xf05ef105);
const skip = process.getuid?.() !== 0 ? 'needs root (mounts a FUSE filesystem)' : !fs.existsSync('/dev/fuse') ? 'needs /dev/fuse' : false;

/** The hostile FUSE client process, driven line by line (clib/test/fuse_flush.c). */
class FuseAttacker {
  readonly child: ChildProcess;
  readonly lines: string[] = [];
  readonly exited: Promise<number | null>;
  #partial = '';

  constructor(mode: 'eio' | 'hang', mountpoint: string, daemonSocket: string) {
    // Its own process group: the last resort of end() kills the server and the tester with it.
    this.child = spawn(path.join(testBinDir, 'fuse_flush'), [mode, mountpoint, daemonSocket], {
      stdio: ['pipe', 'pipe', 'inherit'],
      detached: true,
    });
    this.exited = new Promise((resolve) => this.child.once('exit', (code) => resolve(code)));
    this.child.stdout!.on('data', (b: Buffer) => {
      const parts = (this.#partial + b.toString()).split('\n');
      this.#partial = parts.pop()!;
      this.lines.push(...parts);
    });
  }

  /** The first line starting with `prefix`, once it came (or the process ended first). */
  async line(prefix: string, timeoutMs = 15_000): Promise<string> {
    await waitFor(
      () => this.lines.some((l) => l.startsWith(prefix) || l.startsWith('skip ')) || this.child.exitCode !== null,
      timeoutMs,
      `fuse_flush to say "${prefix}" (it said: ${this.lines.join(' | ')})`,
    );
    return this.lines.find((l) => l.startsWith(prefix) || l.startsWith('skip ')) ?? `exited ${String(this.child.exitCode)}`;
  }

  /** Sends one connection's frames; resolves with its "done …" line, or how the process ended. */
  async attack(frames: { frame: Buffer; fds: number }[]): Promise<string> {
    const done = (): string[] => this.lines.filter((l) => l.startsWith('done '));
    const before = done().length;
    this.child.stdin!.write(`${frames.map((f) => f.frame.toString('hex') + '*'.repeat(f.fds)).join(' ')}\n`);
    await waitFor(() => done().length > before || this.child.exitCode !== null, 15_000, 'fuse_flush to finish a connection');
    return done()[before] ?? `fuse_flush exited ${String(this.child.exitCode)} (the daemon is gone?)`;
  }

  /** Pids the filesystem received a FLUSH from. */
  flushPids(): number[] {
    return this.lines.filter((l) => l.startsWith('flush pid=')).map((l) => Number(l.slice('flush pid='.length)));
  }

  /** End of input: it aborts its FUSE connection and exits; killed (group) if it does not. */
  async end(): Promise<void> {
    if (this.child.exitCode === null && this.child.signalCode === null) {
      this.child.stdin!.end();
      const t = setTimeout(() => {
        try {
          process.kill(-this.child.pid!, 'SIGKILL');
        } catch {
          // already gone
        }
      }, 10_000);
      await this.exited;
      clearTimeout(t);
    }
  }
}

/** Every connection of the attack: frames in order, `fds` copies of the FUSE fd on a frame. */
function attackPlan(): { what: string; frames: { frame: Buffer; fds: number }[] }[] {
  const hello = { frame: rawFrame(Command.GET_VERSION, 0), fds: 0 };
  const port = 4242;
  const commands: [string, number, Buffer][] = [
    ['CHECK_COMMAND', Command.CHECK_COMMAND, words(Command.VCHAN_SERVER_INIT, 0)],
    ['VCHAN_SERVER_INIT', Command.VCHAN_SERVER_INIT, words(0, port, 4096, 4096)],
    ['VCHAN_CLIENT_INIT', Command.VCHAN_CLIENT_INIT, words(0, port, 0, 0)],
    ['VCHAN_CLOSE', Command.VCHAN_CLOSE, words(1, 0)],
    ['LIST_DOMAINS', Command.LIST_DOMAINS, words(0, 0)],
    ['LIST_VCHANS', Command.LIST_VCHANS, words(0, 0)],
    ['LIST_POOLS', Command.LIST_POOLS, words(0, 0)],
    ['SHM_SHARE', Command.SHM_SHARE, words(0, 1)],
    ['SHM_MAP', Command.SHM_MAP, words(0, 1)],
    ['SHM_UNMAP', Command.SHM_UNMAP, words(0, 1)],
    ['SHM_RELEASE', Command.SHM_RELEASE, words(1, 0)],
  ];
  const plan = [
    { what: 'GET_VERSION as the first frame', frames: [{ frame: rawFrame(Command.GET_VERSION, 0), fds: 1 }] },
    ...commands.map(([name, id, payload]) => ({ what: name, frames: [hello, { frame: rawFrame(id, 1, payload), fds: 1 }] })),
    {
      what: 'LIST_VCHANS with a vchan held on the connection',
      frames: [
        hello,
        { frame: rawFrame(Command.VCHAN_SERVER_INIT, 1, words(0, port + 1, 4096, 4096)), fds: 0 },
        { frame: rawFrame(Command.LIST_VCHANS, 2, words(0, 0)), fds: 1 },
      ],
    },
    { what: 'eight copies on LIST_VCHANS', frames: [hello, { frame: rawFrame(Command.LIST_VCHANS, 1, words(0, 0)), fds: 8 }] },
  ];
  // Fuzz-style raw frames: noise, random ids and payloads, lying sizes, bad sequence numbers.
  const rng = new Prng(SEED);
  for (let i = 0; i < 24; i++) {
    const frames = Array.from({ length: rng.int(1, 3) }, () => {
      const frame = rng.chance(0.3)
        ? Buffer.from(rng.bytes(rng.int(1, 200)))
        : rawFrame(
            rng.chance(0.7) ? rng.pick(Object.values(Command)) : rng.int(0, 0xffff),
            rng.int(0, 3),
            rng.bytes(rng.pick([0, 8, 16, rng.int(0, 300)])),
            rng.chance(0.8) ? undefined : rng.int(0, 0xffff),
          );
      return { frame, fds: 0 };
    });
    rng.pick(frames).fds = rng.int(1, 8);
    plan.push({ what: `fuzzed frames #${i} (seed ${SEED})`, frames });
  }
  return plan;
}

for (const mode of ['eio', 'hang'] as const) {
  const flush = mode === 'eio' ? 'answers -EIO' : 'never answers';
  test(`a passed FUSE fd whose FLUSH ${flush}: the daemon stays up, serves, keeps its fds`, { skip, timeout: 240_000 }, async (t) => {
    buildClibDrivers();
    const d = await startDaemon();
    const mnt = fs.mkdtempSync(path.join(os.tmpdir(), 'kvmchan-fuse-'));
    let attacker: FuseAttacker | undefined;
    const honest: Vchan[] = [];
    try {
      const pid = d.daemon.pid;
      const baseline = await settledFds(pid);
      // An honest vchan set up before the attack, held through it.
      const s0 = await within(Vchan.listen({ runtimeDir: d.runtimeDir, port: 10 }), 10_000, 'listen before the attack');
      honest.push(s0);
      const c0 = await within(Vchan.connect({ runtimeDir: d.runtimeDir, port: 10, timeout: 10_000 }), 10_000, 'connect before');
      honest.push(c0);

      attacker = new FuseAttacker(mode, mnt, socketPath(d.runtimeDir));
      const ready = await attacker.line('ready');
      if (ready.startsWith('skip ')) {
        t.skip(ready.slice(5));
        return;
      }
      assert.equal(ready, 'ready', `fuse_flush: ${attacker.lines.join(' | ')}`);
      // The file is as hostile as claimed: another process's close() of it failed or is stuck.
      const tester = Number((await attacker.line('tester pid=')).slice('tester pid='.length));
      await waitFor(() => attacker!.flushPids().includes(tester), 10_000, 'the FUSE server to see the tester’s FLUSH');
      if (mode === 'eio') assert.equal(await attacker.line('closed pid='), `closed pid=${tester} close=EIO`);

      const plan = attackPlan();
      for (const step of plan) {
        const done = await attacker.attack(step.frames);
        const exit = d.daemon.child.exitCode ?? d.daemon.child.signalCode;
        assert.equal(exit, null, `${step.what}: the daemon exited (${String(exit)}):\n${d.log().slice(-2000)}`);
        assert.match(done, /^done closed /, `${step.what}: the daemon should end the connection (${done})`);
      }
      t.diagnostic(`${plan.length} connections passed the FUSE fd (seed ${SEED})`);
      if (mode === 'hang') {
        assert.ok(
          !attacker.lines.some((l) => l.startsWith('closed pid=')),
          'the tester’s close() is still stuck: the FLUSH was never answered',
        );
      }

      assert.equal(d.daemon.child.exitCode, null, 'the daemon is still up');
      assert.equal(d.daemon.child.signalCode, null, 'the daemon is still up');
      assert.ok(!attacker.flushPids().includes(pid), 'the daemon never closed the FUSE file (no FLUSH from its pid)');
      // The vchan held through the attack still works, and a new one is set up.
      await c0.send(Buffer.from('still'));
      assert.equal((await within(s0.recv(5), 10_000, 'recv on the old vchan'))?.toString(), 'still');
      const s = await within(Vchan.listen({ runtimeDir: d.runtimeDir, port: 11 }), 10_000, 'listen after the attack');
      honest.push(s);
      const c = await within(Vchan.connect({ runtimeDir: d.runtimeDir, port: 11, timeout: 10_000 }), 10_000, 'connect after the attack');
      honest.push(c);
      await c.send(Buffer.from('ok'));
      assert.equal((await within(s.recv(2), 10_000, 'recv on the new vchan'))?.toString(), 'ok');
      for (const v of honest.splice(0)) v.close();
      await expectFdsBackTo(pid, baseline, 15_000, 'the daemon to hold exactly its fds from before the attack');
    } finally {
      // The attacker first: ending it aborts the FUSE connection, which would also release a
      // daemon stuck in a FLUSH (if the fix were missing), so the daemon can then be stopped.
      await teardown(
        () => {
          for (const v of honest) v.close();
        },
        () => attacker?.end(),
        () => d.stop(),
        () => fs.rmdirSync(mnt),
      );
    }
  });
}
