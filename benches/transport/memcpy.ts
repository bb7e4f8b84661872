/**
 * The baselines: `Buffer.copy` of the message size in one process (`CellConfig.memcpy`):
 *
 * - `ring` (the transport table's column): one source into a rotating set of destination buffers
 *   that together span about as much memory as shmpipe's ring (64 MiB; at most 1024 buffers, at
 *   least one), so that small copies do not all hit the same cache lines while a pipe's would not;
 * - `cold`: the source and the destination both rotate over 512 MiB (or one message, if larger),
 *   so that neither is in the cache: the cost of moving the bytes through memory once;
 * - `hot`: the same source into the same destination every time.
 *
 * Warm-up first (which also faults every destination in), then the same timed rounds as the
 * transports.
 *
 * @module
 */

import {
  checkMessage,
  COLD_SPAN,
  FILL,
  makePayload,
  now,
  roundCount,
  type CellConfig,
  type MemcpyResultMessage,
} from './common.js'

/** Where the copies go: `n` copies starting at slot `from`; returns the next slot. */
interface Copier {
  slots: number
  copies(n: number, from: number): number
  /** The destination of the copy into `slot`. */
  destination(slot: number): Buffer
}

/** `ring`: one source, `k` destination buffers. */
function ringCopier(size: number, pipeBytes: number): Copier {
  const src = makePayload(size, false, 0)
  const k = Math.max(1, Math.min(1024, Math.floor(pipeBytes / size)))
  const dsts = Array.from({ length: k }, () => Buffer.alloc(size))
  return {
    slots: k,
    copies(n, from) {
      let j = from
      for (let i = 0; i < n; i++) {
        src.copy(dsts[j]!)
        if (++j === k) j = 0
      }
      return j
    },
    destination: (slot) => dsts[slot]!,
  }
}

/** `cold` and `hot`: copy slot `j` of a source arena into slot `j` of a destination arena. */
function arenaCopier(size: number, span: number): Copier {
  const k = Math.max(1, Math.floor(span / size))
  const src = Buffer.alloc(k * size, FILL)
  const dst = Buffer.alloc(k * size)
  return {
    slots: k,
    copies(n, from) {
      let j = from
      for (let i = 0; i < n; i++) {
        src.copy(dst, j * size, j * size, (j + 1) * size)
        if (++j === k) j = 0
      }
      return j
    },
    destination: (slot) => dst.subarray(slot * size, (slot + 1) * size),
  }
}

/** Runs the memcpy cell of `cfg.size` bytes. */
export function runMemcpy(cfg: CellConfig): MemcpyResultMessage {
  const { size } = cfg
  const kind = cfg.memcpy ?? 'ring'
  const copier =
    kind === 'ring'
      ? ringCopier(size, cfg.pipeBytes)
      : arenaCopier(size, kind === 'cold' ? COLD_SPAN : size)
  const k = copier.slots
  let j = copier.copies(k, 0) // every destination written once
  const first = now()
  j = copier.copies(cfg.warmup, j)
  const pace = Number(now() - first) / cfg.warmup
  const n = roundCount(cfg, pace)
  const counts: number[] = []
  const ns: number[] = []
  let bad = 0
  for (let r = 0; r < cfg.rounds; r++) {
    const t0 = now()
    j = copier.copies(n, j)
    ns.push(Number(now() - t0))
    counts.push(n)
    if (!checkMessage(copier.destination((j + k - 1) % k), size, false, 0)) bad++
  }
  const delivered = k + cfg.warmup + n * cfg.rounds
  return { type: 'memcpy', counts, ns, delivered, bad }
}
