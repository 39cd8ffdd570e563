/**
 * Readiness for the service manager (docs/operations.md, "systemd"): with Type=notify, systemd
 * passes $NOTIFY_SOCKET, an AF_UNIX datagram socket, and considers the daemon started once it
 * reads READY=1 there — so units ordered after kvmchand (VMs) start only once its sockets exist.
 */
import { native } from '../native.js';

/** Sends `fields` (KEY=value lines) if the service manager asked for them; false if it did not. */
export function sdNotify(fields: Record<string, string | number>): boolean {
  const socket = process.env['NOTIFY_SOCKET'];
  if (socket === undefined || socket === '') return false;
  const text = Object.entries(fields)
    .map(([k, v]) => `${k}=${String(v).replace(/\n/g, ' ')}\n`)
    .join('');
  native.sendDatagram(socket, Buffer.from(text));
  return true;
}
