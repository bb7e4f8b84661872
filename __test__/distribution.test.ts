/**
 * Tests of what the package is made of, short of installing it (`pack-install.test.ts` does
 * that): the per-platform packages in `npm/` agree with `napi.targets`; the addon loader
 * (`addon.cjs`) names the platform when no addon fits, through every entry point; the built
 * entry points (`dist/index.js` for `import`, `dist/index.cjs` for `require`) export the same API
 * as `index.ts`, as one copy of the package; `npm pack` takes what the `exports` map names and
 * nothing of the sources.
 *
 * Platforms are faked in child processes by redefining `process.platform` and `process.arch`
 * before anything is loaded (the generated loader reads them at load time).
 */

import { execFile } from 'node:child_process'
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'

import { parseTriple } from '@napi-rs/cli'
import test from 'ava'

import * as api from '../index.js'
import { checkNoSegmentLeaks, childPids } from './helpers/processes.js'

checkNoSegmentLeaks(test)

const repoRoot = fileURLToPath(new URL('..', import.meta.url))
const pkg = JSON.parse(readFileSync(join(repoRoot, 'package.json'), 'utf8')) as {
  name: string
  version: string
  engines: { node: string }
  napi: { binaryName: string; targets: string[] }
  exports: Record<string, unknown>
  main: string
  types: string
  bin: Record<string, string>
  [field: string]: unknown
}

/** `<platform>-<arch>[-<abi>]` of every configured target, as napi names the packages. */
const targets = pkg.napi.targets.map((triple) => parseTriple(triple))

interface Run {
  status: number
  stdout: string
  stderr: string
}

/** Runs node with `args` in the repository's root, to its end. */
function runNode(args: string[]): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = execFile(
      process.execPath,
      args,
      { cwd: repoRoot, timeout: 60_000 },
      (err, stdout, stderr) => {
        if (err && typeof err.code !== 'number') reject(err)
        else resolve({ status: err ? (err.code as number) : 0, stdout, stderr })
      },
    )
    if (child.pid !== undefined) childPids.add(child.pid)
  })
}

/** A `-r` preload that makes the process look like `platform`/`arch`. */
function fakePlatform(platform: string, arch: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'shmpipe-fake-platform-'))
  const file = join(dir, 'fake.cjs')
  writeFileSync(
    file,
    `Object.defineProperty(process, 'platform', { value: ${JSON.stringify(platform)} })\n` +
      `Object.defineProperty(process, 'arch', { value: ${JSON.stringify(arch)} })\n`,
  )
  return file
}

/** What loading `how` threw in a process faked as `platform`/`arch`: name, code, message, cause. */
async function loadFailure(
  platform: string,
  arch: string,
  how: 'addon' | 'require' | 'import' | 'source',
): Promise<{
  name: string
  code: string
  message: string
  cause: boolean
  isShmpipeError: boolean
  /** Whether the process ended normally: the failure could be caught. */
  caught: boolean
}> {
  const preload = fakePlatform(platform, arch)
  const report =
    'const r = (e, S) => console.log(JSON.stringify({ name: e.name, code: e.code, ' +
    'message: e.message, cause: e.cause !== undefined, isShmpipeError: !!S && e instanceof S }))\n'
  const scripts = {
    addon: `${report}try { require('./addon.cjs') } catch (e) { r(e) }`,
    require: `${report}try { require('./dist/index.cjs') } catch (e) { r(e) }`,
    import: `${report}import('./dist/index.js').catch((e) => r(e))`,
    source:
      `${report}import('./index.ts').catch(async (e) => ` +
      `r(e, (await import('./src/errors.ts')).ShmpipeError))`,
  }
  try {
    const args = ['-r', preload]
    if (how === 'source') args.push('--import=tsx')
    const script = scripts[how]
    const run = await runNode([...args, '-e', script])
    if (run.stdout.trim() === '') throw new Error(`no report; stderr:\n${run.stderr}`)
    return { ...JSON.parse(run.stdout), caught: run.status === 0 }
  } finally {
    rmSync(join(preload, '..'), { recursive: true, force: true })
  }
}

