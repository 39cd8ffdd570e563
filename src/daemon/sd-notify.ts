/**
 * Readiness for the service manager (docs/operations.md, "systemd"): with Type=notify, systemd
 * passes $NOTIFY_SOCKET, an AF_UNIX datagram socket, and considers the daemon started once it
 * reads READY=1 there — so units ordered after kvmchand (VMs) start only once its sockets exist.
 * Sent through a NotifyQueue (notify-queue.ts): a manager that is not reading delays READY=1 or
 * STOPPING=1, never the daemon.
 */
import type { Logger } from 'pino';
import { NotifyQueue } from './notify-queue.js';

/** One queue per process and socket: READY=1 is never overtaken by a later STATUS=. */
let current: { socket: string; queue: NotifyQueue } | undefined;

/**
 * Sends `fields` (KEY=value lines) if the service manager asked for them; false if it did not.
 * Never blocks and never throws for the socket's sake: failures are logged on `log` (the first
 * call's logger is kept).
 */
export function sdNotify(fields: Record<string, string | number>, log?: Logger): boolean {
  const socket = process.env['NOTIFY_SOCKET'];
  if (socket === undefined || socket === '') return false;
  const text = Object.entries(fields)
    .map(([k, v]) => `${k}=${String(v).replace(/\n/g, ' ')}\n`)
    .join('');
  if (current?.socket !== socket) {
    current?.queue.close();
    current = { socket, queue: new NotifyQueue({ socket, log: log?.child({ component: 'sd-notify' }) }) };
  }
  current.queue.send(text);
  return true;
}
