/**
 * Stable identities of QMP-managed VMs (docs/vms-qmp.md §"Names and domain ids"):
 * `<runtimeDir>/qmp-vms.json` (mode 0600, written atomically) maps every VM name ever served
 * by this runtime directory to its domain id, and lists the VMs added at run time
 * (`kvmchan vm add`) so a restarted daemon follows them again. The runtime directory lives as
 * long as the host is up, like the VMs themselves.
 */
import fs from 'node:fs';
import path from 'node:path';
import { z } from 'zod';
import type { Logger } from 'pino';
import { InvalidArgumentError } from '../../../errors.js';

export const VM_STATE_FILE = 'qmp-vms.json';
/** Domain ids handed out to VMs: 1 … MAX_VM_ID (DomainEntry.domain is a u32; keep them small). */
export const MAX_VM_ID = 65535;
/** Most names remembered (ids of removed VMs are kept for when they come back). */
export const MAX_REMEMBERED_VMS = 4096;
export const VM_NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,30}$/;
/** sun_path holds 108 bytes including the NUL. */
export const MAX_SOCKET_PATH = 107;

export const vmNameSchema = z
  .string()
  .regex(VM_NAME_RE, 'a VM name is 1-31 characters of A-Z a-z 0-9 . _ - and starts with a letter or digit');
export const qmpPathSchema = z
  .string()
  .refine((p) => path.isAbsolute(p), 'the QMP socket path must be absolute')
  .refine((p) => Buffer.byteLength(p) <= MAX_SOCKET_PATH, `the QMP socket path must be at most ${MAX_SOCKET_PATH} bytes`)
  .refine((p) => !p.includes('\0'), 'the QMP socket path must not contain NUL');

export const vmSpecSchema = z
  .object({
    name: vmNameSchema,
    qmp: qmpPathSchema,
    id: z.number().int().min(1).max(MAX_VM_ID).optional(),
  })
  .strict();

export type VmSpec = z.infer<typeof vmSpecSchema>;

const stateSchema = z
  .object({
    version: z.literal(1),
    ids: z.record(vmNameSchema, z.number().int().min(1).max(MAX_VM_ID)),
    added: z.array(z.object({ name: vmNameSchema, qmp: qmpPathSchema }).strict()).max(MAX_REMEMBERED_VMS),
  })
  .strict();

type State = z.infer<typeof stateSchema>;

export class VmState {
  readonly file: string;
  readonly #log: Logger | undefined;
  #state: State = { version: 1, ids: {}, added: [] };

  constructor(runtimeDir: string, log?: Logger) {
    this.file = path.join(runtimeDir, VM_STATE_FILE);
    this.#log = log;
    let text: string;
    try {
      text = fs.readFileSync(this.file, 'utf8');
    } catch {
      return; // first start
    }
    try {
      const parsed = stateSchema.safeParse(JSON.parse(text));
      if (!parsed.success) throw new Error(parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; '));
      this.#state = parsed.data;
      if (Object.keys(this.#state.ids).length > MAX_REMEMBERED_VMS) throw new Error('too many names');
      const seen = new Set<number>();
      for (const id of Object.values(this.#state.ids)) {
        if (seen.has(id)) throw new Error(`id ${id} given twice`);
        seen.add(id);
      }
    } catch (err) {
      // Ours, in our private runtime directory; a broken one is set aside, not trusted.
      this.#state = { version: 1, ids: {}, added: [] };
      const aside = `${this.file}.bad-${Date.now()}`;
      this.#log?.warn({ file: this.file, aside, err: (err as Error).message }, 'VM state file unreadable; starting with fresh domain ids');
      try {
        fs.renameSync(this.file, aside);
      } catch {
        // nothing to set aside
      }
    }
  }

  /** VMs added at run time, in the order they were added. */
  added(): { name: string; qmp: string }[] {
    return this.#state.added.map((a) => ({ ...a }));
  }

  idOf(name: string): number | undefined {
    return Object.hasOwn(this.#state.ids, name) ? this.#state.ids[name] : undefined;
  }

  /**
   * The domain id of `name`: `pinned` (from the configuration) if given, else the one remembered,
   * else the lowest id ≥ 1 nobody holds or has held (and not in `reserved`). Persisted.
   */
  assign(name: string, pinned: number | undefined, reserved: ReadonlySet<number>): number {
    const known = this.idOf(name);
    if (pinned !== undefined) {
      for (const [other, id] of Object.entries(this.#state.ids)) {
        if (id === pinned && other !== name) {
          // A pinned id wins: the name that held it forgets it (and gets a fresh one if it returns).
          Reflect.deleteProperty(this.#state.ids, other);
        }
      }
      if (known !== pinned) {
        this.#state.ids[name] = pinned;
        this.#save();
      }
      return pinned;
    }
    if (known !== undefined && !reserved.has(known)) return known;
    const used = new Set(Object.values(this.#state.ids));
    for (let id = 1; id <= MAX_VM_ID; id++) {
      if (used.has(id) || reserved.has(id)) continue;
      this.#forgetOldest();
      this.#state.ids[name] = id;
      this.#save();
      return id;
    }
    throw new InvalidArgumentError('no free domain id left');
  }

  setAdded(name: string, qmp: string | null): void {
    this.#state.added = this.#state.added.filter((a) => a.name !== name);
    if (qmp !== null) this.#state.added.push({ name, qmp });
    this.#save();
  }

  #forgetOldest(): void {
    const names = Object.keys(this.#state.ids);
    if (names.length < MAX_REMEMBERED_VMS) return;
    const keep = new Set(this.#state.added.map((a) => a.name));
    const victim = names.find((n) => !keep.has(n));
    if (victim !== undefined) Reflect.deleteProperty(this.#state.ids, victim);
  }

  #save(): void {
    const tmp = `${this.file}.tmp-${process.pid}`;
    try {
      fs.writeFileSync(tmp, `${JSON.stringify(this.#state, null, 1)}\n`, { mode: 0o600 });
      fs.renameSync(tmp, this.file);
    } catch (err) {
      fs.rmSync(tmp, { force: true });
      this.#log?.error({ file: this.file, err: (err as Error).message }, 'cannot save the VM state file; domain ids may change on restart');
    }
  }
}
