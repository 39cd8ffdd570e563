/**
 * What kind of object a received fd really is. A server is untrusted (docs/ivshmem.md §5):
 * an "eventfd" that is in fact a pipe or a socket could block us on write, and a "shm fd"
 * that is a FIFO or a device could do worse on mmap. /proc/self/fd tells us for sure.
 */
import fs from 'node:fs';

export function fdTarget(fd: number): string | null {
  try {
    return fs.readlinkSync(`/proc/self/fd/${fd}`);
  } catch {
    return null;
  }
}

/** Without procfs (an unusual chroot) nothing can be verified; callers still make the fd
 *  non-blocking, so a wrong kind of fd can at worst swallow our kicks. */
const haveProcfs = fs.existsSync('/proc/self/fd');

export function isEventfd(fd: number): boolean {
  if (!haveProcfs) return true;
  return fdTarget(fd) === 'anon_inode:[eventfd]';
}

/** A regular file or memfd: its size, or null if it is anything else. */
export function regularFileSize(fd: number): number | null {
  try {
    const st = fs.fstatSync(fd);
    return st.isFile() ? st.size : null;
  } catch {
    return null;
  }
}
