/**
 * Backing benchmark (issue 14): a pipe's ring in a named `/dev/shm` segment (`backing: 'shm'`)
 * against sealed memfd memory (`backing: 'memfd'`), side by side in one run, the two interleaved
 * round by round (see `benches/backing/measure.ts`):
 *
 *     node --expose-gc --import=tsx benches/backing.ts [--write] [--quick] [--rounds=15]
 *         [--parts=rtt,stream,create,pool]
 *
 * - `rtt`: round trip of a 100 B message to a child process and back (default 16 MiB pipes);
 * - `stream`: 1 MB and 10 MB messages streamed from a child process into a 64 MiB ring (stored
 *   inline, so the ring's memory is what is measured), taken with `get()` and with `receive()`;
 * - `create`: creating a pipe and closing both ends, at the default 16 MiB and at 256 MiB;
 * - `pool`: seed 001's task through a `ProcessPool` of one worker, with pipes that hold the
 *   160 MB array in the ring (512 MiB) and with the default pipes (the array in a blob segment).
 *
 * Every pipe is created with the `backing` option, the pools through `SHMPIPE_BACKING`; each part
 * checks that its pipes are on the backing it names. Prints the machine, the load and the table
 * "backing: shm vs memfd" (medians over the rounds, their range, and memfd ÷ shm); `--write` also
 * puts it into docs/benchmarks.md (between the `backing-bench` markers). `--quick`: two rounds of
 * a few messages each, for checking that it runs.
 *
 * @module
 */

import os from 'node:os'

import { machineLine } from './transport/report.js'
import { BENCHMARKS_DOC, writeBenchmarkSection } from './results-doc.js'
import { interleave, median, row, BACKINGS, type Row } from './backing/measure.js'
import { createAndClose, EchoPeer, StreamPeer, type Take } from './backing/pipes.js'
import { N, poolOn, poolTask } from './backing/pool.js'

const MIB = 1024 * 1024
const PARTS = ['rtt', 'stream', 'create', 'pool'] as const

function option(name: string): string | undefined {
  const prefix = `--${name}=`
  return process.argv.find((a) => a.startsWith(prefix))?.slice(prefix.length)
}

const quick = process.argv.includes('--quick')
const write = process.argv.includes('--write')
const rounds = Number(option('rounds') ?? (quick ? 2 : 15))
const parts = option('parts')?.split(',') ?? [...PARTS]
for (const p of parts)
  if (!(PARTS as readonly string[]).includes(p)) throw new Error(`unknown part ${p}`)
const gc = (globalThis as { gc?: () => void }).gc ?? (() => {})

/** Prints a row's medians as it finishes (stderr). */
function progress(r: Row): Row {
  const [shm, memfd] = BACKINGS.map((b) => median(r.values[b]))
  console.error(
    `${r.name.padEnd(44)} shm ${shm!.toFixed(2)} ${r.unit}, memfd ${memfd!.toFixed(2)} ${r.unit}, memfd/shm ${(memfd! / shm!).toFixed(3)}`,
  )
  return r
}

async function roundTrips(): Promise<Row[]> {
  const n = quick ? 50 : 2000
  const payload = Buffer.alloc(100, 0xa5)
  const peers = { shm: new EchoPeer('shm'), memfd: new EchoPeer('memfd') }
  for (const b of BACKINGS) await peers[b].roundTrips(n, payload) // warm-up
  const r = row('round trip, 100 B (default 16 MiB pipes)', 'µs')
  await interleave(rounds, r, async (b) => (await peers[b].roundTrips(n, payload)) / 1e3)
  for (const b of BACKINGS) await peers[b].close()
  return [progress(r)]
}

async function streams(): Promise<Row[]> {
  const bytes = 64 * MIB
  const peers = { shm: new StreamPeer('shm', bytes), memfd: new StreamPeer('memfd', bytes) }
  const rows: Row[] = []
  for (const size of [1e6, 1e7]) {
    // Two laps of the ring per round; the warm-up laps it once, so its pages are in place.
    const n = quick ? 3 : Math.ceil((2 * bytes) / size)
    for (const take of ['get', 'receive'] as Take[]) {
      for (const b of BACKINGS) await peers[b].stream(n, size, take)
      const r = row(`stream, ${size / 1e6} MB, ${take}(), 64 MiB ring`, 'µs/msg')
      await interleave(rounds, r, async (b) => (await peers[b].stream(n, size, take)) / 1e3)
      rows.push(progress(r))
    }
  }
  for (const b of BACKINGS) await peers[b].close()
  return rows
}

