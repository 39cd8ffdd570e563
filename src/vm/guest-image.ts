/**
 * The guest image and QEMU command line of a Linux guest that can use kvmchan (docs/vms.md,
 * "Connecting a VM" and "The test guest image"): what `kvmchan demo --vm`, the benchmarks and
 * the VM test tier share. scripts/vm/build-image.sh builds the image; this module only finds it
 * and says how to build it.
 */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** The package root (this file is dist/src/vm/guest-image.js). */
export const PACKAGE_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
/** Where build-image.sh writes the image (KVMCHAN_VM_CACHE overrides, for both). */
export const VM_CACHE = process.env['KVMCHAN_VM_CACHE'] ?? path.join(PACKAGE_ROOT, '.cache', 'vm');
export const BUILD_IMAGE_SCRIPT = path.join(PACKAGE_ROOT, 'scripts', 'vm', 'build-image.sh');
/** The exact command that builds the image. */
export const BUILD_IMAGE_COMMAND = `bash ${BUILD_IMAGE_SCRIPT}`;
export const QEMU_BINARY = 'qemu-system-x86_64';
/** Where the per-VM share appears inside the guest (scripts/vm/guest-init.sh). */
export const GUEST_SHARE = '/run/kvmchanvm';
export const READY_MARKER = 'KVMCHAN-GUEST-READY';
export const FAILED_MARKER = 'KVMCHAN-GUEST-FAILED';
/** Printed by the guest's /init after a one-shot run.sh: `KVMCHAN-RUN-EXIT <status>`. */
export const RUN_EXIT_MARKER = 'KVMCHAN-RUN-EXIT';

export interface VmImage {
  kernel: string;
  initrd: string;
  /** uname -r of the guest kernel. */
  kver: string;
  fingerprint: string;
}

/**
 * <cacheDir>/image.env as written by build-image.sh, or why it is unusable. Paths in image.env
 * that do not exist are looked up by file name in cacheDir (a cache copied from another
 * checkout keeps that checkout's absolute paths).
 */
export function vmImage(cacheDir = VM_CACHE): VmImage | { reason: string } {
  const envFile = path.join(cacheDir, 'image.env');
  let text: string;
  try {
    text = fs.readFileSync(envFile, 'utf8');
  } catch {
    return { reason: `no guest image (${envFile}); build it with: ${BUILD_IMAGE_COMMAND}` };
  }
  const kv = new Map<string, string>();
  for (const line of text.split('\n')) {
    const eq = line.indexOf('=');
    if (eq > 0) kv.set(line.slice(0, eq), line.slice(eq + 1));
  }
  const local = (p: string | undefined): string | undefined => {
    if (p === undefined) return undefined;
    const here = path.join(cacheDir, path.basename(p));
    return fs.existsSync(here) ? here : fs.existsSync(p) ? p : undefined;
  };
  const kernel = local(kv.get('KERNEL'));
  const initrd = local(kv.get('INITRD'));
  if (kernel === undefined || initrd === undefined) {
    return { reason: `guest image in ${cacheDir} is incomplete; rebuild it with: ${BUILD_IMAGE_COMMAND}` };
  }
  return { kernel, initrd, kver: kv.get('KVER') ?? '?', fingerprint: kv.get('FINGERPRINT') ?? '?' };
}

/** An executable on PATH (or in /usr/bin), else null. */
export function findOnPath(name: string): string | null {
  const dirs = (process.env['PATH'] ?? '').split(':').filter((d) => d !== '');
  for (const d of [...dirs, '/usr/bin']) {
    const p = path.join(d, name);
    try {
      fs.accessSync(p, fs.constants.X_OK);
      return p;
    } catch {
      // not here
    }
  }
  return null;
}

/** qemu-system-x86_64, or why not (with the command that installs it). */
export function findQemu(): { path: string } | { reason: string } {
  const p = findOnPath(QEMU_BINARY);
  return p !== null ? { path: p } : { reason: `${QEMU_BINARY} not found on PATH; install it with: apt-get install qemu-system-x86` };
}

export interface IvshmemAttachment {
  /** QEMU device id (the chardev is `<id>-chr`). */
  id: string;
  /** The ivshmem server's UNIX socket; it must be listening before QEMU starts. */
  socketPath: string;
  /** The device's `vectors` property (= the server's vectors). */
  vectors: number;
  /** 1-based index of the root port it sits on (rp<N>). */
  rootPort: number;
}

