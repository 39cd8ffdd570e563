/**
 * Error classes (docs/architecture.md "Conventions"; modelled on undici's core/errors): one base class,
 * one subclass per failure, each with a stable `code` that callers switch on.
 * `errno`/`syscall` are set when a system call failed underneath.
 */

/**
 * Every `code` a KvmchanError can carry: a literal union, so a `switch (err.code)` with a
 * misspelt case does not compile. Three families are open-ended by nature: a daemon's refusal
 * names its errno (`KVMCHAN_E_DAEMON_EEXIST`), a failed system call its errno code
 * (`KVMCHAN_E_SYS_ENOENT`), and the daemon's own registry refusals (`KVMCHAN_E_EEXIST`, never
 * seen by clients, which get the `DAEMON_` form).
 */
export type KvmchanErrorCode =
  | 'KVMCHAN_E_ABORTED'
  | 'KVMCHAN_E_ALREADY_RUNNING'
  | 'KVMCHAN_E_BAD_DIRECTION'
  | 'KVMCHAN_E_BAD_ENUM'
  | 'KVMCHAN_E_BAD_FLAGS'
  | 'KVMCHAN_E_BAD_LENGTH'
  | 'KVMCHAN_E_BAD_PADDING'
  | 'KVMCHAN_E_BAD_RANGE'
  | 'KVMCHAN_E_BAD_REPLY_ERR'
  | 'KVMCHAN_E_BAD_SEQ'
  | 'KVMCHAN_E_BAD_STRING'
  | 'KVMCHAN_E_CLOSED'
  | 'KVMCHAN_E_CONTROL'
  | 'KVMCHAN_E_CONTROL_TRUNCATED'
  | 'KVMCHAN_E_CORRUPT'
  | 'KVMCHAN_E_DAEMON_START'
  | 'KVMCHAN_E_DEMO'
  | 'KVMCHAN_E_DEVICE_REMOVED'
  | 'KVMCHAN_E_ENCODE'
  | 'KVMCHAN_E_FDS_NOT_ALLOWED'
  | 'KVMCHAN_E_FRAME_OVERSIZE'
  | 'KVMCHAN_E_FRAME_SHORT'
  | 'KVMCHAN_E_FRAME_SIZE_MISMATCH'
  | 'KVMCHAN_E_FRAME_TRUNCATED'
  | 'KVMCHAN_E_INVALID_ARG'
  | 'KVMCHAN_E_IVSHMEM_FULL'
  | 'KVMCHAN_E_IVSHMEM_PATH'
  | 'KVMCHAN_E_IVSHMEM_PROTOCOL'
  | 'KVMCHAN_E_LIBVIRT_AUTH'
  | 'KVMCHAN_E_LIBVIRT_BUSY'
  | 'KVMCHAN_E_LIBVIRT_CALL'
  | 'KVMCHAN_E_LIBVIRT_CLOSED'
  | 'KVMCHAN_E_LIBVIRT_CONNECT'
  | 'KVMCHAN_E_LIBVIRT_PROTOCOL'
  | 'KVMCHAN_E_MISSING_FDS'
  | 'KVMCHAN_E_MSGSIZE'
  | 'KVMCHAN_E_NOT_ALLOWED'
  | 'KVMCHAN_E_NO_ACCESS'
  | 'KVMCHAN_E_NO_DAEMON'
  | 'KVMCHAN_E_NO_DEVICE'
  | 'KVMCHAN_E_NO_HOST'
  | 'KVMCHAN_E_NO_IOMMU'
  | 'KVMCHAN_E_PROTOCOL'
  | 'KVMCHAN_E_PROXY'
  | 'KVMCHAN_E_QMP_BUSY'
  | 'KVMCHAN_E_QMP_CLOSED'
  | 'KVMCHAN_E_QMP_COMMAND'
  | 'KVMCHAN_E_QMP_CONNECT'
  | 'KVMCHAN_E_QMP_PROTOCOL'
  | 'KVMCHAN_E_REPLY_ID_MISMATCH'
  | 'KVMCHAN_E_RUNTIME_DIR'
  | 'KVMCHAN_E_RUNTIME_DIR_UNSAFE'
  | 'KVMCHAN_E_SLOW_PEER'
  | 'KVMCHAN_E_TIMEOUT'
  | 'KVMCHAN_E_TRUNCATED'
  | 'KVMCHAN_E_UNDELIVERED'
  | 'KVMCHAN_E_UNEXPECTED_REPLY'
  | 'KVMCHAN_E_UNKNOWN'
  | 'KVMCHAN_E_UNKNOWN_DOMAIN'
  | 'KVMCHAN_E_UNKNOWN_EVENT'
  | 'KVMCHAN_E_UNKNOWN_ID'
  | 'KVMCHAN_E_UNTRUSTED_DAEMON'
  | 'KVMCHAN_E_USAGE'
  | 'KVMCHAN_E_VFIO'
  | 'KVMCHAN_E_VMM'
  | 'KVMCHAN_E_VMM_CONFIG'
  | 'KVMCHAN_E_VMM_EXISTS'
  | 'KVMCHAN_E_VMM_GONE'
  | 'KVMCHAN_E_VMM_NO_PORT'
  | 'KVMCHAN_E_VMM_PLUG'
  | 'KVMCHAN_E_VMM_STALE'
  | 'KVMCHAN_E_VMM_UNKNOWN'
  | 'KVMCHAN_E_VMM_UNSUPPORTED'
  | 'KVMCHAN_E_WRONG_TRANSPORT'
  | `KVMCHAN_E_DAEMON_${string}`
  | `KVMCHAN_E_SYS_${string}`
  | `KVMCHAN_E_E${string}`;