async function creation(): Promise<Row[]> {
  const rows: Row[] = []
  for (const [mib, n] of [
    [16, quick ? 2 : 20],
    [256, quick ? 1 : 4],
  ] as const) {
    createAndClose('shm', mib * MIB, 1)
    createAndClose('memfd', mib * MIB, 1)
    const r = row(`create + close, ${mib} MiB pipe`, 'ms')
    await interleave(rounds, r, (b) => createAndClose(b, mib * MIB, n) / 1e6)
    rows.push(progress(r))
  }
  return rows
}

async function pools(): Promise<Row[]> {
  const x = new Float64Array(N).fill(1)
  const rows: Row[] = []
  // One pair of pools at a time: two pools of 512 MiB pipes hold 2 GiB.
  for (const [pipeBytes, label] of [
    [512 * MIB, 'pipeBytes 512 MiB (array in the ring)'],
    [undefined, 'default pipes (array in a blob segment)'],
  ] as const) {
    const pool = { shm: await poolOn('shm', pipeBytes), memfd: await poolOn('memfd', pipeBytes) }
    for (let i = 0; i < (quick ? 1 : 3); i++) for (const b of BACKINGS) await poolTask(pool[b], x)
    const r = row(`pool, seed 001 task, 1 worker, ${label}`, 'ms')
    await interleave(rounds, r, (b) => {
      gc()
      return poolTask(pool[b], x)
    })
    await Promise.all(BACKINGS.map((b) => pool[b].close()))
    rows.push(progress(r))
  }
  return rows
}

function fmt(v: number): string {
  return v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2)
}

/**
 * The table: per row, each backing's median and range, memfd ÷ shm of the medians, and the median
 * of the ratios of each round's two measurements (taken one right after the other, so they share
 * the machine's state of the moment).
 */
function table(rows: Row[]): string {
  const head = '| backing: shm vs memfd | shm | memfd | memfd / shm | same round, median |'
  const rule = '| --- | ---: | ---: | ---: | ---: |'
  const cells = rows.map((r) => {
    const [shm, memfd] = BACKINGS.map((b) => {
      const v = r.values[b]
      return `${fmt(median(v))} ${r.unit} (${fmt(Math.min(...v))}–${fmt(Math.max(...v))})`
    })
    const ratio = median(r.values.memfd) / median(r.values.shm)
    const paired = median(r.values.memfd.map((m, i) => m / r.values.shm[i]!))
    return `| ${r.name} | ${shm} | ${memfd} | ${ratio.toFixed(2)}× | ${paired.toFixed(2)}× |`
  })
  return [head, rule, ...cells].join('\n')
}

async function main(): Promise<void> {
  const machine = machineLine()
  const load0 = os.loadavg()[0]!
  console.log(`machine: ${machine}; load average ${load0.toFixed(1)}`)
  const started = performance.now()
  const rows: Row[] = []
  if (parts.includes('rtt')) rows.push(...(await roundTrips()))
  if (parts.includes('stream')) rows.push(...(await streams()))
  if (parts.includes('create')) rows.push(...(await creation()))
  if (parts.includes('pool')) rows.push(...(await pools()))
  const seconds = (performance.now() - started) / 1000
  const load = `load average ${load0.toFixed(1)} before, ${os.loadavg()[0]!.toFixed(1)} after`
  const text = [
    `Measured ${new Date().toISOString().slice(0, 10)} by \`npm run bench:backing\` ` +
      `(${rounds} rounds, ${seconds.toFixed(0)} s, ${load}) on ${machine}. ` +
      'Median per round (range over the rounds); the two backings interleaved round by round. ' +
      'memfd / shm above 1 means the sealed memory is slower; "same round": the median of the ' +
      "ratios of each round's two measurements.",
    '',
    table(rows),
  ].join('\n')
  console.log(`\n${text}\n\nbacking benchmark: ${seconds.toFixed(0)} s, ${load}`)
  if (write && !quick) {
    await writeBenchmarkSection('backing-bench', text)
    console.log(`wrote the backing section of ${BENCHMARKS_DOC}`)
  }
}

await main()
