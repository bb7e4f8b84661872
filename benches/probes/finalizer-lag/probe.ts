/**
 * The finalizer-lag probe (issue 16): why the finalizers of Buffers that an addon hands out lag
 * behind a loop that takes values, and what makes them keep up.
 *
 *     node --import=tsx benches/probes/finalizer-lag/probe.ts [--quick] [--json]
 *         [--parts=steps,napi,pipe] [--node=<path>]… [--max-old-space-size=<MB>]
 *
 * Builds `addon.c` (a pure Node-API addon) with the system C compiler against this Node's headers,
 * then runs each case in a child process of its own (see each child's header):
 *
 * - `steps` (`napi-steps.ts`): one dropped external Buffer, then one collection or event-loop turn
 *   at a time: which step runs its finalizer;
 * - `napi` (`napi-case.ts`): 300 Buffers of 10 MB, dropped in loops that never yield (`sync`,
 *   `microtask`) or yield to the event loop (`immediate`, `immediate16`, `bounded`): external
 *   with and without `napi_adjust_external_memory`, external ArrayBuffers, external with a basic
 *   finalizer (a second build of the addon), and from Node's allocator;
 * - `pipe` (`pipe-case.ts`): a real receiver taking values from a sender process with
 *   `await receiver.get()`, on each of `get()`'s three paths (a view onto a blob, a copy into
 *   recycled memory, a copy into Node's allocator), with a receiver that keeps up and one slower
 *   than its sender.
 *
 * Every case stops early once its memory passes 1.2 GB (`napi`) or 1.5 GB (`pipe`, RSS plus the
 * shared memory the receiver maps): `capped` in the table. `--node` runs the cases under other
 * Node binaries too (Node-API is ABI-stable, one build serves all; `--import=tsx` needs Node
 * 20.6+); `--max-old-space-size` is passed to every child. `--quick`: fewer values, for checking
 * that it runs. `--json`: the raw samples instead of the table.
 *
 * The findings, with figures: docs/decisions/2026-12-07-finalizer-lag.md.
 *
 * @module
 */

import { execFileSync, spawnSync } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import os from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

import type { Sample } from './sample.js'

const here = dirname(fileURLToPath(import.meta.url))
const PARTS = ['steps', 'napi', 'pipe'] as const

function options(name: string): string[] {
  const prefix = `--${name}=`
  return process.argv.filter((a) => a.startsWith(prefix)).map((a) => a.slice(prefix.length))
}

const quick = process.argv.includes('--quick')
const json = process.argv.includes('--json')
const parts = options('parts')[0]?.split(',') ?? [...PARTS]
for (const p of parts)
  if (!(PARTS as readonly string[]).includes(p)) throw new Error(`unknown part ${p}`)
const nodes = [process.execPath, ...options('node')]
const oldSpace = options('max-old-space-size')[0]
const nodeFlags = oldSpace === undefined ? [] : [`--max-old-space-size=${oldSpace}`]

/**
 * Builds the addon into `dir` against this Node's headers; returns its path. `basic`: with
 * `NAPI_EXPERIMENTAL`, so that its finalizer is a basic one (see `addon.c`).
 */
function buildAddon(dir: string, basic: boolean): string {
  const include = join(dirname(dirname(process.execPath)), 'include', 'node')
  const out = join(dir, basic ? 'finalizer-probe-basic.node' : 'finalizer-probe.node')
  const flags = basic ? ['-DNAPI_EXPERIMENTAL', '-Wno-cpp'] : []
  execFileSync('cc', ['-O2', '-shared', '-fPIC', ...flags, `-I${include}`, join(here, 'addon.c'), '-o', out]) // prettier-ignore
  return out
}

interface CaseResult {
  samples: (Sample & { turns?: number; shmMappedMB?: number; blobMaps?: number })[]
  capped: boolean
  ms: number
  turns?: number
}

/** Runs one child; returns its JSON line. */
function runChild(node: string, flags: string[], script: string, args: string[]): unknown {
  const r = spawnSync(node, [...flags, '--import=tsx', join(here, script), ...args], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'inherit'],
    maxBuffer: 64 << 20,
  })
  if (r.status !== 0) throw new Error(`${script} ${args.join(' ')} exited with ${r.status}`)
  return JSON.parse(r.stdout.trim().split('\n').pop()!)
}

const rows: string[][] = []
const raw: unknown[] = []

