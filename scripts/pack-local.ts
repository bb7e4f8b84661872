/**
 * `npm run pack:local`: packs the two tarballs a user installs, from this clone, into `packages/`
 * (after `npm run build`): the main package (`shmpipe-<version>.tgz`) and this machine's addon
 * package (`shmpipe-<platform>-<version>.tgz`), staged as the release workflow stages them
 * (`stage-packages.ts`). Then, in any project, `npm install <clone>/packages/*.tgz` installs
 * shmpipe without a registry. `--out=<dir>` packs into `<dir>` instead.
 *
 * The main package lists no optional dependencies (the published one lists every platform's
 * addon package): npm would look each up in the registry, where they are not yet (even this
 * machine's, given next to it on the command line). The user installs both tarballs; with the
 * main one alone, importing shmpipe fails with `ERR_SHMPIPE_ADDON_NOT_FOUND` naming the other.
 *
 * @module
 */

import { symlinkSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { delimiter, join, resolve } from 'node:path'

import {
  npmCli,
  packInto,
  pkg,
  platformPackage,
  repoRoot,
  stagePackages,
} from './stage-packages.js'

/** Where the tarballs go by default. */
const PACKAGES_DIR = join(repoRoot, 'packages')

async function main(): Promise<void> {
  const out = resolve(
    process.argv.find((a) => a.startsWith('--out='))?.slice('--out='.length) ?? PACKAGES_DIR,
  )
  const dir = mkdtempSync(join(tmpdir(), 'shmpipe-pack-local-'))
  try {
    // napi runs `npm pack` through the shell: give it this node and npm first on PATH.
    const tools = join(dir, 'tools')
    mkdirSync(tools)
    symlinkSync(process.execPath, join(tools, 'node'))
    symlinkSync(npmCli(), join(tools, 'npm'))
    const env = {
      ...process.env,
      PATH: `${tools}${delimiter}${process.env.PATH ?? ''}`,
      npm_config_update_notifier: 'false',
    }
    const { stage, staged, current } = await stagePackages({ dir, env })
    const addonPackage = platformPackage(current)
    delete staged.optionalDependencies
    writeFileSync(join(stage, 'package.json'), `${JSON.stringify(staged, null, 2)}\n`)

    mkdirSync(out, { recursive: true })
    for (const old of readdirSync(out))
      if (old.startsWith(`${pkg.name}-`) && old.endsWith('.tgz')) rmSync(join(out, old))
    await packInto([stage, join(stage, 'npm', current.platformArchABI)], out, env)
    for (const name of [pkg.name, addonPackage])
      console.log(join(out, `${name}-${pkg.version}.tgz`))
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}

try {
  await main()
} catch (err) {
  console.error(`pack:local: ${err instanceof Error ? err.message : String(err)}`)
  process.exitCode = 1
}
