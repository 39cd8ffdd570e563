/**
 * A REAL Linux guest run by libvirtd (docs/vms-libvirt.md): the test image of docs/vms.md booted
 * as a TCG q35 domain with an emulated intel-iommu (so the guest daemon drives its ivshmem
 * devices through VFIO), the host root and a share directory over virtio-9p, and its serial
 * console in a file. Commands run through the same share-directory agent as QEMU-started guests
 * (GuestShell in vm.ts).
 *
 * Every domain defined here is destroyed (and undefined) on process exit, whatever the test did.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { guestKernelArgs } from '../../src/vm/guest-image.js';
import { rootPortsXml, type LibvirtEnv } from './libvirt.js';
import { FAILED_MARKER, GuestShell, READY_MARKER, vmPrerequisites } from './vm.js';
import { sleep } from './wait.js';

export interface LibvirtVmOptions {
  name: string;
  /** Default 1024. */
  memoryMiB?: number;
  /** pcie-root-ports for kvmchand's devices. Default 5. */
  rootPorts?: number;
  /** The last `reservedPorts` get pref64-reserve 512 MiB (room for pools). Default 3. */
  reservedPorts?: number;
  /** `virsh define` + `start` (kept in libvirt's configuration) instead of `virsh create`. */
  persistent?: boolean;
  /** More XML inside `<devices>` (e.g. kvmchan devices declared at boot). */
  devicesXml?: string;
  /** Spawn → ready marker. Default 300 s. */
  readyTimeoutMs?: number;
}

const defined = new Set<string>();
let hooked = false;

