/**
 * The quick modes of the transport benchmark and of the `get()` benchmarks (issue 16).
 *
 * The transport benchmark's quick mode (`benches/transport.ts --quick`): every transport at a
 * small and a large size, a handful of messages each, every byte checked. Keeps the harness from
 * rotting silently: each transport must deliver every message, in order, with the right bytes,
 * and leave nothing behind.
 */

import { readdirSync } from 'node:fs'
import { fileURLToPath } from 'node:url'

import test from 'ava'

import {
  cellName,
  COLUMNS,
  planRun,
  QUICK_LARGE_SIZES,
  runGetBenchmark,
} from '../benches/get/cells.js'
import type { ReceiverReport } from '../benches/get-memory.js'
import { Results, throughputTable } from '../benches/get/report.js'
import { QUICK_SIZES, SHAPES, TRANSPORTS } from '../benches/transport/common.js'
import { childPids, runBenchmark } from '../benches/transport/driver.js'
import { shmSegments, spawnNode } from './helpers/processes.js'

test('quick mode: every transport delivers every message with the right bytes', async (t) => {
  const before = shmSegments()
  const results = await runBenchmark({
    sizes: QUICK_SIZES,
    transports: TRANSPORTS,
    quick: true,
    shmpipeReceive: 'get',
  })
  t.is(results.length, QUICK_SIZES.length * TRANSPORTS.length)
  for (const size of QUICK_SIZES) {
    for (const transport of TRANSPORTS) {
      const r = results.find((x) => x.size === size && x.transport === transport)
      const what = `${transport} at ${size} B`
      if (r === undefined) {
        t.fail(`${what}: no result`)
        continue
      }
      t.is(r.error, undefined, what)
      t.true(r.expected > 0, `${what}: nothing was planned`)
      t.is(r.delivered, r.expected, `${what}: messages delivered`)
      t.is(r.bad, 0, `${what}: messages with wrong bytes or out of order`)
      t.true(r.counts.length > 0 && r.counts.every((n) => n > 0), `${what}: rounds`)
      t.true(
        r.ns.every((ns) => ns > 0),
        `${what}: every round took some time`,
      )
      t.true(r.gbps > 0 && Number.isFinite(r.gbps), `${what}: throughput`)
    }
  }
  t.true(childPids.size > 0)
  const left = [...shmSegments()].filter(([name, pid]) => !before.has(name) && childPids.has(pid))
  t.deepEqual(left, [], 'shmpipe segments left in /dev/shm by the benchmark processes')
  const sockets = readdirSync('/tmp').filter((f) =>
    [...childPids].some((pid) => f.startsWith(`shmpipe-bench-${pid}-`)),
  )
  t.deepEqual(sockets, [], 'zeromq ipc:// sockets left in /tmp')
})

test('get() benchmark, quick: every cell delivers every value of every shape with the right contents', async (t) => {
  const before = shmSegments()
  const cells = await runGetBenchmark({ runs: 1, largeSizes: QUICK_LARGE_SIZES, quick: true })
  const plan = planRun(QUICK_LARGE_SIZES, true)
  t.is(cells.length, plan.length)
  // Every column and shape the bars need is planned: the baselines, get(), receive(), the peers.
  for (const column of COLUMNS)
    t.true(
      plan.some((p) => p.column === column),
      column,
    )
  for (const shape of SHAPES) t.true(plan.some((p) => p.column === 'get' && p.shape === shape))
  for (const c of cells) {
    const what = cellName(c)
    const r = c.result
    t.is(r.error, undefined, what)
    t.true(r.expected > 0, `${what}: nothing was planned`)
    t.is(r.delivered, r.expected, `${what}: values delivered`)
    t.is(r.bad, 0, `${what}: values with wrong contents or out of order`)
    t.true(r.gbps > 0 && Number.isFinite(r.gbps), `${what}: throughput`)
  }
  // Each get() row of the table has a ratio to the out-of-cache memcpy.
  const table = throughputTable(new Results(cells), QUICK_LARGE_SIZES, [...SHAPES])
  t.is(table.split('\n').length, 2 + QUICK_LARGE_SIZES.length * SHAPES.length)
  t.false(table.includes('–'), table)
  const left = [...shmSegments()].filter(([name, pid]) => !before.has(name) && childPids.has(pid))
  t.deepEqual(left, [], 'shmpipe segments left in /dev/shm by the benchmark processes')
})

interface GetMemoryReport {
  reports: ReceiverReport[]
}

test('get() memory benchmark, quick: receivers get every value intact and count the pipe’s shared memory', async (t) => {
  const script = fileURLToPath(new URL('../benches/get-memory.ts', import.meta.url))
  const child = spawnNode(t, ['--import=tsx', script, '--quick', '--json'])
  const { reports } = (await child.next(120_000)) as GetMemoryReport
  t.deepEqual(await child.exited, { code: 0, signal: null }, child.stderr())
  t.deepEqual(
    reports.map((r) => `${r.mode} ${r.heapMiB}`),
    ['drop null', 'drop 512', 'keep null', 'keep 512'],
  )
  for (const r of reports) {
    const what = `${r.mode}, heap ${r.heapMiB}`
    t.is(r.error, undefined, what)
    t.is(r.received, r.count, what)
    t.is(r.bad, 0, `${what}: values with wrong contents`)
    t.is(r.kept, r.mode === 'keep' ? r.count / 10 : 0, what)
    t.is(r.keptIntact, r.kept, `${what}: kept values intact`)
    // The pipe's shared memory is seen: its 16 MiB ring, and segments of their own for values
    // of 10 MB.
    t.true(r.peakShared >= 16 * 2 ** 20 + 1e7, `${what}: shared memory ${r.peakShared}`)
    t.true(r.peakPrivate > 0 && r.peakTotal >= r.peakPrivate + 1e7, what)
  }
})

test('blob-keep probe: takes every value from another process and reports the sender’s faults', async (t) => {
  const before = new Set(shmSegments().keys())
  const script = fileURLToPath(new URL('../benches/probes/blob-keep/probe.ts', import.meta.url))
  const child = spawnNode(t, ['--import=tsx', script, '--sizes=2e7', '--count=8'])
  const line = (await child.next(60_000)) as {
    size: number
    count: number
    gbPerSecond: number
    senderFaultsPerValue: number
  }
  t.deepEqual(await child.exited, { code: 0, signal: null }, child.stderr())
  t.is(line.size, 2e7)
  t.is(line.count, 8)
  t.true(line.gbPerSecond > 0)
  // The first blobs are fresh: their pages are faulted in as the sender writes them.
  t.true(line.senderFaultsPerValue > 0, `${line.senderFaultsPerValue} faults per value`)
  const left = [...shmSegments()].filter(
    ([name, pid]) => !before.has(name) && pid === child.process.pid,
  )
  t.deepEqual(left, [], 'segments left in /dev/shm by the probe')
})
