/**
 * Which domains may open vchans to which (docs/security.md, "Policy"): guest↔host always,
 * host↔host always, guest↔guest only for configured pairs, a guest to itself
 * never through the host (loopback is served inside the guest, or refused).
 */
const HOST_DOMAIN = 0;

export interface PolicyConfig {
  /** Guest pairs allowed to talk, or 'all'. Default: none. */
  guestPairs?: readonly (readonly [number, number])[] | 'all';
}

export class Policy {
  readonly #all: boolean;
  readonly #pairs: Set<string>;

  constructor(config: PolicyConfig = {}) {
    this.#all = config.guestPairs === 'all';
    this.#pairs = new Set();
    if (Array.isArray(config.guestPairs)) {
      for (const [a, b] of config.guestPairs) this.#pairs.add(a < b ? `${a}:${b}` : `${b}:${a}`);
    }
  }

  /** null if allowed, else the reason. */
  refuses(a: number, b: number): string | null {
    if (a === HOST_DOMAIN || b === HOST_DOMAIN) return null;
    if (a === b) return `domain ${a} cannot open a vchan to itself through the host`;
    if (this.#all || this.#pairs.has(a < b ? `${a}:${b}` : `${b}:${a}`)) return null;
    return `policy does not allow vchans between domains ${a} and ${b}`;
  }
}