export class KvmchanError extends Error {
  readonly code: KvmchanErrorCode;
  errno?: number;
  syscall?: string;

  constructor(message: string, code: KvmchanErrorCode = 'KVMCHAN_E_UNKNOWN', options?: ErrorOptions) {
    super(message, options);
    this.name = 'KvmchanError';
    this.code = code;
  }
}

/** The peer wrote values into shared memory that break the ring invariants (ring-protocol.md §6). */
export class RingCorruptError extends KvmchanError {
  constructor(message = 'ring corrupted by peer') {
    super(message, 'KVMCHAN_E_CORRUPT');
    this.name = 'RingCorruptError';
  }
}

/** The operation needs an open peer, and the peer has closed (or died). */
export class ClosedError extends KvmchanError {
  constructor(message = 'vchan closed by peer') {
    super(message, 'KVMCHAN_E_CLOSED');
    this.name = 'ClosedError';
  }
}

/** A packet larger than the ring can never be sent or received whole. */
export class MessageTooLargeError extends KvmchanError {
  constructor(size: number, ringSize: number) {
    super(`packet of ${size} bytes exceeds ring size ${ringSize}`, 'KVMCHAN_E_MSGSIZE');
    this.name = 'MessageTooLargeError';
  }
}

export class InvalidArgumentError extends KvmchanError {
  constructor(message: string) {
    super(message, 'KVMCHAN_E_INVALID_ARG');
    this.name = 'InvalidArgumentError';
  }
}

export class TimeoutError extends KvmchanError {
  constructor(message = 'operation timed out') {
    super(message, 'KVMCHAN_E_TIMEOUT');
    this.name = 'TimeoutError';
  }
}

export class AbortError extends KvmchanError {
  constructor(message = 'operation aborted', options?: ErrorOptions) {
    super(message, 'KVMCHAN_E_ABORTED', options);
    this.name = 'AbortError';
  }
}

/** Wire-protocol framing or decoding failure (wire-protocol.md). Closes the connection. */
export class ProtocolError extends KvmchanError {
  constructor(message: string, code: KvmchanErrorCode = 'KVMCHAN_E_PROTOCOL') {
    super(message, code);
    this.name = 'ProtocolError';
  }
}

/** The daemon answered a request with a negative errno (wire-protocol.md, replies). */
export class DaemonError extends KvmchanError {
  constructor(message: string, errnoName: string, errno: number) {
    super(message, `KVMCHAN_E_DAEMON_${errnoName}`);
    this.name = 'DaemonError';
    this.errno = errno;
  }
}

