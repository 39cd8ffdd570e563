/**
 * `hex` tagged template for hand-written byte fixtures: hex digits with any whitespace, and
 * `#` comments to the end of the line. Throws on anything else so a typo cannot pass silently.
 */
export function hex(strings: TemplateStringsArray, ...values: unknown[]): Buffer {
  if (values.length > 0) throw new Error('hex: interpolation is not supported');
  const text = strings.raw.join('');
  const digits = text
    .split('\n')
    .map((line) => line.replace(/#.*$/, ''))
    .join('')
    .replace(/\s+/g, '');
  if (!/^(?:[0-9a-fA-F]{2})*$/.test(digits)) throw new Error(`hex: bad fixture text: ${text}`);
  return Buffer.from(digits, 'hex');
}
