/**
 * Seed 003 ("benchmarking multiprocessing np array comms", its demo application) in Node: 16
 * producer processes each send 1000 frames of (240, 320) float64 (`np.ones(dim) * k`, 614,400
 * bytes) with the frame's timestamp to one consumer, which converts each frame to uint8 as the
 * seed's consumer does (`astype("uint8")`). Each frame costs its producer 1 ms of sleep (an I/O
 * bound camera) or 1 ms of busy work (a CPU-bound one: spinning until 1 ms of wall time has
 * passed, as the seed's `time.time()` loop does).
 *
 *     npm run bench:seed003                       # node --import=tsx benches/seed003.ts
 *     npm run bench:seed003 -- --quick            # 4 producers, 20 tiny frames each: a smoke run
 *     npm run bench:seed003 -- --write            # also put the table into docs/benchmarks.md
 *     npm run bench:seed003 -- --runs=1 --only=busy,ipc,shmpipe-get
 *
 * Contenders, each with 16 fresh child processes per run (started and attached before the clock):
 * - `shmpipe-get`: every producer `Sender.attach(name)`es to one pipe and `await put({ frame, t,
 *   camera })`s; the parent `await receiver.get()`s (the value decoded from a private copy).
 * - `shmpipe-receive`: the same, but the parent uses `receiver.receive()` (zero copy: the frame is
 *   a view into shared memory until `release()`).
 * - `ipc`: the same producers send through `child_process` IPC (`serialization: 'advanced'`, the
 *   fastest Node has for typed arrays), at most 6 frames in flight each (a bounded queue, like the
 *   seed's `mp.Queue(maxsize=100)` and like the pipe's 64 MiB ring: 16 × 6 × 614 KB ≈ 59 MB).
 *
 * Producers return to the event loop once per frame (in the sleep, or after the spin), so
 * `child_process`' writes make progress as in any event-driven producer. The consumer checks every
 * frame (size, per-producer order, content), records its latency (receive time − `t`, wall
 * clocks of both processes) and the CPU time of every process; the others' load on the machine is
 * what `/proc/stat` counted beyond the benchmark's own processes. The contenders run in turns,
 * RUNS times, so a busy moment of the machine does not fall on one of them only.
 */

import { fork, type ChildProcess } from 'node:child_process'
import { availableParallelism } from 'node:os'
import { setImmediate as yieldToLoop, setTimeout as sleep } from 'node:timers/promises'
import { fileURLToPath } from 'node:url'

import { createSharedMemoryPair, Sender, type Receiver } from '../index.js'
import {
  machine,
  machineCpu,
  median,
  num,
  othersLoad,
  parseFlags,
  quantile,
  say,
  spread,
} from './seed-common.js'
import { writeBenchmarkSection } from './results-doc.js'

const flags = parseFlags()
const PRODUCERS = flags.quick ? 4 : 16
const ROUNDS = flags.quick ? 20 : 1000
const SHAPE = flags.quick ? ([24, 32] as const) : ([240, 320] as const)
const FRAME_LEN = SHAPE[0] * SHAPE[1]
const WORK_MS = 1
const RUNS = flags.runs ?? (flags.quick ? 1 : 3)
/** Frames a producer may have handed to `process.send` and not yet written (IPC contender). */
const IPC_IN_FLIGHT = 6
/** The pipe's inline ring (the default): about 100 frames in flight, shared by all producers. */
const PIPE_BYTES = Number(process.env.SEED003_PIPE_BYTES ?? 64 << 20)
const script = fileURLToPath(import.meta.url)

/** Ways to pass the frames, as named in the table. */
type Transport = 'shmpipe-get' | 'shmpipe-receive' | 'ipc'
/** What a producer does for each frame besides sending it. */
type Mode = 'sleep' | 'busy'

const TRANSPORTS: Transport[] = ['shmpipe-get', 'shmpipe-receive', 'ipc']
const MODES: Mode[] = ['sleep', 'busy']

