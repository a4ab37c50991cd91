// Builds the JavaScript examples into components for the `app` world of
// ../../wit: each is bundled with sync.js by Rolldown (wasi: and
// metaparticle: imports stay imports) and componentized by componentize-js,
// both from the jco that scripts/setup.sh installs into .tools/jco.
//
//   node guest/js/build.mjs OUT_DIR    ->  OUT_DIR/lock-js.wasm, election-js.wasm
//
// A component newer than its sources is kept: componentizing takes tens of
// seconds each.
import { stat, writeFile, mkdtemp, rm } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { tmpdir } from 'node:os';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, '../..');
const modules = join(root, '.tools/jco/node_modules');
const { rolldown } = await import(join(modules, 'rolldown/dist/index.mjs'));
const { componentize } = await import(join(modules, '@bytecodealliance/componentize-js/src/componentize.js'));

const out = resolve(process.argv[2] ?? join(root, 'target/wasm32-wasip2/release'));
const mtime = async (path) => (await stat(path).catch(() => null))?.mtimeMs ?? 0;
const sources = ['sync.js', 'flags.js', 'lock.js', 'election.js'].map((f) => join(here, f));
const newest = Math.max(...(await Promise.all([...sources, join(root, 'wit/sync.wit')].map(mtime))));

for (const app of ['lock', 'election']) {
  const target = join(out, `${app}-js.wasm`);
  if ((await mtime(target)) > newest) {
    console.error(`js: ${target} is up to date`);
    continue;
  }
  const started = Date.now();
  const work = await mkdtemp(join(tmpdir(), 'mpsync-js-'));
  const bundled = join(work, `${app}.js`);
  const bundle = await rolldown({ input: join(here, `${app}.js`), external: [/^wasi:/, /^metaparticle:/] });
  await bundle.write({ file: bundled, format: 'esm' });
  const { component } = await componentize({
    sourcePath: bundled,
    witPath: join(root, 'wit'),
    worldName: 'app',
  });
  await writeFile(target, component);
  await rm(work, { recursive: true, force: true });
  const mb = (component.length / 1e6).toFixed(1);
  console.error(`js: built ${target} (${mb} MB) in ${((Date.now() - started) / 1000).toFixed(0)} s`);
}
