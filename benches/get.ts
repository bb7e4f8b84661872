/**
 * The `get()` benchmark (issue 16): `get()` of large values against the physical limit of moving
 * the bytes through memory once, and against the other transports, measured as a new user would
 * receive them.
 *
 *     node --import=tsx benches/get.ts [--write] [--quick] [--runs=3] [--sizes=1e6,1e7]
 *         [--json=file]
 *
 * Each run measures every cell once, in fresh processes (`benches/get/cells.ts`): 100 B `get()`;
 * then at 1 MB, 10 MB, 100 MB and 1 GB the out-of-cache and cache-hot memcpy, and `get()` and
 * `receive()` of a Buffer, a Float64Array and `{ id, data: Float64Array }` from a child process to
 * its parent through a pipe with the default options; at 10 MB also `child_process`
 * (`serialization: 'advanced'`) and zeromq `ipc://` with the same values. Three runs by default;
 * the bars are checked against each run's own baselines, and hold only if they hold in every run.
 * Prints a line per cell (stderr), then the tables (stdout); `--write` puts them into
 * docs/benchmarks.md (section `get-bench`). `--quick`: one run, a handful of messages per cell,
 * every element checked (what `__test__/bench-smoke.test.ts` runs); its figures mean nothing.
 *
 * @module
 */

import { writeFileSync } from 'node:fs'
import os from 'node:os'

import {
  cellName,
  LARGE_SIZES,
  QUICK_LARGE_SIZES,
  runGetBenchmark,
  type GetCell,
} from './get/cells.js'
import { peersTable, Results, smallTable, throughputTable } from './get/report.js'
import { BENCHMARKS_DOC, writeBenchmarkSection } from './results-doc.js'
import { SHAPES } from './transport/common.js'
import { machineLine, resultLine } from './transport/report.js'

function option(name: string): string | undefined {
  const prefix = `--${name}=`
  return process.argv.find((a) => a.startsWith(prefix))?.slice(prefix.length)
}

function progress(c: GetCell): string {
  return resultLine(`run ${c.run + 1}  ${cellName(c).padEnd(30)}`, c.result)
}

async function main(): Promise<void> {
  const quick = process.argv.includes('--quick')
  const write = process.argv.includes('--write')
  const runs = Number(option('runs') ?? (quick ? 1 : 3))
  const largeSizes =
    option('sizes')?.split(',').map(Number) ?? (quick ? QUICK_LARGE_SIZES : LARGE_SIZES)
  const machine = machineLine()
  const loadBefore = os.loadavg()[0]!
  console.log(`machine: ${machine}; load average ${loadBefore.toFixed(1)}`)
  const started = performance.now()
  const cells = await runGetBenchmark({
    runs,
    largeSizes,
    quick,
    onCell: (c) => console.error(progress(c)),
  })
  const seconds = (performance.now() - started) / 1000
  const load = `load average ${loadBefore.toFixed(1)} before, ${os.loadavg()[0]!.toFixed(1)} after`
  const res = new Results(cells)
  const peerSize = quick ? largeSizes[largeSizes.length - 1]! : undefined
  const tables = [
    throughputTable(res, largeSizes, [...SHAPES]),
    peersTable(res, [...SHAPES], peerSize),
    smallTable(res),
  ]
  console.log(
    `\n${tables.join('\n\n')}\n\nget() benchmark: ${runs} run(s), ${seconds.toFixed(0)} s, ${load}`,
  )
  const json = option('json')
  if (json) writeFileSync(json, `${JSON.stringify({ machine, runs, cells }, null, 2)}\n`)
  const failed = cells.filter(
    (c) =>
      c.result.error !== undefined || c.result.bad > 0 || c.result.delivered !== c.result.expected,
  )
  if (write && !quick) {
    const date = new Date().toISOString().slice(0, 10)
    const block = [
      `Measured ${date} by \`npm run bench:get\` (${runs} runs, ${seconds.toFixed(0)} s, ${load}) on ${machine}.`,
      '',
      '**`get()` against memcpy** (bar: ≥ 0.8× the out-of-cache memcpy of the same size, in every run):',
      '',
      tables[0],
      '',
      '**`get()` against the other transports at 10 MB** (bars: ≥ 5× `child_process`, ≥ 2.5× zeromq, in every run):',
      '',
      tables[1],
      '',
      '**Small values** (bar: 100 B `get()` at 0.5 µs or better, in every run):',
      '',
      tables[2],
    ].join('\n')
    await writeBenchmarkSection('get-bench', block)
    console.log(`wrote the get-bench section of ${BENCHMARKS_DOC}`)
  }
  if (failed.length > 0) {
    console.error(`${failed.length} cell(s) failed`)
    process.exitCode = 1
  }
}

await main()
