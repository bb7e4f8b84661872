/**
 * The install path a user takes, without Rust: the packages are made as the release workflow
 * makes them, installed from their tarballs into an empty directory whose processes find no
 * `cargo` or `rustc` on `PATH`, and used there by name between two processes.
 *
 * 1. Stage the packages as the release workflow does before publishing (`scripts/stage-packages.ts`,
 *    which `npm run pack:local` uses too): a copy of what `npm pack` takes from this repository
 *    and of `npm/`, the addon built here as the workflow's download artifact (placeholders for
 *    the other targets), then the real `napi artifacts` and
 *    `napi pre-publish --skip-optional-publish --no-gh-release` (which writes the main
 *    package's `optionalDependencies`).
 * 2. `npm pack` the main package, the package for this platform and three decoys for other
 *    platforms (other libc, CPU or OS), and install them into an empty directory with
 *    `npm install --offline` (a registry address nothing listens on, an empty cache): npm must
 *    pick the package for this platform from `os`/`cpu`/`libc` and skip the decoys.
 * 3. In that directory, with `PATH` holding only `node`: an ES module parent and a CommonJS child
 *    (and the other way round) make a round trip, each attaching to a pipe the other created; the
 *    README's quick start runs; the `shmpipe` command runs; TypeScript resolves the declarations
 *    for `import` and for `require`. The round trips and the quick start also run under every
 *    Node binary listed in `SHMPIPE_TEST_NODES` (separated like `PATH`; `.ci/run` sets it to
 *    the other Node versions it installs).
 * 4. Without the platform package (`--omit=optional`), importing shmpipe fails with
 *    `ERR_SHMPIPE_ADDON_NOT_FOUND` naming the package to install.
 * 5. `npm run pack:local` (installing from a clone): its two tarballs install into an empty
 *    directory without npm asking the registry anything, and shmpipe works there.
 *
 * POSIX only: on Windows, `PATH` holding only a symlink to node does not work the same way.
 */

import { execFile } from 'node:child_process'
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  realpathSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { delimiter, join } from 'node:path'

import test, { type ExecutionContext } from 'ava'

import {
  currentTarget as current,
  npmCli,
  packInto,
  pkg,
  platformPackage,
  repoRoot,
  stagePackages,
  targets,
  type Manifest,
} from '../scripts/stage-packages.js'
import { checkNoSegmentLeaks, childPids } from './helpers/processes.js'

checkNoSegmentLeaks(test)

const tsc = join(repoRoot, 'node_modules', 'typescript', 'bin', 'tsc')

/** Three other targets that differ from this one in as few ways as possible (libc, CPU, OS). */
const decoys = targets
  .filter((t) => t !== current)
  .map((t) => ({
    t,
    same: Number(t.platform === current?.platform) + Number(t.arch === current?.arch),
  }))
  .sort((a, b) => b.same - a.same)
  .slice(0, 3)
  .map(({ t }) => t)

interface Run {
  status: number | null
  signal: string | null
  stdout: string
  stderr: string
}

/** Runs `file args` to its end (never rejects for a failed exit; the caller checks). */
function run(
  file: string,
  args: string[],
  options: { cwd: string; env?: NodeJS.ProcessEnv; timeout?: number },
): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = execFile(
      file,
      args,
      { cwd: options.cwd, env: options.env, timeout: options.timeout ?? 60_000 },
      (err, stdout, stderr) => {
        const e = err as (Error & { code?: unknown; signal?: string | null }) | null
        if (e && typeof e.code !== 'number' && !e.signal) reject(e)
        else
          resolve({
            status: e ? (typeof e.code === 'number' ? e.code : null) : 0,
            signal: e?.signal ?? null,
            stdout,
            stderr,
          })
      },
    )
    if (child.pid !== undefined) childPids.add(child.pid)
  })
}

