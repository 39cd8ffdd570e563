/**
 * Where a hot-plugged device goes (docs/vms-qmp.md §"Placement"), learned over QMP and checked
 * as untrusted input:
 *
 * - q35: its root bus (pcie.0) is not hot-pluggable, so every device goes onto a free
 *   **named** `pcie-root-port` the user gave the VM. Ports and occupancy come from QOM:
 *   `/machine/peripheral/<port>` of type `child<pcie-root-port>`, its bus child
 *   (`child<PCIE>`), and `child[N]` links on that bus (devices plugged there). A pool's BAR2
 *   is 64-bit prefetchable and the guest's firmware gives a hot-plug port only a 2 MiB
 *   prefetchable window unless the port has `pref64-reserve=`, so a pool needs a port whose
 *   `pref64-reserve` is at least twice its size.
 * - pc (i440fx): the root bus is hot-pluggable; QEMU picks the slot.
 */
import { QmpError, VmmError } from '../../../errors.js';
import type { QmpClient } from './client.js';

export type MachineKind = 'q35' | 'pc';

export interface RootPort {
  /** The port's qdev id (`/machine/peripheral/<id>`). */
  id: string;
  /** Its secondary bus name: what `device_add bus=` takes. */
  bus: string;
  /** pref64-reserve in bytes; 0 when not set. */
  pref64Reserve: number;
  occupied: boolean;
}

/** Ports QEMU calls PCIe root ports (types implementing pcie-root-port-base). */
const ROOT_PORT_TYPES = new Set(['child<pcie-root-port>', 'child<ioh3420>']);
/** Most QOM entries we look at in one listing (a VM with more is not plausible). */
const MAX_QOM_ENTRIES = 4096;
/** A prefetchable window cannot be larger than this; bigger `pref64-reserve` values mean "unset". */
const UNSET_RESERVE = 2 ** 62;
/** Device ids we own. */
export const DEVICE_PREFIX = 'kvmchan-';

interface QomEntry {
  name: string;
  type: string;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

export async function qomList(qmp: QmpClient, path: string): Promise<QomEntry[]> {
  const r = await qmp.execute('qom-list', { path });
  if (!Array.isArray(r) || r.length > MAX_QOM_ENTRIES)
    throw new QmpError(`qom-list ${path}: not a list of at most ${MAX_QOM_ENTRIES} entries`);
  return r.map((e) => {
    if (!isObject(e) || typeof e.name !== 'string' || typeof e.type !== 'string' || e.name.length > 256 || e.type.length > 256) {
      throw new QmpError(`qom-list ${path}: malformed entry`);
    }
    return { name: e.name, type: e.type };
  });
}

export async function machineKind(qmp: QmpClient): Promise<MachineKind> {
  const type = await qmp.execute('qom-get', { path: '/machine', property: 'type' });
  if (typeof type !== 'string' || type.length > 256) throw new QmpError('qom-get /machine type: not a string');
  if (type.includes('q35')) return 'q35';
  if (type.includes('i440fx') || type === 'pc-machine' || /^pc-\d/.test(type)) return 'pc';
  throw new VmmError(`machine type ${JSON.stringify(type)} is not supported (q35 or pc/i440fx)`, 'KVMCHAN_E_VMM_UNSUPPORTED');
}

/** Named PCIe root ports of a q35 VM, with their occupancy and prefetchable reserve. */
export async function rootPorts(qmp: QmpClient): Promise<RootPort[]> {
  const out: RootPort[] = [];
  for (const e of await qomList(qmp, '/machine/peripheral')) {
    if (!ROOT_PORT_TYPES.has(e.type)) continue;
    const portPath = `/machine/peripheral/${e.name}`;
    const busEntry = (await qomList(qmp, portPath)).find((c) => c.type === 'child<PCIE>' || c.type === 'child<PCI>');
    if (busEntry === undefined) continue;
    const onBus = await qomList(qmp, `${portPath}/${busEntry.name}`);
    const reserve = await qmp.execute('qom-get', { path: portPath, property: 'pref64-reserve' });
    if (typeof reserve !== 'number' || !(reserve >= 0)) throw new QmpError(`qom-get ${portPath} pref64-reserve: not a number`);
    out.push({
      id: e.name,
      bus: busEntry.name,
      pref64Reserve: reserve >= UNSET_RESERVE ? 0 : reserve,
      occupied: onBus.some((c) => c.name.startsWith('child[')),
    });
  }
  return out.sort((a, b) => a.id.localeCompare(b.id, 'en', { numeric: true }));
}

/** Ids of devices and chardevs we own that the VM already has (left by an earlier daemon). */
export async function ownedLeftovers(qmp: QmpClient): Promise<string[]> {
  const found = new Set<string>();
  for (const e of await qomList(qmp, '/machine/peripheral')) if (e.name.startsWith(DEVICE_PREFIX)) found.add(`device ${e.name}`);
  const chardevs = await qmp.execute('query-chardev');
  if (!Array.isArray(chardevs) || chardevs.length > MAX_QOM_ENTRIES) throw new QmpError('query-chardev: not a list');
  for (const c of chardevs) {
    if (!isObject(c) || typeof c.label !== 'string') throw new QmpError('query-chardev: malformed entry');
    if (c.label.startsWith(DEVICE_PREFIX)) found.add(`chardev ${c.label}`);
  }
  return [...found].sort();
}

/** What a pool needs of a root port's prefetchable window. */
export function reserveNeeded(poolSize: number): number {
  return 2 * poolSize;
}

export function formatBytes(n: number): string {
  if (n >= 1 << 30 && n % (1 << 30) === 0) return `${n / (1 << 30)}G`;
  if (n >= 1 << 20 && n % (1 << 20) === 0) return `${n / (1 << 20)}M`;
  return `${n}`;
}

/** The error a VM without a fitting free port gets: says what to add to the QEMU command line. */
export function noPortError(vm: string, what: string, needReserve: number, ports: readonly RootPort[]): VmmError {
  const free = ports.filter((p) => !p.occupied);
  const state =
    ports.length === 0
      ? 'it has no named pcie-root-port'
      : `free ports: ${free.length === 0 ? 'none' : free.map((p) => `${p.id} (pref64-reserve ${formatBytes(p.pref64Reserve)})`).join(', ')}`;
  const reserve = needReserve > 0 ? `,pref64-reserve=${formatBytes(needReserve)}` : '';
  return new VmmError(
    `VM ${vm}: no free PCIe root port for ${what} (${state}); start QEMU with one more ` +
      `"-device pcie-root-port,id=rpN,chassis=N,slot=N${reserve}" per kvmchan device (docs/vms-qmp.md)`,
    'KVMCHAN_E_VMM_NO_PORT',
  );
}
