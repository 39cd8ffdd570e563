/** The package's version, for `--version` of both binaries. */
import fs from 'node:fs';

export function packageVersion(): string {
  // dist/src/version.js: the package root, which holds package.json, is two levels up.
  const text = fs.readFileSync(new URL('../../package.json', import.meta.url), 'utf8');
  return (JSON.parse(text) as { version: string }).version;
}
