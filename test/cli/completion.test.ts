/**
 * Shell completion and manual pages (docs/cli.md "Shell completion and manual pages") name
 * every command and long option the binaries' own --help lists, so they cannot drift apart
 * unnoticed; the bash completion really completes, and the pages format without warnings.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { DAEMON_MAIN } from '../../src/cli/private-daemon.js';
import { CLI_MAIN } from '../helpers/guest-fixture.js';

const ROOT = path.resolve(path.dirname(CLI_MAIN), '..', '..', '..');
const read = (f: string): string => fs.readFileSync(path.join(ROOT, f), 'utf8');
const BASH = 'contrib/completion/kvmchan.bash';
const ZSH = 'contrib/completion/_kvmchan';

function help(script: string, args: string[]): string {
  return execFileSync(process.execPath, [script, ...args, '--help'], { encoding: 'utf8' });
}

/** Long options of a --help text (--help itself included). */
function longOptions(text: string): string[] {
  return [...new Set([...text.matchAll(/^\s+(?:-\w, )?(--[\w-]+)/gm)].map((m) => m[1] ?? ''))];
}

const COMMANDS = ['listen', 'connect', 'proxy', 'status', 'demo'];

test('kvmchan --help lists exactly the commands the completions and the man page know', () => {
  const listed = [...help(CLI_MAIN, []).matchAll(/^ {2}(\w+)(?: \[options\]| <)/gm)].map((m) => m[1]);
  for (const c of COMMANDS) assert.ok(listed.includes(c), `${c} missing from kvmchan --help`);
  for (const c of listed)
    if (c !== 'help') assert.ok(COMMANDS.includes(c ?? ''), `new command ${c}: add it to the completions, the man page and this test`);
});

for (const cmd of COMMANDS) {
  test(`kvmchan ${cmd}: every option is in both completions and in kvmchan.1`, () => {
    const opts = longOptions(help(CLI_MAIN, [cmd]));
    assert.ok(opts.length > 1);
    const man = read('man/kvmchan.1').replace(/\\-/g, '-');
    for (const o of opts) {
      assert.ok(read(BASH).includes(o), `${o} of ${cmd} missing from ${BASH}`);
      assert.ok(read(ZSH).includes(o), `${o} of ${cmd} missing from ${ZSH}`);
      if (o !== '--help') assert.ok(man.includes(o), `${o} of ${cmd} missing from man/kvmchan.1`);
    }
  });
}

test('kvmchand: every option is in both completions and in kvmchand.8', () => {
  const man = read('man/kvmchand.8').replace(/\\-/g, '-');
  for (const o of longOptions(help(DAEMON_MAIN, []))) {
    assert.ok(read(BASH).includes(o), `${o} missing from ${BASH}`);
    assert.ok(read(ZSH).includes(o), `${o} missing from ${ZSH}`);
    assert.ok(man.includes(o), `${o} missing from man/kvmchand.8`);
  }
});

test('libvchan-kvm.3 documents every function of libvchan.h', () => {
  const header = read('clib/include/libvchan.h');
  const man = read('man/libvchan-kvm.3');
  const functions = [...header.matchAll(/^[\w ]+\*?\s*\*?(libvchan_\w+)\(/gm)].map((m) => m[1] ?? '');
  assert.ok(functions.length >= 10);
  for (const f of functions) assert.ok(man.includes(f), `${f} missing from man/libvchan-kvm.3`);
});

test('the bash completion completes commands and options', () => {
  const complete = (words: string[]): string =>
    execFileSync(
      'bash',
      [
        '-c',
        `source "$1"; COMP_WORDS=(${words.map((w) => `'${w}'`).join(' ')}); COMP_CWORD=${words.length - 1}; _kvmchan; echo "\${COMPREPLY[*]}"`,
        'x',
        path.join(ROOT, BASH),
      ],
      { encoding: 'utf8' },
    ).trim();
  assert.equal(complete(['kvmchan', 'li']), 'listen');
  assert.equal(complete(['kvmchan', 'proxy', 'vc']), 'vchan:');
  assert.equal(complete(['kvmchan', 'status', '--j']), '--json');
});

test('the manual pages format without warnings', { skip: !fs.existsSync('/usr/bin/groff') && 'groff not installed' }, () => {
  for (const page of ['man/kvmchan.1', 'man/kvmchand.8', 'man/libvchan-kvm.3']) {
    // Warnings go to stderr: fold it into what is compared.
    const out = execFileSync('sh', ['-c', 'groff -man -Tutf8 -ww -z "$1" 2>&1', 'x', path.join(ROOT, page)], { encoding: 'utf8' });
    assert.equal(out, '', page);
  }
});
