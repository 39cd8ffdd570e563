/**
 * The project stands on its own (docs/architecture.md, "Conventions"): every relative link in a
 * markdown file resolves to a file inside the repository, every citation of a project document
 * ("ring-protocol.md §5.1", "docs/clib.md "Tests"") names a document and a section that exist, and
 * nothing cites a document outside the repository.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');

/** Tracked files plus new ones not ignored: what the repository will hold. */
function repoFiles(): string[] {
  const out = execFileSync('git', ['ls-files', '--cached', '--others', '--exclude-standard', '-z'], { cwd: ROOT, encoding: 'utf8' });
  return out
    .split('\0')
    .filter((f) => f !== '' && fs.existsSync(path.join(ROOT, f)))
    .sort();
}

const TEXT = /\.(md|ts|mts|mjs|js|c|h|gyp|sh|json|service|in)$|^\.ci\//;
const files = repoFiles();
const textFiles = files.filter((f) => TEXT.test(f) && !f.endsWith('package-lock.json') && !f.startsWith('test/vectors/'));
const read = (f: string): string => fs.readFileSync(path.join(ROOT, f), 'utf8');

/** Markdown documents by base name (docs/*.md and README.md). */
const docs = new Map<string, string>();
for (const f of files) if (f.endsWith('.md')) docs.set(path.basename(f), f);

/** Section numbers and heading texts of a document. */
function headings(doc: string): { numbers: Set<string>; texts: string[] } {
  const numbers = new Set<string>();
  const texts: string[] = [];
  for (const line of read(doc).split('\n')) {
    const m = /^#+\s+(.*)$/.exec(line);
    if (m === null) continue;
    texts.push(m[1]!);
    const n = /^(\d+(?:\.\d+)*)\.?\s/.exec(m[1]!);
    if (n !== null) numbers.add(n[1]!);
  }
  return { numbers, texts };
}

test('no file refers to documents outside the repository', () => {
  // Written so that this file does not match itself: [.] for a dot, [-] for a dash.
  const outside =
    /DESIGN[.]md|node[-]ecosystem|[.][.]\/shared|reference [§]|reference\/[a-z-]+[.]md|vchan[-]api-and-qubes|libkvmchan[-]spec|ivshmem[-]qemu-libvirt/;
  const bad: string[] = [];
  for (const f of textFiles) {
    read(f)
      .split('\n')
      .forEach((line, i) => {
        if (outside.test(line)) bad.push(`${f}:${i + 1}: ${line.trim()}`);
      });
  }
  assert.deepEqual(bad, []);
});

test('every relative link in a markdown file resolves inside the repository', () => {
  const bad: string[] = [];
  for (const f of files.filter((x) => x.endsWith('.md'))) {
    const text = read(f).replace(/```[\s\S]*?```/g, '');
    for (const m of text.matchAll(/\[[^\]]*\]\(([^)\s]+)(?:\s+"[^"]*")?\)/g)) {
      const target = m[1]!;
      if (/^[a-z][a-z0-9+.-]*:/i.test(target) || target.startsWith('#')) continue;
      const file = decodeURIComponent(target.split('#')[0]!);
      const abs = path.resolve(ROOT, path.dirname(f), file);
      const rel = path.relative(ROOT, abs);
      if (rel.startsWith('..') || path.isAbsolute(rel)) bad.push(`${f}: ${target} leaves the repository`);
      else if (!fs.existsSync(abs)) bad.push(`${f}: ${target} does not exist`);
    }
  }
  assert.deepEqual(bad, []);
});

test('citations of project documents name existing documents and sections', () => {
  const bad: string[] = [];
  const cache = new Map<string, ReturnType<typeof headings>>();
  const sections = (doc: string): ReturnType<typeof headings> => {
    let h = cache.get(doc);
    if (h === undefined) cache.set(doc, (h = headings(doc)));
    return h;
  };
  for (const f of textFiles) {
    if (f === 'test/docs/links.test.ts') continue;
    const lines = read(f).split('\n');
    lines.forEach((line, i) => {
      // "ring-protocol.md §5.1", "docs/ivshmem.md §3-4", "[ivshmem.md §3](ivshmem.md)"
      for (const m of line.matchAll(/\b([a-z][a-z-]*\.md)\]?(?:\([^)]*\))?,?\s+§(\d+(?:\.\d+)*)/g)) {
        const doc = docs.get(m[1]!);
        if (doc === undefined) bad.push(`${f}:${i + 1}: no document ${m[1]!}`);
        else if (!sections(doc).numbers.has(m[2]!)) bad.push(`${f}:${i + 1}: ${m[1]!} has no §${m[2]!}`);
      }
      // 'docs/architecture.md, "The native addon"', 'docs/clib.md "Tests"'
      for (const m of line.matchAll(/\b([a-z][a-z-]*\.md),?\s+"([^"]+)"/g)) {
        const doc = docs.get(m[1]!);
        if (doc === undefined) bad.push(`${f}:${i + 1}: no document ${m[1]!}`);
        else if (!sections(doc).texts.some((t) => t.includes(m[2]!))) bad.push(`${f}:${i + 1}: ${m[1]!} has no section "${m[2]!}"`);
      }
      // Any other mention of a docs/*.md file must name one that exists.
      for (const m of line.matchAll(/\bdocs\/([a-z][a-z-]*\.md)\b/g)) {
        if (!fs.existsSync(path.join(ROOT, 'docs', m[1]!))) bad.push(`${f}:${i + 1}: no document docs/${m[1]!}`);
      }
    });
  }
  assert.deepEqual(bad, []);
});
