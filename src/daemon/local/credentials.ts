/**
 * Who a local peer is, and whether it may see everything (docs/security.md, "Local socket").
 * Every fact comes from what the kernel recorded when the peer connected (SO_PEERCRED,
 * SO_PEERGROUPS) and from NSS — never from /proc/<pid>, whose pid may already belong to
 * another process by the time we read it.
 */
import { native, type PeerCred } from '../../native.js';

/** gid of `name` through NSS (getgrnam_r), or undefined if there is no such group. */
export function groupId(name: string): number | undefined {
  return native.groupId(name) ?? undefined;
}

/**
 * root, or a member of the configured admin group (`adminGroup`, none by default): may list
 * every vchan with its pids. Membership of the socket's group (`socketGroup`) only grants
 * access to the socket, not privilege.
 */
export function isPrivileged(cred: PeerCred, groups: readonly number[], adminGid: number | undefined): boolean {
  if (cred.uid === 0) return true;
  if (adminGid === undefined) return false;
  return cred.gid === adminGid || groups.includes(adminGid);
}
