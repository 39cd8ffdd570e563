/**
 * Runs INSIDE a test guest (test/vm/vfio-device.test.ts): drives the first ivshmem-doorbell
 * device through VfioDevice and reports each step on stdout as `STEP <name> <json>`.
 * The host side (the test) answers between steps. Not a test file itself.
 *
 *   node vfio-guest.js <rounds>
 */
import { fileURLToPath } from 'node:url';
import { VfioDevice } from '../../src/ivshmem/vfio-device.js';
import { listIvshmemDevices } from '../../src/ivshmem/vfio/sysfs.js';
import { EventFdWaiter } from '../../src/ring/eventfd-waiter.js';
import { native } from '../../src/native.js';
import { Pattern } from './pattern.js';

export const HOST_SEED = 11;
export const GUEST_SEED = 12;
/** The host writes its pattern at [0, 4096); the guest writes its own at [8192, 12288) through a sub-range mapping. */
export const GUEST_PATTERN_OFFSET = 8192;

function step(name: string, data: object = {}): void {
  process.stdout.write(`STEP ${name} ${JSON.stringify(data)}\n`);
}

async function main(): Promise<void> {
  const rounds = Number(process.argv[2] ?? '100');
  const found = listIvshmemDevices();
  step('found', { devices: found });
  if (found.length === 0) throw new Error('no ivshmem-doorbell device');
  const t0 = performance.now();
  const dev = await VfioDevice.open(found[0]!.bdf);
  const openMs = performance.now() - t0;
  step('opened', {
    bdf: dev.bdf,
    ivPosition: dev.ivPosition,
    vectors: dev.vectors,
    size: dev.shm.size,
    offset: `0x${(dev.shm.offset ?? 0).toString(16)}`,
    mode: dev.mode,
    openMs,
  });

  const whole = new Uint8Array(dev.map());
  const hostFirstBad = new Pattern(HOST_SEED).mismatch(0, whole.subarray(0, 4096));
  const sub = new Uint8Array(dev.map(GUEST_PATTERN_OFFSET, 4096));
  sub.set(new Pattern(GUEST_SEED).slice(0, 4096));
  const seenThroughWhole = new Pattern(GUEST_SEED).mismatch(0, whole.subarray(GUEST_PATTERN_OFFSET, GUEST_PATTERN_OFFSET + 4096));
  step('mapped', { hostFirstBad, seenThroughWhole });

  // Guest → host: vector 0 through the ioeventfd, vector 1 through the MMIO store.
  const kick0 = dev.doorbellFd(0, 0);
  if (kick0 === null) throw new Error('no doorbell fd');
  const waiters = Array.from({ length: dev.vectors }, (_, v) => new EventFdWaiter(native.dup(dev.interruptFd(v)), native.dup(kick0)));
  const vectorWaits = Promise.all(
    waiters.map(async (w) => {
      await w.wait(AbortSignal.timeout(120_000));
      return 1;
    }),
  );
  native.eventfdWrite(kick0, 1);
  dev.doorbell(0, 1);
  step('rang', { stats: dev.stats });

  // Host → guest on every vector (waits armed before the host is told to ring: a waiter drops
  // a wake-up nobody waits for).
  const counts = await vectorWaits;
  step('vectors', { counts });

  // Host-driven ping-pong: host rings vector 1, we answer on (0, 0).
  const w1 = waiters[1]!;
  for (let i = 0; i < rounds; i++) {
    await w1.wait(AbortSignal.timeout(60_000));
    native.eventfdWrite(kick0, 1);
  }
  step('host-pingpong', {});

  // Guest-driven ping-pong: we ring (0, 2) through an ioeventfd, the host answers on our vector 2.
  const kick2 = dev.doorbellFd(0, 2)!;
  const w2 = waiters[2]!;
  const rtt: number[] = [];
  for (let i = 0; i < rounds; i++) {
    const s = performance.now();
    const got = w2.wait(AbortSignal.timeout(60_000));
    native.eventfdWrite(kick2, 1);
    await got;
    rtt.push(performance.now() - s);
  }
  rtt.sort((a, b) => a - b);
  step('guest-pingpong', {
    min: rtt[0],
    p50: rtt[Math.floor(rtt.length / 2)],
    p99: rtt[Math.floor(rtt.length * 0.99)],
    max: rtt[rtt.length - 1],
  });

  for (const w of waiters) w.close();
  dev.close();
  step('closed', { mappings: native.mappingCount() });
  // The device opens again after a close (teardown left nothing behind).
  const again = await VfioDevice.open(found[0]!.bdf);
  const ok = new Pattern(GUEST_SEED).mismatch(0, new Uint8Array(again.map(GUEST_PATTERN_OFFSET, 4096)));
  again.close();
  step('reopened', { guestPatternFirstBad: ok, mappings: native.mappingCount() });
}

// Imported by the host-side test for the constants above: only run as a program.
if (process.argv[1] === fileURLToPath(import.meta.url)) {
  main().catch((err: unknown) => {
    step('error', { error: String(err), code: (err as { code?: string }).code, stack: (err as Error).stack });
    process.exitCode = 1;
  });
}
