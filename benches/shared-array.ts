/**
 * Shared array benchmark, after seed 002 ("sharing data between processes"), beside baselines:
 *
 *     npm run bench:arrays            # node --import=tsx benches/shared-array.ts
 *     npm run bench:arrays -- --quick # a tenth of the work, for a smoke run
 *
 * - read: 8 processes each sum a 10000×100 Float64Array (8 MB) 1000 times. shmpipe: each child
 *   attaches to one SharedArray and sums it in place. Baseline: each child gets its own copy
 *   through child_process IPC (`serialization: 'advanced'`, the fastest IPC Node has for typed
 *   arrays) and sums that.
 * - write: 4 processes increment and 4 decrement one shared number 10,000 times each, each update
 *   a read-modify-write under a lock; the result must be exactly 0. shmpipe: `lock()`/`unlock()`
 *   and `withLock`. Baselines: the update as a request/reply to the one process that owns the
 *   number (child_process IPC); and, for reference although it is threads and not processes,
 *   8 worker_threads with a SharedArrayBuffer and a mutex made of `Atomics`.
 *
 * Children are started and attached first; the clock runs from the parent's "go" to the last
 * child's "done" (the read baseline's clock includes sending the copies). The contenders run in
 * turns, RUNS times (so that a busy moment of the machine does not fall on one of them only), and
 * the median is printed, as a Markdown table.
 */

import { fork, type ChildProcess, type Serializable } from 'node:child_process'
import { availableParallelism, cpus } from 'node:os'
import { fileURLToPath } from 'node:url'
import { Worker } from 'node:worker_threads'

import { SharedArray, withSharedMemory } from '../index.js'

const quick = process.argv.includes('--quick')
const PROCS = 8
const ROWS = 10_000
const COLS = 100
const SUMS = quick ? 100 : 1000
const UPDATES = quick ? 1000 : 10_000
const RUNS = quick ? 1 : 3
const script = fileURLToPath(import.meta.url)

// ---------------------------------------------------------------------------------------------
// Children

/** The next IPC message from the parent. */
function nextMessage(): Promise<unknown> {
  return new Promise((resolve) => process.once('message', resolve))
}

function sum(data: Float64Array): number {
  let s = 0
  for (let i = 0; i < data.length; i++) s += data[i]!
  return s
}

type Message = { data?: Float64Array; delta?: number }

const roles: Record<string, (...args: string[]) => Promise<unknown>> = {
  /** Attaches to the array, says ready, sums it SUMS times on 'go'. */
  async 'read-shared'(name, sums) {
    const a = SharedArray.attach(name!, Float64Array)
    process.send!('ready')
    await nextMessage()
    let s = 0
    for (let k = 0; k < Number(sums); k++) s = sum(a.data)
    a.close()
    return s
  },

  /** Says ready, receives its copy of the array, sums it SUMS times. */
  async 'read-copy'(sums) {
    process.send!('ready')
    const { data } = (await nextMessage()) as Message
    let s = 0
    for (let k = 0; k < Number(sums); k++) s = sum(data!)
    return s
  },

  /** Adds `delta` to element 0 `count` times under the lock (`mode`: 'lock' or 'withLock'). */
  async 'write-shared'(name, delta, count, mode) {
    const a = SharedArray.attach(name!, Float64Array)
    const d = a.data
    const step = Number(delta)
    process.send!('ready')
    await nextMessage()
    for (let i = 0; i < Number(count); i++) {
      if (mode === 'lock') {
        a.lock()
        d[0] = d[0]! + step
        a.unlock()
      } else {
        await a.withLock(() => {
          d[0] = d[0]! + step
        })
      }
    }
    a.close()
    return null
  },

  /** Asks the parent (the owner of the number) to add `delta`, `count` times, one at a time. */
  async 'write-ipc'(delta, count) {
    process.send!('ready')
    await nextMessage()
    for (let i = 0; i < Number(count); i++) {
      const ack = nextMessage()
      process.send!({ delta: Number(delta) })
      await ack
    }
    return null
  },
}

// ---------------------------------------------------------------------------------------------
// Parent

interface Started {
  children: ChildProcess[]
  /** Resolves with each child's result once all are done. */
  done: Promise<unknown[]>
}

