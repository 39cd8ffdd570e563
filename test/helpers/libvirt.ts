// A libvirtd for the libvirt backend's end-to-end tests (docs/testing.md, tier 3).
//
// ensureLibvirt() reuses a libvirtd already answering on /run/libvirt/libvirt-sock, or (as root)
// starts one: virtlogd first, then libvirtd, both as plain daemons (-d; no systemd here), after
// making /etc/libvirt/qemu.conf run QEMU as root without a security driver (the original file is
// restored by stop()); `env.useQemuUser('libvirt-qemu')` then runs QEMU as Debian's
// unprivileged default user instead (restarting a libvirtd this fixture owns to switch). Only a libvirtd this fixture started is stopped again — and only such a
// one may be restarted by a test (`owned`). Without libvirt installed the tests skip; with
// KVMCHAN_REQUIRE_QEMU=1 (CI) they fail instead.
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';

export const SYSTEM_SOCKET = '/run/libvirt/libvirt-sock';
const QEMU_CONF = '/etc/libvirt/qemu.conf';
const LIBVIRTD_PID = '/run/libvirtd.pid';
const VIRTLOGD_PID = '/run/virtlogd.pid';
const MARK = '# kvmchan test fixture';

/** Who QEMU runs as: root, or the distribution's unprivileged `libvirt-qemu` (user and group). */
export type QemuUser = 'root' | 'libvirt-qemu';

function fixtureConf(original: string, user: QemuUser): string {
  const base = original.includes(MARK) ? original.slice(0, original.indexOf(MARK)) : original;
  return `${base}\n${MARK}\nuser = "${user}"\ngroup = "${user}"\nsecurity_driver = "none"\n`;
}

function onPath(cmd: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;
}

function canConnect(p: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.createConnection({ path: p });
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => {
      resolve(false);
    });
  });
}

function pidAlive(file: string): number | null {
  try {
    const pid = Number(fs.readFileSync(file, 'utf8').trim());
    if (!Number.isInteger(pid) || pid <= 1) return null;
    process.kill(pid, 0);
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return /\) Z /.test(stat) ? null : pid;
  } catch {
    return null;
  }
}

async function until(cond: () => boolean | Promise<boolean>, ms: number, what: string): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

export class LibvirtEnv {
  readonly socket = SYSTEM_SOCKET;
  /** True when this fixture started libvirtd (and may restart and must stop it). */
  readonly owned: boolean;
  qemuUser: QemuUser = 'root';
  #startedVirtlogd = false;
  #confBackup: string | null = null;

  constructor(owned: boolean) {
    this.owned = owned;
  }

