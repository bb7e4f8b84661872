/**
 * `npm run pack:local`: packs the two tarballs a user installs, from this clone, into `packages/`
 * (after `npm run build`): the main package (`shmpipe-<version>.tgz`) and this machine's addon
 * package (`shmpipe-<platform>-<version>.tgz`), staged as the release workflow stages them
 * (`stage-packages.ts`). Then, in any project, `npm install <clone>/packages/*.tgz` installs
 * shmpipe without a registry.
 *
 * The main package lists only this machine's addon package as an optional dependency (the
 * published one lists every platform's): the others are not in the registry yet, and npm would
 * look them up there.
 *
 * @module
 */

import { symlinkSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { delimiter, join } from 'node:path'

import {
  npmCli,
  packInto,
  pkg,
  platformPackage,
  repoRoot,
  stagePackages,
} from './stage-packages.js'

/** Where the tarballs go. */
export const PACKAGES_DIR = join(repoRoot, 'packages')

async function main(): Promise<void> {
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
    staged.optionalDependencies = { [addonPackage]: pkg.version }
    writeFileSync(join(stage, 'package.json'), `${JSON.stringify(staged, null, 2)}\n`)

    mkdirSync(PACKAGES_DIR, { recursive: true })
    for (const old of readdirSync(PACKAGES_DIR))
      if (old.startsWith(`${pkg.name}-`) && old.endsWith('.tgz')) rmSync(join(PACKAGES_DIR, old))
    await packInto([stage, join(stage, 'npm', current.platformArchABI)], PACKAGES_DIR, env)
    for (const name of [pkg.name, addonPackage])
      console.log(join(PACKAGES_DIR, `${name}-${pkg.version}.tgz`))
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