export interface GuestQemuOptions {
  /** Default 1024. */
  memoryMiB?: number;
  /** Default 1. */
  cpus?: number;
  /** pcie-root-ports rp1..rpN (hot-plug targets too). Default 4. */
  rootPorts?: number;
  /** Prefetchable 64-bit window each root port asks the firmware for. Default '512M'; null
   *  leaves QEMU's default (SeaBIOS then gives a hot-plug port 2 MiB). */
  pref64Reserve?: string | null;
  /** ivshmem-doorbell devices present at boot. */
  ivshmem?: readonly IvshmemAttachment[];
  /**
   * Host directories the guest must see although they lie under a directory the guest covers
   * with tmpfs (/tmp, /run, /var/tmp, /dev/shm). PACKAGE_ROOT is added when it lies there. No
   * spaces or colons.
   */
  hostPaths?: readonly string[];
  extraArgs?: readonly string[];
  extraKernelArgs?: readonly string[];
}

/** Host directories the guest covers with tmpfs (scripts/vm/guest-init.sh). */
const COVERED = ['/tmp', '/run', '/var/tmp', '/dev/shm'];

/**
 * QEMU arguments for the image's guest: q35 with a split irqchip and an emulated intel-iommu
 * (interrupt remapping), root ports with large prefetchable windows, a QMP socket at
 * <dir>/qmp.sock, the host root (read-only) and <dir>/share over virtio-9p.
 */
/** The guest kernel's command line (the same under plain QEMU and under libvirt). */
export function guestKernelArgs(opts: Pick<GuestQemuOptions, 'hostPaths' | 'extraKernelArgs'> = {}): string[] {
  const binds = [...(opts.hostPaths ?? [])];
  if (COVERED.some((d) => PACKAGE_ROOT === d || PACKAGE_ROOT.startsWith(`${d}/`))) binds.push(PACKAGE_ROOT);
  for (const b of binds) {
    if (!path.isAbsolute(b) || /[\s:]/.test(b)) throw new Error(`hostPaths: unusable path ${JSON.stringify(b)}`);
  }
  // no_timer_check: on a loaded host TCG can be too slow for the kernel's "does the IO-APIC
  // timer tick" probe, which with interrupt remapping panics the guest (docs/vms.md §1.6).
  const kernelArgs = ['console=ttyS0', 'intel_iommu=on', 'no_timer_check', 'panic=-1', 'loglevel=4'];
  if (binds.length > 0) kernelArgs.push(`kvmchan.bind=${binds.join(':')}`);
  kernelArgs.push(...(opts.extraKernelArgs ?? []));
  return kernelArgs;
}

export function guestQemuArgs(dir: string, image: VmImage, opts: GuestQemuOptions = {}): string[] {
  const ports = opts.rootPorts ?? 4;
  const reserve = opts.pref64Reserve === undefined ? '512M' : opts.pref64Reserve;
  const kernelArgs = guestKernelArgs(opts);
  const args = [
    '-accel',
    'tcg',
    '-machine',
    'q35,kernel-irqchip=split',
    '-device',
    'intel-iommu,intremap=on',
    '-m',
    String(opts.memoryMiB ?? 1024),
    '-smp',
    String(opts.cpus ?? 1),
    // -nographic without its default devices: the serial port on stdout is the console.
    '-display',
    'none',
    '-nodefaults',
    '-serial',
    'stdio',
    '-no-reboot',
    '-kernel',
    image.kernel,
    '-initrd',
    image.initrd,
    '-append',
    kernelArgs.join(' '),
    '-qmp',
    `unix:${path.join(dir, 'qmp.sock')},server=on,wait=off`,
    '-virtfs',
    'local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap',
    '-virtfs',
    `local,path=${path.join(dir, 'share')},mount_tag=kvmchanvm,security_model=none`,
  ];
  for (let i = 1; i <= ports; i++) {
    args.push('-device', `pcie-root-port,id=rp${i},chassis=${i},slot=${i}${reserve === null ? '' : `,pref64-reserve=${reserve}`}`);
  }
  for (const d of opts.ivshmem ?? []) {
    if (d.rootPort < 1 || d.rootPort > ports) throw new Error(`ivshmem ${d.id}: no root port rp${d.rootPort}`);
    args.push('-chardev', `socket,id=${d.id}-chr,path=${d.socketPath}`);
    args.push('-device', `ivshmem-doorbell,id=${d.id},chardev=${d.id}-chr,vectors=${d.vectors},bus=rp${d.rootPort}`);
  }
  args.push(...(opts.extraArgs ?? []));
  return args;
}
