/**
 * One value per key in every log line (docs/operations.md, "Logs"). pino writes a child's
 * bindings and a call's fields side by side, so a key bound twice (a component's child of
 * another component's logger) or bound and logged again came out twice in one JSON line, and
 * pino-pretty or jq showed only one of them — often the wrong one. Here a key already bound
 * with the same value is left out; one with a different value is written as `sub<Key>`
 * (`subComponent`, `subDomain`) so both stay visible.
 */
import type { Logger, LoggerOptions } from 'pino';

/** Keys pino writes itself on every line. */
const RESERVED = new Set(['level', 'time', 'pid', 'hostname', 'msg']);

const boundCache = new WeakMap<Logger, Record<string, unknown>>();

function bound(log: Logger): Record<string, unknown> {
  let b = boundCache.get(log);
  if (b === undefined) {
    b = log.bindings();
    boundCache.set(log, b);
  }
  return b;
}

function sub(key: string): string {
  return `sub${key[0]!.toUpperCase()}${key.slice(1)}`;
}

/** `fields` without the keys `log` already carries with the same value; clashes renamed. */
export function distinctFields(log: Logger, fields: Record<string, unknown>): Record<string, unknown> {
  const b = bound(log);
  const clash = (k: string): boolean => RESERVED.has(k) || Object.hasOwn(b, k);
  if (!Object.keys(fields).some(clash)) return fields;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(fields)) {
    if (!clash(k)) out[k] = v;
    else if (RESERVED.has(k) || !Object.is(b[k], v)) out[sub(k)] = v;
  }
  return out;
}

/**
 * Makes `child()` of `log` and of all its descendants (pino creates a child with
 * Object.create(parent), so they inherit this method) leave out or rename keys the parent is
 * already bound to. Components pass their logger on to others (pools to their ivshmem servers,
 * a VMM backend to its control devices): each adds its `component` without knowing the parent's.
 */
export function distinctChildren(log: Logger): Logger {
  // pino's own child(), called with the descendant as `this` (it only reads `this`).
  // eslint-disable-next-line @typescript-eslint/unbound-method
  const child = log.child;
  const children: WeakRef<Logger>[] = [];
  const wrapped = function (this: Logger, bindings: Record<string, unknown>, options?: object) {
    const c = child.call(this, distinctFields(this, bindings), options);
    if (children.length >= 64 && children.length % 64 === 0) prune(children);
    children.push(new WeakRef(c as unknown as Logger));
    return c;
  };
  log.child = wrapped as unknown as Logger['child'];
  descendants.set(log, children);
  return log;
}

const descendants = new WeakMap<Logger, WeakRef<Logger>[]>();

function prune(refs: WeakRef<Logger>[]): void {
  const live = refs.filter((r) => r.deref() !== undefined);
  refs.splice(0, refs.length, ...live);
}

/**
 * Sets the level of `log` and of every child made from it so far (pino copies the level into
 * a child when it is made): what a configuration reload needs.
 */
export function setLevelEverywhere(log: Logger, level: string): void {
  log.level = level;
  const refs = descendants.get(log) ?? [];
  prune(refs);
  for (const r of refs) {
    const c = r.deref();
    if (c !== undefined) c.level = level;
  }
}

/**
 * pino options for loggers whose lines operators read: level labels instead of numbers, and
 * a call's fields deduplicated against the logger's bindings (an Error argument is left as is).
 */
export const distinctLogOptions: Pick<LoggerOptions, 'formatters' | 'hooks'> = {
  formatters: { level: (label) => ({ level: label }) },
  hooks: {
    logMethod(args, method) {
      const first: unknown = args[0];
      if (typeof first === 'object' && first !== null && !(first instanceof Error) && !Array.isArray(first)) {
        args[0] = distinctFields(this, first as Record<string, unknown>);
      }
      method.apply(this, args);
    },
  },
};
