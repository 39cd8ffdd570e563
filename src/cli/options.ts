/**
 * Byte and time options, all in one syntax (docs/cli.md "Conventions"), with defaults
 * shown in that syntax too ("default: 64K", "default: 10s").
 */
import { Option } from 'commander';
import { formatDuration, formatSize, parseDuration, parseSize } from './args.js';

export function sizeOption(flags: string, description: string, defaultValue?: number): Option {
  const o = new Option(flags, description).argParser(parseSize);
  return defaultValue === undefined ? o : o.default(defaultValue, formatSize(defaultValue));
}

export function durationOption(flags: string, description: string, defaultValue?: number): Option {
  const o = new Option(flags, description).argParser(parseDuration);
  return defaultValue === undefined ? o : o.default(defaultValue, formatDuration(defaultValue));
}
