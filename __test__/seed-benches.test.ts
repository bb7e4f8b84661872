/**
 * The seed benchmarks (`benches/seed003.ts`, `benches/seed004.ts`) run in quick mode, so that
 * their harness cannot rot: every frame must arrive and every sum must be right, through shmpipe
 * and through the `child_process` baselines alike. Speeds are not judged here (the machine may be
 * busy); `npm run bench:seed003` / `bench:seed004` measure them.
 */

import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'

import test from 'ava'

import { BENCHMARK_SECTIONS, BENCHMARKS_DOC, markers } from '../benches/results-doc.js'
import { checkNoSegmentLeaks, shmExists, spawnNode } from './helpers/processes.js'

checkNoSegmentLeaks(test)

const bench = (file: string): string =>
  fileURLToPath(new URL(`../benches/${file}`, import.meta.url))

interface Seed003Report {
  producers: number
  rounds: number
  frameLength: number
  results: { transport: string; mode: string; frames: number; fps: number; latP50: number }[]
}

interface Seed004Report {
  records: number
  bytes: number
  expectedSum: number
  results: {
    contender: string
    sums: number[]
    ms: number
    peakMemory: number
    idleMemory: number
    segment: string | null
  }[]
}

test('seed 003, quick: every frame of every producer arrives in order, through each transport and mode', async (t) => {
  const child = spawnNode(t, ['--import=tsx', bench('seed003.ts'), '--quick', '--json'])
  const report = (await child.next(60_000)) as Seed003Report
  t.deepEqual(await child.exited, { code: 0, signal: null }, child.stderr())

  t.is(report.producers, 4)
  t.is(report.frameLength, 24 * 32)
  const runs = report.results.map((r) => `${r.transport} ${r.mode}`).sort()
  t.deepEqual(runs, [
    'ipc busy',
    'ipc sleep',
    'shmpipe-get busy',
    'shmpipe-get sleep',
    'shmpipe-receive busy',
    'shmpipe-receive sleep',
  ])
  for (const r of report.results) {
    // The consumer throws (and the bench exits non-zero) on a missing, reordered or wrong frame.
    t.is(r.frames, report.producers * report.rounds, `${r.transport} ${r.mode}`)
    t.true(r.fps > 0 && Number.isFinite(r.latP50))
  }
})

test('seed 004, quick: each of the 4 workers sums the record column right, from a SharedArray and from an IPC copy', async (t) => {
  const child = spawnNode(t, ['--import=tsx', bench('seed004.ts'), '--quick', '--json'])
  const report = (await child.next(60_000)) as Seed004Report
  t.deepEqual(await child.exited, { code: 0, signal: null }, child.stderr())

  t.is(report.bytes, report.records * 24)
  t.is(report.expectedSum, report.records / 2) // every other record's value is NaN
  t.deepEqual(report.results.map((r) => r.contender).sort(), ['ipc', 'shmpipe'])
  for (const r of report.results) {
    t.deepEqual(
      r.sums,
      [1, 2, 3, 4].map(() => report.expectedSum),
      r.contender,
    )
    t.true(r.peakMemory >= r.idleMemory && r.ms > 0)
  }
  // The array lived in a segment of the run's own parent process (not this test's child):
  // removed when that process was done with it.
  const segment = report.results.find((r) => r.contender === 'shmpipe')!.segment
  t.truthy(segment)
  t.false(shmExists(segment!), `${segment} was left in /dev/shm`)
})

test('docs/benchmarks.md has the section of every benchmark that writes one (--write)', (t) => {
  const doc = readFileSync(BENCHMARKS_DOC, 'utf8')
  for (const [script, key] of Object.entries(BENCHMARK_SECTIONS)) {
    const { start, end } = markers(key)
    const i = doc.indexOf(start)
    t.true(i >= 0 && doc.indexOf(end) > i, `${script}: ${start} … ${end}`)
    const source = readFileSync(fileURLToPath(new URL(`../${script}`, import.meta.url)), 'utf8')
    t.true(source.includes(`writeBenchmarkSection('${key}'`), `${script} writes section ${key}`)
  }
})