test('npm/ holds one package per napi target, named and restricted as npm needs', (t) => {
  const dirs = readdirSync(join(repoRoot, 'npm'), { withFileTypes: true })
    .filter((d) => d.isDirectory())
    .map((d) => d.name)
    .sort()
  t.deepEqual(dirs, targets.map((target) => target.platformArchABI).sort())
  t.is(targets.length, 8)
  for (const target of targets) {
    const suffix = target.platformArchABI
    const manifest = JSON.parse(
      readFileSync(join(repoRoot, 'npm', suffix, 'package.json'), 'utf8'),
    ) as Record<string, unknown>
    const file = `${pkg.napi.binaryName}.${suffix}.node`
    t.is(manifest.name, `${pkg.name}-${suffix}`)
    t.is(manifest.version, pkg.version, `${suffix}: version`)
    t.is(manifest.main, file)
    t.deepEqual(manifest.files, [file])
    t.deepEqual(manifest.os, [target.platform])
    t.deepEqual(manifest.cpu, [target.arch])
    if (target.platform === 'linux')
      t.deepEqual(manifest.libc, [target.abi === 'musl' ? 'musl' : 'glibc'], suffix)
    else t.is(manifest.libc, undefined)
    t.deepEqual(manifest.engines, pkg.engines)
    // As `napi create-npm-dirs` copies them (npm's provenance checks `repository`).
    for (const field of ['license', 'repository', 'homepage', 'bugs'])
      t.deepEqual(manifest[field], pkg[field], `${suffix}: ${field}`)
  }
})

test('addon.cjs knows the same targets as package.json', (t) => {
  const source = readFileSync(join(repoRoot, 'addon.cjs'), 'utf8')
  const list = /const TARGETS = \[([^\]]*)\]/.exec(source)?.[1]
  t.truthy(list, 'no TARGETS list in addon.cjs')
  const names = [...(list ?? '').matchAll(/'([^']+)'/g)].map((m) => m[1])
  t.deepEqual(names.sort(), targets.map((target) => target.platformArchABI).sort())
})

test('a platform without a prebuilt addon: ERR_SHMPIPE_UNSUPPORTED_PLATFORM naming it', async (t) => {
  for (const how of ['addon', 'require', 'import', 'source'] as const) {
    const failure = await loadFailure('linux', 'riscv64', how)
    t.is(failure.code, 'ERR_SHMPIPE_UNSUPPORTED_PLATFORM', how)
    t.regex(failure.message, /no native addon for this platform: linux riscv64 \(glibc\)/, how)
    t.regex(failure.message, /linux x64 and arm64 \(glibc and musl\), darwin x64 and arm64/, how)
    t.true(failure.cause, `${how}: the loader's own error is the cause`)
    t.true(failure.caught, `${how}: the failure can be caught`)
    if (how !== 'addon') t.is(failure.name, 'ShmpipeError', how)
  }
  const freebsd = await loadFailure('freebsd', 'x64', 'addon')
  t.is(freebsd.code, 'ERR_SHMPIPE_UNSUPPORTED_PLATFORM')
  t.regex(freebsd.message, /this platform: freebsd x64\./)
})

test('a supported platform whose package is missing: ERR_SHMPIPE_ADDON_NOT_FOUND naming the package', async (t) => {
  const failure = await loadFailure('darwin', 'arm64', 'source')
  t.is(failure.code, 'ERR_SHMPIPE_ADDON_NOT_FOUND')
  t.true(failure.isShmpipeError)
  t.regex(failure.message, /for this platform \(darwin arm64\) is the package shmpipe-darwin-arm64/)
  t.regex(failure.message, /not installed/)
  t.regex(failure.message, /npm install shmpipe-darwin-arm64@0\.1\.0/)
  const windows = await loadFailure('win32', 'x64', 'addon')
  t.is(windows.code, 'ERR_SHMPIPE_ADDON_NOT_FOUND')
  t.regex(windows.message, /\(win32 x64\) is the package shmpipe-win32-x64-msvc/)
})