function virsh(...args: string[]): string {
  return execFileSync('virsh', ['-c', 'qemu:///system', ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

function forget(name: string, persistent: boolean): void {
  try {
    virsh('destroy', name);
  } catch {
    // not running
  }
  if (persistent) {
    try {
      virsh('undefine', name);
    } catch {
      // not defined
    }
  }
}

function hookExit(): void {
  if (hooked) return;
  hooked = true;
  process.on('exit', () => {
    for (const n of defined) forget(n, true);
  });
}

function escape(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/'/g, '&apos;');
}

/** The domain XML of the test guest (exported for docs and tests that only define it). */
export function testGuestXml(opts: LibvirtVmOptions & { kernel: string; initrd: string; dir: string }): string {
  // Bus 0 slots 2.. hold the root ports; the 9p devices sit on the root complex itself (slots
  // 0x10, 0x11), so none of the ports is taken by a device of ours.
  const { controllers, overrides } = rootPortsXml(opts.rootPorts ?? 5, opts.reservedPorts ?? 3, 512 << 20);
  const share = path.join(opts.dir, 'share');
  return `<domain type='qemu' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>
  <name>${escape(opts.name)}</name>
  <memory unit='MiB'>${opts.memoryMiB ?? 1024}</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='q35'>hvm</type>
    <kernel>${escape(opts.kernel)}</kernel>
    <initrd>${escape(opts.initrd)}</initrd>
    <cmdline>${escape(guestKernelArgs().join(' '))}</cmdline>
  </os>
  <features><acpi/><ioapic driver='qemu'/></features>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <controller type='pci' index='0' model='pcie-root'/>
    ${controllers}
    <controller type='usb' model='none'/>
    <filesystem type='mount' accessmode='squash' multidevs='remap'>
      <source dir='/'/><target dir='hostroot'/><readonly/>
      <address type='pci' domain='0' bus='0' slot='0x10' function='0'/>
    </filesystem>
    <filesystem type='mount' accessmode='squash'>
      <source dir='${escape(share)}'/><target dir='kvmchanvm'/>
      <address type='pci' domain='0' bus='0' slot='0x11' function='0'/>
    </filesystem>
    <serial type='file'><source path='${escape(path.join(opts.dir, 'console.log'))}'/><target port='0'/></serial>
    <memballoon model='none'/>
    <iommu model='intel'><driver intremap='on'/></iommu>
    ${opts.devicesXml ?? ''}
  </devices>
  <qemu:override>
    ${overrides}
  </qemu:override>
</domain>
`;
}

/** A booted libvirt domain running the test image. */
export class LibvirtVm extends GuestShell {
  readonly name: string;
  readonly dir: string;
  override readonly shareDir: string;
  readonly persistent: boolean;
  #gone = false;

  private constructor(name: string, dir: string, persistent: boolean) {
    super();
    this.name = name;
    this.dir = dir;
    this.shareDir = path.join(dir, 'share');
    this.persistent = persistent;
  }

  /** Define (or create) and start the domain; resolves once the guest agent is up. */
  static async boot(env: LibvirtEnv, opts: LibvirtVmOptions): Promise<LibvirtVm> {
    const pre = vmPrerequisites();
    if ('reason' in pre) throw new Error(`cannot boot a VM: ${pre.reason}`);
    hookExit();
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kvmchan-lvm-'));
    fs.mkdirSync(path.join(dir, 'share', 'req'), { recursive: true });
    fs.mkdirSync(path.join(dir, 'share', 'out'));
    const vm = new LibvirtVm(opts.name, dir, opts.persistent === true);
    const xmlFile = path.join(dir, 'domain.xml');
    fs.writeFileSync(xmlFile, testGuestXml({ ...opts, kernel: pre.image.kernel, initrd: pre.image.initrd, dir }));
    defined.add(opts.name);
    try {
      if (vm.persistent) {
        env.virsh('define', xmlFile);
        env.virsh('start', opts.name);
      } else {
        env.virsh('create', xmlFile);
      }
      await vm.waitReady(opts.readyTimeoutMs ?? 300_000);
    } catch (err) {
      const tail = vm.console().split('\n').slice(-40).join('\n');
      await vm.destroy();
      throw new Error(`${String(err)}\n--- console (tail)\n${tail}`, { cause: err });
    }
    return vm;
  }

  get running(): boolean {
    return !this.#gone && this.state() === 'running';
  }

  /** `virsh domstate`, or 'gone' when libvirt no longer knows the domain. */
  state(): string {
    try {
      return virsh('domstate', this.name).trim();
    } catch {
      return 'gone';
    }
  }

  console(): string {
    try {
      return fs.readFileSync(path.join(this.dir, 'console.log'), 'utf8');
    } catch {
      return '';
    }
  }

  /** QEMU's pid (libvirt's pid file). */
  qemuPid(): number {
    return Number(fs.readFileSync(`/run/libvirt/qemu/${this.name}.pid`, 'utf8').trim());
  }

  /** Wait for the guest agent's ready marker on the console (again after a restart). */
  async waitReady(timeoutMs: number, after = 0): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const c = this.console().slice(after);
      if (c.includes(READY_MARKER)) return;
      if (c.includes(FAILED_MARKER)) throw new Error('guest init failed');
      if (Date.now() > deadline) throw new Error(`guest ${this.name} not ready within ${timeoutMs} ms`);
      if (this.state() === 'shut off' || this.state() === 'gone') throw new Error(`domain ${this.name} stopped before the guest was ready`);
      await sleep(250);
    }
  }

  /** `virsh destroy` (kept defined when persistent). */
  kill(): void {
    try {
      virsh('destroy', this.name);
    } catch {
      // already stopped
    }
  }

  /** Start a persistent domain again; resolves once its agent is up anew. */
  async restart(timeoutMs = 300_000): Promise<void> {
    const before = this.console().length;
    fs.rmSync(path.join(this.shareDir, 'out'), { recursive: true, force: true });
    fs.mkdirSync(path.join(this.shareDir, 'out'));
    virsh('start', this.name);
    // libvirt truncates the console file on start (append='off' is its default).
    await this.waitReady(timeoutMs, this.console().length < before ? 0 : before);
  }

  /** Destroy (and undefine) the domain and remove its directory. Idempotent. */
  async destroy(): Promise<void> {
    this.#gone = true;
    forget(this.name, this.persistent || defined.has(this.name));
    defined.delete(this.name);
    fs.rmSync(this.dir, { recursive: true, force: true });
    await Promise.resolve();
  }
}
