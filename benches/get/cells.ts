/**
 * The cells of the `get()` benchmark (issue 16) and the order they run in. Each cell is a cell of
 * the transport benchmark (`benches/transport/`), run in fresh processes by its driver, with the
 * value's shape, the memcpy kind, or shmpipe used as a new user would (`CellConfig.newUser`:
 * the pipe's default options, a child process sending to its parent).
 *
 * @module
 */

import {
  planCell,
  SHAPES,
  sizeLabel,
  type CellConfig,
  type ValueShape,
} from '../transport/common.js'
import { runCell, type CellResult } from '../transport/driver.js'

/** What a cell measures: a baseline, a way of receiving with shmpipe, or a peer transport. */
export const COLUMNS = ['cold', 'hot', 'get', 'receive', 'child_process', 'zeromq'] as const
/** One of {@link COLUMNS}. */
export type Column = (typeof COLUMNS)[number]

/** The sizes of issue 16's throughput bar. */
export const LARGE_SIZES = [1e6, 1e7, 1e8, 1e9] as const
/** The size at which the peers run (issue 16: 10 MB). */
export const PEER_SIZE = 1e7
/** The small value of issue 16's latency bar. */
export const SMALL_SIZE = 100

/** The sizes of `--quick`: one value stored inline in the default ring, one in a segment. */
export const QUICK_LARGE_SIZES = [1e6, 1e7] as const

/** One cell to run. */
export interface CellPlan {
  column: Column
  shape: ValueShape
  size: number
}

/** One cell's result in one run. */
export interface GetCell extends CellPlan {
  run: number
  result: CellResult
}

/** The library's default ring (16 MiB): what the new user's pipe has. */
const DEFAULT_PIPE_BYTES = 16 * 1024 * 1024

/**
 * The cells of one run, in order: 100 B `get()` of a Buffer; then, size by size, the two memcpy
 * baselines and, for each shape, `get()` and `receive()`, and at {@link PEER_SIZE} (the largest
 * size in quick mode) `child_process` and zeromq.
 */
export function planRun(largeSizes: readonly number[], quick: boolean): CellPlan[] {
  const peerSize = quick ? largeSizes[largeSizes.length - 1]! : PEER_SIZE
  const cells: CellPlan[] = [{ column: 'get', shape: 'buffer', size: SMALL_SIZE }]
  for (const size of largeSizes) {
    cells.push({ column: 'cold', shape: 'buffer', size }, { column: 'hot', shape: 'buffer', size })
    for (const shape of SHAPES) {
      cells.push({ column: 'get', shape, size }, { column: 'receive', shape, size })
      if (size === peerSize)
        cells.push({ column: 'child_process', shape, size }, { column: 'zeromq', shape, size })
    }
  }
  return cells
}

/** The transport benchmark's configuration of a cell. */
export function cellConfig(plan: CellPlan, quick: boolean): CellConfig {
  const { column, shape, size } = plan
  const opts = { quick, shmpipeReceive: 'get' as const, pipeBytes: DEFAULT_PIPE_BYTES }
  switch (column) {
    case 'cold':
    case 'hot':
      return { ...planCell('memcpy', size, opts), memcpy: column }
    case 'get':
      return { ...planCell('shmpipe', size, opts), shape, newUser: true }
    case 'receive':
      return { ...planCell('shmpipe_receive', size, opts), shape, newUser: true }
    case 'child_process':
    case 'zeromq':
      return { ...planCell(column, size, opts), shape }
  }
}

/** The name of a cell, for progress lines and errors. */
export function cellName(c: CellPlan): string {
  return `${c.column} ${c.shape} ${sizeLabel(c.size)}`
}

/** Runs `runs` runs of the cells of {@link planRun}, one after the other. */
export async function runGetBenchmark(opts: {
  runs: number
  largeSizes: readonly number[]
  quick: boolean
  onCell?: (c: GetCell) => void
}): Promise<GetCell[]> {
  const out: GetCell[] = []
  const plan = planRun(opts.largeSizes, opts.quick)
  for (let run = 0; run < opts.runs; run++) {
    for (const p of plan) {
      const result = await runCell(cellConfig(p, opts.quick))
      if (result.error !== undefined) result.error = `${cellName(p)}: ${result.error}`
      const c = { ...p, run, result }
      out.push(c)
      opts.onCell?.(c)
    }
  }
  return out
}
