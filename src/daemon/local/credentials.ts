/**
 * Who a local peer is (docs/security.md, "Local socket"). Node has no getgrnam or peer group list,
 * so both come from the system files the kernel and libc use.
 */
import fs from 'node:fs';
import type { PeerCred } from '../../native.js';

/** gid of `name` from /etc/group, or undefined if there is no such group. */
export function groupId(name: string): number | undefined {
  try {
    for (const line of fs.readFileSync('/etc/group', 'utf8').split('\n')) {
      const [gname, , gid] = line.split(':');
      if (gname === name && gid !== undefined && /^\d+$/.test(gid)) return Number(gid);
    }
  } catch {
    // no /etc/group: no such group
  }
  return undefined;
}

/** Supplementary groups of a live process (/proc/<pid>/status "Groups:"). */
function groupsOf(pid: number): number[] {
  try {
    const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
    const line = status.split('\n').find((l) => l.startsWith('Groups:'));
    return line === undefined ? [] : line.slice(7).trim().split(/\s+/).filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

/** root, or a member of the daemon's group: may inspect every vchan. */
export function isPrivileged(cred: PeerCred, groupGid: number | undefined): boolean {
  if (cred.uid === 0) return true;
  if (groupGid === undefined) return false;
  return cred.gid === groupGid || groupsOf(cred.pid).includes(groupGid);
}
