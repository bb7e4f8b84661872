#!/usr/bin/env node
/**
 * `shmpipe`: the command line of the package (`npx shmpipe ls`, `npx shmpipe clean`).
 *
 * Plain JavaScript on purpose: it runs without a TypeScript build step, in a clone of the
 * repository as in the installed package, and loads the native addon through `addon.cjs` (the
 * generated `binding.cjs` with errors that name the platform). `src/cleanup.ts` is the same API
 * for code.
 */

import { createRequire } from 'node:module'
import { parseArgs } from 'node:util'

const USAGE = `Usage: shmpipe <command> [options]

Commands:
  ls [--json] [--all-users]   List the shmpipe shared-memory segments on this machine, shared
                              arrays included: name, kind, backing (shm: a file in /dev/shm;
                              memfd: sealed memory found through a small record there), size,
                              owner pid, owner alive/dead, age, and what clean would do
                              (--json adds the processes holding each).
  clean [options] [NAME...]   Remove the segments whose owner is dead (only NAMEs, if given).
                              Never removes a pipe or message whose owner is alive, nor, unless
                              asked, one a live process may still need: those are kept, with the
                              reason. Shared arrays outlive their creator by design: one goes
                              only when named or with --arrays.
  help                        Show this text.

Options:
  --json            Print JSON instead of text.
  --dry-run         (clean) Show what would be removed; remove nothing.
  --arrays          (clean) Also remove shared arrays that no process has open.
  --force           (clean) Also remove what a live process may still use: a sent message a
                    live process may still receive (it is lost), and, named or with --arrays,
                    an array open in a live process (that process keeps its mapping).
  --all-users       Also judge other users' segments (kept as "other user" otherwise), and so
                    remove those whose owner is dead. Only root can.
  --force-invalid   (clean) Also remove segments with an invalid header (e.g. a creator killed
                    before writing it) that no process has open or mapped (Linux only).

Exit status: 0 on success; 1 if a segment could not be removed or the segments could not be
listed; 2 on a usage error.`

/** Exit statuses. */
const OK = 0
const FAILED = 1
const USAGE_ERROR = 2

function fail(status, message) {
  process.stderr.write(`shmpipe: ${message}\n`)
  process.exit(status)
}

function loadAddon() {
  try {
    return createRequire(import.meta.url)('../addon.cjs')
  } catch (err) {
    // addon.cjs names the platform and what to install or build (err.code says which case).
    return fail(FAILED, `cannot load the native addon: ${err.code ?? 'error'}: ${err.message}`)
  }
}

function formatSize(bytes) {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB']
  let value = bytes
  let unit = 0
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024
    unit++
  }
  return unit === 0 ? `${value} B` : `${value.toFixed(1)} ${units[unit]}`
}

/** How long ago `createdAt` (ms since 1970) was, in the largest whole unit: `42s`, `5m`, `3h`, `2d`. */
function formatAge(createdAt) {
  if (createdAt === null) return '-'
  const seconds = Math.max(0, Math.floor((Date.now() - createdAt) / 1000))
  if (seconds < 60) return `${seconds}s`
  if (seconds < 3600) return `${Math.floor(seconds / 60)}m`
  if (seconds < 86400) return `${Math.floor(seconds / 3600)}h`
  return `${Math.floor(seconds / 86400)}d`
}

function table(rows) {
  const widths = rows[0].map((_, col) => Math.max(...rows.map((r) => r[col].length)))
  return rows
    .map((r) =>
      r.map((cell, col) => (col === r.length - 1 ? cell : cell.padEnd(widths[col]))).join('  '),
    )
    .join('\n')
}

function row(s, action) {
  return [
    s.name,
    s.kind ?? '-',
    s.backing,
    formatSize(s.size),
    s.ownerPid === null ? '-' : String(s.ownerPid),
    s.owner,
    formatAge(s.createdAt),
    action === undefined ? s.detail : `${action}: ${s.detail}`,
  ]
}

const HEADER = ['NAME', 'KIND', 'BACKING', 'SIZE', 'PID', 'OWNER', 'AGE', 'STATUS']

/** What to ask for to remove kept segments of each status (printed once per status kept). */
const HINTS = {
  'other-user': "other users' segments are kept: --all-users judges them as your own",
  array: 'shared arrays are kept: name them, or use --arrays',
  'array-in-use': 'arrays open in a live process are kept: name them (or --arrays) with --force',
  'maybe-in-use': 'messages a live process may receive are kept: --force removes them',
}