/** Runs `file args` and throws with its output unless it exits 0. */
async function ok(file: string, args: string[], options: Parameters<typeof run>[2]): Promise<Run> {
  const r = await run(file, args, options)
  if (r.status !== 0)
    throw new Error(
      `${file} ${args.join(' ')} exited with ${r.signal ?? r.status}\n${r.stdout}\n${r.stderr}`,
    )
  return r
}

/** The fixture shared by the tests, made once. */
interface Fixture {
  dir: string
  /** The staged main package's manifest after `napi pre-publish`. */
  staged: Manifest
  /** The app with the platform package, and one without it. */
  app: string
  bare: string
  /** `PATH` (only `node`) and environment for processes run in the apps, per node binary. */
  envFor(node: string): NodeJS.ProcessEnv
  /** Node binaries to run the round trips under. */
  nodes: string[]
}

let fixture: Fixture | undefined
let setupError: unknown
/** The temporary directory of everything this file makes, removed at the end even on failure. */
let tempDir: string | undefined

/** The environment of npm in the test: no user config, an empty cache, no registry. */
function npmEnv(dir: string, env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  writeFileSync(join(dir, 'user-npmrc'), '')
  writeFileSync(join(dir, 'global-npmrc'), '')
  return {
    ...env,
    npm_config_userconfig: join(dir, 'user-npmrc'),
    npm_config_globalconfig: join(dir, 'global-npmrc'),
    npm_config_cache: join(dir, 'npm-cache'),
    npm_config_registry: 'http://127.0.0.1:9/',
    npm_config_offline: 'true',
    npm_config_audit: 'false',
    npm_config_fund: 'false',
    npm_config_update_notifier: 'false',
  }
}

async function setup(): Promise<Fixture> {
  // The real path: the addon's path in require.cache is one (macOS's /var is a symlink).
  const dir = realpathSync(mkdtempSync(join(tmpdir(), 'shmpipe-pack-install-')))
  tempDir = dir
  const npm = npmCli()
  const node = process.execPath
  // napi runs `npm pack` through the shell: give it this node and npm, wherever they live.
  const tools = join(dir, 'tools')
  mkdirSync(tools)
  symlinkSync(node, join(tools, 'node'))
  symlinkSync(npm, join(tools, 'npm'))
  const baseEnv = npmEnv(dir, { HOME: dir, PATH: tools })

  // 1. Stage the packages as the release workflow has them before publishing.
  const { stage, staged } = await stagePackages({ dir, env: baseEnv })

  // 2. Pack, then install into empty directories.
  const tarballs = join(dir, 'tarballs')
  mkdirSync(tarballs)
  await packInto(
    [stage, ...[current!, ...decoys].map((t) => join(stage, 'npm', t.platformArchABI))],
    tarballs,
    baseEnv,
  )
  const tarball = (name: string): string => `file:${join(tarballs, `${name}-${pkg.version}.tgz`)}`

  // Processes in the apps see only node on PATH: no cargo, no rustc, no compiler.
  const bins = new Map<string, string>()
  const nodes = [node, ...(process.env.SHMPIPE_TEST_NODES ?? '').split(delimiter).filter(Boolean)]
  for (const [i, n] of nodes.entries()) {
    const bin = join(dir, `bin-${i}`)
    mkdirSync(bin)
    symlinkSync(n, join(bin, 'node'))
    bins.set(n, bin)
  }
  const envFor = (n: string): NodeJS.ProcessEnv =>
    npmEnv(dir, { HOME: dir, PATH: bins.get(n)!, LANG: 'C.UTF-8' })

  const app = join(dir, 'app')
  mkdirSync(app)
  writeFileSync(
    join(app, 'package.json'),
    JSON.stringify({
      name: 'app',
      version: '1.0.0',
      private: true,
      dependencies: { [pkg.name]: tarball(pkg.name) },
      optionalDependencies: Object.fromEntries(
        [current!, ...decoys].map((t) => [platformPackage(t), tarball(platformPackage(t))]),
      ),
    }),
  )
  await ok(node, [npm, 'install'], { cwd: app, env: envFor(node) })

  const bare = join(dir, 'bare')
  mkdirSync(bare)
  writeFileSync(
    join(bare, 'package.json'),
    JSON.stringify({ name: 'bare', version: '1.0.0', private: true }),
  )
  await ok(
    node,
    [npm, 'install', '--omit=optional', join(tarballs, `${pkg.name}-${pkg.version}.tgz`)],
    {
      cwd: bare,
      env: envFor(node),
    },
  )

  for (const [file, text] of Object.entries(SCRIPTS)) writeFileSync(join(app, file), text)
  return { dir, staged, app, bare, envFor, nodes }
}

