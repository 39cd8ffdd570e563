/** Human output helpers for the CLI: tables, sizes, rates, a progress line. */

export function table(headers: readonly string[], rows: readonly (readonly string[])[]): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: readonly string[]): string =>
    cells
      .map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]!)))
      .join('  ')
      .trimEnd();
  return [line(headers), ...rows.map(line)].join('\n');
}

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];

export function bytes(n: number): string {
  let v = n;
  let u = 0;
  while (v >= 1024 && u < UNITS.length - 1) {
    v /= 1024;
    u++;
  }
  return u === 0 ? `${n} B` : `${v.toFixed(v >= 100 ? 0 : v >= 10 ? 1 : 2)} ${UNITS[u]}`;
}

export function rate(bytesMoved: number, seconds: number): string {
  return `${bytes(seconds > 0 ? bytesMoved / seconds : 0)}/s`;
}

/** A one-line progress bar on a TTY stream; silent elsewhere (logs, pipes). */
export class Progress {
  readonly #stream: NodeJS.WriteStream;
  readonly #total: number;
  readonly #label: string;
  readonly #start = process.hrtime.bigint();
  #last = 0;

  constructor(stream: NodeJS.WriteStream, total: number, label: string) {
    this.#stream = stream;
    this.#total = total;
    this.#label = label;
  }

  get enabled(): boolean {
    return this.#stream.isTTY;
  }

  update(done: number): void {
    if (!this.enabled) return;
    const now = Date.now();
    if (now - this.#last < 100 && done < this.#total) return;
    this.#last = now;
    const frac = this.#total > 0 ? Math.min(1, done / this.#total) : 1;
    const width = 30;
    const fill = Math.round(frac * width);
    const secs = Number(process.hrtime.bigint() - this.#start) / 1e9;
    this.#stream.write(
      `\r${this.#label} [${'#'.repeat(fill)}${'.'.repeat(width - fill)}] ${(frac * 100).toFixed(0).padStart(3)}% ${bytes(done)} ${rate(done, secs)}   `,
    );
  }

  done(): void {
    if (this.enabled) this.#stream.write('\n');
  }
}