/** One frame and its metadata, as sent. */
interface Frame {
  frame: Float64Array
  /** Wall-clock ms (epoch) when the producer sent it. */
  t: number
  /** The producer's index. */
  camera: number
}

/** What a producer reports after its rounds. */
interface ProducerStats {
  /** CPU µs of the whole process from "go" to its last frame sent (all threads). */
  cpuUs: number
  /** CPU µs of that spent making frames and in the sleep or spin (the seed's own work). */
  workUs: number
  /** Context switches of the process (all threads) from "go" to its last frame sent. */
  switches: number
}

/** Context switches, voluntary and not, of this process's threads so far. */
function contextSwitches(): number {
  const r = process.resourceUsage()
  return r.voluntaryContextSwitches + r.involuntaryContextSwitches
}

/** Wall-clock ms since the epoch with sub-ms precision, comparable between processes. */
function wallNow(): number {
  return performance.timeOrigin + performance.now()
}

/** Spins until `ms` of wall time have passed (the seed's CPU-bound producer). */
function spin(ms: number): void {
  const end = performance.now() + ms
  while (performance.now() < end) {
    // busy
  }
}

// ---------------------------------------------------------------------------------------------
// Child: a producer ("camera")

/** The next IPC message from the parent. */
function nextMessage(): Promise<unknown> {
  return new Promise((resolve) => process.once('message', resolve))
}

/** Hands `value` to `child_process` IPC; resolves once it is written to the channel. */
function ipcSend(value: Frame): Promise<void> {
  return new Promise((resolve, reject) => {
    process.send!(value, undefined, {}, (err) => (err ? reject(err) : resolve()))
  })
}

async function producer(transport: Transport, camera: number, pipeName: string): Promise<void> {
  const sender = transport === 'ipc' ? null : Sender.attach(pipeName)
  const frame = new Float64Array(FRAME_LEN)
  process.send!({ ready: true })
  for (;;) {
    const command = (await nextMessage()) as { mode: Mode } | 'stop'
    if (command === 'stop') break
    const { mode } = command
    const inFlight: Promise<void>[] = []
    const cpu0 = process.cpuUsage()
    const switches0 = contextSwitches()
    let workUs = 0
    for (let k = 0; k < ROUNDS; k++) {
      const w0 = process.cpuUsage()
      frame.fill(k) // the seed: np.ones(dim) * frames_written
      if (mode === 'sleep') await sleep(WORK_MS)
      else spin(WORK_MS)
      const w = process.cpuUsage(w0)
      workUs += w.user + w.system
      if (mode === 'busy') await yieldToLoop()
      const value: Frame = { frame, t: wallNow(), camera }
      if (sender !== null) {
        await sender.put(value)
      } else {
        if (inFlight.length >= IPC_IN_FLIGHT) await inFlight.shift()
        inFlight.push(ipcSend(value))
      }
    }
    await Promise.all(inFlight)
    const cpu = process.cpuUsage(cpu0)
    const done: ProducerStats = {
      cpuUs: cpu.user + cpu.system,
      workUs,
      switches: contextSwitches() - switches0,
    }
    process.send!({ done })
  }
  sender?.close()
  process.disconnect()
}

// ---------------------------------------------------------------------------------------------
// Parent: the consumer

/** Checks, times and converts the frames as they come, whatever the transport. */
class Consumer {
  received = 0
  /** Sum of the last converted pixel of each frame (keeps the conversion observable). */
  checksum = 0
  readonly total = PRODUCERS * ROUNDS
  readonly latencies = new Float64Array(this.total)
  readonly #next = new Int32Array(PRODUCERS)
  readonly #img = new Uint8Array(FRAME_LEN)

  get complete(): boolean {
    return this.received === this.total
  }