/**
 * The round trip, the same code for both module formats. The parent creates a pipe and starts
 * the child with its name; the child attaches, creates a pipe of its own and sends its name with
 * a payload (a BigInt past 64 bits, a 1 MiB Float64Array, a Map, a Date, a Buffer, non-ASCII
 * text); the parent attaches to the child's pipe and sends the payload back; each side checks
 * what it got against its own copy.
 */
const ROLES = `
function payload() {
  return {
    big: 2n ** 70n + 1n,
    floats: Float64Array.from({ length: 131072 }, (_, i) => i / 2),
    map: new Map([['a', [1, { b: 'c' }]]]),
    when: new Date(1700000000000),
    bytes: Buffer.from('shmpipe'),
    text: 'héllo wörld ✓',
  }
}

async function parent(childScript) {
  const [sender, receiver] = createSharedMemoryPair({ capacity: 4, bytes: 4 << 20 })
  const child = spawn(process.execPath, [childScript, sender.name], {
    stdio: ['ignore', 'pipe', 'inherit'],
  })
  let childOut = ''
  child.stdout.setEncoding('utf8').on('data', (chunk) => (childOut += chunk))
  const exited = new Promise((resolve) => child.on('close', (code) => resolve(code)))
  const { reply, payload: got } = await receiver.get({ timeout: 30000 })
  const back = Sender.attach(reply)
  await back.put(got)
  await back.waitForAllAck({ timeout: 30000 })
  back.close()
  const childCode = await exited
  sender.close()
  receiver.close()
  const addon = Object.keys(createRequire(import.meta.url).cache).find((k) => k.endsWith('.node'))
  return {
    parentGotPayload: isDeepStrictEqual(got, payload()),
    childCode,
    child: childOut.trim() === '' ? null : JSON.parse(childOut),
    addon,
    layoutVersion: layoutVersion(),
    node: process.version,
  }
}

async function child(name) {
  const toParent = Sender.attach(name)
  const [own, fromParent] = createSharedMemoryPair({ capacity: 2, bytes: 4 << 20 })
  await toParent.put({ reply: fromParent.name, payload: payload() })
  const echo = await fromParent.get({ timeout: 30000 })
  own.close()
  fromParent.close()
  toParent.close()
  return { childGotEcho: isDeepStrictEqual(echo, payload()) }
}
`

const ESM_HEAD = `import { spawn } from 'node:child_process'
import { createRequire } from 'node:module'
import { isDeepStrictEqual } from 'node:util'
import { createSharedMemoryPair, layoutVersion, Sender } from 'shmpipe'
`
const CJS_HEAD = `const { spawn } = require('node:child_process')
const { createRequire } = require('node:module')
const { isDeepStrictEqual } = require('node:util')
const { createSharedMemoryPair, layoutVersion, Sender } = require('shmpipe')
`

