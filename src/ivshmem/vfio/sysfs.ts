/**
 * Finding ivshmem-doorbell devices in a guest's sysfs and handing them to vfio-pci
 * (docs/ivshmem.md §8.1). Every path is relative to `sysfs` (default /sys) and `dev`
 * (default /dev) so unit tests run against a fake tree in a temporary directory.
 *
 * sysfs is the guest kernel's view of the PCI bus, which the host configured: trusted-ish.
 * Still, names are checked before they become paths.
 */
import fs from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { KvmchanError, TimeoutError } from '../../errors.js';

export const IVSHMEM_VENDOR = 0x1af4;
export const IVSHMEM_DEVICE = 0x1110;

/** Raised when neither an IOMMU nor VFIO no-IOMMU mode is available (docs/vms.md). */
export class NoIommuError extends KvmchanError {
  constructor(message: string) {
    super(message, 'KVMCHAN_E_NO_IOMMU');
    this.name = 'NoIommuError';
  }
}

/** vfio-pci is missing or refuses the device. */
export class VfioUnavailableError extends KvmchanError {
  constructor(message: string, options?: ErrorOptions) {
    super(message, 'KVMCHAN_E_VFIO', options);
    this.name = 'VfioUnavailableError';
  }
}

export interface SysfsPaths {
  /** Default '/sys'. */
  sysfs?: string;
  /** Default '/dev'. */
  dev?: string;
}

export interface PciCandidate {
  /** PCI address, e.g. 0000:01:00.0 */
  bdf: string;
  /** Name of the bound driver, null when none. */
  driver: string | null;
  /** IOMMU group number, null when the device has none (yet). */
  iommuGroup: number | null;
}

const BDF_RE = /^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$/;

export function isBdf(s: string): boolean {
  return BDF_RE.test(s);
}

function sysRoot(p: SysfsPaths): string {
  return p.sysfs ?? '/sys';
}

function readTrim(file: string): string | null {
  try {
    return fs.readFileSync(file, 'utf8').trim();
  } catch {
    return null;
  }
}

function linkBase(link: string): string | null {
  try {
    return path.basename(fs.readlinkSync(link));
  } catch {
    return null;
  }
}

function pciDir(p: SysfsPaths, bdf: string): string {
  if (!isBdf(bdf)) throw new KvmchanError(`not a PCI address: ${JSON.stringify(bdf)}`, 'KVMCHAN_E_INVALID_ARG');
  return path.join(sysRoot(p), 'bus', 'pci', 'devices', bdf);
}

/** State of one PCI device, or null when it is gone. */
export function pciCandidate(bdf: string, p: SysfsPaths = {}): PciCandidate | null {
  const dir = pciDir(p, bdf);
  if (!fs.existsSync(dir)) return null;
  const group = linkBase(path.join(dir, 'iommu_group'));
  return {
    bdf,
    driver: linkBase(path.join(dir, 'driver')),
    iommuGroup: group !== null && /^\d+$/.test(group) ? Number(group) : null,
  };
}

/** Every ivshmem-doorbell (1af4:1110) device, sorted by address. */
export function listIvshmemDevices(p: SysfsPaths = {}): PciCandidate[] {
  const root = path.join(sysRoot(p), 'bus', 'pci', 'devices');
  let names: string[];
  try {
    names = fs.readdirSync(root);
  } catch {
    return [];
  }
  const out: PciCandidate[] = [];
  for (const bdf of names.filter(isBdf).sort()) {
    const dir = path.join(root, bdf);
    if (parseHex(readTrim(path.join(dir, 'vendor'))) !== IVSHMEM_VENDOR) continue;
    if (parseHex(readTrim(path.join(dir, 'device'))) !== IVSHMEM_DEVICE) continue;
    const c = pciCandidate(bdf, p);
    if (c !== null) out.push(c);
  }
  return out;
}

function parseHex(s: string | null): number | null {
  if (s === null || !/^0x[0-9a-fA-F]{1,8}$/.test(s)) return null;
  return parseInt(s.slice(2), 16);
}

export type IommuMode = 'iommu' | 'noiommu';

/** True when the guest kernel runs an IOMMU (it populated /sys/kernel/iommu_groups with real groups). */
export function hasIommu(p: SysfsPaths = {}): boolean {
  const groups = path.join(sysRoot(p), 'kernel', 'iommu_groups');
  let names: string[];
  try {
    names = fs.readdirSync(groups);
  } catch {
    return false;
  }
  // vfio's no-IOMMU groups show up here too, named "vfio-noiommu": they do not count.
  return names.some((g) => readTrim(path.join(groups, g, 'name')) !== 'vfio-noiommu');
}

