/**
 * The systemd units in contrib/systemd (docs/operations.md, "systemd"): `systemd-analyze verify`
 * accepts them, they use readiness notification, start before libvirt and the guests, treat the
 * configuration file as optional, run the installed `kvmchand`, and `systemd-analyze security`
 * rates them "OK" or better.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, test } from 'node:test';

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const unitsDir = path.join(root, 'contrib', 'systemd');
const units = ['kvmchand.service', 'kvmchand-guest.service'];
const INSTALLED = '/usr/local/bin/kvmchand';
const analyze = spawnSync('systemd-analyze', ['--version']).status === 0;
const skip = analyze ? false : 'systemd-analyze not found';

const work = fs.mkdtempSync(path.join(os.tmpdir(), 'kvmchan-units-'));
after(() => fs.rmSync(work, { recursive: true, force: true }));

/** The unit with the installed binary replaced by a stub here (verify checks it is executable). */
function staged(unit: string): string {
  const stub = path.join(work, 'kvmchand');
  fs.writeFileSync(stub, '#!/bin/sh\nexit 0\n', { mode: 0o755 });
  const text = fs.readFileSync(path.join(unitsDir, unit), 'utf8');
  assert.ok(text.includes(`ExecStart=${INSTALLED} `), `${unit} runs ${INSTALLED}`);
  const file = path.join(work, unit);
  fs.writeFileSync(file, text.replaceAll(INSTALLED, stub));
  return file;
}

function directives(unit: string): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const line of fs.readFileSync(path.join(unitsDir, unit), 'utf8').split('\n')) {
    const m = /^([A-Za-z]+)=(.*)$/.exec(line);
    if (m !== null) out.set(m[1]!, [...(out.get(m[1]!) ?? []), m[2]!]);
  }
  return out;
}

for (const unit of units) {
  test(`${unit}: systemd-analyze verify accepts it`, { skip }, () => {
    const r = spawnSync('systemd-analyze', ['verify', staged(unit)], { encoding: 'utf8', timeout: 60_000 });
    const complaints = (r.stdout + r.stderr)
      .split('\n')
      .filter((l) => l.includes(unit.replace('.service', '')) && !/Failed to (create|open).*cgroup|Unit .* not found/.test(l));
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual(complaints, []);
  });

  test(`${unit}: readiness, optional config, reload`, () => {
    const d = directives(unit);
    assert.deepEqual(d.get('Type'), ['notify']);
    assert.deepEqual(d.get('NotifyAccess'), ['main']);
    const exec = d.get('ExecStart')![0]!;
    assert.match(exec, /--config \/etc\/kvmchan\/kvmchand\.json --config-optional/);
    assert.ok(!exec.includes('/usr/bin/env'), 'no PATH lookup of node through env');
    assert.deepEqual(d.get('ExecReload'), ['/bin/kill -HUP $MAINPID']);
    assert.deepEqual(d.get('RuntimeDirectory'), ['kvmchand']);
  });

  test(`${unit}: systemd-analyze security rates it OK or better`, { skip }, () => {
    const r = spawnSync('systemd-analyze', ['security', '--offline=true', staged(unit)], { encoding: 'utf8', timeout: 60_000 });
    const m = /Overall exposure level for .*: ([\d.]+) (\w+)/.exec(r.stdout);
    assert.ok(m !== null, r.stdout + r.stderr);
    assert.ok(['SAFE', 'OK'].includes(m[2]!), `exposure ${m[1]} ${m[2]}`);
  });
}

test('the host unit starts before libvirt and the guests it resumes', () => {
  const before = directives('kvmchand.service').get('Before')!.join(' ').split(/\s+/);
  for (const u of ['libvirtd.service', 'libvirt-guests.service']) assert.ok(before.includes(u), `Before=${u}`);
  assert.equal(directives('kvmchand.service').get('After'), undefined, 'not ordered after libvirtd');
});
