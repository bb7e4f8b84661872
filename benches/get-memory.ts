/**
 * The `get()` memory benchmark (issue 16): a receiver that takes many 10 MB values with `get()`
 * from a child process, through a pipe with the default options, as a new user would.
 *
 *     node --import=tsx benches/get-memory.ts [--write] [--quick] [--count=10000]
 *         [--keep-count=1000] [--json]
 *
 * Four receivers run one after the other, each in a fresh process that forks its sender:
 * - dropping: takes `--count` values and drops each one, with `--max-old-space-size` at Node's
 *   default and at 512 (bar: its memory, private RSS plus the pipe's shared memory, stays under
 *   1 GiB; what is counted: `benches/get/memory.ts`);
 * - keeping: takes `--keep-count` values and keeps every 10th, at the same two heap sizes; at the
 *   end it checks every byte of every value it kept (bar: all of them intact). Its default count
 *   keeps 100 values (1 GB); keeping every 10th of 10,000 holds 10 GB.
 *
 * Every value is a Buffer filled with a byte of its own and stamped with its sequence number
 * every 4 KiB; the dropping receivers check the stamps at both ends of each value. Memory is
 * sampled every 10 values and at the end. Prints one line per receiver (stderr), then the table
 * (stdout; with `--json`, to stderr, and the reports as one JSON line on stdout); `--write` puts
 * it into docs/benchmarks.md (section `get-memory`). `--quick`: 40 values of 10 MB, keeping 4
 * (what `__test__/bench-smoke.test.ts` runs).
 *
 * @module
 */

import { fork } from 'node:child_process'
import os from 'node:os'
import { fileURLToPath } from 'node:url'

import { createSharedMemoryPair, Sender } from '../index.js'
import { checkValue, machineShmem, privateMemory, sharedMemory, writeValue } from './get/memory.js'
import { BENCHMARKS_DOC, writeBenchmarkSection } from './results-doc.js'
import { childExecArgv, repoRoot } from './transport/common.js'
import { machineLine } from './transport/report.js'

const script = fileURLToPath(import.meta.url)
/** The size of every value: 10 MB. */
const SIZE = 1e7
/** The memory bar of a dropping receiver: 1 GiB. */
const MEMORY_BAR = 2 ** 30
/** A keeping receiver keeps every value whose sequence number is a multiple of this. */
const KEEP_EVERY = 10
/** Memory is sampled every this many values. */
const SAMPLE_EVERY = 10

/** One receiver's run. */
export interface ReceiverPlan {
  mode: 'drop' | 'keep'
  count: number
  /** `--max-old-space-size` of the receiver, or null for Node's default. */
  heapMiB: number | null
}

/** What a receiver measured. */
export interface ReceiverReport extends ReceiverPlan {
  seconds: number
  /** Values received, and how many failed their check (at the end, for kept values). */
  received: number
  bad: number
  kept: number
  keptIntact: number
  /** Peaks over the samples: private RSS + shared memory, and each alone (bytes). */
  peakTotal: number
  peakPrivate: number
  peakShared: number
  /** The receiver's peak RSS by the kernel (VmHWM: shared pages it mapped included). */
  peakRss: number
  /** Peak rise of the machine's Shmem over its value at the start (other processes included). */
  peakMachineShmem: number
  error?: string
}

// ---------------------------------------------------------------------------------------------
// The sender (a child of the receiver)

async function sender(name: string, count: number): Promise<void> {
  const s = Sender.attach(name)
  const buf = Buffer.allocUnsafeSlow(SIZE)
  for (let seq = 0; seq < count; seq++) {
    writeValue(buf, seq) // put copies it into the pipe: the buffer is free again at once
    if (!s.tryPut(buf)) await s.put(buf)
  }
  await s.waitForAllAck()
  s.close()
}

// ---------------------------------------------------------------------------------------------
// The receiver (a child of the driver)

