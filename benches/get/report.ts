/**
 * The tables of the `get()` benchmark and the bars of issue 16, each checked per run: a bar holds
 * only if it holds in every run.
 *
 * @module
 */

import { sizeLabel, type ValueShape } from '../transport/common.js'
import type { Column, GetCell } from './cells.js'
import { PEER_SIZE, SMALL_SIZE } from './cells.js'

/** How each shape is named in the tables. */
const SHAPE_NAMES: Record<ValueShape, string> = {
  buffer: 'Buffer',
  float64array: 'Float64Array',
  object: '`{ id, data: Float64Array }`',
}

/** `n` with 3 significant digits at most. */
function num(n: number): string {
  if (!Number.isFinite(n)) return '–'
  if (n >= 100) return Math.round(n).toString()
  if (n >= 10) return n.toFixed(1)
  if (n >= 1) return n.toFixed(2)
  return n.toFixed(3)
}

function ratio(r: number): string {
  return Number.isFinite(r) ? `${num(r)}×` : '–'
}

/** The cells' results, looked up by column, shape, size and run. */
export class Results {
  readonly runs: number
  #cells = new Map<string, GetCell>()

  constructor(cells: GetCell[]) {
    for (const c of cells) this.#cells.set(Results.#key(c.column, c.shape, c.size, c.run), c)
    this.runs = Math.max(0, ...cells.map((c) => c.run + 1))
  }

  static #key(column: Column, shape: ValueShape, size: number, run: number): string {
    return `${column} ${shape} ${size} ${run}`
  }

  /** GB/s (10^9 bytes/s) of a cell in one run (NaN if missing or failed). */
  gbps(column: Column, shape: ValueShape, size: number, run: number): number {
    // The baselines copy bytes; their figure stands for every shape.
    const s = column === 'cold' || column === 'hot' ? 'buffer' : shape
    const r = this.#cells.get(Results.#key(column, s, size, run))?.result
    return r === undefined || r.error !== undefined ? NaN : r.gbps
  }

  /** µs per message of a cell in one run. */
  micros(column: Column, shape: ValueShape, size: number, run: number): number {
    const r = this.#cells.get(Results.#key(column, shape, size, run))?.result
    return r === undefined || r.error !== undefined ? NaN : r.nsPerMessage / 1e3
  }

  /** `f(run)` for every run. */
  perRun(f: (run: number) => number): number[] {
    return Array.from({ length: this.runs }, (_, run) => f(run))
  }

  /** The sizes and shapes measured in `column`. */
  has(column: Column, shape: ValueShape, size: number): boolean {
    return this.perRun((run) => this.gbps(column, shape, size, run)).some(Number.isFinite)
  }
}

/** The GB/s of every run, as `min–max`. */
function range(xs: number[]): string {
  const ok = xs.filter(Number.isFinite)
  if (ok.length === 0) return '–'
  const lo = Math.min(...ok)
  const hi = Math.max(...ok)
  return num(lo) === num(hi) ? num(lo) : `${num(lo)}–${num(hi)}`
}

/** A bar's verdict from the per-run ratios: met only if every run has a figure that meets it. */
function verdict(xs: number[], met: (x: number) => boolean): string {
  const ok = xs.length > 0 && xs.every((x) => Number.isFinite(x) && met(x))
  return ok ? '✅' : '❌'
}

function lowest(xs: number[]): number {
  return xs.some((x) => !Number.isFinite(x)) ? NaN : Math.min(...xs)
}

/** The ratio bar of issue 16: `get()` ≥ 0.8× the out-of-cache memcpy at each size. */
export const MEMCPY_BAR = 0.8
/** `get()` ≥ 5× `child_process` and ≥ 2.5× zeromq at 10 MB. */
export const CHILD_PROCESS_BAR = 5
export const ZEROMQ_BAR = 2.5
/** 100 B `get()`: at most 0.5 µs per message. */
export const SMALL_BAR_US = 0.5

