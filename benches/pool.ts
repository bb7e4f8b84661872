/**
 * Process pool benchmark, after seed 001 (npshmex): `x + 1` on a Float64Array of 2e7 elements
 * (160 MB), submitted to a pool of worker processes and awaited, beside the bare computation and
 * the same pool built on child_process IPC.
 *
 *     npm run bench:pool                # node --expose-gc --import=tsx benches/pool.ts
 *     npm run bench:pool -- --write     # also writes the table into docs/benchmarks.md (between markers)
 *     npm run bench:pool -- --reps 3    # repetitions per contender (default 9)
 *
 * Contenders (each timed from the call to the awaited result, transfers both ways included):
 * - bare: `addOne(x)` in this process;
 * - shmpipe `ProcessPool` with the default pipes (8 MiB): both arrays are too large for the
 *   rings and travel in segments of their own (blobs), which each pipe keeps and reuses once
 *   the other side is done: the array is copied into the task pipe's blob, read there by the
 *   worker without a copy, and the result copied into the result pipe's blob, then into an
 *   array this process owns;
 * - shmpipe `ProcessPool` with pipes sized for the array (`pipeBytes: 512 MiB`): the same, but
 *   through the pipes' rings;
 * - the same pool design (idle worker or queue, one task per worker at a time) built on
 *   `child_process.fork` with `serialization: 'advanced'`, the array sent in the IPC message.
 *
 * Every pool has 2 workers (seed 001 used the default, one per core). Pools are started and
 * warmed up (3 rounds of one task per worker) before the clock runs; the contenders then run in turns, REPS times,
 * so that a busy moment of the machine does not fall on one of them only, with a full GC before
 * each timed call. The median is reported, with the range over the repetitions. The machine's
 * load average is printed before and after: on a shared machine the absolute times move, the
 * ratios (measured in the same turns) much less.
 */

import { fork, type ChildProcess } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { availableParallelism, cpus, loadavg, release, totalmem } from 'node:os'
import { fileURLToPath, pathToFileURL } from 'node:url'

import { ProcessPool } from '../index.js'
import * as tasks from './pool-tasks.js'
import { BENCHMARKS_DOC, writeBenchmarkSection } from './results-doc.js'

const args = process.argv.slice(2)
const write = args.includes('--write')
const repsArg = args.indexOf('--reps')
const REPS = repsArg >= 0 ? Number(args[repsArg + 1]) : 9
const N = 2e7
const WORKERS = 2
const WARMUP = 3
const script = fileURLToPath(import.meta.url)
const tasksModule = new URL('./pool-tasks.ts', import.meta.url)
/** Clock ticks per second of /proc's CPU times (`getconf CLK_TCK`: 100 on Linux). */
const CLOCK_TICKS = 100

type Tasks = typeof tasks

// ---------------------------------------------------------------------------------------------
// The baseline: the same pool on child_process IPC ('advanced' serialization)

type IpcRequest = { id: number; name: string; args: unknown[] }
type IpcReply = { id: number; value?: unknown; error?: string }

/** A worker of the IPC pool: imports the module, runs each request, sends the result back. */
async function ipcWorker(moduleUrl: string): Promise<void> {
  const mod = (await import(moduleUrl)) as Record<string, (...a: unknown[]) => unknown>
  process.on('message', (m: IpcRequest) => {
    void (async () => {
      let reply: IpcReply
      try {
        reply = { id: m.id, value: await mod[m.name]!(...m.args) }
      } catch (err) {
        reply = { id: m.id, error: String(err) }
      }
      process.send!(reply)
    })()
  })
  process.send!('ready')
}

/** The pool design of `ProcessPool` (a task goes to an idle worker, or waits), on IPC. */
class IpcPool {
  #workers: ChildProcess[] = []
  get pids(): number[] {
    return this.#workers.map((c) => c.pid!)
  }
  #idle: ChildProcess[] = []
  #queue: (() => void)[] = []
  #pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>()
  #next = 0

  async start(moduleUrl: string, workers: number): Promise<void> {
    for (let i = 0; i < workers; i++) {
      const child = fork(script, ['ipc-worker', moduleUrl], {
        execArgv: process.execArgv,
        serialization: 'advanced',
        stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      })
      this.#workers.push(child)
      await new Promise<void>((resolve) => child.once('message', () => resolve()))
      child.on('message', (m: IpcReply) => {
        const p = this.#pending.get(m.id)!
        this.#pending.delete(m.id)
        if (m.error !== undefined) p.reject(new Error(m.error))
        else p.resolve(m.value)
        this.#release(child)
      })
      this.#idle.push(child)
    }
  }

