/**
 * The only importer of the native addon (docs/architecture.md, "The native addon"): a typed facade over
 * `native/build/Release/kvmchan_native.node`, checked once at load.
 *
 * Every function throws, on a failing syscall, an Error carrying
 * `code` (errno name, e.g. 'EAGAIN'), `errno` (positive number) and `syscall`.
 * "Would block" results are returned as `null` instead of thrown where the
 * caller routinely polls (accept, recvmsg, eventfdRead), because exceptions on
 * the hot path are slow.
 */
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import fs from 'node:fs';

/** Poll event bits (uv_poll_event). */
export const READABLE = 1;
export const WRITABLE = 2;
export const DISCONNECT = 4;

export const EFD_NONBLOCK = 0o4000;
export const EFD_SEMAPHORE = 1;

export interface PeerCred {
  pid: number;
  uid: number;
  gid: number;
}

export interface RecvResult {
  /** The message bytes (a fresh Buffer). Length 0 with `eof` set means the peer closed. */
  data: Buffer;
  /** File descriptors received (already close-on-exec). The caller owns them. */
  fds: number[];
  /** MSG_TRUNC: the datagram was longer than maxLen and was cut. */
  truncated: boolean;
  /** MSG_CTRUNC: more fds were sent than maxFds; the extra ones were closed by the kernel. */
  fdsTruncated: boolean;
  /** Orderly shutdown by the peer (recvmsg returned 0 on a SEQPACKET/STREAM socket). */
  eof: boolean;
}

export type PollCallback = (err: Error | null, events: number) => void;

export interface Poller {
  /** Start (or change) watching for `events` (READABLE | WRITABLE | DISCONNECT). */
  start(events: number): void;
  stop(): void;
  /** Stop and release the uv handle; the fd is NOT closed. Idempotent. */
  close(): void;
  ref(): void;
  unref(): void;
}

/** 'dgram' sockets are only bound by listenUnix (nothing to accept): read them with recvmsg. */
export type SocketType = 'stream' | 'seqpacket' | 'dgram';

export interface NativeBinding {
  /** memfd_create(MFD_CLOEXEC|MFD_ALLOW_SEALING) + ftruncate(size); with `seal`, adds
   *  F_SEAL_SHRINK|F_SEAL_GROW|F_SEAL_SEAL so the size can never change (a truncated
   *  memfd crashes QEMU, docs/ivshmem.md §5). */
  memfdCreate(name: string, size: number, seal: boolean): number;
  /** fstat(fd).st_size */
  fdSize(fd: number): number;
  /** setrlimit(RLIMIT_NOFILE) soft = hard; returns the soft limit now in force. */
  raiseNofileLimit(): number;
  /** fallocate(PUNCH_HOLE|KEEP_SIZE): the range reads as zeros and its pages are freed. */
  punchHole(fd: number, offset: number, length: number): void;
  /** mmap(MAP_SHARED) of [offset, offset+length) of fd; offset must be page aligned.
   *  Returns a non-shared external ArrayBuffer (why Atomics on it are sound: docs/ring-protocol.md §10). */
  mmap(fd: number, length: number, offset: number, writable: boolean): ArrayBuffer;
  /** munmap + detach. Idempotent; the GC finalizer never unmaps twice. */
  munmap(buffer: ArrayBuffer): void;
  /** Number of live mappings made by this addon (for leak tests). */
  mappingCount(): number;

  eventfd(initval: number, flags: number): number;
  /** read(2) of an eventfd: the counter, or null when it would block (EAGAIN). */
  eventfdRead(fd: number): number | null;
  /** write(2) of an eventfd; EAGAIN (counter overflow) is ignored — the peer is awake anyway. */
  eventfdWrite(fd: number, value: number): void;

  close(fd: number): void;
  dup(fd: number): number;
  setNonblocking(fd: number, nonblocking: boolean): void;

