// Shared-memory regions through the C API (<kvmchan-shmem.h> in libvchan-kvm, driven through
// clib/test/shmem_tool) and the TypeScript API (test/helpers/shmem-peer.ts) against a real
// kvmchand: one id for a 4K framebuffer either way, the C consumer's own mmap() at the offset
// of the mmap parameters, a C attacker of another uid, several threads on one handle, both
// sides SIGKILLed, and the same C program inside a simulated guest (its guest daemon's socket).
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { after, before, test } from 'node:test';
import { socketPath } from '../../src/paths.js';
import { PeerProcess } from '../helpers/peer-process.js';
import { SHMEM_PEER_MAIN } from '../helpers/shmem-peer.js';
import { expectFdsBackTo, fdTargets, settledFds, startDaemon, teardown, waitFor, type TestDaemon } from '../helpers/daemon-fixture.js';
import { startGuest, startHost } from '../helpers/guest-fixture.js';
import { buildClibDrivers, testBinDir } from './build-clib.js';

const NOBODY = 65534;
const FRAMEBUFFER_PAGES = 8100;
const tool = path.join(testBinDir, 'shmem_tool');
/** The library the tool links (its RUNPATH is clib/build). */
const LIB = path.join(testBinDir, '..', 'libvchan-kvm.so.1');

/** Can another uid run the tool in place (every directory down to it searchable by others)? */
function othersCanRun(file: string): boolean {
  for (let d = path.dirname(file); ; d = path.dirname(d)) {
    if ((fs.statSync(d).mode & 0o001) === 0) return false;
    if (path.dirname(d) === d) return true;
  }
}

/**
 * The tool and libvchan-kvm copied where another uid can run them (a world-readable temporary
 * directory, removed on exit): a checkout in a 0700 directory is not reachable by that uid.
 */
function toolForOthers(): { tool: string; libDir: string } {
  if (othersCanRun(tool)) return { tool, libDir: path.dirname(LIB) };
  const dir = fs.mkdtempSync(path.join('/tmp', 'kvmchan-uid-'));
  fs.chmodSync(dir, 0o755);
  process.once('exit', () => fs.rmSync(dir, { recursive: true, force: true }));
  for (const f of [tool, LIB]) {
    fs.copyFileSync(f, path.join(dir, path.basename(f)));
    fs.chmodSync(path.join(dir, path.basename(f)), 0o755);
  }
  return { tool: path.join(dir, path.basename(tool)), libDir: dir };
}

/** clib/test/shmem_tool: one command line in, one answer line out. */
class CTool {
  readonly child: ChildProcess;
  readonly #answers: string[] = [];
  readonly #waiting: ((line: string) => void)[] = [];
  stderr = '';