  #release(child: ChildProcess): void {
    const next = this.#queue.shift()
    if (next) next()
    else this.#idle.push(child)
    void child
  }

  submit(name: string, ...args: unknown[]): Promise<unknown> {
    return new Promise((resolve, reject) => {
      const send = (child: ChildProcess): void => {
        const id = this.#next++
        this.#pending.set(id, { resolve, reject })
        child.send({ id, name, args } satisfies IpcRequest)
      }
      const child = this.#idle.shift()
      if (child) send(child)
      else this.#queue.push(() => send(this.#idle.shift()!))
    })
  }

  async close(): Promise<void> {
    await Promise.all(
      this.#workers.map(
        (c) =>
          new Promise<void>((resolve) => {
            c.once('exit', () => resolve())
            c.disconnect()
          }),
      ),
    )
  }
}

// ---------------------------------------------------------------------------------------------
// Measurement

interface Contender {
  name: string
  run: (x: Float64Array) => Promise<Float64Array> | Float64Array
  /** Pids of its worker processes (whose CPU time counts too). */
  pids: () => number[]
  times: number[]
  cpu: number[]
}

/** CPU time (user + system, ms) of this process and of `pids` so far (Linux: /proc). */
function cpuTime(pids: number[]): number {
  const own = process.cpuUsage()
  let ms = (own.user + own.system) / 1000
  for (const pid of pids) {
    try {
      // Fields 14 and 15 (utime, stime) in clock ticks, after the parenthesised command name.
      const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ')
      ms += ((Number(fields[11]) + Number(fields[12])) * 1000) / CLOCK_TICKS
    } catch {
      return NaN // not Linux, or the process is gone
    }
  }
  return ms
}

function check(y: Float64Array, name: string): void {
  if (!(y instanceof Float64Array) || y.length !== N) throw new Error(`${name}: wrong result`)
  for (let i = 0; i < N; i += 997) if (y[i] !== 2) throw new Error(`${name}: y[${i}] = ${y[i]}`)
  if (y[N - 1] !== 2) throw new Error(`${name}: wrong last element`)
}

const gc = (globalThis as { gc?: () => void }).gc ?? (() => {})

/** `text` wrapped at 100 columns, continuation lines indented by `indent` (as prettier keeps). */
function wrap(text: string, indent = ''): string[] {
  const out: string[] = []
  let line = ''
  for (const word of text.split(' ')) {
    if (line !== '' && line.length + 1 + word.length > 100) {
      out.push(line)
      line = indent + word
    } else {
      line = line === '' ? word : `${line} ${word}`
    }
  }
  out.push(line)
  return out
}

/** A Markdown table padded the way prettier pads it (`align`: `l` or `r` per column). */
function markdownTable(header: string[], align: string, rows: string[][]): string[] {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length), 3))
  const cell = (text: string, i: number): string =>
    align[i] === 'r' ? text.padStart(widths[i]!) : text.padEnd(widths[i]!)
  const line = (cells: string[]): string => `| ${cells.map(cell).join(' | ')} |`
  const rule = widths.map((w, i) => (align[i] === 'r' ? `${'-'.repeat(w - 1)}:` : '-'.repeat(w)))
  return [line(header), `| ${rule.join(' | ')} |`, ...rows.map(line)]
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b)
  return s.length % 2 === 1 ? s[s.length >> 1]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2
}

function fmt(ms: number): string {
  return ms >= 100 ? ms.toFixed(0) : ms.toFixed(1)
}

