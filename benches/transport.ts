/**
 * Node transport benchmark (issue 3): streamed throughput from one producer process to one
 * consumer process, for shmpipe, `child_process` IPC (`serialization: 'advanced'`), zeromq
 * PUSH/PULL over `ipc://` and `worker_threads` (threads, for reference), next to a plain memcpy,
 * at the sizes of seed 000's table (10 B … 1 GB), all in one run.
 *
 *     node --import=tsx benches/transport.ts [--write] [--quick] [--sizes=10,1e6]
 *         [--transports=shmpipe,zeromq] [--shmpipe-receive=get|iterator|receive]
 *         [--pipe-bytes=67108864] [--json=file]
 *
 * Prints the machine, one line per cell as it finishes (stderr), then the Markdown table and the
 * bars of issue 3 (stdout). `--write` also puts them into docs/benchmarks.md (between the
 * `transport-bench` markers) and the chart into `benches/transport.svg`. `--quick` runs a few
 * sizes with a handful of messages, every byte checked (what `__test__/bench-smoke.test.ts` runs).
 * How a cell is timed: see `benches/transport/common.ts`; each transport's usage: its module.
 *
 * @module
 */

import { writeFileSync } from 'node:fs'
import os from 'node:os'
import { fileURLToPath } from 'node:url'

import {
  QUICK_SIZES,
  SIZES,
  sizeLabel,
  TRANSPORTS,
  type ShmpipeReceive,
  type Transport,
} from './transport/common.js'
import { runBenchmark, type CellResult } from './transport/driver.js'
import {
  barsTable,
  machineLine,
  markdownTable,
  resultLine,
  transportName,
  svgChart,
} from './transport/report.js'
import { BENCHMARKS_DOC, writeBenchmarkSection } from './results-doc.js'

const SVG = fileURLToPath(new URL('./transport.svg', import.meta.url))

function option(name: string): string | undefined {
  const prefix = `--${name}=`
  return process.argv.find((a) => a.startsWith(prefix))?.slice(prefix.length)
}

function progress(r: CellResult, shmpipeReceive: ShmpipeReceive): string {
  const head = `${transportName(r.transport, shmpipeReceive).padEnd(18)}${sizeLabel(r.size).padStart(7)}`
  return resultLine(head, r)
}

async function main(): Promise<void> {
  const quick = process.argv.includes('--quick')
  const write = process.argv.includes('--write')
  const sizes = option('sizes')?.split(',').map(Number) ?? (quick ? QUICK_SIZES : SIZES)
  const transports = (option('transports')?.split(',') ?? TRANSPORTS) as Transport[]
  for (const t of transports)
    if (!TRANSPORTS.includes(t))
      throw new Error(`unknown transport ${t} (${TRANSPORTS.join(', ')})`)
  const shmpipeReceive = (option('shmpipe-receive') ?? 'get') as ShmpipeReceive
  const pipeBytesOption = option('pipe-bytes')
  const pipeBytes = pipeBytesOption === undefined ? undefined : Number(pipeBytesOption)
  const machine = machineLine()
  const loadBefore = os.loadavg()[0]!
  console.log(`machine: ${machine}; load average ${loadBefore.toFixed(1)}`)
  const started = performance.now()
  const results = await runBenchmark({
    sizes,
    transports,
    quick,
    shmpipeReceive,
    pipeBytes,
    onCell: (r) => console.error(progress(r, shmpipeReceive)),
  })
  const seconds = (performance.now() - started) / 1000
  const load = `load average ${loadBefore.toFixed(1)} before, ${os.loadavg()[0]!.toFixed(1)} after`
  const table = markdownTable(results, shmpipeReceive)
  const bars = barsTable(results, shmpipeReceive)
  // Quick mode's figures mean nothing (a handful of messages, every byte checked): no bars.
  console.log(
    `\n${table}\n\n${quick ? '' : `${bars}\n\n`}transport benchmark: ${seconds.toFixed(0)} s, ${load}`,
  )
  const json = option('json')
  if (json) writeFileSync(json, `${JSON.stringify({ machine, results }, null, 2)}\n`)
  const failed = results.filter(
    (r) => r.error !== undefined || r.bad > 0 || r.delivered !== r.expected,
  )
  if (write && !quick) {
    const date = new Date().toISOString().slice(0, 10)
    writeFileSync(
      SVG,
      svgChart(
        results,
        'Streamed throughput, one producer process → one consumer process',
        `${date} · ${machine}`,
        shmpipeReceive,
      ),
    )
    const block = [
      `Measured ${date} by \`npm run bench\` (${seconds.toFixed(0)} s, ${load}) on ${machine}.`,
      '',
      '![Throughput against message size](../benches/transport.svg)',
      '',
      table,
      '',
      bars,
    ].join('\n')
    await writeBenchmarkSection('transport-bench', block)
    console.log(`wrote ${SVG} and the benchmark section of ${BENCHMARKS_DOC}`)
  }
  if (failed.length > 0) {
    console.error(`${failed.length} cell(s) failed`)
    process.exitCode = 1
  }
}

await main()