/** The local daemon cannot be reached or went away. */
/** No domain of that name is known to the daemon (a name given where a domain id may be). */
export class UnknownDomainError extends KvmchanError {
  constructor(name: string) {
    super(`no domain named ${JSON.stringify(name)} is known to kvmchand (kvmchan status lists them)`, 'KVMCHAN_E_UNKNOWN_DOMAIN');
    this.name = 'UnknownDomainError';
  }
}

export class DaemonUnavailableError extends KvmchanError {
  constructor(message: string, options?: ErrorOptions) {
    super(message, 'KVMCHAN_E_NO_DAEMON', options);
    this.name = 'DaemonUnavailableError';
  }
}

/**
 * The daemon's socket exists but this user may not connect to it (EACCES): access goes with
 * the socket's group (docs/security.md "Local socket"), so the fix is joining that group.
 */
export class DaemonAccessError extends KvmchanError {
  constructor(message: string, options?: ErrorOptions) {
    super(message, 'KVMCHAN_E_NO_ACCESS', options);
    this.name = 'DaemonAccessError';
  }
}

/**
 * The socket answered, but not by a daemon this process may trust: it runs as another
 * non-root user, who could read every byte of our vchans (docs/security.md, "Trust anchors").
 */
export class UntrustedDaemonError extends KvmchanError {
  constructor(message: string) {
    super(message, 'KVMCHAN_E_UNTRUSTED_DAEMON');
    this.name = 'UntrustedDaemonError';
  }
}

/** Wrap an addon (errno-style) error into a KvmchanError, keeping errno and syscall. */
export function fromSystemError(err: unknown, context: string): KvmchanError {
  const e = err as { code?: string; errno?: number; syscall?: string; message?: string };
  const wrapped = new KvmchanError(`${context}: ${e.message ?? String(err)}`, `KVMCHAN_E_SYS_${e.code ?? 'UNKNOWN'}`, {
    cause: err,
  });
  if (typeof e.errno === 'number') wrapped.errno = e.errno;
  if (typeof e.syscall === 'string') wrapped.syscall = e.syscall;
  return wrapped;
}

/**
 * QMP (QEMU's monitor protocol, docs/vms-qmp.md) failed: `KVMCHAN_E_QMP_PROTOCOL` (QEMU sent
 * something that is not QMP: bad JSON, an over-long line, a malformed reply),
 * `KVMCHAN_E_QMP_CLOSED` (the monitor connection ended), `KVMCHAN_E_QMP_CONNECT` (no monitor
 * at that path, or no greeting in time).
 */
export class QmpError extends KvmchanError {
  constructor(message: string, code: KvmchanErrorCode = 'KVMCHAN_E_QMP_PROTOCOL', options?: ErrorOptions) {
    super(message, code, options);
    this.name = 'QmpError';
  }
}

/** QEMU refused a QMP command; `qmpClass` is QEMU's error class (e.g. `GenericError`). */
export class QmpCommandError extends KvmchanError {
  readonly qmpClass: string;
  readonly command: string;
  constructor(command: string, qmpClass: string, desc: string) {
    super(`QMP ${command}: ${qmpClass}: ${desc}`, 'KVMCHAN_E_QMP_COMMAND');
    this.name = 'QmpCommandError';
    this.qmpClass = qmpClass;
    this.command = command;
  }
}

/**
 * A VMM backend cannot serve a VM as asked. Codes: `KVMCHAN_E_VMM_NO_PORT` (no free PCI slot
 * fit for the device), `KVMCHAN_E_VMM_STALE` (the VM carries kvmchan devices of an earlier
 * daemon), `KVMCHAN_E_VMM_EXISTS`, `KVMCHAN_E_VMM_UNKNOWN`, `KVMCHAN_E_VMM_UNSUPPORTED`.
 */
export class VmmError extends KvmchanError {
  constructor(message: string, code: KvmchanErrorCode) {
    super(message, code);
    this.name = 'VmmError';
  }
}