/** Forks one child per argument list and waits until every child says ready. */
async function startChildren(
  argsList: string[][],
  onMessage?: (c: ChildProcess, m: unknown) => void,
): Promise<Started> {
  const children = argsList.map((args) =>
    fork(script, ['child', ...args], {
      execArgv: ['--import=tsx'],
      serialization: 'advanced',
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    }),
  )
  const results = children.map(
    (c) =>
      new Promise<unknown>((resolve, reject) => {
        c.on('message', (m: unknown) => {
          if (typeof m === 'object' && m !== null && 'result' in m) resolve(m.result)
          else if (m !== 'ready') onMessage?.(c, m)
        })
        c.on('exit', (code) => (code === 0 ? undefined : reject(new Error(`child exited ${code}`))))
      }),
  )
  await Promise.all(
    children.map(
      (c) => new Promise<void>((resolve) => c.once('message', (m) => m === 'ready' && resolve())),
    ),
  )
  return { children, done: Promise.all(results) }
}

/** Sends 'go' (or `payload`) to every child; ms until all are done, and their results. */
async function timed(started: Started, payload: Serializable = 'go'): Promise<[number, unknown[]]> {
  const t0 = performance.now()
  for (const c of started.children) c.send(payload)
  const results = await started.done
  const ms = performance.now() - t0
  for (const c of started.children) if (c.connected) c.disconnect()
  return [ms, results]
}

interface Row {
  test: string
  contender: string
  ms: number
  note: string
}

async function readShared(data: Float64Array, expected: number): Promise<Row> {
  return withSharedMemory(async (m) => {
    const a = m.createArray(`bench-read-${process.pid}`.slice(0, 20), Float64Array, [ROWS, COLS])
    a.data.set(data)
    const started = await startChildren(
      Array.from({ length: PROCS }, () => ['read-shared', a.name, String(SUMS)]),
    )
    const [ms, results] = await timed(started)
    if (!results.every((s) => s === expected)) throw new Error(`wrong sums ${String(results)}`)
    return { test: 'read', contender: 'shmpipe SharedArray (attach, sum in place)', ms, note: '' }
  })
}

async function readCopy(data: Float64Array, expected: number): Promise<Row> {
  const started = await startChildren(
    Array.from({ length: PROCS }, () => ['read-copy', String(SUMS)]),
  )
  const [ms, results] = await timed(started, { data })
  if (!results.every((s) => s === expected)) throw new Error(`wrong sums ${String(results)}`)
  return {
    test: 'read',
    contender: "child_process IPC copy ('advanced'), then sum",
    ms,
    note: `${PROCS} copies of ${(data.byteLength / 1e6).toFixed(0)} MB`,
  }
}

async function writeShared(mode: 'lock' | 'withLock'): Promise<Row> {
  return withSharedMemory(async (m) => {
    const a = m.createArray(`bench-w-${process.pid}`.slice(0, 20), Float64Array, 1)
    const started = await startChildren(
      Array.from({ length: PROCS }, (_, i) => ['write-shared', a.name, i < PROCS / 2 ? '1' : '-1', String(UPDATES), mode]), // prettier-ignore
    )
    const [ms] = await timed(started)
    if (a.data[0] !== 0) throw new Error(`lost updates: ${a.data[0]}`)
    const how = mode === 'lock' ? '`lock()`/`unlock()`' : '`await withLock(fn)`'
    return { test: 'write', contender: `shmpipe SharedArray, ${how}`, ms, note: 'result 0' }
  })
}

async function writeIpc(): Promise<Row> {
  let value = 0
  const started = await startChildren(
    Array.from({ length: PROCS }, (_, i) => ['write-ipc', i < PROCS / 2 ? '1' : '-1', String(UPDATES)]), // prettier-ignore
    (c, m) => {
      value += (m as Message).delta!
      c.send('ack')
    },
  )
  const [ms] = await timed(started)
  if (value !== 0) throw new Error(`lost updates: ${value}`)
  return {
    test: 'write',
    contender: 'child_process IPC request/reply to the owner process',
    ms,
    note: 'result 0',
  }
}

