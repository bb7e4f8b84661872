/**
 * Stages the packages a user installs as the release workflow has them just before publishing:
 * a copy of what `npm pack` takes from this repository (the built `dist/`, `addon.cjs`,
 * `binding.cjs`, `bin/`) and of `npm/`, with the addon built here put in
 * `artifacts/bindings-<triple>/` as the workflow's download does (the other targets get
 * placeholder files: they cannot be built here); then the real `napi artifacts` (addons into
 * `npm/*`) and `napi pre-publish --skip-optional-publish --no-gh-release` (which writes the main
 * package's `optionalDependencies`). Used by `npm run pack:local` (`pack-local.ts`) and by
 * `__test__/pack-install.test.ts`.
 *
 * @module
 */

import { execFile } from 'node:child_process'
import {
  copyFileSync,
  cpSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  statSync,
  writeFileSync,
} from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

import { parseTriple } from '@napi-rs/cli'

/** The repository's root. */
export const repoRoot = fileURLToPath(new URL('..', import.meta.url))

export interface Manifest {
  name: string
  version: string
  napi: { binaryName: string; targets: string[] }
  optionalDependencies?: Record<string, string>
}

/** The repository's package.json. */
export const pkg = JSON.parse(readFileSync(join(repoRoot, 'package.json'), 'utf8')) as Manifest

/** napi's CLI script. */
export const napiCli = join(repoRoot, 'node_modules', '@napi-rs', 'cli', 'dist', 'cli.js')

export type Target = ReturnType<typeof parseTriple>

/** Every target of `napi.targets`. */
export const targets: Target[] = pkg.napi.targets.map((triple) => parseTriple(triple))

/** Whether this Linux runs on glibc (else musl). */
function isGlibc(): boolean {
  const report = process.report.getReport() as { header?: { glibcVersionRuntime?: string } }
  return Boolean(report.header?.glibcVersionRuntime)
}

/** The target of this machine (platform, CPU and, on Linux, libc), if it is one. */
export const currentTarget: Target | undefined = targets.find(
  (t) =>
    t.platform === process.platform &&
    t.arch === process.arch &&
    (t.platform !== 'linux' || (t.abi === 'musl') !== isGlibc()),
)

/** The name of a target's package: `shmpipe-linux-x64-gnu`. */
export function platformPackage(t: Target): string {
  return `${pkg.name}-${t.platformArchABI}`
}

/** npm's own script: under `npm run`/`npm test` npm says where it is; else next to node. */
export function npmCli(): string {
  const fromNpm = process.env.npm_execpath
  if (fromNpm && /npm-cli\.js$/.test(fromNpm)) return fromNpm
  const candidates = [
    join(dirname(process.execPath), '..', 'lib', 'node_modules', 'npm', 'bin', 'npm-cli.js'),
    '/usr/lib/node_modules/npm/bin/npm-cli.js',
    '/usr/local/lib/node_modules/npm/bin/npm-cli.js',
  ]
  const found = candidates.find((c) => existsSync(c))
  if (!found) throw new Error('cannot find npm-cli.js: run this through npm')
  return found
}

/** Runs `file args` and rejects with its output unless it exits 0. */
export function ok(
  file: string,
  args: string[],
  options: { cwd: string; env?: NodeJS.ProcessEnv; timeout?: number },
): Promise<{ stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    execFile(
      file,
      args,
      { cwd: options.cwd, env: options.env, timeout: options.timeout ?? 120_000 },
      (err, stdout, stderr) => {
        if (err)
          reject(
            new Error(`${file} ${args.join(' ')} failed: ${err.message}\n${stdout}\n${stderr}`),
          )
        else resolve({ stdout, stderr })
      },
    )
  })
}

/** The addon built here for `target`. */
export function builtAddon(target: Target): string {
  return join(repoRoot, `${pkg.napi.binaryName}.${target.platformArchABI}.node`)
}

/**
 * Throws unless the addon for this machine, `dist/` and `binding.cjs` are built and `dist/` is
 * newer than every TypeScript source it is built from.
 */
export function checkBuilt(): Target {
  if (!currentTarget) throw new Error(`no napi target for ${process.platform} ${process.arch}`)
  const addon = builtAddon(currentTarget)
  for (const built of [addon, join(repoRoot, 'dist', 'index.cjs'), join(repoRoot, 'binding.cjs')])
    if (!existsSync(built)) throw new Error(`${built} is missing: run \`npm run build\``)
  const sources = [
    'index.ts',
    ...readdirSync(join(repoRoot, 'src'), { encoding: 'utf8', recursive: true }).map((f) =>
      join('src', f),
    ),
  ]
  const distTime = statSync(join(repoRoot, 'dist', 'index.cjs')).mtimeMs
  const newer = sources.filter((f) => statSync(join(repoRoot, f)).mtimeMs > distTime)
  if (newer.length > 0)
    throw new Error(`dist/ is older than ${newer.join(', ')}: run \`npm run build\``)
  return currentTarget
}

export interface StageOptions {
  /** An empty directory to stage in: `stage/` and `artifacts/` are made there. */
  dir: string
  /** The environment of napi (which runs `npm pack` through the shell: `node` and `npm` on PATH). */
  env: NodeJS.ProcessEnv
}

/**
 * Stages the packages in `dir/stage` (the main package) and `dir/stage/npm/<platform>/` (one per
 * target; only this machine's holds a real addon). Returns the stage's directory and its main
 * package's manifest after `napi pre-publish`.
 */
export async function stagePackages({
  dir,
  env,
}: StageOptions): Promise<{ stage: string; staged: Manifest; current: Target }> {
  const current = checkBuilt()
  const node = process.execPath
  const stage = join(dir, 'stage')
  const listing = await ok(node, [npmCli(), 'pack', '--dry-run', '--json', '--ignore-scripts'], {
    cwd: repoRoot,
    env: { ...process.env, npm_config_update_notifier: 'false' },
  })
  const packed = (JSON.parse(listing.stdout) as { files: { path: string }[] }[])[0]!.files
  for (const { path } of packed) {
    mkdirSync(dirname(join(stage, path)), { recursive: true })
    copyFileSync(join(repoRoot, path), join(stage, path))
  }
  cpSync(join(repoRoot, 'npm'), join(stage, 'npm'), { recursive: true })
  for (const target of targets) {
    const artifactDir = join(dir, 'artifacts', `bindings-${target.triple}`)
    const file = join(artifactDir, `${pkg.napi.binaryName}.${target.platformArchABI}.node`)
    mkdirSync(artifactDir, { recursive: true })
    if (target === current) copyFileSync(builtAddon(current), file)
    else writeFileSync(file, 'placeholder: this target is built by the release workflow\n')
  }
  await ok(node, [napiCli, 'artifacts', '--output-dir', '../artifacts', '--npm-dir', 'npm'], {
    cwd: stage,
    env,
  })
  await ok(
    node,
    [napiCli, 'pre-publish', '-t', 'npm', '--skip-optional-publish', '--no-gh-release'],
    { cwd: stage, env },
  )
  const staged = JSON.parse(readFileSync(join(stage, 'package.json'), 'utf8')) as Manifest
  return { stage, staged, current }
}

/** `npm pack`s the package in each of `dirs` into `destination` (scripts not run). */
export async function packInto(
  dirs: string[],
  destination: string,
  env: NodeJS.ProcessEnv,
): Promise<void> {
  await Promise.all(
    dirs.map((cwd) =>
      ok(
        process.execPath,
        [npmCli(), 'pack', '--ignore-scripts', '--pack-destination', destination],
        {
          cwd,
          env,
        },
      ),
    ),
  )
}