  /** socketpair(AF_UNIX, type|SOCK_CLOEXEC|SOCK_NONBLOCK) */
  socketpair(type: SocketType): [number, number];
  /** socket + bind + listen on a filesystem path (non-blocking, cloexec). `mode` is chmod'ed
   *  on the path after bind. Throws EADDRINUSE if the path exists. */
  listenUnix(socketPath: string, type: SocketType, backlog: number, mode: number): number;
  /** accept4(SOCK_CLOEXEC|SOCK_NONBLOCK); null when no connection is pending. */
  accept(fd: number): number | null;
  /** socket + connect (cloexec; non-blocking after connect). Throws ENOENT/ECONNREFUSED. */
  connectUnix(socketPath: string, type: SocketType): number;
  shutdown(fd: number): void;
  /** sendmsg with SCM_RIGHTS (MSG_NOSIGNAL). Returns bytes sent; throws EAGAIN/EPIPE/... */
  sendmsg(fd: number, data: Uint8Array, fds: readonly number[]): number;
  /** recvmsg with MSG_CMSG_CLOEXEC; null when it would block. */
  recvmsg(fd: number, maxLen: number, maxFds: number): RecvResult | null;
  /** SO_PEERCRED */
  peerCred(fd: number): PeerCred;
  /** SO_PEERGROUPS: the peer's supplementary groups, recorded by the kernel at connect(). */
  peerGroups(fd: number): number[];
  /** A group's gid through NSS (getgrnam_r), or null when there is no such group. */
  groupId(name: string): number | null;
  /** One AF_UNIX datagram to `socketPath` ('@' = abstract namespace), `fds` as SCM_RIGHTS; the bytes sent.
   *  Never blocks: a receiver whose queue is full throws EAGAIN. */
  sendDatagram(socketPath: string, data: Uint8Array, fds?: readonly number[]): number;

  /** ioctl with an integer argument or a buffer (in/out). Returns the ioctl's result. */
  ioctl(fd: number, request: number, arg: number | Uint8Array): number;
  pread(fd: number, buffer: Uint8Array, offset: bigint | number): number;
  pwrite(fd: number, buffer: Uint8Array, offset: bigint | number): number;

  /**
   * Copy `length` bytes from src[srcOffset..] to dst[dstOffset..] (no overlap). Used for
   * large ring copies: glibc's memcpy (so TypedArray#set) hits a ~13x `rep movsb`
   * slowdown on AMD Zen for some relative alignments (native/src/copy.c).
   */
  copyBytes: (dst: Uint8Array, dstOffset: number, src: Uint8Array, srcOffset: number, length: number) => void;

  /** A uv_poll_t watcher on the Node loop. The callback runs on the loop thread. */
  Poller: new (fd: number, callback: PollCallback) => Poller;
}

function packageRoot(): string {
  // dist/src/native.js and src/native.ts both sit two or one levels below the root;
  // walk up to the directory holding package.json.
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (fs.existsSync(path.join(dir, 'package.json'))) return dir;
    const parent = path.dirname(dir);
    if (parent === dir) throw new Error('kvmchan: package root not found');
    dir = parent;
  }
}

const EXPECTED: readonly (keyof NativeBinding)[] = [
  'memfdCreate',
  'fdSize',
  'raiseNofileLimit',
  'punchHole',
  'mmap',
  'munmap',
  'mappingCount',
  'eventfd',
  'eventfdRead',
  'eventfdWrite',
  'close',
  'dup',
  'setNonblocking',
  'socketpair',
  'listenUnix',
  'accept',
  'connectUnix',
  'shutdown',
  'sendmsg',
  'recvmsg',
  'peerCred',
  'peerGroups',
  'groupId',
  'sendDatagram',
  'ioctl',
  'pread',
  'pwrite',
  'copyBytes',
  'Poller',
];

function load(): NativeBinding {
  const file = path.join(packageRoot(), 'native', 'build', 'Release', 'kvmchan_native.node');
  const require = createRequire(import.meta.url);
  let binding: Partial<NativeBinding>;
  try {
    binding = require(file) as Partial<NativeBinding>;
  } catch (err) {
    throw new Error(`kvmchan: cannot load the native addon at ${file}; run \`npm run build:native\` (${String(err)})`, { cause: err });
  }
  const missing = EXPECTED.filter((name) => typeof binding[name] !== 'function');
  if (missing.length > 0) {
    throw new Error(`kvmchan: native addon is stale (missing ${missing.join(', ')}); run \`npm run build:native\``);
  }
  return binding as NativeBinding;
}

export const native: NativeBinding = load();
