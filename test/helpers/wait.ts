/**
 * Waiting in tests: the one sleep, poll-until and deadline helper (docs/testing.md, "Tiers":
 * wait on observable state, never on time).
 */
import { setTimeout as sleep } from 'node:timers/promises';

export { sleep };

/**
 * Polls `pred` every `intervalMs` until it holds; throws naming `what` after `timeoutMs`.
 * Prefer an event when the code under test emits one.
 */
export async function waitFor(pred: () => boolean, timeoutMs = 2000, what = 'condition', intervalMs = 5): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!pred()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(intervalMs);
  }
}

/** Settles `p` or throws after `ms` (so a hang fails the test with a message instead of its timeout). */
export async function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      reject(new Error(`${what}: still pending after ${ms} ms`));
    }, ms);
  });
  try {
    return await Promise.race([p, timeout]);
  } finally {
    clearTimeout(timer);
  }
}
