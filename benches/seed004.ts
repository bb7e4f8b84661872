/**
 * Seed 004 ("Python shared memory in multiprocessing") in Node: a 240 MB array of records
 * (timestamp, float, 6-byte string), one column summed (NaN skipped, as `np.nansum`) by 4 worker
 * processes, with the array in a shmpipe `SharedArray` beside sending each worker a copy through
 * `child_process` IPC. Time and peak memory of every process.
 *
 *     npm run bench:seed004                # node --import=tsx benches/seed004.ts
 *     npm run bench:seed004 -- --quick     # 100,000 records (2.4 MB): a smoke run
 *     npm run bench:seed004 -- --write     # also put the table into docs/benchmarks.md
 *
 * Records. The seed builds 10,000,000 rows of `(datetime, 1 or NaN, 'string' or 'abc')` and
 * turns them into a numpy record array (`datetime64[ns]`, `float64`, `S6`). JavaScript has no
 * structured dtype, so the records are kept as numpy lays them out in memory: a `SharedArray` of
 * bytes, shape [10,000,000, 24], each row one record with the int64 ns timestamp at byte 0, the
 * float64 at byte 8 and the 6 bytes of string at byte 16, padded to 24 bytes (numpy's aligned
 * layout, `align=True`; 10,000,000 × 24 B = the seed's 240 MB). Row-major records, not one array
 * per column, because that is the seed's data structure: summing one column then reads every
 * cache line of the 240 MB, as `np.nansum(recarray.val)` does. A worker reads the column through
 * a `Float64Array` over the same memory (the array's data is 64-byte aligned, the records are
 * 24 bytes apart, so the float of record i is element 3i + 1).
 *
 * Contenders, each run in a fresh "parent" process (so no garbage of an earlier run is counted),
 * which starts 4 workers and then builds the records: in the `SharedArray` itself, or in an
 * ordinary `Uint8Array` for the baseline. Timed from the parent's "go" until the last of the four
 * sums is back: a shmpipe worker attaches by name and sums in place; a baseline worker is sent
 * the whole array by `child_process` IPC (`serialization: 'advanced'`) and sums its copy.
 *
 * Memory. A separate sampler process (not counted) reads `/proc/<pid>/smaps_rollup` and
 * `/proc/<pid>/status` of the parent and the workers every 10 ms. RSS counts a shared page in
 * every process that maps it, so five processes mapping the 240 MB show 1.2 GB of RSS for 240 MB
 * of memory. PSS divides each page among the processes mapping it, so Σ PSS would count every
 * page once, but only in a consistent snapshot: the processes are read one after another while
 * the workers are mapping the pages, and the sum of their `Pss_Shmem` then reaches 300 MB and more
 * for a 240 MB segment. So the bar is judged on Σ (PSS − `Pss_Shmem`), the processes' private
 * memory, plus the shared segment's resident size counted once (`st_blocks` of its /dev/shm
 * file), and minus what the same processes used before the records existed: the memory the data
 * costs, as the seed's `tracemalloc` counted only the data's allocations, not the interpreter.
 * Σ PSS, Σ RSS and Σ VmHWM (each process's own peak) are shown beside it.
 */

import { fork, spawn, type ChildProcess } from 'node:child_process'
import { writeFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'

import { SharedArray, withSharedMemory } from '../index.js'
import {
  machine,
  machineCpu,
  median,
  num,
  othersLoad,
  parseFlags,
  procMemory,
  say,
  spread,
  type ProcMemory,
} from './seed-common.js'
import { writeBenchmarkSection } from './results-doc.js'

const flags = parseFlags()
const RECORDS = flags.quick ? 100_000 : 10_000_000
/** Bytes per record: int64 timestamp, float64 value, 6-byte string, 2 bytes of padding. */
const RECORD = 24
const BYTES = RECORDS * RECORD
const WORKERS = 4
const RUNS = flags.runs ?? (flags.quick ? 1 : 3)
const SAMPLE_MS = 10
const script = fileURLToPath(import.meta.url)
const childFlags = flags.quick ? ['--quick'] : []

/** Ways to hand the records to the workers, as named in the table. */
type Contender = 'shmpipe' | 'ipc'
const CONTENDERS: Contender[] = ['shmpipe', 'ipc']

/** The seed's two rows, repeated: `(today, 1, 'string')` and `(today, NaN, 'abc')`. */
const STRINGS = ['string', 'abc'] as const

/** The sum the workers must find: NaN rows skipped, so the count of even rows. */
const EXPECTED_SUM = RECORDS / 2

// ---------------------------------------------------------------------------------------------
// Records

/** Writes RECORDS records into `bytes` (the seed's two rows, alternating), timestamp `ns`. */
function buildRecords(bytes: Uint8Array, ns: bigint): void {
  const view = new DataView(bytes.buffer, bytes.byteOffset, 2 * RECORD)
  for (let r = 0; r < 2; r++) {
    view.setBigInt64(r * RECORD, ns, true)
    view.setFloat64(r * RECORD + 8, r === 0 ? 1 : Number.NaN, true)
    bytes.fill(0, r * RECORD + 16, (r + 1) * RECORD)
    bytes.set(Buffer.from(STRINGS[r]!, 'latin1'), r * RECORD + 16)
  }
  // Then double what is written until the array is full (one memcpy per doubling).
  for (let done = 2 * RECORD; done < BYTES; done *= 2) {
    bytes.copyWithin(done, 0, Math.min(done, BYTES - done))
  }
}

/** `np.nansum(records.val)`: the float64 of every record, NaNs skipped. */
function nansum(bytes: Uint8Array): number {
  if (bytes.byteOffset % 8 !== 0) bytes = bytes.slice() // an unaligned copy (never seen so far)
  const f = new Float64Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 8)
  let s = 0
  for (let i = 1; i < f.length; i += 3) {
    const v = f[i]!
    if (v === v) s += v
  }
  return s
}