  virsh(...args: string[]): string {
    return execFileSync('virsh', ['-c', 'qemu:///system', ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  }

  /** Configure qemu.conf and start virtlogd + libvirtd. */
  async start(user: QemuUser = 'root'): Promise<void> {
    if (this.#confBackup === null) this.#confBackup = fs.readFileSync(QEMU_CONF, 'utf8');
    fs.writeFileSync(QEMU_CONF, fixtureConf(this.#confBackup, user));
    this.qemuUser = user;
    if (pidAlive(VIRTLOGD_PID) === null) {
      execFileSync('virtlogd', ['-d'], { stdio: 'ignore', cwd: '/' });
      this.#startedVirtlogd = true;
    }
    execFileSync('libvirtd', ['-d'], { stdio: 'ignore', cwd: '/' });
    await until(() => canConnect(SYSTEM_SOCKET), 20_000, 'libvirtd to listen');
  }

  /** SIGTERM libvirtd and wait for it to exit (domains keep running). */
  async stopLibvirtd(): Promise<void> {
    const pid = pidAlive(LIBVIRTD_PID);
    if (pid === null) return;
    process.kill(pid, 'SIGTERM');
    await until(() => pidAlive(LIBVIRTD_PID) !== pid, 20_000, 'libvirtd to exit');
  }

  /** Run QEMU as `user` from now on (restarts libvirtd; only domains started later are affected). */
  async useQemuUser(user: QemuUser): Promise<void> {
    if (user === this.qemuUser) return;
    if (!this.owned) throw new Error(`cannot make libvirt run QEMU as ${user}: this fixture did not start libvirtd`);
    await this.stopLibvirtd();
    await this.start(user);
  }

  async restartLibvirtd(): Promise<void> {
    if (!this.owned) throw new Error('refusing to restart a libvirtd this fixture did not start');
    await this.stopLibvirtd();
    execFileSync('libvirtd', ['-d'], { stdio: 'ignore', cwd: '/' });
    await until(() => canConnect(SYSTEM_SOCKET), 20_000, 'libvirtd to listen again');
  }

  /** Stop what this fixture started and restore qemu.conf. */
  async stop(): Promise<void> {
    if (!this.owned) return;
    await this.stopLibvirtd().catch(() => undefined);
    const vl = pidAlive(VIRTLOGD_PID);
    if (this.#startedVirtlogd && vl !== null) process.kill(vl, 'SIGTERM');
    if (this.#confBackup !== null) fs.writeFileSync(QEMU_CONF, this.#confBackup);
  }
}

/** A running libvirtd (reused or started), or why the libvirt tests cannot run. */
export async function ensureLibvirt(): Promise<LibvirtEnv | { reason: string }> {
  const r = await find();
  if ('reason' in r && process.env['KVMCHAN_REQUIRE_QEMU'] === '1')
    throw new Error(`libvirt is required (KVMCHAN_REQUIRE_QEMU=1) but unavailable: ${r.reason}`);
  return r;
}

async function find(): Promise<LibvirtEnv | { reason: string }> {
  if (!onPath('virsh') || !fs.existsSync('/usr/sbin/libvirtd'))
    return { reason: 'libvirt is not installed (apt-get install libvirt-daemon-system libvirt-clients)' };
  if (await canConnect(SYSTEM_SOCKET)) return new LibvirtEnv(false);
  if (process.getuid?.() !== 0) return { reason: 'no libvirtd running and not root to start one' };
  const env = new LibvirtEnv(true);
  try {
    await env.start();
  } catch (err) {
    await env.stop();
    return { reason: `cannot start libvirtd: ${(err as Error).message}` };
  }
  return env;
}

/**
 * `ports` pcie-root-ports on bus 0 slots 2.. (the XML of the `<controller>`s) and the
 * `<qemu:override>` entries giving the last `reserved` of them pref64-reserve `reserve`.
 */
export function rootPortsXml(ports: number, reserved: number, reserve: number): { controllers: string; overrides: string } {
  const ctl: string[] = [];
  const over: string[] = [];
  for (let i = 1; i <= ports; i++) {
    ctl.push(
      `<controller type='pci' index='${i}' model='pcie-root-port'><target chassis='${i}' port='0x${(0x10 + i).toString(16)}'/>` +
        `<address type='pci' domain='0' bus='0' slot='${i + 1}' function='0'/></controller>`,
    );
    if (i > ports - reserved) {
      over.push(
        `<qemu:device alias='pci.${i}'><qemu:frontend><qemu:property name='pref64-reserve' type='unsigned' value='${reserve}'/></qemu:frontend></qemu:device>`,
      );
    }
  }
  return { controllers: ctl.join('\n    '), overrides: over.join('\n    ') };
}

/**
 * An OS-less TCG q35 domain: `ports` pcie-root-ports (libvirt puts its USB controller on the
 * first), the last `reserved` of them with pref64-reserve through `<qemu:override>`.
 */
export function osLessDomainXml(name: string, opts: { ports?: number; reserved?: number; reserve?: number } = {}): string {
  const { controllers, overrides } = rootPortsXml(opts.ports ?? 4, opts.reserved ?? 2, opts.reserve ?? 256 << 20);
  return `<domain type='qemu' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>
  <name>${name}</name>
  <memory unit='MiB'>128</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='q35'>hvm</type></os>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <controller type='pci' index='0' model='pcie-root'/>
    ${controllers}
    <memballoon model='none'/>
  </devices>
  <qemu:override>
    ${overrides}
  </qemu:override>
</domain>
`;
}