export function noIommuModeEnabled(p: SysfsPaths = {}): boolean {
  const v = readTrim(path.join(sysRoot(p), 'module', 'vfio', 'parameters', 'enable_unsafe_noiommu_mode'));
  return v === 'Y' || v === '1';
}

export const IOMMU_MISSING_MESSAGE =
  'VFIO needs an IOMMU the guest can see or VFIO no-IOMMU mode, and this guest has neither: ' +
  '/sys/kernel/iommu_groups is empty (run the VM as q35 with `-device intel-iommu,intremap=on` and ' +
  '`-machine kernel-irqchip=split`, and boot the guest with `intel_iommu=on`) and ' +
  '/sys/module/vfio/parameters/enable_unsafe_noiommu_mode is not Y ' +
  '(`modprobe vfio enable_unsafe_noiommu_mode=1`, or write Y there; unsafe: docs/vms.md)';

/** Which VFIO mode this guest can use; throws NoIommuError (saying what is missing) if none. */
export function iommuMode(p: SysfsPaths = {}): IommuMode {
  if (hasIommu(p)) return 'iommu';
  if (noIommuModeEnabled(p)) return 'noiommu';
  throw new NoIommuError(IOMMU_MISSING_MESSAGE);
}

export interface BindOptions extends SysfsPaths {
  /** Give up after this long (drivers_probe may bind nothing at first). Default 5000 ms. */
  timeoutMs?: number;
  /** Load the vfio-pci module when its driver directory is missing. Default: run `modprobe vfio-pci`. */
  modprobe?: () => void;
}

function defaultModprobe(): void {
  spawnSync('modprobe', ['vfio-pci'], { stdio: 'ignore', timeout: 10_000 });
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/**
 * Bind `bdf` to vfio-pci: driver_override, unbind from another driver, drivers_probe, retried
 * until the driver link says vfio-pci. Idempotent.
 */
export async function bindVfioPci(bdf: string, opts: BindOptions = {}): Promise<void> {
  const dir = pciDir(opts, bdf);
  const sys = sysRoot(opts);
  const vfioDriver = path.join(sys, 'bus', 'pci', 'drivers', 'vfio-pci');
  if (!fs.existsSync(vfioDriver)) {
    (opts.modprobe ?? defaultModprobe)();
    if (!fs.existsSync(vfioDriver)) {
      throw new VfioUnavailableError(
        'the vfio-pci driver is not available in this guest (modprobe vfio-pci failed; the kernel needs CONFIG_VFIO_PCI)',
      );
    }
  }
  const deadline = Date.now() + (opts.timeoutMs ?? 5000);
  for (let attempt = 0; ; attempt++) {
    const c = pciCandidate(bdf, opts);
    if (c === null) throw new VfioUnavailableError(`PCI device ${bdf} disappeared`);
    if (c.driver === 'vfio-pci') return;
    try {
      if (readTrim(path.join(dir, 'driver_override')) !== 'vfio-pci') fs.writeFileSync(path.join(dir, 'driver_override'), 'vfio-pci');
      if (c.driver !== null) fs.writeFileSync(path.join(dir, 'driver', 'unbind'), bdf);
      fs.writeFileSync(path.join(sys, 'bus', 'pci', 'drivers_probe'), bdf);
    } catch (err) {
      // drivers_probe answers an error when no driver took the device (yet): retry.
      if (attempt > 0 && Date.now() > deadline)
        throw new VfioUnavailableError(`cannot bind ${bdf} to vfio-pci: ${(err as Error).message}`, { cause: err });
    }
    if (pciCandidate(bdf, opts)?.driver === 'vfio-pci') return;
    if (Date.now() > deadline) throw new TimeoutError(`${bdf} not bound to vfio-pci after ${opts.timeoutMs ?? 5000} ms`);
    await sleep(Math.min(50, 1 + attempt * 5));
  }
}

/**
 * The group device node of a vfio-pci-bound device: /dev/vfio/<N> with an IOMMU,
 * /dev/vfio/noiommu-<N> in no-IOMMU mode.
 */
export function groupNode(bdf: string, mode: IommuMode, p: SysfsPaths = {}): string {
  const c = pciCandidate(bdf, p);
  if (c === null) throw new VfioUnavailableError(`PCI device ${bdf} disappeared`);
  if (c.iommuGroup === null) {
    throw mode === 'iommu'
      ? new NoIommuError(`${bdf} has no IOMMU group: ${IOMMU_MISSING_MESSAGE}`)
      : new VfioUnavailableError(`${bdf} has no (no-IOMMU) group: is it bound to vfio-pci?`);
  }
  const name = mode === 'noiommu' ? `noiommu-${c.iommuGroup}` : String(c.iommuGroup);
  return path.join(p.dev ?? '/dev', 'vfio', name);
}
