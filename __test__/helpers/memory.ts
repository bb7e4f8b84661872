/** This process's memory as Linux reports it, for tests that bound what an operation costs. */

import { readFileSync } from 'node:fs'

/** Bytes of virtual address space (Linux: `VmSize`), else null. */
export function virtualBytes(): number | null {
  try {
    const m = /VmSize:\s+(\d+) kB/.exec(readFileSync('/proc/self/status', 'utf8'))
    return m ? Number(m[1]) * 1024 : null
  } catch {
    return null
  }
}
