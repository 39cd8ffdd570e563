/**
 * `kvmchan demo --vm`: the main job with a real guest. Boots one Linux guest under QEMU from the
 * image scripts/vm/build-image.sh builds (docs/vms.md), serves it from a private host kvmchand,
 * runs `kvmchand --guest` and the demo peer inside it, moves data host → guest and guest → host
 * with the SHA-256 checked on both ends, times 64-byte round trips, and removes everything
 * (QEMU, daemon, temporary directories), also on errors and on SIGINT/SIGTERM.
 *
 * The guest's devices are plugged at boot: the host daemon runs with `simulateGuests: 1`, which
 * creates domain 1's control device and first pool as ivshmem servers under
 * <runtime>/domains/1/, and QEMU is started with an ivshmem-doorbell device on each. That needs
 * no QMP round trips during the guest's boot (the QMP backend, docs/vms-qmp.md, hot-plugs the
 * same devices into a running VM; the demo keeps the fewest moving parts).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Vchan } from '../../client/index.js';
import { PrivateDaemon, DAEMON_MAIN } from '../private-daemon.js';
import { KvmchanError } from '../../errors.js';
import { bytes } from '../format.js';
import { findQemu, vmImage, guestQemuArgs, RUN_EXIT_MARKER, FAILED_MARKER, GUEST_SHARE } from '../../vm/guest-image.js';
import { sendChecked, receiveChecked, timePings, percentiles } from './demo.js';

const PEER = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'demo-peer.js');
const MiB = 1024 * 1024;
const PORT = 1;
/** Inside the guest (tmpfs). */
const GUEST_RUNTIME = '/run/kvmchan-demo';

export interface VmDemoOpts {
  size: number;
  ring: number;
  pings: number;
  /** Spawn → vchan connected (TCG boot + node start-up in the guest). */
  bootTimeoutMs?: number;
}

const sh = (s: string): string => `'${s.replace(/'/g, `'\\''`)}'`;

function runScript(opts: VmDemoOpts): string {
  const node = sh(process.execPath);
  return `set -u
R=${GUEST_RUNTIME}
${node} ${sh(DAEMON_MAIN)} --guest --runtime-dir $R --log-level info >/tmp/kvmchand.log 2>&1 &
d=$!
i=0
until grep -q '"msg":"pool attached"' /tmp/kvmchand.log; do
  if ! kill -0 $d 2>/dev/null; then echo "guest: kvmchand --guest exited:"; sed 's/^/guest:   /' /tmp/kvmchand.log; exit 1; fi
  i=$((i + 1))
  if [ $i -gt 1200 ]; then echo "guest: kvmchand --guest not ready after 600 s:"; sed 's/^/guest:   /' /tmp/kvmchand.log; exit 1; fi
  sleep 0.5
done
echo "guest: kvmchand --guest ready (pid $d, devices over VFIO), up $(cut -d' ' -f1 /proc/uptime) s"
# The host listens once our daemon has attached (it refuses vchans toward a domain with no
# daemon) and then creates ${GUEST_SHARE}/listening.
i=0
until [ -e ${GUEST_SHARE}/listening ]; do
  i=$((i + 1))
  if [ $i -gt 600 ]; then echo "guest: the host did not listen within 60 s"; exit 1; fi
  sleep 0.1
