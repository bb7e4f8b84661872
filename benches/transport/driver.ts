/**
 * Runs the cells: for each size, each transport in turn (so that they are measured side by side,
 * under the same conditions), each cell in fresh processes that exit before the next starts.
 *
 * @module
 */

import { fork, type ChildProcess } from 'node:child_process'

import {
  childExecArgv,
  isControl,
  isShmpipe,
  planCell,
  repoRoot,
  roleScript,
  sizeLabel,
  type CellConfig,
  type MemcpyResultMessage,
  type ReadyMessage,
  type ResultMessage,
  type ShmpipeReceive,
  type StartsMessage,
  type Transport,
} from './common.js'

/** What one cell measured. */
export interface CellResult {
  transport: Transport
  size: number
  /** Messages (copies) of each timed round, and its ns. */
  counts: number[]
  ns: number[]
  /** The median round's ns per message, and its bytes per second / 1e9. */
  nsPerMessage: number
  gbps: number
  /** Messages received (warm-up included), how many the plan sent, how many failed the check. */
  delivered: number
  expected: number
  bad: number
  /** Set if the cell failed (then the figures are NaN). */
  error?: string
}

/** Options of {@link runBenchmark}. */
export interface BenchOptions {
  sizes: readonly number[]
  transports: readonly Transport[]
  /** Tiny message counts, every byte checked (the smoke test). */
  quick: boolean
  shmpipeReceive: ShmpipeReceive
  /** shmpipe's ring in bytes, instead of the benchmark's 64 MiB or two messages' worth. */
  pipeBytes?: number
  /** Called with each cell's result as it comes. */
  onCell?: (r: CellResult) => void
}

/** A child of the driver, with its control messages and its stderr. */
interface Proc {
  child: ChildProcess
  exited: Promise<number | string>
  stderr(): string
}

/** Pids of every process the driver started (so that a test can look for what they left). */
export const childPids = new Set<number>()

function start(args: string[]): Proc {
  const child = fork(roleScript, args, {
    cwd: repoRoot,
    execArgv: childExecArgv(),
    stdio: ['ignore', 'inherit', 'pipe', 'ipc'],
  })
  if (child.pid !== undefined) childPids.add(child.pid)
  let stderr = ''
  child.stderr!.setEncoding('utf8').on('data', (s: string) => {
    stderr += s
    process.stderr.write(s)
  })
  const exited = new Promise<number | string>((resolve) => {
    child.on('error', (e) => resolve(e.message))
    child.on('exit', (code, signal) => resolve(signal ?? code ?? -1))
  })
  return { child, exited, stderr: () => stderr }
}

/** The median of the rounds' ns per message, and the rounds' figures. */
function summarize(
  cfg: CellConfig,
  counts: number[],
  ns: number[],
): Pick<CellResult, 'nsPerMessage' | 'gbps'> {
  const per = counts.map((n, i) => ns[i]! / n).sort((a, b) => a - b)
  const nsPerMessage = per[per.length >> 1]!
  return { nsPerMessage, gbps: cfg.size / nsPerMessage }
}

/** Longest a cell may take before its processes are killed. */
function cellTimeoutMs(cfg: CellConfig): number {
  return cfg.size >= 1e9 ? 240_000 : Number(process.env.CELL_TIMEOUT_MS ?? 120_000)
}

/** Runs one cell in fresh processes. */
export async function runCell(cfg: CellConfig): Promise<CellResult> {
  const base = { transport: cfg.transport, size: cfg.size }
  const procs: Proc[] = []
  let timer: ReturnType<typeof setTimeout> | undefined
  try {
    const work = cfg.transport === 'memcpy' ? memcpyCell(cfg, procs) : transportCell(cfg, procs)
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new Error(`timed out after ${cellTimeoutMs(cfg) / 1000} s`)),
        cellTimeoutMs(cfg),
      )
    })
    const r = await Promise.race([work, timeout])
    const codes = await Promise.all(procs.map((p) => p.exited))
    const failed = codes.findIndex((c) => c !== 0)
    if (failed >= 0) throw new Error(`a child exited with ${codes[failed]}`)
    return { ...base, ...r }
  } catch (err) {
    for (const p of procs) p.child.kill('SIGKILL')
    await Promise.all(procs.map((p) => p.exited))
    const stderr = procs.map((p) => p.stderr()).join('')
    return {
      ...base,
      counts: [],
      ns: [],
      nsPerMessage: NaN,
      gbps: NaN,
      delivered: 0,
      expected: 0,
      bad: 0,
      error: `${err instanceof Error ? err.message : String(err)}${stderr ? `\n${stderr}` : ''}`,
    }
  } finally {
    clearTimeout(timer)
  }
}

