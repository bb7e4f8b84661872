/**
 * The baseline: `Buffer.copy` of one payload in one process, into a rotating set of destination
 * buffers that together span about as much memory as shmpipe's ring (64 MiB; at most 1024
 * buffers, at least one), so that small copies do not all hit the same cache lines while a
 * pipe's would not. Warm-up first (which also faults every destination in), then the same timed
 * rounds as the transports.
 *
 * @module
 */

import {
  checkMessage,
  makePayload,
  now,
  roundCount,
  type CellConfig,
  type MemcpyResultMessage,
} from './common.js'

/** Copies `n` times from `src`, cycling through `dsts` from `start`; returns the next index. */
function copies(src: Buffer, dsts: Buffer[], n: number, start: number): number {
  let j = start
  for (let i = 0; i < n; i++) {
    src.copy(dsts[j]!)
    if (++j === dsts.length) j = 0
  }
  return j
}

/** Runs the memcpy cell of `cfg.size` bytes. */
export function runMemcpy(cfg: CellConfig): MemcpyResultMessage {
  const { size } = cfg
  const src = makePayload(size, false, 0)
  const k = Math.max(1, Math.min(1024, Math.floor(cfg.pipeBytes / size)))
  const dsts = Array.from({ length: k }, () => Buffer.alloc(size))
  let j = copies(src, dsts, Math.max(k, 1), 0) // every destination written once
  const first = now()
  j = copies(src, dsts, cfg.warmup, j)
  const pace = Number(now() - first) / cfg.warmup
  const n = roundCount(cfg, pace)
  const counts: number[] = []
  const ns: number[] = []
  let bad = 0
  for (let r = 0; r < cfg.rounds; r++) {
    const t0 = now()
    j = copies(src, dsts, n, j)
    ns.push(Number(now() - t0))
    counts.push(n)
    if (!checkMessage(dsts[(j + k - 1) % k], size, false, 0)) bad++
  }
  const delivered = k + cfg.warmup + n * cfg.rounds
  return { type: 'memcpy', counts, ns, delivered, bad }
}
