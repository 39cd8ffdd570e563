/**
 * Field descriptors: the vocabulary the message table (messages.ts) is written in. A struct is
 * an ordered list of entries — named fields, zero padding, and list counts — so one
 * description drives size, encoding, decoding and validation (wire-protocol.md §1, §6).
 */
import { isUtf8 } from 'node:buffer';
import type { BufferReader } from './buffer-reader.js';
import type { BufferWriter } from './buffer-writer.js';
import { EncodeError, PayloadError, WireErrorCode } from './errors.js';

/** What a field is, for diagnostics, documentation and test generators. */
export type FieldInfo =
  | { readonly kind: 'uint'; readonly bytes: 1 | 2 | 4 | 8 }
  | { readonly kind: 's32'; readonly bytes: 4 }
  | { readonly kind: 'enum'; readonly bytes: 1 | 4; readonly values: readonly number[] }
  | { readonly kind: 'range'; readonly bytes: 1; readonly min: number; readonly max: number }
  | { readonly kind: 'flags'; readonly bytes: 4; readonly mask: number }
  | { readonly kind: 'string'; readonly bytes: number }
  | { readonly kind: 'array'; readonly entry: Struct<unknown> };

export interface Field<T> {
  readonly info: FieldInfo;
  /** Encoded size of `v` in bytes. */
  size(v: T): number;
  /** `what` names the field in error messages; `count` is only used by arrays. */
  read(r: BufferReader, what: string, count: number): T;
  write(w: BufferWriter, v: T, what: string): void;
}

/** Zero bytes: sent as 0, and a non-zero byte on decode is BAD_PADDING. */
export interface Pad {
  readonly kind: 'pad';
  readonly bytes: 1 | 2 | 4;
}

/** A u32 holding the length of the named array entry that follows it in the struct. */
export interface CountOf<K extends string> {
  readonly kind: 'count';
  readonly target: K;
}

export type NamedEntry<K extends string, V> = readonly [name: K, field: Field<V>];

export type StructEntry<T> = { [K in keyof T & string]: NamedEntry<K, T[K]> }[keyof T & string] | Pad | CountOf<keyof T & string>;

/** A struct entry with the value type erased (what a Struct keeps at run time). */
export type AnyEntry = NamedEntry<string, unknown> | Pad | CountOf<string>;

export interface Struct<T> {
  readonly name: string;
  readonly entries: readonly AnyEntry[];
  /** Size with every array empty; the exact size when `hasArray` is false. */
  readonly fixedSize: number;
  readonly hasArray: boolean;
  size(v: T): number;
  read(r: BufferReader): T;
  write(w: BufferWriter, v: T): void;
}

/** A body with no fields: no property may be set. */
export type Empty = Record<string, never>;

// ---------------------------------------------------------------------------------------------
// Scalars

function uint(bytes: 1 | 2 | 4 | 8): Field<number> {
  return {
    info: { kind: 'uint', bytes },
    size: () => bytes,
    read(r) {
      switch (bytes) {
        case 1:
          return r.u8();
        case 2:
          return r.u16();
        case 4:
          return r.u32();
        case 8:
          return r.u64();
      }
    },
    write(w, v, what) {
      try {
        switch (bytes) {
          case 1:
            w.u8(v);
            break;
          case 2:
            w.u16(v);
            break;
          case 4:
            w.u32(v);
            break;
          case 8:
            w.u64(v);
            break;
        }
      } catch (e) {
        throw e instanceof EncodeError ? new EncodeError(`${what}: ${e.message}`) : e;
      }
    },
  };
}

export const u8: Field<number> = uint(1);
export const u16: Field<number> = uint(2);
export const u32: Field<number> = uint(4);
/** A u64 carried as a JS number: values above 2^53-1 are invalid on the wire (§1). */
export const u64: Field<number> = uint(8);

export const s32: Field<number> = {
  info: { kind: 's32', bytes: 4 },
  size: () => 4,
  read: (r) => r.s32(),
  write(w, v, what) {
    try {
      w.s32(v);
    } catch (e) {
      throw e instanceof EncodeError ? new EncodeError(`${what}: ${e.message}`) : e;
    }
  },
};

function readWidth(r: BufferReader, bytes: 1 | 4): number {
  return bytes === 1 ? r.u8() : r.u32();
}