  constructor(runtimeDir: string, uid?: number) {
    // Another uid runs a copy it can reach; LD_LIBRARY_PATH comes before the binary's RUNPATH.
    const other = uid === undefined ? null : toolForOthers();
    this.child = spawn(other?.tool ?? tool, [], {
      env: { ...process.env, KVMCHAN_RUNTIME_DIR: runtimeDir, ...(other === null ? {} : { LD_LIBRARY_PATH: other.libDir }) },
      stdio: ['pipe', 'pipe', 'pipe'],
      ...(uid === undefined ? {} : { uid, gid: uid }),
    });
    this.child.stderr!.on('data', (b: Buffer) => (this.stderr += b.toString()));
    const rl = createInterface({ input: this.child.stdout! });
    rl.on('line', (line) => {
      const w = this.#waiting.shift();
      if (w !== undefined) w(line);
      else this.#answers.push(line);
    });
    rl.on('close', () => {
      for (const w of this.#waiting.splice(0)) w(`err EXITED ${this.stderr}`);
    });
  }

  /** The answer's words after "ok"; throws on "err …". */
  async ok(cmd: string): Promise<string[]> {
    const a = await this.call(cmd);
    if (!a.startsWith('ok')) throw new Error(`shmem_tool ${cmd}: ${a} ${this.stderr}`);
    return a.split(' ').slice(1);
  }

  call(cmd: string): Promise<string> {
    this.child.stdin!.write(`${cmd}\n`);
    const ready = this.#answers.shift();
    if (ready !== undefined) return Promise.resolve(ready);
    return new Promise((resolve) => this.#waiting.push(resolve));
  }

  async end(signal?: NodeJS.Signals): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    const exited = new Promise((resolve) => this.child.once('exit', resolve));
    if (signal === undefined) this.child.stdin!.end();
    else this.child.kill(signal);
    await exited;
  }
}

let d: TestDaemon;
const ends: (() => Promise<unknown>)[] = [];

before(async () => {
  buildClibDrivers();
  d = await startDaemon();
  fs.chmodSync(d.runtimeDir, 0o755);
  fs.chmodSync(socketPath(d.runtimeDir), 0o666);
});

after(() => teardown(...ends.map((e) => e), () => d?.stop()));

function cTool(uid?: number): CTool {
  const t = new CTool(d.runtimeDir, uid);
  ends.push(() => t.end());
  return t;
}

async function tsPeer(): Promise<PeerProcess> {
  const p = await PeerProcess.spawn(d.runtimeDir, { main: SHMEM_PEER_MAIN });
  ends.push(() => p.end());
  return p;
}

const regionFds = (): number => [...fdTargets(d.daemon.child.pid!).values()].filter((t) => t.includes('kvmchan-shm')).length;

test('C shares a 4K framebuffer under one id, TypeScript maps it; both sides SIGKILLed free it', async () => {
  const baseline = await settledFds(d.daemon.child.pid!);
  const c = cTool();
  const ts = await tsPeer();
  const [idText] = await c.ok(`share 0 ${FRAMEBUFFER_PAGES}`);
  const id = Number(idText);
  const [sum1] = await c.ok(`fill ${id} 11`);
  assert.equal((await ts.ok({ op: 'map', domain: 0, region: id }))['pages'], FRAMEBUFFER_PAGES);
  assert.equal((await ts.ok({ op: 'hash', region: id }))['sha256'], sum1, 'TypeScript reads what C wrote');
  const sum2 = (await ts.ok({ op: 'fill', region: id, seed: 12 }))['sha256'];
  assert.deepEqual(await c.ok(`hash ${id}`), [sum2], 'C reads what TypeScript wrote');
  await c.end('SIGKILL');
  await ts.kill('SIGKILL');
  await expectFdsBackTo(d.daemon.child.pid!, baseline, 5000, 'daemon fds after both sides died');
});

test('TypeScript shares, C maps by id and by mmap parameters with its own mmap()', async () => {
  const c = cTool();
  const ts = await tsPeer();
  const id = (await ts.ok({ op: 'share', domain: 0, pages: FRAMEBUFFER_PAGES }))['region'] as number;
  const sum = (await ts.ok({ op: 'fill', region: id, seed: 21 }))['sha256'];
  assert.deepEqual(await c.ok(`params 0 ${id}`), ['0', String(FRAMEBUFFER_PAGES * 4096)]);
  assert.deepEqual(await c.ok(`hash ${id}`), [sum]);
  await c.ok(`unmap ${id}`);
  assert.deepEqual(await c.ok(`map 0 ${id}`), [String(FRAMEBUFFER_PAGES * 4096)]);
  assert.deepEqual(await c.ok(`hash ${id}`), [sum]);
  await c.ok(`unmap ${id}`);
  // C cannot release what TypeScript shared (another connection).
  assert.equal(await c.call(`release ${id}`), 'err EPERM');
  await ts.ok({ op: 'release', region: id });
  assert.equal(await c.call(`map 0 ${id}`), 'err ENOENT', 'released: nobody new maps');
  await ts.ok({ op: 'unmap', region: id });
  // The C handle still counts the mmap parameters as a mapping until it closes.
  assert.equal(regionFds(), 1);
  await c.end();
  await waitFor(() => regionFds() === 0, 5000, 'freed once the C handle closed');
});

test(
  'a C program of another uid gets ENOENT for the region and for an id that does not exist',
  { skip: process.getuid?.() !== 0 ? 'needs root' : false },
  async () => {
    const owner = cTool();
    const attacker = cTool(NOBODY);
    const [idText] = await owner.ok('share 0 4');
    const id = Number(idText);
    const unknown = id === 0xffffffff ? 1 : id + 1;
    for (const r of [id, unknown]) {
      assert.equal(await attacker.call(`map 0 ${r}`), 'err ENOENT');
      assert.equal(await attacker.call(`params 0 ${r}`), 'err ENOENT');
      assert.equal(await attacker.call(`release ${r}`), 'err ENOENT');
    }
    await owner.end();
    await attacker.end();
    await waitFor(() => regionFds() === 0, 5000, 'freed');
  },
);

test('one C handle used by 8 threads at once', async () => {
  const c = cTool();
  await c.ok('threads 0 8');
  await c.end();
  await waitFor(() => regionFds() === 0, 5000, 'freed');
});

test('inside a guest: C shares with the host and maps a host region with its own mmap() at the offset', async () => {
  const host = await startHost({ guests: 1 });
  const guest = await startGuest(host, 1).catch(async (err: unknown) => {
    await host.stop();
    throw err;
  });
  const c = new CTool(guest.runtimeDir);
  const ts = await PeerProcess.spawn(host.runtimeDir, { main: SHMEM_PEER_MAIN });
  try {
    // Guest → host: C shares through the guest daemon, TypeScript on the host maps it.
    const [idText] = await c.ok('share 0 64');
    const id = Number(idText);
    const [sum1] = await c.ok(`fill ${id} 31`);
    await ts.ok({ op: 'map', domain: 1, region: id });
    assert.equal((await ts.ok({ op: 'hash', region: id }))['sha256'], sum1, 'the host reads what C in the guest wrote');
    // Host → guest: the mmap parameters are the guest's pool device and the region's offset in it.
    const hostId = (await ts.ok({ op: 'share', domain: 1, pages: 16 }))['region'] as number;
    const sum2 = (await ts.ok({ op: 'fill', region: hostId, seed: 32 }))['sha256'];
    const [offset, length] = await c.ok(`params 0 ${hostId}`);
    assert.equal(Number(offset) % 4096, 0);
    assert.equal(Number(length), 16 * 4096);
    assert.deepEqual(await c.ok(`hash ${hostId}`), [sum2], 'C’s own mmap() in the guest reads what the host wrote');
    await c.ok(`unmap ${hostId}`);
    await c.ok(`release ${id}`);
  } finally {
    await c.end();
    await ts.end();
    await guest.stop();
    await host.stop();
  }
});
