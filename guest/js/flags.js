// Flags for the examples: `--name value` from the command line.
import { getArguments } from 'wasi:cli/environment@0.2.12';

export function flag(name, fallback) {
  const args = getArguments();
  const i = args.indexOf(`--${name}`);
  return i >= 0 && i + 1 < args.length ? args[i + 1] : fallback;
}

export function has(name) {
  return getArguments().includes(`--${name}`);
}