test('the shmpipe command names the platform when no addon fits', async (t) => {
  const preload = fakePlatform('linux', 'mips64el')
  try {
    const run = await runNode(['-r', preload, 'bin/shmpipe.mjs', 'ls'])
    t.is(run.status, 1)
    t.regex(
      run.stderr,
      /^shmpipe: cannot load the native addon: ERR_SHMPIPE_UNSUPPORTED_PLATFORM: /,
    )
    t.regex(run.stderr, /linux mips64el \(glibc\)/)
  } finally {
    rmSync(join(preload, '..'), { recursive: true, force: true })
  }
})

test('dist/index.js (import) and dist/index.cjs (require) export the API of index.ts, as one copy', async (t) => {
  t.true(existsSync(join(repoRoot, 'dist', 'index.cjs')), 'dist/ is missing: run `npm run build`')
  const script = `
    import { createRequire } from 'node:module'
    const esm = await import('./dist/index.js')
    const cjs = createRequire(import.meta.url)('./dist/index.cjs')
    const [sender, receiver] = esm.createSharedMemoryPair({ capacity: 2, bytes: 1 << 16 })
    sender.putSync({ a: [1n, 'x'] })
    const got = cjs.Receiver.prototype === Object.getPrototypeOf(receiver) ? receiver.getSync() : null
    let error = null
    try { cjs.Sender.attach('shmpipe_0000000000000000') } catch (e) { error = e }
    sender.close(); receiver.close()
    console.log(JSON.stringify({
      esm: Object.keys(esm).filter((k) => k !== 'default').sort(),
      cjs: Object.keys(cjs).sort(),
      sameClass: esm.ShmpipeError === cjs.ShmpipeError && error instanceof esm.ShmpipeError,
      code: error?.code,
      got: got && String(got.a[0]) + got.a[1],
      layoutVersion: esm.layoutVersion(),
    }))`
  const run = await runNode(['--input-type=module', '-e', script])
  t.is(run.status, 0, run.stderr)
  const out = JSON.parse(run.stdout) as Record<string, unknown>
  const expected = Object.keys(api).sort()
  t.deepEqual(out.esm, expected)
  t.deepEqual(out.cjs, expected)
  t.true(out.sameClass, 'import and require share one ShmpipeError class')
  t.is(out.code, 'ERR_SHMPIPE_NOT_FOUND')
  t.is(out.got, '1x')
  t.is(out.layoutVersion, api.layoutVersion())
})

test('the exports map names built files, and npm pack takes them but no sources', async (t) => {
  const conditions = pkg.exports['.'] as Record<string, Record<string, string>>
  const named = [
    pkg.main,
    pkg.types,
    ...Object.values(conditions).flatMap((c) => Object.values(c)),
    ...Object.values(pkg.bin),
  ].map((p) => p.replace(/^\.\//, ''))
  for (const file of named) t.true(existsSync(join(repoRoot, file)), `${file} is missing`)
  const { stdout } = await promisify(execFile)(
    process.platform === 'win32' ? 'npm.cmd' : 'npm',
    ['pack', '--dry-run', '--json', '--ignore-scripts'],
    { cwd: repoRoot, shell: process.platform === 'win32' },
  )
  const files = (JSON.parse(stdout) as { files: { path: string }[] }[])[0]!.files.map((f) => f.path)
  for (const file of [...named, 'addon.cjs', 'binding.cjs', 'package.json', 'README.md'])
    t.true(files.includes(file), `${file} is not packed`)
  for (const file of ['dist/cjs/package.json', 'dist/src/pipe.d.ts', 'dist/cjs/src/pipe.d.ts'])
    t.true(files.includes(file), `${file} is not packed`)
  const unwanted = files.filter((f) =>
    /^(src|__test__|crates|benches|scripts|npm|target)\/|\.node$|^index\.ts$|\.rs$/.test(f),
  )
  t.deepEqual(unwanted, [])
})