type Measured = Omit<CellResult, 'transport' | 'size' | 'error'>

/** The next control message from `p` of `type` (rejects on an error report or an early exit). */
function nextMessage<T extends string>(p: Proc, type: T): Promise<{ type: T } & object> {
  return new Promise((resolve, reject) => {
    const onMessage = (m: unknown): void => {
      if (isControl(m, 'error')) reject(new Error(m.message))
      else if (isControl(m, type as 'ready')) resolve(m as unknown as { type: T })
      else return
      p.child.off('message', onMessage)
    }
    p.child.on('message', onMessage)
    void p.exited.then((code) => reject(new Error(`exited with ${code} before its ${type}`)))
  })
}

async function memcpyCell(cfg: CellConfig, procs: Proc[]): Promise<Measured> {
  const p = start(['memcpy', JSON.stringify(cfg)])
  procs.push(p)
  const m = (await nextMessage(p, 'memcpy')) as MemcpyResultMessage
  return {
    counts: m.counts,
    ns: m.ns,
    ...summarize(cfg, m.counts, m.ns),
    delivered: m.delivered,
    expected: m.delivered,
    bad: m.bad,
  }
}

async function transportCell(cfg: CellConfig, procs: Proc[]): Promise<Measured> {
  const consumer = start(['consumer', JSON.stringify(cfg)])
  procs.push(consumer)
  const readyP = nextMessage(consumer, 'ready') as Promise<ReadyMessage>
  const resultP = nextMessage(consumer, 'result') as Promise<ResultMessage>
  resultP.catch(() => {})
  let startsP: Promise<string[]> | undefined
  if ((isShmpipe(cfg.transport) && !cfg.newUser) || cfg.transport === 'zeromq') {
    // The driver starts the producer at the same time (saving a process start-up), hands it the
    // consumer's endpoint once it is ready, and relays "go" to it. (A `newUser` shmpipe consumer
    // forks its producer itself, as `child_process`'s does.)
    const producer = start(['producer', JSON.stringify(cfg)])
    procs.push(producer)
    consumer.child.on('message', (m) => {
      if (isControl(m, 'ready') || isControl(m, 'go')) producer.child.send(m)
    })
    startsP = nextMessage(producer, 'starts').then((m) => (m as StartsMessage).starts)
    startsP.catch(() => {})
  }
  await readyP
  const result = await resultP
  const starts = startsP ? await startsP : result.starts
  if (!starts || starts.length !== result.ends.length)
    throw new Error('the start times of the rounds are missing')
  const ns = result.ends.map((e, i) => Number(BigInt(e) - BigInt(starts[i]!)))
  return {
    counts: result.counts,
    ns,
    ...summarize(cfg, result.counts, ns),
    delivered: result.delivered,
    expected: cfg.warmup + result.counts.reduce((a, b) => a + b, 0),
    bad: result.bad,
  }
}

/** Runs every cell: sizes in order, and at each size every transport in turn. */
export async function runBenchmark(opts: BenchOptions): Promise<CellResult[]> {
  const results: CellResult[] = []
  for (const size of opts.sizes) {
    for (const transport of opts.transports) {
      const cfg = planCell(transport, size, opts)
      const r = await runCell(cfg)
      if (r.error !== undefined) r.error = `${transport} at ${sizeLabel(size)}: ${r.error}`
      results.push(r)
      opts.onCell?.(r)
    }
  }
  return results
}