  take(value: unknown): void {
    const now = wallNow()
    const { frame, t, camera } = value as Frame
    if (!(frame instanceof Float64Array) || frame.length !== FRAME_LEN) {
      throw new Error(`not a frame of ${FRAME_LEN} float64 (length ${String(frame?.length)})`)
    }
    const k = this.#next[camera]
    if (k === undefined) throw new Error(`no camera ${camera}`)
    if (frame[0] !== k || frame[FRAME_LEN - 1] !== k || frame[FRAME_LEN >> 1] !== k) {
      throw new Error(`camera ${camera}: expected frame ${k}, got ${frame[0]}`)
    }
    this.#next[camera] = k + 1
    this.latencies[this.received++] = now - t
    this.#img.set(frame) // the seed: np_array.astype("uint8").copy()
    this.checksum += this.#img[FRAME_LEN - 1]!
  }

  /** Whether every producer's frames 0 … ROUNDS−1 arrived, and the conversion saw them all. */
  verify(): void {
    if (!this.#next.every((n) => n === ROUNDS)) throw new Error(`missing frames: ${this.#next}`)
    let expected = 0
    for (let k = 0; k < ROUNDS; k++) expected += PRODUCERS * (k & 0xff)
    if (this.checksum !== expected) throw new Error(`checksum ${this.checksum} ≠ ${expected}`)
  }
}

/** A forked producer and the parent's view of its messages. */
class Child {
  readonly proc: ChildProcess
  onFrame: (frame: Frame) => void = () => {
    throw new Error('a frame outside a run')
  }
  #waiters = new Map<string, { resolve: (v: unknown) => void; reject: (e: Error) => void }>()
  #exit: Promise<number | null>
  #stopping = false
  /** Rejects if the child exits before {@link Child.stop} asked it to (never resolves). */
  readonly died: Promise<never>

