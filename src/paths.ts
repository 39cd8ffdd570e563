/**
 * Where a daemon's files live: shared by the daemon, the client API and the CLI, so none of
 * them has to load another's modules to find the socket (docs/architecture.md, "Layers").
 */
import os from 'node:os';
import path from 'node:path';

export function defaultRuntimeDir(): string {
  const env = process.env['KVMCHAN_RUNTIME_DIR'];
  if (env !== undefined && env !== '') return env;
  const uid = process.getuid?.() ?? 0;
  if (uid === 0) return '/run/kvmchand';
  const xdg = process.env['XDG_RUNTIME_DIR'];
  if (xdg !== undefined && xdg !== '') return path.join(xdg, 'kvmchand');
  return path.join(os.tmpdir(), `kvmchand-${uid}`);
}

export const SOCKET_NAME = 'kvmchand.sock';
export const PID_NAME = 'kvmchand.pid';

export function socketPath(runtimeDir: string): string {
  return path.join(runtimeDir, SOCKET_NAME);
}