/** The scripts written into the app. */
const SCRIPTS: Record<string, string> = {
  'parent.mjs': `${ESM_HEAD}${ROLES}\nconsole.log(JSON.stringify(await parent(process.argv[2])))\n`,
  'child.mjs': `${ESM_HEAD}${ROLES}\nconsole.log(JSON.stringify(await child(process.argv[2])))\n`,
  'parent.cjs': `${CJS_HEAD}${ROLES.replace('import.meta.url', '__filename')}
parent(process.argv[2]).then((r) => console.log(JSON.stringify(r)))\n`,
  'child.cjs': `${CJS_HEAD}${ROLES.replace('import.meta.url', '__filename')}
child(process.argv[2]).then((r) => console.log(JSON.stringify(r)))\n`,
  'consumer.mts': `import { createSharedMemoryPair, ShmpipeError, type PipeOptions } from 'shmpipe'
const options: PipeOptions = { capacity: 2, bytes: 1 << 16 }
const [sender, receiver] = createSharedMemoryPair(options)
export const put: Promise<void> = sender.put({ a: 1 })
export const got: Promise<unknown> = receiver.get({ timeout: 1 })
export const code: string = new ShmpipeError('ERR_SHMPIPE_TIMEOUT', 'late').code
`,
  'consumer.cts': `import { SharedArray, ERR_SHMPIPE_ADDON_NOT_FOUND } from 'shmpipe'
const a = SharedArray.create('x', Float64Array, [2])
export const data: Float64Array = a.data
export const code: 'ERR_SHMPIPE_ADDON_NOT_FOUND' = ERR_SHMPIPE_ADDON_NOT_FOUND
`,
  'tsconfig.json': `${JSON.stringify({
    compilerOptions: {
      module: 'nodenext',
      moduleResolution: 'nodenext',
      target: 'es2022',
      lib: ['es2022', 'esnext.disposable'],
      strict: true,
      noEmit: true,
      types: ['node'],
      typeRoots: [join(repoRoot, 'node_modules', '@types')],
    },
    files: ['consumer.mts', 'consumer.cts'],
  })}\n`,
}

const posix = process.platform === 'win32' ? test.serial.skip : test.serial

test.before(async () => {
  if (process.platform === 'win32') return
  try {
    fixture = await setup()
  } catch (err) {
    setupError = err
  }
})

test.after.always(() => {
  if (tempDir) rmSync(tempDir, { recursive: true, force: true })
})

function get(t: ExecutionContext): Fixture {
  if (!fixture) {
    t.log(setupError)
    throw new Error(`the packages could not be made and installed: ${String(setupError)}`)
  }
  return fixture
}

posix('the published main package lists every platform package as an optional dependency', (t) => {
  const { staged } = get(t)
  t.deepEqual(
    staged.optionalDependencies,
    Object.fromEntries(targets.map((x) => [`${pkg.name}-${x.platformArchABI}`, pkg.version])),
  )
})

posix('npm installs the main package and only the platform package that fits', (t) => {
  const { app } = get(t)
  const installed = readdirSync(join(app, 'node_modules')).filter((n) => !n.startsWith('.'))
  t.deepEqual(installed.sort(), [pkg.name, `${pkg.name}-${current!.platformArchABI}`].sort())
  const main = join(app, 'node_modules', pkg.name)
  const files = readdirSync(main, { recursive: true }).map(String)
  t.false(
    files.some((f) => f.endsWith('.node') || f.endsWith('.rs') || f === 'Cargo.toml'),
    'the main package carries no addon and no Rust source',
  )
  const lock = JSON.parse(readFileSync(join(app, 'package-lock.json'), 'utf8')) as {
    packages: Record<string, { hasInstallScript?: boolean }>
  }
  t.falsy(lock.packages[`node_modules/${pkg.name}`]?.hasInstallScript, 'no install script')
})

posix('the apps see no cargo or rustc on PATH', (t) => {
  const f = get(t)
  for (const node of f.nodes) {
    const dirs = (f.envFor(node).PATH ?? '').split(delimiter)
    const found = dirs.flatMap((d) =>
      ['cargo', 'rustc', 'rustup', 'cc', 'gcc'].filter((tool) => existsSync(join(d, tool))),
    )
    t.deepEqual(found, [], `on PATH: ${dirs.join(delimiter)}`)
  }
})