/** Exits on an error of the addon: a usage error for an invalid argument. */
function translate(err) {
  const code = err?.code
  if (typeof code !== 'string' || !code.startsWith('ERR_SHMPIPE_')) return fail(FAILED, err.message)
  return fail(
    code === 'ERR_SHMPIPE_INVALID_ARGUMENT' ? USAGE_ERROR : FAILED,
    `${code}: ${err.message}`,
  )
}

function ls(addon, values) {
  let segments
  try {
    segments = addon.listSegments({ allUsers: values['all-users'] })
  } catch (err) {
    return translate(err)
  }
  if (values.json) {
    process.stdout.write(`${JSON.stringify(segments, null, 2)}\n`)
  } else if (segments.length === 0) {
    process.stdout.write(
      process.platform === 'win32'
        ? 'Windows removes shared memory with its last handle: there is nothing to list.\n'
        : 'No shmpipe segments.\n',
    )
  } else {
    const rows = segments.map((s) => row(s, s.removable ? 'clean removes' : undefined))
    process.stdout.write(`${table([HEADER, ...rows])}\n`)
  }
  return OK
}

function clean(addon, values, names) {
  let report
  try {
    report = addon.cleanSegments({
      ...(names.length > 0 ? { names } : {}),
      forceInvalid: values['force-invalid'],
      dryRun: values['dry-run'],
      allUsers: values['all-users'],
      arrays: values.arrays,
      force: values.force,
    })
  } catch (err) {
    return translate(err)
  }
  const { removed, kept } = report
  const failed = report.failed.map((f) => ({
    segment: f.segment,
    error: `${f.code}: ${f.message}`,
  }))
  const seen = new Set([...removed, ...kept, ...failed.map((f) => f.segment)].map((s) => s.name))
  const notFound = names.filter((n) => !seen.has(n))
  if (values.json) {
    const out = { dryRun: values['dry-run'], removed, kept, failed, notFound }
    process.stdout.write(`${JSON.stringify(out, null, 2)}\n`)
  } else {
    const verb = values['dry-run'] ? 'would remove' : 'removed'
    // Kept segments worth a word: those of dead or unknown owners, and invalid ones.
    const notable = kept.filter((s) => s.status !== 'owner-alive' && s.status !== 'creating')
    const rows = [...removed.map((s) => row(s, verb)), ...notable.map((s) => row(s, 'kept'))]
    if (rows.length > 0) process.stdout.write(`${table([HEADER, ...rows])}\n`)
    for (const name of notFound) {
      // A shared array's segment is its name with a prefix: say so to one who gave the array's.
      const array = /^[A-Za-z0-9_.-]{1,20}$/.test(name) && !name.startsWith('shmpipe_') ? ` (a shared array named ${name} is shmpipe_a_${name})` : '' // prettier-ignore
      process.stderr.write(`shmpipe: no shmpipe segment named ${name}${array}\n`)
    }
    for (const f of failed)
      process.stderr.write(`shmpipe: could not remove ${f.segment.name}: ${f.error}\n`)
    for (const status of new Set(notable.map((s) => s.status)))
      if (HINTS[status] !== undefined) process.stdout.write(`(${HINTS[status]})\n`)
    process.stdout.write(
      `${removed.length} ${verb}, ${kept.length} kept${failed.length > 0 ? `, ${failed.length} failed` : ''}.\n`,
    )
  }
  return failed.length > 0 ? FAILED : OK
}

function main(argv) {
  let parsed
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        json: { type: 'boolean', default: false },
        'dry-run': { type: 'boolean', default: false },
        'force-invalid': { type: 'boolean', default: false },
        force: { type: 'boolean', default: false },
        arrays: { type: 'boolean', default: false },
        'all-users': { type: 'boolean', default: false },
        help: { type: 'boolean', short: 'h', default: false },
      },
    })
  } catch (err) {
    return fail(USAGE_ERROR, `${err.message}\n\n${USAGE}`)
  }
  const { values, positionals } = parsed
  const [command, ...rest] = positionals
  if (values.help || command === 'help') {
    process.stdout.write(`${USAGE}\n`)
    return OK
  }
  switch (command) {
    case 'ls':
    case 'list':
      if (
        rest.length > 0 ||
        values['dry-run'] ||
        values['force-invalid'] ||
        values.force ||
        values.arrays
      )
        return fail(USAGE_ERROR, `ls takes no names and only --json, --all-users\n\n${USAGE}`)
      return ls(loadAddon(), values)
    case 'clean':
      return clean(loadAddon(), values, rest)
    case undefined:
      return fail(USAGE_ERROR, `a command is needed\n\n${USAGE}`)
    default:
      return fail(USAGE_ERROR, `unknown command '${command}'\n\n${USAGE}`)
  }
}

process.exitCode = main(process.argv.slice(2))