/** A worker thread: a mutex from Atomics (0 free, 1 held, 2 held with waiters) around +delta. */
const WORKER = `
const { workerData, parentPort } = require('node:worker_threads')
const { lock, data, delta, count } = workerData
const l = new Int32Array(lock)
const d = new Float64Array(data)
parentPort.once('message', () => {
  for (let i = 0; i < count; i++) {
    let c = Atomics.compareExchange(l, 0, 0, 1)
    if (c !== 0) {
      if (c !== 2) c = Atomics.exchange(l, 0, 2)
      while (c !== 0) { Atomics.wait(l, 0, 2); c = Atomics.exchange(l, 0, 2) }
    }
    d[0] = d[0] + delta
    if (Atomics.sub(l, 0, 1) !== 1) { Atomics.store(l, 0, 0); Atomics.notify(l, 0, 1) }
  }
  parentPort.postMessage('done')
})
`

async function writeWorkers(): Promise<Row> {
  const lock = new SharedArrayBuffer(4)
  const data = new SharedArrayBuffer(8)
  const workers = Array.from(
    { length: PROCS },
    (_, i) =>
      new Worker(WORKER, {
        eval: true,
        workerData: { lock, data, delta: i < PROCS / 2 ? 1 : -1, count: UPDATES },
      }),
  )
  await Promise.all(workers.map((w) => new Promise((r) => w.once('online', r))))
  const t0 = performance.now()
  const done = workers.map((w) => new Promise((r) => w.once('message', r)))
  for (const w of workers) w.postMessage('go')
  await Promise.all(done)
  const ms = performance.now() - t0
  await Promise.all(workers.map((w) => w.terminate()))
  const value = new Float64Array(data)[0]
  if (value !== 0) throw new Error(`lost updates: ${value}`)
  return {
    test: 'write',
    contender: 'worker_threads + SharedArrayBuffer + Atomics mutex (threads, not processes)',
    ms,
    note: 'result 0',
  }
}

async function main(): Promise<void> {
  const data = new Float64Array(ROWS * COLS)
  for (let i = 0; i < data.length; i++) data[i] = (i % 1000) / 8
  const expected = sum(data)
  const contenders: (() => Promise<Row>)[] = [
    () => readShared(data, expected),
    () => readCopy(data, expected),
    () => writeShared('lock'),
    () => writeShared('withLock'),
    () => writeIpc(),
    () => writeWorkers(),
  ]
  const runs: Row[][] = contenders.map(() => [])
  for (let r = 0; r < RUNS; r++) {
    for (const [i, run] of contenders.entries()) runs[i]!.push(await run())
  }
  const rows = runs.map((rs) => {
    const sorted = [...rs].sort((a, b) => a.ms - b.ms)
    return { ...sorted[sorted.length >> 1]!, range: sorted.map((x) => x.ms.toFixed(0)).join(', ') }
  })

  const cpu = cpus()[0]?.model ?? 'unknown CPU'
  console.log(
    `\nShared arrays, ${PROCS} processes, ${availableParallelism()} CPUs (${cpu}), Node ${process.version}${quick ? ', --quick' : ''}\n`,
  )
  console.log(
    `read: each process sums a ${ROWS}×${COLS} Float64Array ${SUMS} times; write: ${PROCS / 2} processes +1 and ${PROCS / 2} processes −1, ${UPDATES} locked updates each\n`,
  )
  console.log(`| test | contender | time (median of ${RUNS}) | per operation | runs (ms) | note |`)
  console.log('| --- | --- | ---: | ---: | ---: | --- |')
  for (const r of rows) {
    const ops = r.test === 'read' ? PROCS * SUMS : PROCS * UPDATES
    const per = r.test === 'read' ? `${(r.ms / SUMS).toFixed(2)} ms per round of ${PROCS} sums` : `${((r.ms * 1000) / ops).toFixed(2)} µs per update` // prettier-ignore
    console.log(`| ${r.test} | ${r.contender} | ${r.ms.toFixed(0)} ms | ${per} | ${r.range} | ${r.note} |`) // prettier-ignore
  }
}

if (process.argv[2] === 'child') {
  const [, , , role = '', ...args] = process.argv
  const run = roles[role]
  if (run === undefined) throw new Error(`unknown role ${role}`)
  const result = await run(...args)
  process.send!({ result })
} else {
  await main()
}
