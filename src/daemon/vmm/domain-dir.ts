/**
 * Per-guest device directories: `<runtimeDir>/domains/<id>/` holds the sockets of
 * every ivshmem device that guest attaches to (control.sock, pool-<n>.sock). A
 * socket's directory names its guest: the path QEMU (or a simulated guest) was
 * given is how the host knows who connected (architecture.md rule 4), so these
 * directories are private to the daemon (0700) and never shared between guests.
 */
import fs from 'node:fs';
import path from 'node:path';
import { KvmchanError } from '../../errors.js';

export const DOMAINS_DIR = 'domains';
export const CONTROL_SOCKET = 'control.sock';

export function domainsRoot(runtimeDir: string): string {
  return path.join(runtimeDir, DOMAINS_DIR);
}

export function domainDir(runtimeDir: string, domain: number): string {
  return path.join(domainsRoot(runtimeDir), String(domain));
}

export function poolSocketName(poolId: number): string {
  return `pool-${poolId}.sock`;
}

/** Mode of a domain directory shared with its QEMU's group (see above). */
export const SHARED_DIR_MODE = 0o2710;

/** Create (or take over) a directory: a real directory, ours, mode `mode` (or 02710, shared). */
function ensurePrivateDir(dir: string, mode = 0o700): void {
  try {
    fs.mkdirSync(dir, { mode });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  }
  const st = fs.lstatSync(dir);
  if (!st.isDirectory()) {
    throw new KvmchanError(`${dir} exists and is not a directory`, 'KVMCHAN_E_RUNTIME_DIR');
  }
  const uid = process.getuid?.();
  if (uid !== undefined && st.uid !== uid) {
    throw new KvmchanError(`${dir} belongs to uid ${st.uid}, not to us (${uid})`, 'KVMCHAN_E_RUNTIME_DIR');
  }
  // A directory left by an earlier daemon may have another mode; sockets in it are
  // replaced when stale (src/ivshmem/server.ts). A shared one stays shared.
  const now = st.mode & 0o7777;
  if (now !== mode && now !== SHARED_DIR_MODE) fs.chmodSync(dir, mode);
}

/** `<runtimeDir>/domains/<id>/`, created 0700 when missing. Returns its path. */
export function ensureDomainDir(runtimeDir: string, domain: number): string {
  fs.mkdirSync(runtimeDir, { recursive: true, mode: 0o755 });
  ensurePrivateDir(domainsRoot(runtimeDir), 0o711);
  const dir = domainDir(runtimeDir, domain);
  ensurePrivateDir(dir);
  return dir;
}

/**
 * Give group `gid` (the group QEMU runs as) the right to connect to `domain`'s sockets, or
 * take it back (`gid` null: 0700 again). The group must hold nobody but QEMU's user — libvirt's
 * default `libvirt-qemu` group is such a group. Needs root, or membership of `gid`.
 */
export function shareDomainDir(runtimeDir: string, domain: number, gid: number | null): string {
  const dir = ensureDomainDir(runtimeDir, domain);
  if (gid === null) {
    fs.chmodSync(dir, 0o700);
    return dir;
  }
  try {
    fs.chownSync(dir, -1, gid);
  } catch (err) {
    throw new KvmchanError(
      `cannot give group ${gid} (QEMU's) access to ${dir}: ${(err as Error).message}; kvmchand must run as root or be a member of that group`,
      'KVMCHAN_E_RUNTIME_DIR',
    );
  }
  fs.chmodSync(dir, SHARED_DIR_MODE);
  return dir;
}

/** Remove a domain directory if nothing is left in it (sockets are removed by their devices). */
export function removeDomainDirIfEmpty(runtimeDir: string, domain: number): void {
  try {
    fs.rmdirSync(domainDir(runtimeDir, domain));
  } catch {
    // Not empty (another component still has a socket there) or already gone.
  }
}

/** Remove `<runtimeDir>/domains/` if no domain directory is left in it (daemon shutdown). */
export function removeDomainsRootIfEmpty(runtimeDir: string): void {
  try {
    fs.rmdirSync(domainsRoot(runtimeDir));
  } catch {
    // Still in use by another component, or never created.
  }
}
