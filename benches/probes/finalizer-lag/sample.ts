/**
 * What the finalizer-lag probe's children measure at each sample: the process's memory (RSS,
 * split into anonymous and shared pages, from `/proc/self/status`), V8's view of memory outside
 * its heap (`process.memoryUsage()`), and the garbage collections since the last sample, by kind
 * (`v8.GCProfiler`, which records them synchronously, so a loop that never yields still counts).
 *
 * @module
 */

import { readFileSync } from 'node:fs'
import v8 from 'node:v8'

/** One sample, in MB (10^6 bytes) and counts. */
export interface Sample {
  /** Values handed out so far. */
  made: number
  /** Finalizers run so far (`NaN` where the probe cannot count them). */
  finalized: number
  rssMB: number
  rssAnonMB: number
  rssShmemMB: number
  /** `process.memoryUsage().external`: the bytes of every ArrayBuffer's backing store. */
  externalMB: number
  /** `process.memoryUsage().arrayBuffers`: the part Node's allocator made. */
  arrayBuffersMB: number
  /** Young-generation collections (scavenges) since the run started. */
  scavenges: number
  /** Full collections (mark-sweep-compact, incremental or not) since the run started. */
  markCompacts: number
}

const MB = 1e6

function statusKB(status: string, field: string): number {
  const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status)
  return m ? Number(m[1]) : NaN
}

/** Counts collections; `count()` adds those since the last call to the totals. */
export class GcCounter {
  scavenges = 0
  markCompacts = 0
  #profiler = new v8.GCProfiler()

  constructor() {
    this.#profiler.start()
  }

  count(): void {
    const r = this.#profiler.stop() as { statistics: { gcType: string }[] }
    for (const s of r.statistics) {
      if (s.gcType === 'Scavenge' || s.gcType === 'MinorMarkSweep') this.scavenges++
      else this.markCompacts++
    }
    this.#profiler.start()
  }
}

/** A sample now. */
export function sample(gcs: GcCounter, made: number, finalized: number): Sample {
  gcs.count()
  const status = readFileSync('/proc/self/status', 'utf8')
  const mu = process.memoryUsage()
  const round = (x: number) => Math.round(x)
  return {
    made,
    finalized,
    rssMB: round(mu.rss / MB),
    rssAnonMB: round((statusKB(status, 'RssAnon') * 1024) / MB),
    rssShmemMB: round((statusKB(status, 'RssShmem') * 1024) / MB),
    externalMB: round(mu.external / MB),
    arrayBuffersMB: round(mu.arrayBuffers / MB),
    scavenges: gcs.scavenges,
    markCompacts: gcs.markCompacts,
  }
}
