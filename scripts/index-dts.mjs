/**
 * The top-level `index.d.ts` is generated from `index.ts`, never written by hand: `tsc -p
 * tsconfig.build.json` emits the declarations of `index.ts` and `src/` (declarations marked
 * `@internal` are stripped), and this module formats `index.d.ts` with prettier under a banner
 * that says so.
 *
 * - `npm run build:js` (`scripts/build-js.mjs`) writes it, into the repository and `dist/`.
 * - `node scripts/index-dts.mjs --check` (part of `npm run lint`, which CI runs before it builds)
 *   generates it into a temporary directory and fails when the committed `index.d.ts` differs,
 *   naming the first lines that do. The fix: `npm run build:js`, then commit `index.d.ts`. It
 *   also type-checks the emitted declarations on their own, as a user's compiler reads them, so
 *   that a public declaration that names a stripped one fails here rather than in a user's build.
 *
 * A constructor must not be marked `@internal`: stripping it would declare a public constructor
 * that takes no arguments.
 *
 * @module
 */

import { execFileSync, spawnSync } from 'node:child_process'
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'

import * as prettier from 'prettier'

const root = dirname(dirname(fileURLToPath(import.meta.url)))
const tscPath = join(root, 'node_modules', 'typescript', 'bin', 'tsc')
/** The committed file. */
export const indexDtsPath = join(root, 'index.d.ts')

const BANNER =
  '// Generated from index.ts by scripts/index-dts.mjs (npm run build:js). Do not edit:\n' +
  '// `npm run lint` fails when this file differs from what index.ts gives.\n'

/**
 * Emits the declarations of `index.ts` and `src/` into `outDir` (`tsconfig.build.json`), beside
 * a copy of the addon's committed declarations (`binding.d.cts`), which they import types from.
 */
export function emitDeclarations(outDir) {
  execFileSync(
    process.execPath,
    [tscPath, '-p', join(root, 'tsconfig.build.json'), '--outDir', outDir],
    { stdio: 'inherit' },
  )
  copyFileSync(join(root, 'binding.d.cts'), join(outDir, 'binding.d.cts'))
}

/** The text of `index.d.ts`, from the declarations emitted into `outDir`. */
export async function indexDts(outDir) {
  const emitted = readFileSync(join(outDir, 'index.d.ts'), 'utf8')
  const config = (await prettier.resolveConfig(indexDtsPath)) ?? {}
  return prettier.format(BANNER + emitted, { ...config, filepath: indexDtsPath })
}

/**
 * Type-checks the declarations in `outDir` from its `index.d.ts`, as a user's `tsc` would; exits
 * with 1 if they do not.
 */
export function checkDeclarations(outDir) {
  const tsconfig = {
    compilerOptions: {
      strict: true,
      module: 'NodeNext',
      moduleResolution: 'NodeNext',
      target: 'ES2022',
      lib: ['ES2022', 'ESNext.Disposable'],
      types: ['node'],
      typeRoots: [join(root, 'node_modules', '@types')],
      noEmit: true,
      skipLibCheck: false,
    },
    files: ['index.d.ts'],
  }
  writeFileSync(join(outDir, 'tsconfig.json'), JSON.stringify(tsconfig))
  const r = spawnSync(process.execPath, [tscPath, '-p', join(outDir, 'tsconfig.json')], {
    stdio: 'inherit',
  })
  if (r.status !== 0) {
    process.stderr.write(
      'the emitted declarations do not type-check on their own (above): a public declaration ' +
        'may name one that is tagged @internal, which is stripped\n',
    )
    process.exit(1)
  }
}

/** Exits with 1, naming the first differing lines, if the committed `index.d.ts` is not `want`. */
function check(want) {
  const have = readFileSync(indexDtsPath, 'utf8')
  if (have === want) return
  const a = have.split('\n')
  const b = want.split('\n')
  const lines = []
  for (let i = 0; i < Math.max(a.length, b.length) && lines.length < 10; i++) {
    if (a[i] !== b[i]) lines.push(`  line ${i + 1}:\n    committed: ${a[i] ?? '(end of file)'}\n    generated: ${b[i] ?? '(end of file)'}`) // prettier-ignore
  }
  process.stderr.write(
    'index.d.ts differs from what index.ts gives (run `npm run build:js` and commit it):\n' +
      `${lines.join('\n')}\n`,
  )
  process.exit(1)
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  if (process.argv[2] !== '--check') {
    process.stderr.write('usage: node scripts/index-dts.mjs --check\n')
    process.exit(2)
  }
  const outDir = mkdtempSync(join(tmpdir(), 'shmpipe-index-dts-'))
  try {
    emitDeclarations(outDir)
    check(await indexDts(outDir))
    checkDeclarations(outDir)
  } finally {
    rmSync(outDir, { recursive: true, force: true })
  }
}
