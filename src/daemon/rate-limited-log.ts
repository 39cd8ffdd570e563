/**
 * A log line that anyone can cause — a refusal of a hostile client's or guest's request — must
 * not let them fill the disk (docs/security.md, "Queues"): at most `burst` such lines per
 * `intervalMs`, then one line per interval saying how many were left out.
 */
import type { Logger } from 'pino';

export interface RateLimit {
  /** Lines logged in full per interval. */
  burst: number;
  intervalMs: number;
}

export const DEFAULT_RATE_LIMIT: RateLimit = { burst: 20, intervalMs: 10_000 };

type Level = 'debug' | 'info' | 'warn' | 'error';

export class RateLimitedLog {
  readonly #log: Logger;
  readonly #limit: RateLimit;
  #windowStart = -Infinity;
  #inWindow = 0;
  #suppressed = 0;
  #suppressedMsg = '';
  #timer: NodeJS.Timeout | undefined;

  constructor(log: Logger, limit: RateLimit = DEFAULT_RATE_LIMIT) {
    this.#log = log;
    this.#limit = limit;
  }

  /** Lines left out so far in the current interval. */
  get suppressed(): number {
    return this.#suppressed;
  }

  debug(obj: object, msg: string): void {
    this.#write('debug', obj, msg);
  }

  info(obj: object, msg: string): void {
    this.#write('info', obj, msg);
  }

  warn(obj: object, msg: string): void {
    this.#write('warn', obj, msg);
  }

  error(obj: object, msg: string): void {
    this.#write('error', obj, msg);
  }

  #write(level: Level, obj: object, msg: string): void {
    if (!this.#log.isLevelEnabled(level)) return;
    const now = performance.now();
    if (now - this.#windowStart >= this.#limit.intervalMs) {
      this.flush();
      this.#windowStart = now;
      this.#inWindow = 0;
    }
    if (this.#inWindow < this.#limit.burst) {
      this.#inWindow++;
      this.#log[level](obj, msg);
      return;
    }
    if (this.#suppressed++ === 0) {
      this.#suppressedMsg = msg;
      // Report the count when the interval ends, even if nothing else is logged after it.
      this.#timer = setTimeout(
        () => {
          this.flush();
        },
        Math.max(0, this.#windowStart + this.#limit.intervalMs - now),
      );
      this.#timer.unref();
    }
  }

  /** Logs how many lines were left out (if any) now; call when the owner goes away. */
  flush(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    if (this.#suppressed === 0) return;
    this.#log.warn({ suppressed: this.#suppressed, last: this.#suppressedMsg }, 'log lines suppressed (rate limit)');
    this.#suppressed = 0;
  }
}
