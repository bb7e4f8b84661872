/**
 * Child processes for the pipe tests: started with `spawn` or `fork`, their reports read as
 * messages, and always killed and reaped in the test's teardown.
 */

import { fork, spawn, type ChildProcess } from 'node:child_process'
import { readdirSync, openSync, readSync, closeSync } from 'node:fs'
import { fileURLToPath } from 'node:url'

import type { ExecutionContext, TestFn } from 'ava'

/** `__test__/helpers/child.ts`, the script of every child role. */
export const childScript = fileURLToPath(new URL('./child.ts', import.meta.url))
/** The repository's root (children run there, so `--import=tsx` resolves). */
export const repoRoot = fileURLToPath(new URL('../..', import.meta.url))
/** The package's entry, `index.ts`. */
export const entry = fileURLToPath(new URL('../../index.ts', import.meta.url))

/** Pids of every child started by this process (for the leak check). */
export const childPids = new Set<number>()

export interface Exit {
  code: number | null
  signal: NodeJS.Signals | null
}

export interface Child {
  readonly process: ChildProcess
  /** The child's next report (rejects if it exits first or after `timeoutMs`). */
  next(timeoutMs?: number): Promise<unknown>
  /** Settles when the child has exited and its streams are closed. */
  readonly exited: Promise<Exit>
  /** Everything the child wrote to stderr so far. */
  stderr(): string
  /** Kills the child with SIGKILL (if still running) and waits for it. */
  kill(): Promise<Exit>
}

/** Wraps a started child: collects its reports (IPC messages or JSON lines on stdout). */
function track(t: ExecutionContext, proc: ChildProcess): Child {
  if (proc.pid !== undefined) childPids.add(proc.pid)
  const reports: unknown[] = []
  const waiters: ((v: unknown) => void)[] = []
  let stderr = ''
  let stdout = ''
  const push = (message: unknown): void => {
    const w = waiters.shift()
    if (w) w(message)
    else reports.push(message)
  }
  proc.on('message', push)
  proc.stdout?.setEncoding('utf8').on('data', (chunk: string) => {
    stdout += chunk
    let nl
    while ((nl = stdout.indexOf('\n')) >= 0) {
      const line = stdout.slice(0, nl)
      stdout = stdout.slice(nl + 1)
      if (line.trim() !== '') push(JSON.parse(line))
    }
  })
  proc.stderr?.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk))
  const exited = new Promise<Exit>((resolve, reject) => {
    proc.on('error', reject)
    proc.on('close', (code, signal) => resolve({ code, signal }))
  })
  const running = (): boolean => proc.exitCode === null && proc.signalCode === null
  const kill = async (): Promise<Exit> => {
    if (running()) proc.kill('SIGKILL')
    return exited
  }
  t.teardown(async () => {
    await kill()
  })
  return {
    process: proc,
    exited,
    stderr: () => stderr,
    kill,
    next(timeoutMs = 30_000) {
      if (reports.length > 0) return Promise.resolve(reports.shift())
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          waiters.splice(waiters.indexOf(done), 1)
          reject(new Error(`no report from the child within ${timeoutMs} ms; stderr:\n${stderr}`))
        }, timeoutMs)
        const done = (v: unknown): void => {
          clearTimeout(timer)
          resolve(v)
        }
        waiters.push(done)
        void exited.then((e) => {
          if (waiters.includes(done)) {
            waiters.splice(waiters.indexOf(done), 1)
            clearTimeout(timer)
            reject(
              new Error(`the child exited (${e.signal ?? e.code}) before reporting:\n${stderr}`),
            )
          }
        })
      })
    },
  }
}

/**
 * Spawns `node --import=tsx child.ts role ...args` (reports on stdout), with `env` over this
 * process's environment (a variable set to `undefined` is left out).
 */
export function startChild(
  t: ExecutionContext,
  role: string,
  args: string[] = [],
  env: NodeJS.ProcessEnv = {},
): Child {
  const proc = spawn(process.execPath, ['--import=tsx', childScript, role, ...args], {
    cwd: repoRoot,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  return track(t, proc)
}

/** Forks `child.ts role ...args` with an IPC channel (reports as messages). */
export function forkChild(t: ExecutionContext, role: string, args: string[] = []): Child {
  const proc = fork(childScript, [role, ...args], {
    cwd: repoRoot,
    execArgv: ['--import=tsx'],
    stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
  })
  return track(t, proc)
}

/**
 * Spawns `node ...args` (reports, if any, as JSON lines on stdout), with `env` over this
 * process's environment.
 */
export function spawnNode(t: ExecutionContext, args: string[], env: NodeJS.ProcessEnv = {}): Child {
  const proc = spawn(process.execPath, args, {
    cwd: repoRoot,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  return track(t, proc)
}

// ---------------------------------------------------------------------------------------------
// /dev/shm

const SHM = '/dev/shm'

/** The shmpipe segments in /dev/shm, each with the pid of its creator (from its header). */
export function shmSegments(): Map<string, number> {
  const out = new Map<string, number>()
  let names: string[]
  try {
    names = readdirSync(SHM)
  } catch {
    return out
  }
  for (const name of names) {
    if (!name.startsWith('shmpipe_')) continue
    // SegmentHeader (crates/core/src/segment.rs): magic u64, layout u32, kind u32,
    // body size u64, creator pid u32 at byte 24, little-endian.
    const header = Buffer.alloc(28)
    let fd: number | undefined
    try {
      fd = openSync(`${SHM}/${name}`, 'r')
      const n = readSync(fd, header, 0, 28, 0)
      out.set(name, n === 28 ? header.readUInt32LE(24) : -1)
    } catch {
      // Removed meanwhile (or not readable): not ours to judge.
    } finally {
      if (fd !== undefined) closeSync(fd)
    }
  }
  return out
}

/** Whether /dev/shm has an entry `name`. */
export function shmExists(name: string): boolean {
  try {
    return readdirSync(SHM).includes(name)
  } catch {
    return false
  }
}

/**
 * Registers hooks on `test` that fail a test which leaves in /dev/shm a shmpipe segment that was
 * not there before it and was created by this process or one of its children. Segments of other
 * processes (other test files run in parallel, other runs) are not this file's business.
 * Relies on the file's tests running one at a time (`serial` in the ava configuration).
 */
export function checkNoSegmentLeaks(test: TestFn): void {
  let before = new Map<string, number>()
  test.beforeEach(() => {
    before = shmSegments()
  })
  test.afterEach.always('no shmpipe segment made by this process or its children is left', (t) => {
    const ours = new Set([process.pid, ...childPids])
    const left = [...shmSegments()].filter(([name, pid]) => !before.has(name) && ours.has(pid))
    t.deepEqual(left, [], `left in /dev/shm: ${left.map(([n, p]) => `${n} (pid ${p})`).join(', ')}`)
  })
}
