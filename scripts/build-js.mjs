/**
 * Builds the JavaScript and the declarations that the package ships, into `dist/`:
 *
 * - `dist/index.cjs`: the whole TypeScript API (`index.ts` and `src/`) bundled by esbuild as one
 *   CommonJS file. It loads the addon through `../addon.cjs`, left outside the bundle.
 * - `dist/pool-worker.cjs`: the process pool's worker script (`src/pool/pool-worker.ts`),
 *   bundled the same way; the pool spawns it.
 * - `dist/index.js`: the ES module entry, which re-exports what `index.cjs` exports (the names
 *   found by an unwritten ES module build). One implementation for
 *   both `import` and `require`, so a program that does both still has one copy of shmpipe's
 *   state: one set of exit and signal handlers (two would each take the other for the
 *   program's own listener, and a signal would no longer end the process), one `ShmpipeError`
 *   class for `instanceof`.
 * - `dist/index.d.ts` and the `.d.ts` files under `dist/src/`, emitted by
 *   `tsc -p tsconfig.build.json` (`@internal` declarations stripped): the types for `import`.
 *   `index.d.ts` is also written to the repository's top level (`scripts/index-dts.mjs`), where
 *   `npm run lint` checks it. With `dist/binding.d.cts`, a copy of the addon's generated
 *   declarations, which `dist/src/*.d.ts` import types from.
 * - `dist/cjs/`: the same declarations under a `package.json` that says `"type": "commonjs"`,
 *   so TypeScript reads them as CommonJS: the types for `require`.
 *
 * Deterministic: the same sources give the same files. Run by `npm run build` (after the addon)
 * and by `npm pack`/`npm publish` (`prepack`).
 *
 * @module
 */

import { cpSync, mkdirSync, rmSync, writeFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

import { build } from 'esbuild'

import { emitDeclarations, indexDts, indexDtsPath } from './index-dts.mjs'

const root = dirname(dirname(fileURLToPath(import.meta.url)))
const dist = join(root, 'dist')

rmSync(dist, { recursive: true, force: true })

// The sources are ES modules; `src/native.ts` makes its `require` from `import.meta.url`, which
// CommonJS does not have: give it the bundle's own URL.
const commonJs = {
  absWorkingDir: root,
  bundle: true,
  platform: 'node',
  format: 'cjs',
  target: 'node20',
  packages: 'external',
  external: ['../addon.cjs'],
  inject: ['scripts/import-meta-url.js'],
  define: { 'import.meta.url': 'importMetaUrl' },
  keepNames: true,
  legalComments: 'inline',
  logLevel: 'warning',
}
await build({
  ...commonJs,
  entryPoints: ['index.ts'],
  outfile: 'dist/index.cjs',
  banner: {
    js: '// shmpipe: the CommonJS build of index.ts and src/ (scripts/build-js.mjs). Do not edit.',
  },
})
// The process pool's worker script, which `workerEntry()` in src/pool/worker-process.ts finds
// beside the bundle with the bundle's extension. It runs in a process of its own, so its copy of
// the code is not a second copy in any one process.
await build({
  ...commonJs,
  entryPoints: ['src/pool/pool-worker.ts'],
  outfile: 'dist/pool-worker.cjs',
  banner: {
    js: '// shmpipe: the process pool worker, built from src/pool/pool-worker.ts (scripts/build-js.mjs). Do not edit.',
  },
})

// The export names, from an ES module build that is not written (esbuild's metafile).
const probe = await build({
  absWorkingDir: root,
  entryPoints: ['index.ts'],
  outfile: 'dist/probe.js',
  bundle: true,
  platform: 'node',
  format: 'esm',
  packages: 'external',
  external: ['../addon.cjs'],
  write: false,
  metafile: true,
  logLevel: 'warning',
})
const names = [...probe.metafile.outputs['dist/probe.js'].exports].sort()
if (names.length === 0) throw new Error('index.ts exports nothing?')

// `require`, not `export * from './index.cjs'`: Node 20 reports an error thrown by a CommonJS
// module during an ES import as uncaught even when the import's promise is handled, so a
// platform without an addon could not be caught with `import('shmpipe').catch(…)`. A throw from
// `require` inside this module is an ordinary failure of the import.
writeFileSync(
  join(dist, 'index.js'),
  [
    '// shmpipe: the ES module entry. It re-exports the CommonJS build so that `import` and',
    '// `require` share one copy of shmpipe (scripts/build-js.mjs). Do not edit.',
    "import { createRequire } from 'node:module'",
    '',
    "const shmpipe = createRequire(import.meta.url)('./index.cjs')",
    '',
    'export const {',
    ...names.map((name) => `  ${name},`),
    '} = shmpipe',
    '',
  ].join('\n'),
)

emitDeclarations(dist)
const declarations = await indexDts(dist)
writeFileSync(indexDtsPath, declarations)
writeFileSync(join(dist, 'index.d.ts'), declarations)

const cjs = join(dist, 'cjs')
mkdirSync(cjs)
cpSync(join(dist, 'index.d.ts'), join(cjs, 'index.d.ts'))
cpSync(join(dist, 'binding.d.cts'), join(cjs, 'binding.d.cts'))
cpSync(join(dist, 'src'), join(cjs, 'src'), { recursive: true })
writeFileSync(join(cjs, 'package.json'), `${JSON.stringify({ type: 'commonjs' }, null, 2)}\n`)