async function main(): Promise<void> {
  const load0 = loadavg()
  const x = new Float64Array(N).fill(1) // np.ones(int(2e7))

  const ring = new ProcessPool<Tasks>({
    module: tasksModule,
    workers: WORKERS,
    pipeBytes: 512 * 1024 * 1024,
  })
  const blobs = new ProcessPool<Tasks>({ module: tasksModule, workers: WORKERS })
  const ipc = new IpcPool()
  await Promise.all([ring.ready(), blobs.ready(), ipc.start(tasksModule.href, WORKERS)])

  const contenders: Contender[] = [
    {
      name: 'bare computation in this process',
      run: (x) => tasks.addOne(x),
      pids: () => [],
      times: [],
      cpu: [],
    },
    {
      name: 'shmpipe `ProcessPool`, default 8 MiB pipes (arrays in reused blobs)',
      run: (x) => blobs.submit('addOne', x),
      pids: () => blobs.pids,
      times: [],
      cpu: [],
    },
    {
      name: 'shmpipe `ProcessPool`, `pipeBytes: 512 MiB` (arrays in the rings)',
      run: (x) => ring.submit('addOne', x),
      pids: () => ring.pids,
      times: [],
      cpu: [],
    },
    {
      name: "`child_process` IPC pool, `serialization: 'advanced'`",
      run: (x) => ipc.submit('addOne', x) as Promise<Float64Array>,
      pids: () => ipc.pids,
      times: [],
      cpu: [],
    },
  ]

  // Warm-up: start-up, JIT, and the first laps of every worker's rings (the first tasks through
  // a ring fault its pages in; after that they are reused).
  for (const c of contenders) {
    for (let i = 0; i < WARMUP; i++) {
      const ys = await Promise.all(Array.from({ length: WORKERS }, () => c.run(x)))
      for (const y of ys) check(y, c.name)
      gc()
    }
  }
  for (let r = 0; r < REPS; r++) {
    // Rotate the order so that no contender always runs right after the same other one.
    for (let k = 0; k < contenders.length; k++) {
      const c = contenders[(k + r) % contenders.length]!
      gc()
      const pids = c.pids()
      const cpu0 = cpuTime(pids)
      const t0 = performance.now()
      const y = await c.run(x)
      c.times.push(performance.now() - t0)
      c.cpu.push(cpuTime(pids) - cpu0)
      check(y, c.name)
    }
  }
  await Promise.all([ring.close(), blobs.close(), ipc.close()])
  const load1 = loadavg()

  const [bare, ours, oursRing, baseline] = contenders.map((c) => median(c.times)) as [
    number,
    number,
    number,
    number,
  ]
  const lines: string[] = []
  const cpu = cpus()[0]?.model ?? 'unknown CPU'
  lines.push(
    ...wrap(
      `Seed 001's task, \`x + 1\` on a Float64Array of 2e7 elements (160 MB), submitted to a ` +
        `pool of ${WORKERS} workers and awaited. Median and range of ${REPS} turns, measured ` +
        `${new Date().toISOString().slice(0, 10)} on ${availableParallelism()} CPUs (${cpu}), ` +
        `${(totalmem() / 2 ** 30).toFixed(0)} GiB, Linux ${release()}, Node ${process.version}; ` +
        `load average ${load0[0]!.toFixed(1)} before, ${load1[0]!.toFixed(1)} after. CPU time: ` +
        `this process and the pool's workers (from /proc), median.`,
    ),
  )
  lines.push('')
  const rows = contenders.map((c) => {
    const m = median(c.times)
    const cpu = median(c.cpu)
    return [
      c.name,
      `${fmt(m)} ms`,
      `${fmt(Math.min(...c.times))}–${fmt(Math.max(...c.times))} ms`,
      `${(m / bare).toFixed(2)}×`,
      Number.isNaN(cpu) ? '–' : `${fmt(cpu)} ms`,
    ]
  })
  lines.push(...markdownTable(['contender', 'time', 'range', 'vs bare', 'CPU time'], 'lrrrr', rows))
  lines.push('')
  const speedup = baseline / ours
  const overhead = ours / bare
  const [cpuBare, cpuOurs, , cpuIpc] = contenders.map((c) => median(c.cpu)) as number[]
  const met = (ok: boolean): string => (ok ? 'met' : '**not met**')
  lines.push(
    ...wrap(
      `- IPC pool ÷ shmpipe pool (default pipes): **${speedup.toFixed(1)}×** (issue 5's bar ≥ 4×: ` +
        `${met(speedup >= 4)}; issue 16's bar ≥ 5×: ${met(speedup >= 5)}); with 512 MiB pipes ` +
        `${(baseline / oursRing).toFixed(1)}×; ` +
        `in CPU time ${(cpuIpc! / cpuOurs!).toFixed(1)}×.`,
      '  ',
    ),
    ...wrap(
      `- shmpipe pool (default pipes) ÷ bare: **${overhead.toFixed(2)}×** (issue 5's bar ≤ 2.5×: ` +
        `${met(overhead <= 2.5)}; issue 16's bar ≤ 1.3×: ${met(overhead <= 1.3)}); with 512 MiB ` +
        `pipes ${(oursRing / bare).toFixed(2)}×; ` +
        `in CPU time ${(cpuOurs! / cpuBare!).toFixed(2)}×.`,
      '  ',
    ),
    '- npshmex (seed 001, its machine): 4.3× and 5.3×.',
  )
  const table = lines.join('\n')
  console.log(`\n${table}\n`)

  if (write) {
    await writeBenchmarkSection('pool-bench', table)
    console.log(`written into ${BENCHMARKS_DOC}`)
  }
}

if (process.argv[2] === 'ipc-worker') {
  await ipcWorker(process.argv[3] ?? pathToFileURL(tasksModule.pathname).href)
} else {
  await main()
}
