/** Structured logs (docs/architecture.md, "Conventions"): pino JSON lines on stdout; one line per event, errors logged once. */
import { pino, type Logger } from 'pino';
import { distinctChildren, distinctLogOptions } from '../log-fields.js';

export function createLogger(level: string, name = 'kvmchand'): Logger {
  return distinctChildren(pino({ name, level, base: { pid: process.pid }, ...distinctLogOptions }));
}