for (const [parentScript, childScript] of [
  ['parent.mjs', 'child.cjs'],
  ['parent.cjs', 'child.mjs'],
] as const) {
  posix(
    `round trip between two processes: ${parentScript} (import) ↔ ${childScript}`.replace(
      '(import)',
      parentScript.endsWith('.cjs') ? '(require)' : '(import)',
    ),
    async (t) => {
      const f = get(t)
      for (const node of f.nodes) {
        const r = await ok(join(f.envFor(node).PATH!, 'node'), [parentScript, childScript], {
          cwd: f.app,
          env: f.envFor(node),
        })
        const out = JSON.parse(r.stdout) as Record<string, unknown>
        const version = (
          await ok(node, ['-p', 'process.version'], { cwd: f.app, env: f.envFor(node) })
        ).stdout.trim()
        t.is(out.node, version)
        t.true(out.parentGotPayload, `${version}: the parent got the child's payload intact`)
        t.is(out.childCode, 0, `${version}: the child exited cleanly`)
        t.deepEqual(out.child, { childGotEcho: true }, `${version}: the child got its echo`)
        t.is(
          out.addon,
          join(
            f.app,
            'node_modules',
            `${pkg.name}-${current!.platformArchABI}`,
            `${pkg.napi.binaryName}.${current!.platformArchABI}.node`,
          ),
          `${version}: the addon came from the platform package`,
        )
        t.true(Number.isInteger(out.layoutVersion))
      }
    },
  )
}

