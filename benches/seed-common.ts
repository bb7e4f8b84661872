/**
 * What the seed benchmarks (`seed003.ts`, `seed004.ts`) share: command-line flags, the machine
 * and its load, statistics and `/proc` readings (their tables go into `docs/benchmarks.md` through
 * `results-doc.ts`).
 *
 * @module
 */

import { readFileSync } from 'node:fs'
import { availableParallelism, cpus, loadavg, release, totalmem } from 'node:os'

/** Flags every seed benchmark takes. */
export interface Flags {
  /** Tiny sizes and counts: a smoke run (the test runs this). */
  quick: boolean
  /** Put the result table into `docs/benchmarks.md`, between the script's markers. */
  write: boolean
  /** Print one JSON line on stdout (and the table on stderr), for the test. */
  json: boolean
  /** `--runs=N`: how many times each contender runs (else the script's default). */
  runs: number | undefined
  /** `--only=a,b`: run only these contenders or modes (names as in the table). */
  only: string[] | undefined
}

/** Reads the flags from `argv`. */
export function parseFlags(argv: readonly string[] = process.argv.slice(2)): Flags {
  const value = (name: string): string | undefined =>
    argv.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3)
  const runs = value('runs')
  return {
    quick: argv.includes('--quick'),
    write: argv.includes('--write'),
    json: argv.includes('--json'),
    runs: runs === undefined ? undefined : Math.max(1, Number.parseInt(runs, 10)),
    only: value('only')?.split(','),
  }
}

/** Prints the human-readable output: on stdout, or on stderr when stdout carries JSON. */
export function say(flags: Flags, text: string): void {
  if (flags.json) process.stderr.write(`${text}\n`)
  else process.stdout.write(`${text}\n`)
}

/** CPU time the whole machine spent busy (and stolen by the hypervisor), from `/proc/stat`. */
export interface MachineCpu {
  /** ms of CPU time spent on anything but idle and iowait, summed over CPUs. */
  busyMs: number
  /** ms of CPU time the hypervisor gave to other guests while this one wanted to run. */
  stealMs: number
}

/** Reads `/proc/stat`'s aggregate line (Linux; zeros elsewhere). */
export function machineCpu(): MachineCpu {
  try {
    const line = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0]!
    // cpu user nice system idle iowait irq softirq steal guest guest_nice (USER_HZ = 100)
    const f = line.trim().split(/\s+/).slice(1).map(Number)
    const tick = 10
    const busy = f[0]! + f[1]! + f[2]! + f[5]! + f[6]!
    return { busyMs: busy * tick, stealMs: (f[7] ?? 0) * tick }
  } catch {
    return { busyMs: 0, stealMs: 0 }
  }
}

/**
 * How busy the rest of the machine was during a run: CPU time used by processes other than the
 * benchmark's own (`ownCpuMs`: parent and children over the same window), as a share of all CPUs.
 */
export function othersLoad(
  before: MachineCpu,
  after: MachineCpu,
  ownCpuMs: number,
  wallMs: number,
): number {
  const others = after.busyMs - before.busyMs - ownCpuMs
  return Math.max(0, others) / (wallMs * availableParallelism())
}

/** The machine in one line: CPU model, cores, memory, kernel, Node, and the load average now. */
export function machine(): string {
  const [l1, l5, l15] = loadavg().map((x) => x.toFixed(2))
  const cpu = cpus()[0]?.model.trim() ?? 'unknown CPU'
  return `${cpu}, ${availableParallelism()} vCPUs, ${(totalmem() / 2 ** 30).toFixed(0)} GiB RAM, Linux ${release()}, Node ${process.version}; load average ${l1} ${l5} ${l15}`
}

/** Median of `xs` (the lower middle for an even count). */
export function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b)
  return s[(s.length - 1) >> 1] ?? Number.NaN
}

/** The `p`-quantile (0…1) of `xs`, nearest rank. */
export function quantile(xs: ArrayLike<number>, p: number): number {
  const s = Float64Array.from(xs).sort()
  if (s.length === 0) return Number.NaN
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil(p * s.length) - 1))]!
}

/** `median [min–max]` of `xs`, each formatted by `fmt`. */
export function spread(xs: readonly number[], fmt: (x: number) => string): string {
  if (xs.length === 1) return fmt(xs[0]!)
  return `${fmt(median(xs))} [${fmt(Math.min(...xs))}–${fmt(Math.max(...xs))}]`
}

/** A number with thousands separators and `digits` decimals. */
export function num(x: number, digits = 0): string {
  return x.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits })
}

/** Memory figures of one process, in bytes. */
export interface ProcMemory {
  /** Resident set size now (`VmRSS`). */
  rss: number
  /** Peak resident set size over the process's life (`VmHWM`). */
  hwm: number
  /** Resident pages of shared memory (`RssShmem`): counted again in each process mapping them. */
  rssShmem: number
  /** Proportional set size now: each page divided by the number of processes mapping it. */
  pss: number
  /** The part of `pss` that is shared memory (`Pss_Shmem`: /dev/shm segments and the like). */
  pssShmem: number
}

/** Reads `pid`'s memory from `/proc/<pid>/status` and `/proc/<pid>/smaps_rollup` (Linux). */
export function procMemory(pid: number | 'self' = 'self'): ProcMemory {
  const field = (text: string, name: string): number => {
    const m = new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(text)
    return m === null ? 0 : Number(m[1]) * 1024
  }
  const status = readFileSync(`/proc/${pid}/status`, 'utf8')
  const rollup = readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8')
  return {
    rss: field(status, 'VmRSS'),
    hwm: field(status, 'VmHWM'),
    rssShmem: field(status, 'RssShmem'),
    pss: field(rollup, 'Pss'),
    pssShmem: field(rollup, 'Pss_Shmem'),
  }
}