  constructor(transport: Transport, camera: number, pipeName: string) {
    this.proc = fork(
      script,
      ['child', transport, String(camera), pipeName, ...(flags.quick ? ['--quick'] : [])],
      {
        execArgv: ['--import=tsx'],
        serialization: 'advanced',
        stdio: ['ignore', 'ignore', 'inherit', 'ipc'],
      },
    )
    this.proc.on('message', (m: Record<string, unknown>) => {
      if ('frame' in m) return this.onFrame(m as unknown as Frame)
      for (const [key, w] of this.#waiters) {
        if (key in m) {
          this.#waiters.delete(key)
          w.resolve(m[key])
        }
      }
    })
    let died: (err: Error) => void = () => {}
    this.died = new Promise<never>((_, reject) => (died = reject))
    this.died.catch(() => {}) // awaited only while a run is on
    this.#exit = new Promise((resolve) =>
      this.proc.on('exit', (code, signal) => {
        const err = new Error(`producer ${camera} exited (${signal ?? code})`)
        for (const w of this.#waiters.values()) w.reject(err)
        if (!this.#stopping) died(err)
        resolve(code)
      }),
    )
  }

  /** The value of the next message that has property `key`. */
  expect<T>(key: string): Promise<T> {
    return new Promise<T>((resolve, reject) =>
      this.#waiters.set(key, { resolve: resolve as (v: unknown) => void, reject }),
    )
  }

  /** Tells the child to stop and waits for it to exit cleanly. */
  async stop(): Promise<void> {
    this.#stopping = true
    if (this.proc.connected) this.proc.send('stop')
    const code = await this.#exit
    if (code !== 0) throw new Error(`producer exited with ${code}`)
  }
}

/** One run of one contender in one mode. */
interface Result {
  transport: Transport
  mode: Mode
  /** Frames received, every one checked. */
  frames: number
  ms: number
  fps: number
  latP50: number
  latP99: number
  /** CPU µs per frame: the consumer process, producers (all), their own work. */
  consumerUs: number
  producersUs: number
  workUs: number
  /** Context switches per frame: the consumer process; all producers. */
  consumerSwitches: number
  producerSwitches: number
  /** Share of all CPUs other processes used meanwhile. */
  others: number
}

async function runMode(
  transport: Transport,
  mode: Mode,
  children: Child[],
  receiver: Receiver | null,
): Promise<Result> {
  const consumer = new Consumer()
  const done = children.map((c) => c.expect<ProducerStats>('done'))
  for (const d of done) d.catch(() => {}) // a death is reported through `died` below
  let ipcComplete: Promise<void> | undefined
  if (receiver === null) {
    ipcComplete = new Promise((resolve, reject) => {
      for (const c of children) {
        c.onFrame = (f) => {
          try {
            consumer.take(f)
            if (consumer.complete) resolve()
          } catch (err) {
            reject(err)
          }
        }
      }
    })
  }
  const m0 = machineCpu()
  const cpu0 = process.cpuUsage()
  const switches0 = contextSwitches()
  const t0 = performance.now()
  for (const c of children) c.proc.send({ mode })
  const consume = async (): Promise<void> => {
    if (receiver === null) {
      await ipcComplete
    } else if (transport === 'shmpipe-receive') {
      while (!consumer.complete) {
        const message = await receiver.receive({ timeout: 120_000 })
        consumer.take(message.value)
        message.release()
      }
    } else {
      while (!consumer.complete) consumer.take(await receiver.get({ timeout: 120_000 }))
    }
  }
  const consuming = consume()
  consuming.catch(() => {}) // if a producer dies first, the close that follows ends it
  await Promise.race([consuming, ...children.map((c) => c.died)])
  const ms = performance.now() - t0
  const cpu = process.cpuUsage(cpu0)
  const switches = contextSwitches() - switches0
  const m1 = machineCpu()
  const stats = await Promise.all(done)
  consumer.verify()
  const n = consumer.total
  const consumerUs = cpu.user + cpu.system
  const producersUs = stats.reduce((s, x) => s + x.cpuUs, 0)
  return {
    transport,
    mode,
    frames: consumer.received,
    ms,
    fps: (n * 1000) / ms,
    latP50: quantile(consumer.latencies, 0.5),
    latP99: quantile(consumer.latencies, 0.99),
    consumerUs: consumerUs / n,
    producersUs: producersUs / n,
    workUs: stats.reduce((s, x) => s + x.workUs, 0) / n,
    consumerSwitches: switches / n,
    producerSwitches: stats.reduce((s, x) => s + x.switches, 0) / n,
    others: othersLoad(m0, m1, (consumerUs + producersUs) / 1000, ms),
  }
}

/** Starts PRODUCERS fresh children for `transport`, runs `modes` with them, stops them. */
async function runTransport(transport: Transport, modes: Mode[]): Promise<Result[]> {
  const pair = transport === 'ipc' ? null : createSharedMemoryPair({ bytes: PIPE_BYTES })
  const [sender, receiver] = pair ?? [null, null]
  const children = Array.from(
    { length: PRODUCERS },
    (_, i) => new Child(transport, i, sender?.name ?? '-'),
  )
  try {
    await Promise.all(children.map((c) => c.expect('ready')))
    sender?.close() // every producer has attached its own sender
    const results: Result[] = []
    for (const mode of modes) results.push(await runMode(transport, mode, children, receiver))
    await Promise.all(children.map((c) => c.stop()))
    return results
  } finally {
    for (const c of children) if (c.proc.exitCode === null) c.proc.kill('SIGKILL')
    sender?.close()
    receiver?.close()
  }
}

/** CPU µs one uint8 conversion of a frame costs this process alone (median of 51, warmed up). */
function conversionUs(): number {
  const frame = new Float64Array(FRAME_LEN).fill(7)
  const img = new Uint8Array(FRAME_LEN)
  const samples: number[] = []
  for (let i = 0; i < 71; i++) {
    const c0 = process.cpuUsage()
    img.set(frame)
    const c = process.cpuUsage(c0)
    if (i >= 20) samples.push(c.user + c.system)
  }
  return median(samples)
}

const f0 = (x: number): string => num(x)
const f1 = (x: number): string => num(x, 1)
const modeName = (mode: Mode): string => (mode === 'sleep' ? '1 ms sleep' : '1 ms busy')
const transportName = (t: Transport): string =>
  t === 'ipc' ? "child_process IPC ('advanced')" : `shmpipe \`${t.slice(8)}()\``

function table(results: Result[], modes: Mode[], transports: Transport[]): string {
  const lines = [
    `| producers | transport | frames/s, median [min–max] of ${RUNS} | rounds/s | latency p50 / p99 (ms) | CPU µs per frame: consumer | producers (their sleep/spin) | total | CPU-bound ceiling (frames/s) | context switches per frame: consumer / producers | others' load |`,
    '| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
  ]
  for (const mode of modes) {
    for (const transport of transports) {
      const rs = results.filter((r) => r.mode === mode && r.transport === transport)
      if (rs.length === 0) continue
      const m = (k: keyof Result): number => median(rs.map((r) => r[k] as number))
      const total = median(rs.map((r) => r.consumerUs + r.producersUs))
      const cells = [
        modeName(mode),
        transportName(transport),
        spread(
          rs.map((r) => r.fps),
          f0,
        ),
        f0(m('fps') / PRODUCERS),
        `${f1(m('latP50'))} / ${f1(m('latP99'))}`,
        f0(m('consumerUs')),
        `${f0(m('producersUs'))} (${f0(m('workUs'))})`,
        f0(total),
        f0((availableParallelism() * 1e6) / total),
        `${f1(m('consumerSwitches'))} / ${f1(m('producerSwitches'))}`,
        spread(
          rs.map((r) => r.others * 100),
          (x) => `${f0(x)}%`,
        ),
      ]
      lines.push(`| ${cells.join(' | ')} |`)
    }
  }
  return lines.join('\n')
}

/** "shmpipe X / IPC" ratios of median frames per second, and the bar's verdict (busy mode). */
function ratios(results: Result[], modes: Mode[]): string[] {
  const out: string[] = []
  for (const mode of modes) {
    const fps = (t: Transport): number[] =>
      results.filter((r) => r.mode === mode && r.transport === t).map((r) => r.fps)
    const ipc = fps('ipc')
    if (ipc.length === 0) continue
    for (const t of ['shmpipe-get', 'shmpipe-receive'] as const) {
      const shm = fps(t)
      if (shm.length === 0) continue
      const ratio = median(shm) / median(ipc)
      const range = `${num(Math.min(...shm) / Math.max(...ipc), 2)}–${num(Math.max(...shm) / Math.min(...ipc), 2)}×`
      const bar = mode === 'busy' ? `; bar ≥ 3×: ${ratio >= 3 ? 'met' : '**not met**'}` : ''
      out.push(
        `- ${modeName(mode)}: ${transportName(t)} ÷ IPC = **${num(ratio, 2)}×** (worst to best pairing of runs ${range}${bar})`,
      )
    }
  }
  return out
}

/**
 * What the bar asks against what the CPUs allow. When the CPUs are saturated, frames/s is the
 * CPU time available divided by the CPU time a frame costs, so two transports measured under the
 * same load compare as the inverse of their CPU per frame. In busy mode a frame costs its producer
 * about 1 ms of spin and the consumer its uint8 conversion whatever the transport: that bounds
 * what any transport can gain over IPC. With more cores than producers, the CPUs stop being the
 * limit and the one consumer becomes it: then the consumers' CPU per frame compares.
 */
function ceilingNote(results: Result[], convertUs: number): string[] {
  const busy = (t: Transport): Result[] =>
    results.filter((r) => r.mode === 'busy' && r.transport === t)
  const ipc = busy('ipc')
  if (ipc.length === 0) return []
  const m = (rs: Result[], f: (r: Result) => number): number => median(rs.map(f))
  const work = m(
    results.filter((r) => r.mode === 'busy'),
    (r) => r.workUs,
  )
  const floor = work + convertUs
  const ipcTotal = m(ipc, (r) => r.consumerUs + r.producersUs)
  const out = [
    `- Busy mode is CPU-bound on ${availableParallelism()} vCPUs, so frames/s ≈ available CPU ÷ CPU per frame, and transports compare as the inverse of their CPU per frame. Whatever the transport, a frame costs ${f0(work)} µs of the producer's spin and ${f0(convertUs)} µs of conversion: a transport that cost nothing would be at most IPC's ${f0(ipcTotal)} µs ÷ ${f0(floor)} µs = **${num(ipcTotal / floor, 2)}×** faster than IPC. 3× would need IPC to cost ≥ ${f0(3 * floor)} µs per frame.`,
  ]
  for (const t of ['shmpipe-get', 'shmpipe-receive'] as const) {
    const shm = busy(t)
    if (shm.length === 0) continue
    const shmConsumer = m(shm, (r) => r.consumerUs)
    const ipcConsumer = m(ipc, (r) => r.consumerUs)
    out.push(
      `- With more cores than producers the consumer sets the pace instead: it spends ${f0(ipcConsumer)} µs of CPU per frame on IPC and ${f0(shmConsumer)} µs with ${transportName(t)}, a bound of **${num(ipcConsumer / shmConsumer, 2)}×**.`,
    )
  }
  return out
}

async function main(): Promise<void> {
  const pick = <T extends string>(all: T[]): T[] => {
    const chosen = all.filter((x) => flags.only?.includes(x))
    return chosen.length > 0 ? chosen : all
  }
  const modes = pick(MODES)
  const transports = pick(TRANSPORTS)
  const convertUs = conversionUs()
  const before = machine()
  const results: Result[] = []
  for (let r = 0; r < RUNS; r++) {
    for (const transport of transports) {
      const rs = await runTransport(transport, modes)
      for (const x of rs) {
        say(flags, `run ${r + 1}/${RUNS} ${x.mode} ${x.transport}: ${f0(x.fps)} frames/s, others' load ${f0(x.others * 100)}%`) // prettier-ignore
      }
      results.push(...rs)
    }
  }
  const after = machine()

  const md = [
    `${PRODUCERS} producer processes × ${ROUNDS} frames of (${SHAPE.join(', ')}) float64 (${f0(FRAME_LEN * 8)} B) + timestamp → 1 consumer process, which checks each frame and converts it to uint8 (the seed's \`astype("uint8")\`: ${f0(convertUs)} µs of CPU per frame alone). \`npm run bench:seed003\`${flags.quick ? ' **--quick**' : ''}, measured ${new Date().toISOString().slice(0, 10)} on: ${before.replace(/; load average/, '; load average at start')}, at end ${after.split('load average ')[1]}.`,
    '',
    table(results, modes, transports),
    '',
    ...ratios(results, modes),
    ...ceilingNote(results, convertUs),
    '',
    `Rounds/s is the seed's "FPS" (frames/s ÷ ${PRODUCERS}). CPU µs and context switches per frame are medians over the runs, from \`process.cpuUsage()\` and \`process.resourceUsage()\` of every process (all threads, the pipe's waiter threads included); "their sleep/spin" is the part the producers spent in their own work. The CPU-bound ceiling is ${availableParallelism()} vCPUs ÷ total CPU per frame. "Others' load" is the share of the vCPUs that other processes used meanwhile (\`/proc/stat\` minus this benchmark's processes).`,
  ].join('\n')
  say(flags, `\n${md}\n`)
  if (flags.write) await writeBenchmarkSection('seed003', md)
  if (flags.json) {
    const summary = { producers: PRODUCERS, rounds: ROUNDS, frameLength: FRAME_LEN, results }
    process.stdout.write(`${JSON.stringify(summary)}\n`)
  }
}

if (process.argv[2] === 'child') {
  const [, , , transport, camera, pipeName] = process.argv
  await producer(transport as Transport, Number(camera), pipeName!)
} else {
  await main()
}