/**
 * The throughput table: per size and shape, the baselines, `get()` and `receive()` in GB/s (the
 * range over the runs), the ratio of `get()` to the out-of-cache memcpy in each run (bar:
 * ≥ 0.8× in every run) and, for reference, the lowest ratios to the cache-hot memcpy and of
 * `receive()`.
 */
export function throughputTable(
  res: Results,
  sizes: readonly number[],
  shapes: ValueShape[],
): string {
  const lines = [
    '| size | value | memcpy out-of-cache GB/s | memcpy cache-hot GB/s | `get()` GB/s | `get()` ÷ out-of-cache, each run | bar ≥ 0.8× | `get()` ÷ cache-hot, lowest | `receive()` GB/s | `receive()` ÷ out-of-cache, lowest |',
    '| ---: | --- | ---: | ---: | ---: | ---: | :---: | ---: | ---: | ---: |',
  ]
  for (const size of sizes) {
    for (const shape of shapes) {
      if (!res.has('get', shape, size)) continue
      const g = (c: Column): number[] => res.perRun((run) => res.gbps(c, shape, size, run))
      const get = g('get')
      const cold = g('cold')
      const hot = g('hot')
      const receive = g('receive')
      const toCold = get.map((x, i) => x / cold[i]!)
      const toHot = get.map((x, i) => x / hot[i]!)
      const receiveToCold = receive.map((x, i) => x / cold[i]!)
      lines.push(
        `| ${sizeLabel(size)} | ${SHAPE_NAMES[shape]} | ${range(cold)} | ${range(hot)} | ${range(get)} | ` +
          `${toCold.map(ratio).join(' · ')} | ${verdict(toCold, (x) => x >= MEMCPY_BAR)} ${ratio(lowest(toCold))} | ` +
          `${ratio(lowest(toHot))} | ${range(receive)} | ${ratio(lowest(receiveToCold))} |`,
      )
    }
  }
  return lines.join('\n')
}

/** The peers' table at 10 MB (or the quick mode's peer size): per shape, ratios in each run. */
export function peersTable(res: Results, shapes: ValueShape[], size = PEER_SIZE): string {
  const lines = [
    `| value (${sizeLabel(size)}) | \`get()\` GB/s | \`child_process\` GB/s | zeromq GB/s | \`get()\` ÷ \`child_process\`, each run | bar ≥ 5× | \`get()\` ÷ zeromq, each run | bar ≥ 2.5× |`,
    '| --- | ---: | ---: | ---: | ---: | :---: | ---: | :---: |',
  ]
  for (const shape of shapes) {
    if (!res.has('child_process', shape, size)) continue
    const g = (c: Column): number[] => res.perRun((run) => res.gbps(c, shape, size, run))
    const get = g('get')
    const cp = g('child_process')
    const zmq = g('zeromq')
    const toCp = get.map((x, i) => x / cp[i]!)
    const toZmq = get.map((x, i) => x / zmq[i]!)
    lines.push(
      `| ${SHAPE_NAMES[shape]} | ${range(get)} | ${range(cp)} | ${range(zmq)} | ` +
        `${toCp.map(ratio).join(' · ')} | ${verdict(toCp, (x) => x >= CHILD_PROCESS_BAR)} ${ratio(lowest(toCp))} | ` +
        `${toZmq.map(ratio).join(' · ')} | ${verdict(toZmq, (x) => x >= ZEROMQ_BAR)} ${ratio(lowest(toZmq))} |`,
    )
  }
  return lines.join('\n')
}

/** The small-value line: 100 B `get()` of a Buffer, µs per message in each run. */
export function smallTable(res: Results): string {
  const us = res.perRun((run) => res.micros('get', 'buffer', SMALL_SIZE, run))
  const worst = us.some((x) => !Number.isFinite(x)) ? NaN : Math.max(...us)
  return [
    '| value | `get()` µs per message, each run | bar ≤ 0.5 µs |',
    '| --- | ---: | :---: |',
    `| ${sizeLabel(SMALL_SIZE)} Buffer | ${us.map(num).join(' · ')} | ${verdict(us, (x) => x <= SMALL_BAR_US)} slowest ${num(worst)} µs |`,
  ].join('\n')
}
