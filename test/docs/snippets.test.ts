/**
 * Every TypeScript block of README.md and docs/api.md is a whole program that runs as written
 * (docs/api.md): each is type-checked against the package's own declarations, compiled, and
 * run as a separate process that imports `kvmchan` by name, against a private daemon
 * (KVMCHAN_RUNTIME_DIR), and must exit 0 on its own — a snippet that deadlocks fails here.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';
import { startDaemon, teardown, type TestDaemon } from '../helpers/daemon-fixture.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const SOURCES = ['README.md', 'docs/api.md'];

function snippets(file: string): string[] {
  const text = fs.readFileSync(path.join(ROOT, file), 'utf8');
  return [...text.matchAll(/^```ts\n([\s\S]*?)^```$/gm)].map((m) => m[1] ?? '');
}

let d: TestDaemon;
let dir: string;
before(async () => {
  d = await startDaemon();
  // A scratch project whose node_modules/kvmchan is this checkout: imports resolve by name.
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kvmchan-snippets-'));
  fs.mkdirSync(path.join(dir, 'node_modules'));
  fs.symlinkSync(ROOT, path.join(dir, 'node_modules', 'kvmchan'));
  fs.writeFileSync(path.join(dir, 'package.json'), JSON.stringify({ type: 'module', private: true }));
});
after(() =>
  teardown(
    () => fs.rmSync(dir, { recursive: true, force: true }),
    () => d?.stop(),
  ),
);

const compilerOptions: ts.CompilerOptions = {
  target: ts.ScriptTarget.ES2023,
  module: ts.ModuleKind.NodeNext,
  moduleResolution: ts.ModuleResolutionKind.NodeNext,
  lib: ['lib.es2023.d.ts', 'lib.esnext.disposable.d.ts'],
  types: ['node'],
  typeRoots: [path.join(ROOT, 'node_modules', '@types')],
  strict: true,
  skipLibCheck: true,
  noEmit: true,
};

function typeCheck(file: string): string[] {
  const program = ts.createProgram([file], compilerOptions);
  return ts
    .getPreEmitDiagnostics(program)
    .map(
      (diag) =>
        `${diag.file === undefined ? '' : `${path.basename(diag.file.fileName)}: `}${ts.flattenDiagnosticMessageText(diag.messageText, '\n')}`,
    );
}

function run(file: string): Promise<{ code: number | null; signal: string | null; out: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [file], {
      cwd: dir,
      env: { ...process.env, KVMCHAN_RUNTIME_DIR: d.runtimeDir },
      stdio: ['ignore', 'pipe', 'pipe'],
      // A deadlocked snippet never exits by itself: give up on it (a failure, not a timing claim).
      timeout: 60000,
    });
    let out = '';
    child.stdout.on('data', (b: Buffer) => (out += b.toString()));
    child.stderr.on('data', (b: Buffer) => (out += b.toString()));
    child.on('error', reject);
    child.on('close', (code, signal) => resolve({ code, signal, out }));
  });
}

for (const source of SOURCES) {
  snippets(source).forEach((code, i) => {
    test(`${source}, TypeScript block ${i + 1}, type-checks and runs to completion`, async () => {
      const base = path.join(dir, `${path.basename(source, '.md')}-${i + 1}`);
      fs.writeFileSync(`${base}.mts`, code);
      assert.deepEqual(typeCheck(`${base}.mts`), [], 'type errors');
      const js = ts.transpileModule(code, { fileName: `${base}.mts`, compilerOptions: { ...compilerOptions, noEmit: false } }).outputText;
      fs.writeFileSync(`${base}.mjs`, js);
      const r = await run(`${base}.mjs`);
      assert.equal(r.signal, null, `killed (deadlock?); output:\n${r.out}`);
      assert.equal(r.code, 0, `exit status; output:\n${r.out}`);
    });
  });
}

test('the documents hold TypeScript blocks to run', () => {
  for (const source of SOURCES) assert.ok(snippets(source).length > 0, source);
});
