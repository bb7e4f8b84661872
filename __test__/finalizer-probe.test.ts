/**
 * The finalizer-lag probe (`benches/probes/finalizer-lag/probe.ts`) in quick mode, so that it
 * cannot rot, and so that a Node release that changes when the finalizers of external Buffers
 * run is noticed: the rules of `docs/decisions/2026-12-07-finalizer-lag.md` rest on what this
 * checks. Memory figures are not judged here (the machine may be busy); `npm run
 * probe:finalizers` measures them.
 */

import { fileURLToPath } from 'node:url'

import test from 'ava'

import { spawnNode } from './helpers/processes.js'

const probe = fileURLToPath(new URL('../benches/probes/finalizer-lag/probe.ts', import.meta.url))

interface Step {
  step: string
  kind: 'made' | 'gc' | 'microtasks' | 'turn'
  finalized: number
}

interface Sample {
  made: number
  finalized: number | null
}

type Entry =
  | { part: 'steps'; steps: Step[] }
  | { part: 'napi'; kind: string; loop: string; samples: Sample[]; capped: boolean }
  | { part: 'pipe'; path: string; work: number; loop: string; samples: Sample[]; capped: boolean }

test('finalizer probe, quick: finalizers run only when the event loop turns, and every case runs', async (t) => {
  const child = spawnNode(t, ['--import=tsx', probe, '--quick', '--json'])
  const report = (await child.next(110_000)) as Entry[]
  t.deepEqual(await child.exited, { code: 0, signal: null }, child.stderr())

  // One dropped Buffer at a time: a finalizer runs at a turn of the event loop, never inside a
  // collection or a microtask, and both external Buffers are finalized in the end.
  const steps = report.flatMap((e) => (e.part === 'steps' ? e.steps : []))
  t.true(steps.length > 0, 'no steps')
  for (let i = 1; i < steps.length; i++) {
    const s = steps[i]!
    if (s.kind !== 'turn') {
      t.is(s.finalized, steps[i - 1]!.finalized, `a finalizer ran at step ${i} (${s.step})`)
    }
  }
  t.is(steps.at(-1)!.finalized, 2, 'both external Buffers finalized')

  // Loops over external Buffers: none is finalized while the loop never yields, most are at the
  // first turn after it; a loop that yields has most finalized as it goes.
  const napi = report.flatMap((e) => (e.part === 'napi' ? [e] : []))
  t.is(napi.length, 4 * 5 + 2, 'napi cases')
  for (const c of napi) {
    const what = `${c.kind}, ${c.loop}`
    const during = c.samples.slice(0, -1)
    const last = during.at(-1)!
    const after = c.samples.at(-1)!
    t.is(last.made, 30, `${what}: values made`)
    if (c.kind === 'copy') {
      t.is(after.finalized, null, `${what}: Node's own Buffers have no finalizer to count`)
    } else if (c.loop === 'sync' || c.loop === 'microtask') {
      for (const s of during) t.is(s.finalized, 0, `${what}: finalized without a turn`)
      t.true(after.finalized! >= 15, `${what}: ${after.finalized} finalized after one turn`)
    } else if (c.loop === 'immediate') {
      t.true(last.finalized! >= 15, `${what}: ${last.finalized} finalized while yielding`)
    }
  }

  // The real pipe: every case delivers every value (none is stopped by the memory cap here).
  const pipe = report.flatMap((e) => (e.part === 'pipe' ? [e] : []))
  t.is(pipe.length, 3 * 2 * 2, 'pipe cases')
  for (const c of pipe) {
    const what = `${c.path}, ${c.work} ms work, ${c.loop}`
    t.false(c.capped, `${what}: capped`)
    t.is(c.samples.at(-1)!.made, 12, `${what}: values taken`)
  }
})