async function receiver(plan: ReceiverPlan): Promise<ReceiverReport> {
  const [own, r] = createSharedMemoryPair()
  const child = fork(script, ['sender', r.name, String(plan.count)], {
    cwd: repoRoot,
    execArgv: childExecArgv(),
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  })
  const exited = new Promise<number | string>((resolve) =>
    child.on('exit', (code, signal) => resolve(signal ?? code ?? -1)),
  )
  const pids: (number | 'self')[] = ['self', child.pid!]
  const shmem0 = machineShmem()
  let peakTotal = 0
  let peakPrivate = 0
  let peakShared = 0
  let peakMachineShmem = 0
  const sample = (): void => {
    const mine = privateMemory().private
    const shared = sharedMemory(pids)
    peakTotal = Math.max(peakTotal, mine + shared)
    peakPrivate = Math.max(peakPrivate, mine)
    peakShared = Math.max(peakShared, shared)
    peakMachineShmem = Math.max(peakMachineShmem, machineShmem() - shmem0)
  }
  const kept: { seq: number; value: unknown }[] = []
  let bad = 0
  const t0 = performance.now()
  for (let seq = 0; seq < plan.count; seq++) {
    let v = r.getNowait()
    if (v === undefined) v = await r.get()
    if (plan.mode === 'keep' && seq % KEEP_EVERY === 0) kept.push({ seq, value: v })
    else if (!checkValue(v, SIZE, seq, false)) bad++
    v = undefined
    if (seq % SAMPLE_EVERY === 0) sample()
  }
  const seconds = (performance.now() - t0) / 1000
  sample()
  const keptIntact = kept.filter(({ seq, value }) => checkValue(value, SIZE, seq, true)).length
  sample()
  const code = await exited
  r.close()
  own.close()
  return {
    ...plan,
    seconds,
    received: plan.count,
    bad,
    kept: kept.length,
    keptIntact,
    peakTotal,
    peakPrivate,
    peakShared,
    peakRss: privateMemory().peakRss,
    peakMachineShmem,
    ...(code === 0 ? {} : { error: `the sender exited with ${code}` }),
  }
}

// ---------------------------------------------------------------------------------------------
// The driver

function option(name: string): string | undefined {
  const prefix = `--${name}=`
  return process.argv.find((a) => a.startsWith(prefix))?.slice(prefix.length)
}

/** Runs one receiver in a fresh process; its report comes over IPC. */
function runReceiver(plan: ReceiverPlan): Promise<ReceiverReport> {
  const heap = plan.heapMiB === null ? [] : [`--max-old-space-size=${plan.heapMiB}`]
  const child = fork(script, ['receiver', JSON.stringify(plan)], {
    cwd: repoRoot,
    execArgv: [...childExecArgv(), ...heap],
    stdio: ['ignore', 'inherit', 'pipe', 'ipc'],
  })
  let stderr = ''
  child.stderr!.setEncoding('utf8').on('data', (s: string) => {
    stderr += s
    process.stderr.write(s)
  })
  return new Promise((resolve) => {
    let report: ReceiverReport | undefined
    child.on('message', (m) => (report = m as ReceiverReport))
    child.on('exit', (code, signal) => {
      if (report !== undefined && code === 0) resolve(report)
      else {
        const failed = {
          ...plan,
          seconds: NaN,
          received: 0,
          bad: 0,
          kept: 0,
          keptIntact: 0,
          peakTotal: NaN,
          peakPrivate: NaN,
          peakShared: NaN,
          peakRss: NaN,
          peakMachineShmem: NaN,
        }
        resolve({ ...failed, error: `the receiver exited with ${signal ?? code}\n${stderr}` })
      }
    })
  })
}

const MiB = (n: number): string => (Number.isFinite(n) ? `${Math.round(n / 2 ** 20)} MiB` : '–')

function heapName(p: ReceiverPlan): string {
  return p.heapMiB === null ? 'default' : `${p.heapMiB} MiB`
}

function progress(r: ReceiverReport): string {
  return (
    `${r.mode} ${r.count} values, heap ${heapName(r)}: ${r.seconds.toFixed(1)} s, peak ${MiB(r.peakTotal)} ` +
    `(private ${MiB(r.peakPrivate)}, shared ${MiB(r.peakShared)}), VmHWM ${MiB(r.peakRss)}, ` +
    `machine Shmem +${MiB(r.peakMachineShmem)}, ${r.bad} bad, kept ${r.keptIntact}/${r.kept} intact` +
    (r.error !== undefined ? `\nFAILED: ${r.error}` : '')
  )
}

