/**
 * What the `get()` memory benchmark counts (Linux, from /proc), and the values it sends.
 *
 * A receiver's memory is its private resident memory (`RssAnon` + `RssFile` of
 * /proc/self/status: the heap, Buffers, code) plus the shared memory of its pipe: every shmpipe
 * segment (a `/dev/shm/shmpipe_*` file or a `memfd:shmpipe:*`) that the receiver or the sender
 * holds open or has mapped, each counted once (by inode) at the size the kernel has allocated for
 * it (`st_blocks`), whether or not a process has touched its pages. Shared pages the receiver has
 * mapped are thus counted once, as shared memory, not again in its RSS. Segments are found through
 * /proc/<pid>/fd and /proc/<pid>/map_files, so a segment a process has closed and unmapped (freed,
 * once no other process holds it) is not counted.
 *
 * @module
 */

import { readdirSync, readFileSync, readlinkSync, statSync } from 'node:fs'

/** Whether a path from /proc/<pid>/fd or map_files is one of shmpipe's segments. */
function isSegment(link: string): boolean {
  return link.startsWith('/dev/shm/shmpipe_') || link.startsWith('/memfd:shmpipe')
}

/** Adds the shmpipe segments `pid` holds open or has mapped to `out` (inode → bytes). */
function segmentsOf(pid: number | 'self', out: Map<number, number>): void {
  const add = (path: string): void => {
    try {
      if (!isSegment(readlinkSync(path))) return
      const st = statSync(path)
      out.set(st.ino, st.blocks * 512)
    } catch {
      // Closed or unmapped meanwhile: no longer held by this process.
    }
  }
  let fds: string[] = []
  try {
    fds = readdirSync(`/proc/${pid}/fd`)
  } catch {
    return // the process has exited
  }
  for (const fd of fds) add(`/proc/${pid}/fd/${fd}`)
  let maps = ''
  try {
    maps = readFileSync(`/proc/${pid}/maps`, 'utf8')
  } catch {
    return
  }
  for (const line of maps.split('\n')) {
    if (!line.includes('shmpipe')) continue
    add(`/proc/${pid}/map_files/${line.slice(0, line.indexOf(' '))}`)
  }
}

/** Bytes of shared memory in shmpipe segments held or mapped by any of `pids`. */
export function sharedMemory(pids: (number | 'self')[]): number {
  const segments = new Map<number, number>()
  for (const pid of pids) segmentsOf(pid, segments)
  let sum = 0
  for (const bytes of segments.values()) sum += bytes
  return sum
}

/** A field of /proc/self/status in bytes (the kernel gives kB). */
function statusField(status: string, name: string): number {
  const m = new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(status)
  return m ? Number(m[1]) * 1024 : NaN
}

/** This process's private resident memory (RssAnon + RssFile), and its peak RSS (VmHWM). */
export function privateMemory(): { private: number; peakRss: number } {
  const status = readFileSync('/proc/self/status', 'utf8')
  return {
    private: statusField(status, 'RssAnon') + statusField(status, 'RssFile'),
    peakRss: statusField(status, 'VmHWM'),
  }
}

/** The machine's `Shmem` of /proc/meminfo in bytes (every process's shared memory). */
export function machineShmem(): number {
  const m = /^Shmem:\s+(\d+) kB/m.exec(readFileSync('/proc/meminfo', 'utf8'))
  return m ? Number(m[1]) * 1024 : NaN
}

/** Every 4 KiB of a value carries its sequence number (u32, little-endian) at this stride. */
export const STAMP_STRIDE = 4096

/** The byte every other position of value `seq` holds: differs between consecutive values. */
function fillByte(seq: number): number {
  return (seq % 251) + 1
}

/** Writes value `seq` into `buf`: its fill byte, and `seq` at every {@link STAMP_STRIDE}. */
export function writeValue(buf: Buffer, seq: number): void {
  buf.fill(fillByte(seq))
  for (let o = 0; o + 4 <= buf.length; o += STAMP_STRIDE) buf.writeUInt32LE(seq, o)
}

/**
 * Whether `v` is value `seq` of `size` bytes: every byte (`full`), or the length, the first and
 * last stamp and the byte after each.
 */
export function checkValue(v: unknown, size: number, seq: number, full: boolean): boolean {
  if (!(v instanceof Uint8Array) || v.length !== size) return false
  const b = Buffer.from(v.buffer, v.byteOffset, v.length)
  const fill = fillByte(seq)
  const last = Math.floor((size - 4) / STAMP_STRIDE) * STAMP_STRIDE
  if (!full) {
    return (
      b.readUInt32LE(0) === seq &&
      b.readUInt32LE(last) === seq &&
      b[4] === fill &&
      (size - 1 < last + 4 || b[size - 1] === fill)
    )
  }
  for (let o = 0; o < size; o += STAMP_STRIDE) {
    const end = Math.min(size, o + STAMP_STRIDE)
    if (o + 4 <= size) {
      if (b.readUInt32LE(o) !== seq) return false
      for (let i = o + 4; i < end; i++) if (b[i] !== fill) return false
    } else {
      for (let i = o; i < end; i++) if (b[i] !== fill) return false
    }
  }
  return true
}