function addRow(node: string, name: string, r: CaseResult): void {
  const s = r.samples
  const last = s[s.length - 2]!
  const after = s[s.length - 1]!
  const peak = (f: (x: (typeof s)[number]) => number) => Math.max(...s.map(f))
  const fin = (x: number) => (Number.isFinite(x) ? String(x) : '-')
  const shm = fin
  rows.push([
    node,
    name,
    String(last.made),
    fin(last.finalized),
    String(r.turns ?? last.turns),
    String(peak((x) => x.rssMB)),
    shm(peak((x) => x.shmMappedMB ?? NaN)),
    String(last.scavenges),
    String(last.markCompacts),
    r.capped ? 'capped' : '',
    fin(after.finalized),
    String(after.rssMB),
    shm(after.shmMappedMB ?? NaN),
    String(Math.round(r.ms)),
  ])
}

function printTable(): void {
  const head = [
    'node', 'case', 'values', 'finalized', 'loop turns', 'peak RSS', 'peak shm', 'scavenges',
    'mark-compacts', '', 'then 1 turn: finalized', 'RSS', 'shm', 'ms',
  ] // prettier-ignore
  console.log(
    'Memory in MB (10^6 B). loop turns: awaited setImmediates, plus (pipe) the get() calls that ' +
      'waited. shm: the pipe segments the receiver maps (ring and blobs). finalized: ' +
      'external Buffers whose finalizer ran (- where not countable).',
  )
  const all = [head, ...rows]
  const widths = head.map((_, i) => Math.max(...all.map((r) => r[i]!.length)))
  for (const r of all)
    console.log(
      r
        .map((c, i) => c.padEnd(widths[i]!))
        .join('  ')
        .trimEnd(),
    )
}

const dir = mkdtempSync(join(os.tmpdir(), 'shmpipe-finalizer-probe-'))
try {
  const addon = buildAddon(dir, false)
  const basicAddon = buildAddon(dir, true)
  const load = os
    .loadavg()
    .map((x) => x.toFixed(1))
    .join(' ')
  console.error(
    `${os.cpus().length} CPUs (${os.cpus()[0]?.model}), load ${load}, flags [${nodeFlags.join(' ')}]`,
  )
  for (const node of nodes) {
    const version = execFileSync(node, ['--version'], { encoding: 'utf8' }).trim()
    if (parts.includes('steps')) {
      const r = runChild(node, [...nodeFlags, '--expose-gc'], 'napi-steps.ts', [addon]) as {
        steps: { step: string; finalized: number }[]
      }
      raw.push({ node: version, part: 'steps', ...r })
      const say = json ? console.error : console.log
      say(
        `${version} steps (finalizers run so far): ` +
          r.steps.map((x) => `${x.step} ${x.finalized}`).join(' → '),
      )
    }
    if (parts.includes('napi')) {
      const n = quick ? 30 : 300
      const loops = ['sync', 'microtask', 'immediate16', 'immediate', 'bounded']
      const cases = [
        ...['external', 'external-adjust', 'arraybuffer-adjust', 'copy'].map((kind) => ({
          name: kind,
          kind,
          addon,
          loops,
        })),
        // The same Buffers with a basic finalizer: Node-API defers it all the same.
        {
          name: 'external-adjust-basic',
          kind: 'external-adjust',
          addon: basicAddon,
          loops: ['microtask', 'immediate'],
        },
      ]
      for (const c of cases) {
        for (const loop of c.loops) {
          const r = runChild(node, nodeFlags, 'napi-case.ts', [c.addon, c.kind, loop, '10000000', String(n), '1200']) as CaseResult // prettier-ignore
          raw.push({ node: version, part: 'napi', kind: c.name, loop, ...r })
          addRow(version, `napi ${c.name} 10MB, ${loop}`, r)
          console.error(`${version} napi ${c.name} ${loop}: done`)
        }
      }
    }
    if (parts.includes('pipe')) {
      const paths = [
        { name: 'blob view', ring: 4 << 20, size: 10e6, n: 100 },
        { name: 'recycled copy', ring: 256 << 20, size: 40e6, n: 60 },
        { name: 'allocator copy', ring: 64 << 20, size: 10e6, n: 100 },
      ]
      for (const p of paths) {
        for (const work of [0, 20]) {
          for (const loop of ['get', 'immediate']) {
            const n = quick ? 12 : p.n
            const args = [String(p.ring), String(p.size), String(n), loop, '1500', String(work)]
            const r = runChild(node, nodeFlags, 'pipe-case.ts', args) as CaseResult
            raw.push({ node: version, part: 'pipe', path: p.name, work, loop, ...r })
            const what = `pipe ${p.name} ${p.size / 1e6}MB, ${work ? `${work}ms work, ` : ''}${loop === 'get' ? 'await get()' : 'get()+setImmediate'}` // prettier-ignore
            addRow(version, what, r)
            console.error(`${version} ${what}: done`)
          }
        }
      }
    }
  }
} finally {
  rmSync(dir, { recursive: true, force: true })
}
if (json) console.log(JSON.stringify(raw))
else if (rows.length > 0) printTable()