function writeWidth(w: BufferWriter, bytes: 1 | 4, v: number): void {
  if (bytes === 1) w.u8(v);
  else w.u32(v);
}

/** A u8 or u32 that must be one of `values` (BAD_ENUM otherwise). */
export function enumOf<const V extends number>(bytes: 1 | 4, values: readonly V[]): Field<V> {
  const allowed = new Set<number>(values);
  return {
    info: { kind: 'enum', bytes, values },
    size: () => bytes,
    read(r, what) {
      const v = readWidth(r, bytes);
      if (!allowed.has(v)) throw new PayloadError(WireErrorCode.BAD_ENUM, `${what}: ${v} is not one of ${values.join(', ')}`);
      return v as V;
    },
    write(w, v, what) {
      if (!allowed.has(v)) throw new EncodeError(`${what}: ${String(v)} is not one of ${values.join(', ')}`);
      writeWidth(w, bytes, v);
    },
  };
}

/** A u8 that must lie in [min, max] (BAD_ENUM otherwise). */
export function rangeU8(min: number, max: number): Field<number> {
  return {
    info: { kind: 'range', bytes: 1, min, max },
    size: () => 1,
    read(r, what) {
      const v = r.u8();
      if (v < min || v > max) throw new PayloadError(WireErrorCode.BAD_ENUM, `${what}: ${v} is outside [${min}, ${max}]`);
      return v;
    },
    write(w, v, what) {
      if (!Number.isInteger(v) || v < min || v > max) throw new EncodeError(`${what}: ${String(v)} is outside [${min}, ${max}]`);
      w.u8(v);
    },
  };
}

/** A u32 of flag bits; bits outside `mask` are BAD_FLAGS (mask 0: the field must be 0). */
export function flags32(mask: number): Field<number> {
  return {
    info: { kind: 'flags', bytes: 4, mask },
    size: () => 4,
    read(r, what) {
      const v = r.u32();
      const bad = (v & ~mask) >>> 0;
      if (bad !== 0) throw new PayloadError(WireErrorCode.BAD_FLAGS, `${what}: undefined flag bits 0x${bad.toString(16)}`);
      return v;
    },
    write(w, v, what) {
      if (!Number.isInteger(v) || v < 0 || v > 0xffff_ffff || (v & ~mask) >>> 0 !== 0) {
        throw new EncodeError(`${what}: flags ${String(v)} outside mask 0x${mask.toString(16)}`);
      }
      w.u32(v);
    },
  };
}

/**
 * `bytes` bytes of UTF-8, NUL-terminated and NUL-padded (§1): at most bytes-1 bytes of text, at
 * least one NUL, every byte after the first NUL zero — so C can use it as a string in place.
 */
export function fixedString(bytes: number): Field<string> {
  return {
    info: { kind: 'string', bytes },
    size: () => bytes,
    read(r, what) {
      const raw = r.bytes(bytes);
      const nul = raw.indexOf(0);
      if (nul < 0) throw new PayloadError(WireErrorCode.BAD_STRING, `${what}: no NUL terminator in ${bytes} bytes`);
      for (let i = nul + 1; i < bytes; i++) {
        if (raw[i] !== 0) throw new PayloadError(WireErrorCode.BAD_STRING, `${what}: non-zero byte after the NUL terminator`);
      }
      const text = raw.subarray(0, nul);
      if (!isUtf8(text)) throw new PayloadError(WireErrorCode.BAD_STRING, `${what}: not valid UTF-8`);
      return text.toString('utf8');
    },
    write(w, v, what) {
      if (typeof v !== 'string') throw new EncodeError(`${what}: not a string`);
      const text = Buffer.from(v, 'utf8');
      if (text.includes(0)) throw new EncodeError(`${what}: contains a NUL character`);
      if (text.length > bytes - 1) throw new EncodeError(`${what}: ${text.length} UTF-8 bytes, at most ${bytes - 1} fit`);
      w.bytes(text).zero(bytes - text.length);
    },
  };
}

/**
 * A list of fixed-size structs whose length is given by a `countOf(name)` entry placed before
 * it in the same struct. The count is checked against the bytes present before any entry is
 * decoded, so a forged count cannot make the decoder allocate or loop.
 */
