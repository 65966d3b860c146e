#!/usr/bin/env node
// Brings a checkout to a runnable state, doing only what is missing or stale:
// npm dependencies, the native addon (node-gyp), the TypeScript build and the
// C test programs. `npm start`, `npm test` and `npm run bench` call it first.
import { execFileSync } from 'node:child_process';
import { chmodSync, existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const verbose = Boolean(process.env.LAZYRESTORE_SETUP_VERBOSE);

// Build steps stay quiet unless they fail; then their whole output is shown
// (tsc prints its errors on stdout, node-gyp its progress on stderr).
function run(cmd, args) {
  try {
    execFileSync(cmd, args, { cwd: root, stdio: verbose ? 'inherit' : 'pipe', encoding: 'utf8' });
  } catch (err) {
    process.stderr.write(`lazyrestore setup: ${cmd} ${args.join(' ')} failed\n${err.stdout ?? ''}${err.stderr ?? ''}`);
    process.exit(1);
  }
}

// Build against the headers of the Node that runs us when they are installed
// beside it (Debian's nodejs ships them), so no header download is needed.
function nodedirArgs() {
  if (process.env.npm_config_nodedir) return [`--nodedir=${process.env.npm_config_nodedir}`];
  const prefix = dirname(dirname(process.execPath));
  return existsSync(join(prefix, 'include', 'node', 'node_api.h')) ? [`--nodedir=${prefix}`] : [];
}

if (!existsSync(join(root, 'node_modules', '.package-lock.json'))) {
  console.error('lazyrestore setup: installing npm dependencies');
  // `npm ci` when a lockfile exists keeps fresh clones reproducible.
  run('npm', [existsSync(join(root, 'package-lock.json')) ? 'ci' : 'install', '--no-audit', '--no-fund']);
}
const gyp = join(root, 'node_modules', '.bin', 'node-gyp');
if (!existsSync(join(root, 'build', 'config.gypi'))) run(gyp, ['configure', ...nodedirArgs()]);
run(gyp, ['build']);
run(join(root, 'node_modules', '.bin', 'tsc'), ['-p', 'tsconfig.json']);
// tsc writes dist/cli/main.js without the execute bit; npx and the bin link need it.
chmodSync(join(root, 'dist', 'cli', 'main.js'), 0o755);
run('make', ['-s', '-C', 'test/programs']);
