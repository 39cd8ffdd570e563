/**
 * Stable domain ids of libvirt domains (docs/vms-libvirt.md §"Domain ids"): libvirt's own id
 * changes at every start, so kvmchand keys its ids by the domain's UUID, in
 * `<runtimeDir>/libvirt-domains.json` (mode 0600, written atomically). The runtime directory
 * lives as long as the host is up, like the domains.
 */
import fs from 'node:fs';
import path from 'node:path';
import { z } from 'zod';
import type { Logger } from 'pino';
import { InvalidArgumentError } from '../../../errors.js';

export const LIBVIRT_STATE_FILE = 'libvirt-domains.json';
export const MAX_LIBVIRT_ID = 65535;
export const MAX_REMEMBERED = 4096;

const uuidRe = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const stateSchema = z
  .object({
    version: z.literal(1),
    ids: z.record(z.string().regex(uuidRe), z.number().int().min(1).max(MAX_LIBVIRT_ID)),
  })
  .strict();

export class DomainIds {
  readonly file: string;
  readonly #log: Logger | undefined;
  #ids: Record<string, number> = {};

  constructor(runtimeDir: string, log?: Logger) {
    this.file = path.join(runtimeDir, LIBVIRT_STATE_FILE);
    this.#log = log;
    let text: string;
    try {
      text = fs.readFileSync(this.file, 'utf8');
    } catch {
      return;
    }
    try {
      const parsed = stateSchema.safeParse(JSON.parse(text));
      if (!parsed.success) throw new Error(parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; '));
      const seen = new Set<number>();
      for (const id of Object.values(parsed.data.ids)) {
        if (seen.has(id)) throw new Error(`id ${id} given twice`);
        seen.add(id);
      }
      if (seen.size > MAX_REMEMBERED) throw new Error('too many domains');
      this.#ids = parsed.data.ids;
    } catch (err) {
      const aside = `${this.file}.bad-${Date.now()}`;
      this.#log?.warn(
        { file: this.file, aside, err: (err as Error).message },
        'libvirt domain id file unreadable; starting with fresh domain ids',
      );
      try {
        fs.renameSync(this.file, aside);
      } catch {
        // nothing to set aside
      }
    }
  }

  /** The id of `uuid`: the one remembered, else the lowest free one not in `reserved`. Persisted. */
  assign(uuid: string, reserved: ReadonlySet<number>): number {
    const known = Object.hasOwn(this.#ids, uuid) ? this.#ids[uuid] : undefined;
    if (known !== undefined && !reserved.has(known)) return known;
    const used = new Set(Object.values(this.#ids));
    for (let id = 1; id <= MAX_LIBVIRT_ID; id++) {
      if (used.has(id) || reserved.has(id)) continue;
      const names = Object.keys(this.#ids);
      if (names.length >= MAX_REMEMBERED) Reflect.deleteProperty(this.#ids, names[0]!);
      this.#ids[uuid] = id;
      this.#save();
      return id;
    }
    throw new InvalidArgumentError('no free domain id left');
  }

  #save(): void {
    const tmp = `${this.file}.tmp-${process.pid}`;
    try {
      fs.writeFileSync(tmp, `${JSON.stringify({ version: 1, ids: this.#ids }, null, 1)}\n`, { mode: 0o600 });
      fs.renameSync(tmp, this.file);
    } catch (err) {
      fs.rmSync(tmp, { force: true });
      this.#log?.error(
        { file: this.file, err: (err as Error).message },
        'cannot save the libvirt domain id file; ids may change on restart',
      );
    }
  }
}