posix('the README quick start (seed 000) runs where shmpipe is installed', async (t) => {
  const f = get(t)
  const readme = readFileSync(join(repoRoot, 'README.md'), 'utf8')
  const section = readme.split(/^## /m).find((part) => part.startsWith('Quick start'))
  const code = section && /^```js\n([\s\S]*?)^```$/m.exec(section)?.[1]
  if (!code) return t.fail('README.md has no ```js block under ## Quick start')
  writeFileSync(join(f.app, 'quick-start.mjs'), code)
  for (const node of f.nodes) {
    const r = await ok(join(f.envFor(node).PATH!, 'node'), ['quick-start.mjs'], {
      cwd: f.app,
      env: f.envFor(node),
    })
    t.is(r.stdout, 'consumer: 10 frames, the first filled with 0\n', node)
  }
})

posix(
  'the process pool runs its workers from the installed package (import and require)',
  async (t) => {
    // The pool spawns a worker script of the package's own (dist/pool-worker.cjs): a build that
    // left it out broke every pool of an installed package while the tests from the sources passed.
    const f = get(t)
    writeFileSync(
      join(f.app, 'pool-tasks.cjs'),
      'exports.increment = (a) => { for (let i = 0; i < a.length; i++) a[i] += 1; return a }\n',
    )
    const body = `const pool = new ProcessPool({ module: './pool-tasks.cjs', workers: 2 })
const out = await pool.map('increment', [new Float64Array([1, 2]), new Float64Array(3_000_000)])
await pool.close()
console.log(JSON.stringify([out[0].constructor.name, [...out[0]], out[1].length, out[1][2_999_999]]))`
    writeFileSync(join(f.app, 'pool.mjs'), `import { ProcessPool } from 'shmpipe'\n${body}\n`)
    writeFileSync(
      join(f.app, 'pool.cjs'),
      `const { ProcessPool } = require('shmpipe')\n;(async () => {\n${body}\n})()\n`,
    )
    for (const script of ['pool.mjs', 'pool.cjs']) {
      const r = await ok(process.execPath, [script], {
        cwd: f.app,
        env: f.envFor(process.execPath),
      })
      t.deepEqual(JSON.parse(r.stdout), ['Float64Array', [2, 3], 3_000_000, 1], script)
    }
  },
)

posix('the shmpipe command runs from the installed package', async (t) => {
  const f = get(t)
  const bin = join(f.app, 'node_modules', '.bin', 'shmpipe')
  const ls = await ok(bin, ['ls', '--json'], { cwd: f.app, env: f.envFor(process.execPath) })
  t.true(Array.isArray(JSON.parse(ls.stdout)))
  const help = await ok(bin, ['help'], { cwd: f.app, env: f.envFor(process.execPath) })
  t.regex(help.stdout, /^Usage: shmpipe <command>/)
})

posix('TypeScript resolves the declarations for import (.mts) and require (.cts)', async (t) => {
  const f = get(t)
  const r = await run(process.execPath, [tsc, '-p', 'tsconfig.json', '--explainFiles'], {
    cwd: f.app,
  })
  t.is(r.status, 0, r.stdout)
  const shipped = `node_modules/${pkg.name}/dist`
  t.true(r.stdout.includes(`${shipped}/index.d.ts`), 'import: dist/index.d.ts')
  t.true(r.stdout.includes(`${shipped}/cjs/index.d.ts`), 'require: dist/cjs/index.d.ts')
})

posix('without the platform package, import names the package to install', async (t) => {
  const f = get(t)
  const script = `import('shmpipe').then(() => console.log('loaded'), (e) =>
    console.log(JSON.stringify({ name: e.name, code: e.code, message: e.message })))`
  const r = await ok(process.execPath, ['-e', script], {
    cwd: f.bare,
    env: f.envFor(process.execPath),
  })
  const err = JSON.parse(r.stdout) as { name: string; code: string; message: string }
  t.is(err.name, 'ShmpipeError')
  t.is(err.code, 'ERR_SHMPIPE_ADDON_NOT_FOUND')
  const libc = process.platform === 'linux' ? ` \\((glibc|musl)\\)` : ''
  t.regex(
    err.message,
    new RegExp(
      `\\(${process.platform} ${process.arch}${libc}\\) is the package ` +
        `${pkg.name}-${current!.platformArchABI}, which is not installed`,
    ),
  )
})

posix(
  'npm run pack:local: its two tarballs install without asking a registry, and work',
  async (t) => {
    t.timeout(5 * 60_000)
    get(t)
    const dir = join(tempDir!, 'pack-local')
    const packed = await ok(
      process.execPath,
      [
        '--import=tsx',
        join(repoRoot, 'scripts', 'pack-local.ts'),
        `--out=${join(dir, 'packages')}`,
      ],
      { cwd: repoRoot, env: process.env, timeout: 4 * 60_000 },
    )
    const tarballs = packed.stdout.trim().split('\n')
    t.deepEqual(tarballs, [
      join(dir, 'packages', `${pkg.name}-${pkg.version}.tgz`),
      join(dir, 'packages', `${platformPackage(current!)}-${pkg.version}.tgz`),
    ])

    // A registry that answers 404 to everything and records what npm asked.
    const asked: string[] = []
    const registry = createServer((req, res) => {
      asked.push(`${req.method} ${req.url}`)
      res.writeHead(404, { 'content-type': 'application/json' }).end('{"error":"not found"}')
    })
    await new Promise<void>((resolve) => registry.listen(0, '127.0.0.1', resolve))
    t.teardown(() => registry.close())
    const app = join(dir, 'app')
    mkdirSync(app)
    const env = {
      ...npmEnv(dir, { HOME: dir, PATH: join(tempDir!, 'tools') }),
      npm_config_offline: 'false',
      npm_config_registry: `http://127.0.0.1:${(registry.address() as AddressInfo).port}/`,
    }
    await ok(process.execPath, [npmCli(), 'install', ...tarballs], { cwd: app, env })
    t.deepEqual(asked, [], 'npm asked the registry')
    t.deepEqual(
      readdirSync(join(app, 'node_modules'))
        .filter((n) => !n.startsWith('.'))
        .sort(),
      [pkg.name, platformPackage(current!)].sort(),
    )

    const script = `import { createSharedMemoryPair } from 'shmpipe'
const [sender, receiver] = createSharedMemoryPair({ capacity: 2 })
await sender.put({ floats: new Float64Array([1.5, 2.5]) })
const got = await receiver.get({ timeout: 10000 })
sender.close()
receiver.close()
console.log(JSON.stringify([...got.floats]))`
    const r = await ok(process.execPath, ['--input-type=module', '-e', script], { cwd: app, env })
    t.is(r.stdout, '[1.5,2.5]\n')
  },
)
