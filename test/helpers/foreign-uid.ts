/**
 * Running compiled test code as another uid, from wherever the checkout is.
 *
 * A process started with another uid must be able to read the scripts it runs. A checkout in
 * a directory other users cannot traverse (`mktemp -d`, /root: mode 0700) is unreadable to it,
 * so `node <checkout>/dist/test/helpers/vchan-peer.js` fails with MODULE_NOT_FOUND. A
 * `ForeignUidTree` copies what an entry script needs — the compiled files it imports,
 * transitively, the native addon, the npm packages it imports and their dependencies, and
 * package.json (module type, package root) — into a fresh world-readable directory under /tmp,
 * laid out as in the checkout, so every relative path inside the copy still resolves. Remove it
 * when done (`remove()`; also done at process exit as a last resort).
 *
 * Any test that runs code as another uid should start that code from such a tree:
 * `PeerProcess.spawn(dir, { uid, gid })` does it by itself.
 */
import fs from 'node:fs';
import { builtinModules } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** The checkout: the directory holding package.json above dist/test/helpers. */
export const REPO_ROOT = (() => {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (fs.existsSync(path.join(dir, 'package.json'))) return dir;
    const parent = path.dirname(dir);
    if (parent === dir) throw new Error('foreign-uid: package root not found');
    dir = parent;
  }
})();

const ADDON = path.join('native', 'build', 'Release', 'kvmchan_native.node');
const BUILTINS = new Set(builtinModules);
// `import … from '…'`, `export … from '…'`, `import '…'`, `import('…')`, `require('…')`.
const SPECIFIER = /(?:\bfrom\s*|\bimport\s*\(?\s*|\brequire\s*\(\s*)(['"])([^'"\n]+)\1/g;

/** Is every directory from / down to `dir` searchable by others (mode o+x)? */
function traversableByOthers(dir: string): boolean {
  for (let d = path.resolve(dir); ; d = path.dirname(d)) {
    try {
      if ((fs.statSync(d).mode & 0o001) === 0) return false;
    } catch {
      return false;
    }
    if (path.dirname(d) === d) return true;
  }
}

/** A temp parent any uid can traverse: os.tmpdir() if it is, else /tmp. */
function worldTmp(): string {
  const t = os.tmpdir();
  return traversableByOthers(t) ? t : '/tmp';
}

/** The bare package name of a specifier: `pino/file` → `pino`, `@scope/x/y` → `@scope/x`. */
function packageName(spec: string): string {
  const parts = spec.split('/');
  return spec.startsWith('@') ? parts.slice(0, 2).join('/') : parts[0]!;
}

/** Where Node would find package `name` from `fromDir` (node_modules lookup upwards). */
function findPackage(name: string, fromDir: string): string | null {
  for (let d = fromDir; ; d = path.dirname(d)) {
    const p = path.join(d, 'node_modules', name);
    if (fs.existsSync(path.join(p, 'package.json'))) return p;
    if (d === REPO_ROOT || path.dirname(d) === d) return null;
  }
}

export class ForeignUidTree {
  /** The world-readable copy (mode 0755), laid out like the checkout. */
  readonly dir: string;
  #removed = false;
  readonly #onExit = (): void => {
    this.remove();
  };

  private constructor(dir: string) {
    this.dir = dir;
    process.once('exit', this.#onExit);
  }

  /**
   * Copies what the compiled entry scripts (absolute paths inside the checkout, e.g.
   * PEER_MAIN) import, transitively, plus the native addon and package.json.
   */
  static create(entries: readonly string[]): ForeignUidTree {
    const dir = fs.mkdtempSync(path.join(worldTmp(), 'kvmchan-uid-'));
    const tree = new ForeignUidTree(dir);
    try {
      tree.#populate(entries);
    } catch (err) {
      tree.remove();
      throw err;
    }
    return tree;
  }

  /** The copy of a checkout file (absolute, or relative to the checkout). */
  path(file: string): string {
    const rel = path.relative(REPO_ROOT, path.resolve(REPO_ROOT, file));
    if (rel.startsWith('..')) throw new Error(`foreign-uid: ${file} is outside the checkout`);
    return path.join(this.dir, rel);
  }

  remove(): void {
    if (this.#removed) return;
    this.#removed = true;
    process.removeListener('exit', this.#onExit);
    fs.rmSync(this.dir, { recursive: true, force: true });
  }

  #populate(entries: readonly string[]): void {
    const files = new Set<string>();
    const packages = new Set<string>();
    const queue = entries.map((e) => path.resolve(e));
    while (queue.length > 0) {
      const file = queue.pop()!;
      if (files.has(file)) continue;
      if (!fs.existsSync(file)) throw new Error(`foreign-uid: ${file} not found (is the project built?)`);
      files.add(file);
      for (const m of fs.readFileSync(file, 'utf8').matchAll(SPECIFIER)) {
        const spec = m[2]!;
        if (spec.startsWith('.')) {
          queue.push(path.resolve(path.dirname(file), spec));
        } else if (!spec.startsWith('node:') && !BUILTINS.has(spec) && !spec.startsWith('/')) {
          this.#addPackage(packageName(spec), REPO_ROOT, packages);
        }
      }
    }
    for (const f of [...files, path.join(REPO_ROOT, 'package.json'), path.join(REPO_ROOT, ADDON)]) {
      this.#copy(f);
    }
    for (const p of packages) this.#copy(p);
    // Whatever the umask or the checkout's modes: readable and traversable by everyone.
    const open = (p: string): void => {
      const st = fs.lstatSync(p);
      if (st.isSymbolicLink()) return;
      if (st.isDirectory()) {
        fs.chmodSync(p, 0o755);
        for (const n of fs.readdirSync(p)) open(path.join(p, n));
      } else {
        fs.chmodSync(p, (st.mode & 0o111) !== 0 ? 0o755 : 0o644);
      }
    };
    open(this.dir);
  }

  /** Adds package `name` (as resolved from `fromDir`) and, recursively, its dependencies. */
  #addPackage(name: string, fromDir: string, seen: Set<string>): void {
    const dir = findPackage(name, fromDir);
    if (dir === null) throw new Error(`foreign-uid: package ${name} not found from ${fromDir}`);
    if (seen.has(dir)) return;
    seen.add(dir);
    const pkg = JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8')) as {
      dependencies?: Record<string, string>;
      optionalDependencies?: Record<string, string>;
      peerDependencies?: Record<string, string>;
    };
    for (const dep of Object.keys(pkg.dependencies ?? {})) this.#addPackage(dep, dir, seen);
    // Optional and peer dependencies only if installed (Node would not find them either).
    for (const dep of [...Object.keys(pkg.optionalDependencies ?? {}), ...Object.keys(pkg.peerDependencies ?? {})]) {
      if (findPackage(dep, dir) !== null) this.#addPackage(dep, dir, seen);
    }
  }

  #copy(src: string): void {
    const dst = this.path(src);
    fs.mkdirSync(path.dirname(dst), { recursive: true });
    fs.cpSync(src, dst, { recursive: true, dereference: true });
  }
}