export function arrayOf<E>(entry: Struct<E>): Field<E[]> {
  if (entry.hasArray) throw new TypeError(`array entry ${entry.name} must be fixed-size`);
  return {
    info: { kind: 'array', entry },
    size: (v) => (Array.isArray(v) ? v.length * entry.fixedSize : 0),
    read(r, what, count) {
      r.need(count * entry.fixedSize, `${what} (${count} × ${entry.name})`);
      const out: E[] = new Array<E>(count);
      for (let i = 0; i < count; i++) out[i] = entry.read(r);
      return out;
    },
    write(w, v, what) {
      if (!Array.isArray(v)) throw new EncodeError(`${what}: not an array`);
      for (const e of v) entry.write(w, e);
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Struct entries that are not named fields

export const pad8: Pad = { kind: 'pad', bytes: 1 };
export const pad16: Pad = { kind: 'pad', bytes: 2 };
export const pad32: Pad = { kind: 'pad', bytes: 4 };

export function countOf<const K extends string>(target: K): CountOf<K> {
  return { kind: 'count', target };
}

// ---------------------------------------------------------------------------------------------
// Structs

type EntryNames<E extends readonly unknown[]> = {
  [I in keyof E]: E[I] extends readonly [infer K, unknown] ? K : never;
}[number];
type Missing<T, E extends readonly unknown[]> = string extends keyof T ? never : Exclude<keyof T, EntryNames<E>>;

function isNamed(e: AnyEntry): e is NamedEntry<string, unknown> {
  return Array.isArray(e);
}

/**
 * Defines the layout of `T`: `struct<T>('Name')([...entries])`. The compiler rejects a layout
 * that leaves a property of `T` out (a second argument naming the missing keys is demanded).
 */
export function struct<T extends object>(name: string) {
  return <const E extends readonly StructEntry<T>[]>(
    entries: E,
    // eslint-disable-next-line @typescript-eslint/no-unused-vars -- exists only for the compile-time completeness check
    ..._complete: [Missing<T, E>] extends [never] ? [] : [missing: Missing<T, E>]
  ): Struct<T> => makeStruct<T>(name, entries);
}

function makeStruct<T>(name: string, entries: readonly AnyEntry[]): Struct<T> {
  let fixedSize = 0;
  let hasArray = false;
  const counted = new Set<string>();
  for (const e of entries) {
    if (isNamed(e)) {
      const [key, field] = e;
      if (field.info.kind === 'array') {
        if (!counted.has(key)) throw new TypeError(`${name}.${key}: array without a preceding countOf('${key}')`);
        hasArray = true;
      } else {
        fixedSize += field.info.bytes;
      }
    } else if (e.kind === 'pad') {
      fixedSize += e.bytes;
    } else {
      counted.add(e.target);
      fixedSize += 4;
    }
  }

  const self: Struct<T> = {
    name,
    entries,
    fixedSize,
    hasArray,
    size(v) {
      if (!hasArray) return fixedSize;
      let n = fixedSize;
      for (const e of entries) {
        if (isNamed(e) && e[1].info.kind === 'array') n += e[1].size((v as Record<string, unknown>)[e[0]]);
      }
      return n;
    },
    read(r) {
      const out: Record<string, unknown> = {};
      let counts: Map<string, number> | undefined;
      for (const e of entries) {
        if (isNamed(e)) {
          const [key, field] = e;
          out[key] = field.read(r, `${name}.${key}`, counts?.get(key) ?? 0);
        } else if (e.kind === 'pad') {
          const at = r.offset;
          const v = e.bytes === 1 ? r.u8() : e.bytes === 2 ? r.u16() : r.u32();
          if (v !== 0) throw new PayloadError(WireErrorCode.BAD_PADDING, `${name}: non-zero padding at payload offset ${at}`);
        } else {
          (counts ??= new Map()).set(e.target, r.u32());
        }
      }
      return out as T;
    },
    write(w, v) {
      if (typeof v !== 'object' || v === null) throw new EncodeError(`${name}: not an object`);
      const obj = v as Record<string, unknown>;
      for (const e of entries) {
        if (isNamed(e)) {
          const [key, field] = e;
          field.write(w, obj[key], `${name}.${key}`);
        } else if (e.kind === 'pad') {
          w.zero(e.bytes);
        } else {
          const list = obj[e.target];
          if (!Array.isArray(list)) throw new EncodeError(`${name}.${e.target}: not an array`);
          w.u32(list.length);
        }
      }
    },
  };
  return self;
}