done
${node} ${sh(PEER)} $R ${PORT} ${opts.size} ${opts.pings} 0 ${opts.size}
rc=$?
[ $rc = 0 ] || { echo "guest: demo peer exited $rc; kvmchand log:"; sed 's/^/guest:   /' /tmp/kvmchand.log; }
kill $d 2>/dev/null
wait $d 2>/dev/null
exit $rc
`;
}

export async function runVmDemo(opts: VmDemoOpts, out: NodeJS.WriteStream, err: NodeJS.WriteStream): Promise<void> {
  const qemu = findQemu();
  if ('reason' in qemu) throw new KvmchanError(`demo --vm: ${qemu.reason}`, 'KVMCHAN_E_DEMO');
  const image = vmImage();
  if ('reason' in image) throw new KvmchanError(`demo --vm: ${image.reason}`, 'KVMCHAN_E_DEMO');
  if (process.platform !== 'linux') throw new KvmchanError('demo --vm needs Linux', 'KVMCHAN_E_DEMO');

  let work: string | undefined;
  let host: PrivateDaemon | undefined;
  let server: Vchan | undefined;
  let child: ChildProcess | undefined;
  let qemuExited: Promise<void> = Promise.resolve();
  let cleaned: Promise<void> | undefined;
  const cleanup = (): Promise<void> => {
    cleaned ??= (async () => {
      server?.close();
      if (child !== undefined && child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await qemuExited;
      await host?.stop();
      if (work !== undefined) fs.rmSync(work, { recursive: true, force: true });
      out.write('cleaned up (QEMU stopped, daemon stopped, temporary directories removed)\n');
    })();
    return cleaned;
  };
  const onSignal = (sig: NodeJS.Signals): void => {
    err.write(`\n${sig}: cleaning up\n`);
    void cleanup().finally(() => process.exit(128 + (os.constants.signals[sig] ?? 1)));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);

  let consoleText = '';
  let qemuStderrText = '';
  let hostLog = '';
  try {
    work = fs.mkdtempSync(path.join(fs.realpathSync(os.tmpdir()), 'kvmchan-demo-vm-'));
    hostLog = path.join(work, 'kvmchand.log');
    const cfg = path.join(work, 'kvmchand.json');
    // Pools big enough for both rings; a few vectors (the demo opens one vchan).
    const poolSize = Math.max(4 * MiB, 2 ** Math.ceil(Math.log2(4 * opts.ring + MiB)));
    fs.writeFileSync(cfg, JSON.stringify({ simulateGuests: 1, pools: { poolSize, poolVectors: 4, lowWater: 0 } }));
    host = await PrivateDaemon.start({
      runtimeDir: path.join(work, 'host'),
      extraArgs: ['--config', cfg],
      logLevel: 'info',
      logFile: hostLog,
    });
    out.write(`kvmchand started (pid ${host.pid}) in ${host.runtimeDir}, serving domain 1 (pools of ${bytes(poolSize)})\n`);

    const vmDir = path.join(work, 'vm');
    fs.mkdirSync(path.join(vmDir, 'share'), { recursive: true });
    fs.writeFileSync(path.join(vmDir, 'share', 'run.sh'), runScript(opts));
    const dom = path.join(host.runtimeDir, 'domains', '1');
    const args = guestQemuArgs(vmDir, image, {
      ivshmem: [
        { id: 'control', socketPath: path.join(dom, 'control.sock'), vectors: 1, rootPort: 1 },
        { id: 'pool1', socketPath: path.join(dom, 'pool-1.sock'), vectors: 4, rootPort: 2 },
      ],
    });
    const t0 = performance.now();
    const qemuChild = spawn(qemu.path, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    child = qemuChild;
    let exitInfo: string | null = null;
    let failVm: (e: Error) => void = () => undefined;
    const vmFailed = new Promise<never>((_, reject) => (failVm = reject));
    vmFailed.catch(() => undefined);
    qemuExited = new Promise((resolve) =>
      qemuChild.once('exit', (code, signal) => {
        exitInfo = signal !== null ? `signal ${signal}` : `status ${code}`;
        failVm(new KvmchanError(`QEMU exited (${exitInfo}) before the demo finished`, 'KVMCHAN_E_DEMO'));
        resolve();
      }),
    );
    qemuChild.stderr.setEncoding('utf8').on('data', (s: string) => (qemuStderrText += s));
    let lineBuf = '';
    let onReady: () => void = () => undefined;
    let runExit: (code: number) => void = () => undefined;
    const guestDone = new Promise<number>((resolve) => (runExit = resolve));
    qemuChild.stdout.setEncoding('utf8').on('data', (s: string) => {
      consoleText += s;
      lineBuf += s;
      for (let nl = lineBuf.indexOf('\n'); nl >= 0; nl = lineBuf.indexOf('\n')) {
        const line = lineBuf.slice(0, nl).replace(/\r$/, '');
        lineBuf = lineBuf.slice(nl + 1);
        if (line.startsWith('guest: ')) out.write(`  ${line}\n`);
        if (line.startsWith('guest: kvmchand --guest ready')) onReady();
        const m = new RegExp(`${RUN_EXIT_MARKER} (\\d+)`).exec(line);
        if (m !== null) runExit(Number(m[1]));
        if (line.includes(FAILED_MARKER))
          failVm(new KvmchanError('the guest failed to start (its /init reported a fatal error)', 'KVMCHAN_E_DEMO'));
      }
    });
    out.write(`QEMU started (pid ${qemuChild.pid ?? '?'}): guest kernel ${image.kver}, TCG; booting (tens of seconds)\n`);

    const timeout = opts.bootTimeoutMs ?? 600_000;
    const guestReady = new Promise<void>((resolve, reject) => {
      const t = setTimeout(() => {
        reject(new KvmchanError(`the guest's kvmchand was not ready within ${timeout / 1000} s`, 'KVMCHAN_E_DEMO'));
      }, timeout);
      t.unref();
      onReady = () => {
        clearTimeout(t);
        resolve();
      };
    });
    await Promise.race([guestReady, vmFailed]);
    server = await Vchan.listen({ port: PORT, domain: 1, runtimeDir: host.runtimeDir, readMin: opts.ring, writeMin: opts.ring });
    fs.writeFileSync(path.join(vmDir, 'share', 'listening'), '');
    await Promise.race([server.waitConnected({ timeout: 120_000 }), vmFailed]);
    out.write(
      `host ↔ guest: vchan up ${((performance.now() - t0) / 1000).toFixed(1)} s after QEMU started (rings ${bytes(server.writeSize)} each way)\n`,
    );
    await Promise.race([sendChecked(server, opts.size, out, err, 'host → guest: '), vmFailed]);
    await Promise.race([receiveChecked(server, opts.size, out, err, 'guest → host: '), vmFailed]);
    const samples = await Promise.race([timePings(server, opts.pings), vmFailed]);
    if (samples.length > 0) out.write(`  64-byte round trip host ↔ guest over ${samples.length} pings: ${percentiles(samples)}\n`);
    server.close();
    const code = await Promise.race([guestDone, vmFailed]);
    if (code !== 0) throw new KvmchanError(`the guest side exited with ${code}`, 'KVMCHAN_E_DEMO');
    // The guest powers off after run.sh; give it a moment, cleanup kills it otherwise.
    await Promise.race([qemuExited, new Promise((r) => setTimeout(r, 10_000).unref())]);
  } catch (e) {
    if (qemuStderrText.trim() !== '') err.write(`--- QEMU stderr\n${qemuStderrText.trim()}\n`);
    const tail = consoleText.split('\n').slice(-30).join('\n');
    if (tail.trim() !== '') err.write(`--- guest console (last lines)\n${tail}\n`);
    try {
      const log = fs.readFileSync(hostLog, 'utf8').trim().split('\n').slice(-15).join('\n');
      if (log !== '') err.write(`--- host kvmchand log (last lines)\n${log}\n`);
    } catch {
      // no log
    }
    throw e;
  } finally {
    await cleanup();
    process.removeListener('SIGINT', onSignal);
    process.removeListener('SIGTERM', onSignal);
  }
}