/** Checks the first two records' timestamp and string, so a wrong layout cannot sum by luck. */
function checkRecords(bytes: Uint8Array, ns: bigint): void {
  const view = new DataView(bytes.buffer, bytes.byteOffset, 2 * RECORD)
  for (let r = 0; r < 2; r++) {
    const s = Buffer.from(bytes.subarray(r * RECORD + 16, r * RECORD + 22))
      .toString('latin1')
      .replace(/\0+$/, '')
    if (view.getBigInt64(r * RECORD, true) !== ns || s !== STRINGS[r]) {
      throw new Error(`record ${r} is not (${ns}, …, ${STRINGS[r]}): got (${view.getBigInt64(r * RECORD, true)}, …, ${s})`) // prettier-ignore
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Workers

/** What a worker reports once it has summed. */
interface WorkerResult {
  sum: number
  /** ms from its "go" message to its sum. */
  ms: number
  memory: ProcMemory
  /** CPU µs of the whole process since it started. */
  cpuUs: number
}

/** The parent's message to a worker. */
type Go = { name: string; ns: bigint } | { records: Uint8Array; ns: bigint }

const cpuUs = (c: NodeJS.CpuUsage): number => c.user + c.system

/** The next IPC message from the parent. */
function nextMessage(): Promise<unknown> {
  return new Promise((resolve) => process.once('message', resolve))
}

async function worker(): Promise<void> {
  process.send!({ ready: procMemory() })
  const go = (await nextMessage()) as Go
  const t0 = performance.now()
  let sum: number
  let array: SharedArray<Uint8Array<ArrayBuffer>> | undefined
  if ('name' in go) {
    array = SharedArray.attach(go.name, Uint8Array)
    checkRecords(array.data, go.ns)
    sum = nansum(array.data)
  } else {
    checkRecords(go.records, go.ns)
    sum = nansum(go.records)
  }
  const cpu = process.cpuUsage()
  const result: WorkerResult = {
    sum,
    ms: performance.now() - t0,
    memory: procMemory(),
    cpuUs: cpu.user + cpu.system,
  }
  process.send!({ result })
  await nextMessage() // "exit": the data stays mapped until every worker has summed
  array?.close()
  process.disconnect()
}

// ---------------------------------------------------------------------------------------------
// The sampler: a plain Node process (no tsx) that is not itself measured

const SAMPLER = `
const { readFileSync, statSync } = require('node:fs')
const field = (text, name) => {
  const m = new RegExp('^' + name + ':\\\\s+(\\\\d+) kB', 'm').exec(text)
  return m === null ? 0 : Number(m[1]) * 1024
}
let pids = []
let segments = []
let timer
const peak = { pss: 0, rss: 0, memory: 0, pssShmem: 0, samples: 0 }
function sample() {
  let pss = 0
  let rss = 0
  let memory = 0
  let pssShmem = 0
  for (const pid of pids) {
    try {
      const rollup = readFileSync('/proc/' + pid + '/smaps_rollup', 'utf8')
      pss += field(rollup, 'Pss')
      memory += field(rollup, 'Pss') - field(rollup, 'Pss_Shmem')
      pssShmem += field(rollup, 'Pss_Shmem')
      rss += field(readFileSync('/proc/' + pid + '/status', 'utf8'), 'VmRSS')
    } catch {}
  }
  for (const path of segments) {
    try {
      memory += statSync(path).blocks * 512
    } catch {}
  }
  peak.pss = Math.max(peak.pss, pss)
  peak.rss = Math.max(peak.rss, rss)
  peak.memory = Math.max(peak.memory, memory)
  peak.pssShmem = Math.max(peak.pssShmem, pssShmem)
  peak.samples++
}
process.on('disconnect', () => process.exit())
process.on('message', (m) => {
  if (m === 'stop') {
    clearInterval(timer)
    sample()
    process.send({ peak }, () => process.disconnect())
  } else {
    pids = m.pids
    segments = m.segments
    sample()
    timer = setInterval(sample, m.ms)
    process.send({ started: true })
  }
})
`

/** Peaks of the sums over the sampled processes, in bytes. */
interface Peak {
  pss: number
  rss: number
  /** Σ (PSS − PSS of shared memory) + the resident bytes of the shared segments, once. */
  memory: number
  /**
   * Σ PSS of shared memory: more than the segments hold means the readings overcount (each
   * process is read at a slightly different moment while the workers map the pages).
   */
  pssShmem: number
  samples: number
}

/** The value of the next message from `child` with property `key`. */
function expect<T>(child: ChildProcess, key: string): Promise<T> {
  return new Promise((resolve, reject) => {
    const onMessage = (m: unknown): void => {
      if (typeof m === 'object' && m !== null && key in m) {
        child.off('message', onMessage)
        child.off('exit', onExit)
        resolve((m as Record<string, T>)[key]!)
      }
    }
    const onExit = (code: number | null, signal: string | null): void =>
      reject(new Error(`child ${child.pid} exited (${signal ?? code}) before sending ${key}`))
    child.on('message', onMessage)
    child.on('exit', onExit)
  })
}

function exited(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve()
  return new Promise((resolve) => child.once('exit', () => resolve()))
}

// ---------------------------------------------------------------------------------------------
// The parent of one run

/** One run of one contender. */
interface Result {
  contender: Contender
  /** ms from "go" to the last of the four sums. */
  ms: number
  /** ms to build the records (before the clock starts), and to start the workers. */
  buildMs: number
  startMs: number
  /** Σ PSS of parent and workers before the records existed, and its peak afterwards. */
  idlePss: number
  peakPss: number
  /** The same, with shared segments counted once by their size instead of through PSS. */
  idleMemory: number
  peakMemory: number
  /** Peak of Σ `Pss_Shmem` (see {@link Peak.pssShmem}). */
  peakPssShmem: number
  /** Peak of Σ RSS, and Σ of each process's own peak RSS (VmHWM: not simultaneous). */
  peakRss: number
  hwmSum: number
  /** PSS of the parent and of each worker right after its sum. */
  parentPss: number
  workerPss: number[]
  /** Each worker's sum (checked against EXPECTED_SUM before the result is made). */
  sums: number[]
  /** The /dev/shm name of the shared array (shmpipe runs), removed by the end of the run. */
  segment: string | null
  /** CPU ms of the parent and its workers over their whole lives. */
  cpuMs: number
  /** Share of all CPUs other processes used meanwhile (set by the main process). */
  others: number
  samples: number
}

async function parent(contender: Contender): Promise<Result> {
  // Forget the peak RSS of starting up (VmHWM), so that VmHWM is this run's.
  writeFileSync('/proc/self/clear_refs', '5')
  const s0 = performance.now()
  const workers = Array.from({ length: WORKERS }, () =>
    fork(script, ['worker', ...childFlags], {
      execArgv: ['--import=tsx'],
      serialization: 'advanced',
      stdio: ['ignore', 'ignore', 'inherit', 'ipc'],
    }),
  )
  let sampler: ChildProcess | undefined
  try {
    const idle = await Promise.all(workers.map((w) => expect<ProcMemory>(w, 'ready')))
    const startMs = performance.now() - s0
    sampler = spawn(process.execPath, ['-e', SAMPLER], {
      stdio: ['ignore', 'ignore', 'inherit', 'ipc'],
    })
    const arrayName = `seed004-${process.pid}`
    sampler.send({
      pids: [process.pid, ...workers.map((w) => w.pid)],
      segments: contender === 'shmpipe' ? [`/dev/shm/shmpipe_a_${arrayName}`] : [], // Linux
      ms: SAMPLE_MS,
    })
    await expect(sampler, 'started')
    const all = [procMemory(), ...idle]
    const idlePss = all.reduce((s, m) => s + m.pss, 0)
    const idleMemory = all.reduce((s, m) => s + m.pss - m.pssShmem, 0)
    const ns = BigInt(Date.now()) * 1_000_000n

    const run = async (go: (w: ChildProcess) => void) => {
      const results = workers.map((w) => expect<WorkerResult>(w, 'result'))
      const t0 = performance.now()
      for (const w of workers) go(w)
      const done = await Promise.all(results)
      const ms = performance.now() - t0
      for (const r of done) {
        if (r.sum !== EXPECTED_SUM) throw new Error(`a worker summed ${r.sum}, not ${EXPECTED_SUM}`)
      }
      return { ms, done, parentMemory: procMemory() }
    }

    let b0 = performance.now()
    let buildMs = 0
    const outcome =
      contender === 'shmpipe'
        ? await withSharedMemory(async (manager) => {
            const a = manager.createArray(arrayName, Uint8Array, [RECORDS, RECORD])
            b0 = performance.now()
            buildRecords(a.data, ns)
            buildMs = performance.now() - b0
            return run((w) => w.send({ name: a.name, ns } satisfies Go))
          })
        : await (async () => {
            const records = new Uint8Array(BYTES)
            buildRecords(records, ns)
            buildMs = performance.now() - b0
            return run((w) => w.send({ records, ns } satisfies Go))
          })()

    sampler.send('stop')
    const peak = await expect<Peak>(sampler, 'peak')
    for (const w of workers) w.send('exit')
    await Promise.all([...workers.map(exited), exited(sampler)])
    return {
      contender,
      ms: outcome.ms,
      buildMs,
      startMs,
      idlePss,
      peakPss: peak.pss,
      idleMemory,
      peakMemory: peak.memory,
      peakPssShmem: peak.pssShmem,
      peakRss: peak.rss,
      hwmSum: outcome.parentMemory.hwm + outcome.done.reduce((s, r) => s + r.memory.hwm, 0),
      parentPss: outcome.parentMemory.pss,
      workerPss: outcome.done.map((r) => r.memory.pss),
      sums: outcome.done.map((r) => r.sum),
      segment: contender === 'shmpipe' ? `shmpipe_a_${arrayName}` : null,
      samples: peak.samples,
      cpuMs: (cpuUs(process.cpuUsage()) + outcome.done.reduce((s, r) => s + r.cpuUs, 0)) / 1000,
      others: 0,
    }
  } finally {
    for (const p of [...workers, sampler]) if (p?.exitCode === null) p.kill('SIGKILL')
  }
}

// ---------------------------------------------------------------------------------------------
// Main: runs the contenders in turns, each in its own parent process

async function runParent(contender: Contender): Promise<Result> {
  const m0 = machineCpu()
  const t0 = performance.now()
  const child = fork(script, ['parent', contender, ...childFlags], {
    execArgv: ['--import=tsx'],
    serialization: 'advanced',
    stdio: ['ignore', 'ignore', 'inherit', 'ipc'],
  })
  try {
    const result = await expect<Result>(child, 'result')
    result.others = othersLoad(m0, machineCpu(), result.cpuMs, performance.now() - t0)
    return result
  } finally {
    await exited(child)
  }
}

const mb = (bytes: number): string => `${num(bytes / 1e6)} MB`

function table(results: Result[], contenders: Contender[]): string {
  const lines = [
    `| contender | time, 4 sums (median [min–max] of ${RUNS}) | the data's memory: peak − idle of Σ private PSS + segments once | ÷ array | the same from Σ PSS alone | peak Σ PSS | peak Σ RSS | Σ VmHWM | PSS after the sums: parent / each worker | build / start 4 workers | others' load |`,
    '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
  ]
  for (const c of contenders) {
    const rs = results.filter((r) => r.contender === c)
    if (rs.length === 0) continue
    const m = (f: (r: Result) => number): number => median(rs.map(f))
    const name =
      c === 'shmpipe'
        ? 'shmpipe `SharedArray`: workers attach by name, sum in place'
        : "child_process IPC ('advanced'): a copy sent to each worker"
    const cells = [
      name,
      spread(
        rs.map((r) => r.ms),
        (x) => `${num(x)} ms`,
      ),
      spread(
        rs.map((r) => r.peakMemory - r.idleMemory),
        mb,
      ),
      `${num(
        m((r) => (r.peakMemory - r.idleMemory) / BYTES),
        2,
      )}×`,
      spread(
        rs.map((r) => r.peakPss - r.idlePss),
        mb,
      ),
      mb(m((r) => r.peakPss)),
      mb(m((r) => r.peakRss)),
      mb(m((r) => r.hwmSum)),
      `${mb(m((r) => r.parentPss))} / ${mb(m((r) => median(r.workerPss)))}`,
      `${num(m((r) => r.buildMs))} / ${num(m((r) => r.startMs))} ms`,
      spread(
        rs.map((r) => r.others * 100),
        (x) => `${num(x)}%`,
      ),
    ]
    lines.push(`| ${cells.join(' | ')} |`)
  }
  return lines.join('\n')
}

function verdict(results: Result[]): string[] {
  const out: string[] = []
  const data = (c: Contender): number[] =>
    results.filter((r) => r.contender === c).map((r) => (r.peakMemory - r.idleMemory) / BYTES)
  const shm = data('shmpipe')
  if (shm.length > 0) {
    const worst = Math.max(...shm)
    out.push(
      `- Bar (total peak memory ≤ 1.2× the array, judged on the data's memory): shmpipe ${num(median(shm), 2)}× (worst run ${num(worst, 2)}×): **${flags.quick ? 'not judged with --quick (the array is smaller than the noise)' : worst <= 1.2 ? 'met' : 'not met'}**.`,
    )
  }
  const ipc = data('ipc')
  if (ipc.length > 0) out.push(`- The IPC baseline's data costs ${num(median(ipc), 2)}× the array.`)
  const time = (c: Contender): number =>
    median(results.filter((r) => r.contender === c).map((r) => r.ms))
  if (shm.length > 0 && ipc.length > 0) {
    out.push(`- Time: shmpipe is ${num(time('ipc') / time('shmpipe'), 1)}× faster.`)
  }
  return out
}

async function main(): Promise<void> {
  const contenders = CONTENDERS.filter((c) => flags.only?.includes(c))
  const chosen = contenders.length > 0 ? contenders : CONTENDERS
  const before = machine()
  const results: Result[] = []
  for (let r = 0; r < RUNS; r++) {
    for (const c of chosen) {
      const x = await runParent(c)
      say(flags, `run ${r + 1}/${RUNS} ${c}: ${num(x.ms)} ms, data ${mb(x.peakMemory - x.idleMemory)} (Σ PSS: ${mb(x.peakPss - x.idlePss)}), peak Σ PSS ${mb(x.peakPss)} (of shared memory ${mb(x.peakPssShmem)}), Σ RSS ${mb(x.peakRss)} (${x.samples} samples)`) // prettier-ignore
      results.push(x)
    }
  }
  const after = machine()
  const md = [
    `${num(RECORDS)} records of 24 bytes (int64 ns timestamp, float64, 6-byte string, numpy's aligned layout) = ${mb(BYTES)}; ${WORKERS} worker processes each sum the float column, NaNs skipped (the result, ${num(EXPECTED_SUM)}, and the records' layout are checked). \`npm run bench:seed004\`${flags.quick ? ' **--quick**' : ''}, measured ${new Date().toISOString().slice(0, 10)} on: ${before.replace(/; load average/, '; load average at start')}, at end ${after.split('load average ')[1]}.`,
    '',
    table(results, chosen),
    '',
    ...verdict(results),
    '',
    `Memory of the parent and the 4 workers, sampled every ${SAMPLE_MS} ms by a separate process. "The data's memory" is the peak of Σ private PSS (PSS − \`Pss_Shmem\`) plus the shared segment's resident size counted once, minus the same before the records existed (${mb(median(results.map((r) => r.idleMemory)))} for the 5 Node processes with tsx: the seed's \`tracemalloc\` likewise counted only the data). Σ PSS alone overcounts the shared array while the workers map it, because the processes are read one after another (its \`Pss_Shmem\` part peaked at ${mb(median(results.filter((r) => r.contender === 'shmpipe').map((r) => r.peakPssShmem)))}). RSS counts the array in every process that maps it; VmHWM is each process's own peak RSS, summed although the peaks need not coincide. "Others' load" is the share of the vCPUs other processes used during the run (\`/proc/stat\` minus the parent's and workers' CPU time). The clock runs from the parent's "go" to the last sum; building the records and starting the workers come before it.`,
  ].join('\n')
  say(flags, `\n${md}\n`)
  if (flags.write) await writeBenchmarkSection('seed004', md)
  if (flags.json) {
    const summary = { records: RECORDS, bytes: BYTES, expectedSum: EXPECTED_SUM, results }
    process.stdout.write(`${JSON.stringify(summary)}\n`)
  }
}

const role = process.argv[2]
if (role === 'worker') {
  await worker()
} else if (role === 'parent') {
  const result = await parent(process.argv[3] as Contender)
  process.send!({ result }, () => process.disconnect())
} else {
  await main()
}
