/**
 * A timeout that may be longer than Node's timer limit. setTimeout() takes at most 2³¹−1 ms
 * (~24.8 days) and turns anything longer into 1 ms, so a client asking to wait 3·10⁹ ms would
 * time out at once. Longer delays are chained in steps below the limit.
 */

/** Node's largest setTimeout delay. */
export const MAX_TIMER_MS = 2 ** 31 - 1;

export interface LongTimer {
  /** Cancel; idempotent. */
  clear(): void;
  /** Do not keep the process alive for this timer. */
  unref(): LongTimer;
}

export function setLongTimeout(fn: () => void, ms: number): LongTimer {
  let remaining = Math.max(0, ms);
  let refed = true;
  let handle: NodeJS.Timeout;
  const arm = (): void => {
    const step = Math.min(remaining, MAX_TIMER_MS);
    remaining -= step;
    handle = setTimeout(() => {
      if (remaining > 0) arm();
      else fn();
    }, step);
    if (!refed) handle.unref();
  };
  arm();
  return {
    clear: () => {
      clearTimeout(handle);
    },
    unref() {
      refed = false;
      handle.unref();
      return this;
    },
  };
}