/** Whether a receiver met its bar: under 1 GiB (dropping), every kept value intact (keeping). */
function met(r: ReceiverReport): boolean {
  if (r.error !== undefined || r.bad > 0) return false
  return r.mode === 'drop' ? r.peakTotal < MEMORY_BAR : r.kept > 0 && r.keptIntact === r.kept
}

function table(reports: ReceiverReport[]): string {
  const lines = [
    '| receiver | values of 10 MB | `--max-old-space-size` | time | GB/s | peak private RSS + shared memory | private RSS | shared memory | VmHWM | machine `Shmem` rise | kept intact | bar |',
    '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |',
  ]
  for (const r of reports) {
    const bar =
      r.mode === 'drop'
        ? `${met(r) ? '✅' : '❌'} < 1 GiB`
        : `${met(r) ? '✅' : '❌'} all ${r.kept} intact`
    lines.push(
      `| ${r.mode === 'drop' ? 'drops each value' : `keeps every ${KEEP_EVERY}th`} | ${r.count.toLocaleString('en-US')} | ${heapName(r)} | ` +
        `${r.seconds.toFixed(1)} s | ${((r.count * SIZE) / r.seconds / 1e9).toFixed(2)} | ${MiB(r.peakTotal)} | ` +
        `${MiB(r.peakPrivate)} | ${MiB(r.peakShared)} | ${MiB(r.peakRss)} | ${MiB(r.peakMachineShmem)} | ` +
        `${r.mode === 'keep' ? `${r.keptIntact} / ${r.kept}` : '–'} | ${r.error !== undefined ? '❌ failed' : bar} |`,
    )
  }
  return lines.join('\n')
}

async function main(): Promise<void> {
  const quick = process.argv.includes('--quick')
  const write = process.argv.includes('--write')
  const json = process.argv.includes('--json')
  const print = json ? console.error : console.log
  const count = Number(option('count') ?? (quick ? 40 : 10_000))
  const keepCount = Number(option('keep-count') ?? (quick ? 40 : 1_000))
  const machine = machineLine()
  const loadBefore = os.loadavg()[0]!
  print(`machine: ${machine}; load average ${loadBefore.toFixed(1)}`)
  const started = performance.now()
  const plans: ReceiverPlan[] = [
    { mode: 'drop', count, heapMiB: null },
    { mode: 'drop', count, heapMiB: 512 },
    { mode: 'keep', count: keepCount, heapMiB: null },
    { mode: 'keep', count: keepCount, heapMiB: 512 },
  ]
  const reports: ReceiverReport[] = []
  for (const plan of plans) {
    const r = await runReceiver(plan)
    console.error(progress(r))
    reports.push(r)
  }
  const seconds = (performance.now() - started) / 1000
  const load = `load average ${loadBefore.toFixed(1)} before, ${os.loadavg()[0]!.toFixed(1)} after`
  const text = table(reports)
  print(`\n${text}\n\nget() memory benchmark: ${seconds.toFixed(0)} s, ${load}`)
  if (json) console.log(JSON.stringify({ machine, reports }))
  if (write && !quick) {
    const date = new Date().toISOString().slice(0, 10)
    const block = `Measured ${date} by \`npm run bench:get-memory\` (${seconds.toFixed(0)} s, ${load}) on ${machine}.\n\n${text}`
    await writeBenchmarkSection('get-memory', block)
    print(`wrote the get-memory section of ${BENCHMARKS_DOC}`)
  }
  // A missed bar is a finding, not a failure of the benchmark; a broken receiver is.
  if (reports.some((r) => r.error !== undefined || r.bad > 0 || r.keptIntact !== r.kept))
    process.exitCode = 1
}

const [role, arg1, arg2] = process.argv.slice(2)
if (role === 'sender') {
  await sender(arg1!, Number(arg2))
} else if (role === 'receiver') {
  const report = await receiver(JSON.parse(arg1!) as ReceiverPlan)
  process.send!(report, () => process.disconnect())
} else {
  await main()
}
