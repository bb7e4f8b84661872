/**
 * The code blocks of the repository's Markdown (README.md, CONTRIBUTING.md, docs/**): found,
 * sorted by language and run, so that a snippet that hangs, throws or leaks fails a test named
 * after its file and line. What each language means:
 *
 * - `js`, `mjs`: a complete ES module; `ts`: the same in TypeScript (run through tsx); `cjs`: a
 *   CommonJS script. Written into `target/doc-blocks/` (inside the package, so `'shmpipe'`
 *   resolves to the built `dist/` through the package's self-reference) and run with `node`.
 *   Before that, `tsc` checks it: a `ts` block must type-check (strict); a JavaScript block must
 *   name nothing undefined (TS2304, TS2552), also in code the run does not reach.
 * - `sh`, `bash`: run with `bash -euo pipefail` in the repository's root.
 * - `json`: parsed. `toml`: parsed (Python's `tomllib`: Node has no TOML parser).
 * - `rust`: a doctest of `shmpipe_core` (its file must be included in `DOCTEST_MODULE`); the
 *   doctests of one file run together, one at a time (`runDoctests`).
 * - `text`: not code.
 * - anything else, or no language at all (rustdoc would compile an unmarked block as Rust): an
 *   error.
 *
 * A run must exit 0 within its time limit, leave no process of its own running and leave no
 * shmpipe segment in /dev/shm made by one of its processes. Its Node processes are told apart from
 * everyone else's (other test files run at the same time) by a preload that records each one's
 * pid (`doc-block-pids.cjs`, passed down through `NODE_OPTIONS`).
 */

import { execFile, spawn } from 'node:child_process'
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'

import { shmSegments } from './processes.js'

/** What is done with a block of each language. */
export const LANGUAGES = {
  js: 'esm',
  mjs: 'esm',
  ts: 'ts',
  cjs: 'cjs',
  sh: 'shell',
  bash: 'shell',
  json: 'json',
  toml: 'toml',
  rust: 'rust',
  text: 'text',
} as const

export type Handling = (typeof LANGUAGES)[keyof typeof LANGUAGES]

export interface Block {
  /** The Markdown file, relative to the repository's root (`/`-separated). */
  file: string
  /** The line of the opening fence (1-based). */
  line: number
  /** The fence's info string as written (`''` for an unmarked fence). */
  info: string
  /** The code, without the fences and without the fence's indentation. */
  code: string
}

/** `README.md:105 (js)`: the title of a block's test. */
export function blockTitle(block: Block): string {
  return `${block.file}:${block.line} (${block.info === '' ? 'unmarked' : block.info})`
}

/** How a block is handled, or `undefined` if its info string is not one of `LANGUAGES`. */
export function handling(block: Block): Handling | undefined {
  return Object.hasOwn(LANGUAGES, block.info)
    ? LANGUAGES[block.info as keyof typeof LANGUAGES]
    : undefined
}

/**
 * The fenced code blocks of `markdown` (CommonMark fences: three or more backticks or tildes,
 * indented by at most three spaces, or nested in a list item by more). An unclosed fence runs
 * to the end of the file, as CommonMark has it.
 */
export function extractBlocks(markdown: string, file: string): Block[] {
  const lines = markdown.split('\n')
  const blocks: Block[] = []
  for (let i = 0; i < lines.length; i++) {
    const open = /^( *)(`{3,}|~{3,})\s*([^`\s]*)(.*)$/.exec(lines[i]!)
    if (!open) continue
    const [, indent, fence, lang, rest] = open
    const info = `${lang}${rest!.trim() === '' ? '' : ` ${rest!.trim()}`}`.trim()
    const body: string[] = []
    let j = i + 1
    for (; j < lines.length; j++) {
      const close = /^ *(`{3,}|~{3,})\s*$/.exec(lines[j]!)
      if (close && close[1]![0] === fence![0] && close[1]!.length >= fence!.length) break
      const line = lines[j]!
      const strip = Math.min(indent!.length, line.length - line.trimStart().length)
      body.push(line.slice(strip))
    }
    blocks.push({ file, line: i + 1, info, code: body.length ? `${body.join('\n')}\n` : '' })
    i = j
  }
  return blocks
}

/** The Markdown files whose blocks run: README.md, CONTRIBUTING.md and docs/**\/*.md. */
export function docFiles(root: string): string[] {
  const files = ['README.md', 'CONTRIBUTING.md'].filter((f) => existsSync(join(root, f)))
  const docs = join(root, 'docs')
  if (existsSync(docs))
    files.push(
      ...readdirSync(docs, { recursive: true, encoding: 'utf8' })
        .filter((f) => f.endsWith('.md'))
        .map((f) => `docs/${f.split('\\').join('/')}`)
        .sort(),
    )
  return files
}

/** Where the Markdown files are included as doctests of `shmpipe_core`. */
export const DOCTEST_MODULE = 'crates/core/src/doc_blocks.rs'

/**
 * The name rustdoc gives the doctest of a ```rust block (`<module file> - doc_blocks::Readme
 * (line N)`), or `undefined` if `docBlocksSource` (the text of `DOCTEST_MODULE`) does not include
 * the block's file. rustdoc numbers the lines of an included file from the line of its
 * `#[doc = include_str!(…)]` attribute; each struct there includes one file.
 */
export function doctestName(block: Block, docBlocksSource: string): string | undefined {
  const lines = docBlocksSource.split('\n')
  for (const [i, line] of lines.entries()) {
    const inc = /^\s*#\[doc\s*=\s*include_str!\("((?:\.\.\/)+)([^"]+)"\)\]/.exec(line)
    // The module is three levels below the root: ../../../ is the root.
    if (!inc || inc[1] !== '../../../' || inc[2] !== block.file) continue
    const item = lines.slice(i + 1).find((l) => /^\s*pub struct \w+;/.test(l))
    const name = item && /struct (\w+)/.exec(item)![1]
    if (!name) return undefined
    return `${DOCTEST_MODULE} - doc_blocks::${name} (line ${i + block.line})`
  }
  return undefined
}

/** The problems of a block's language, before running it (unknown or missing language). */
export function languageProblem(block: Block): string | undefined {
  if (block.info === '')
    return `${block.file}:${block.line}: a fence without a language (rustdoc would compile it as Rust); mark it: ${Object.keys(LANGUAGES).join(', ')}`
  if (!handling(block))
    return `${block.file}:${block.line}: unknown language "${block.info}"; use one of ${Object.keys(LANGUAGES).join(', ')}`
  return undefined
}

/** The pids of the processes in process group `pgid` (Linux, from /proc; elsewhere none). */
function groupMembers(pgid: number): number[] {
  let entries: string[]
  try {
    entries = readdirSync('/proc')
  } catch {
    return []
  }
  const out: number[] = []
  for (const e of entries) {
    if (!/^\d+$/.test(e)) continue
    try {
      // pid (comm) state ppid pgrp …: comm may hold spaces and parentheses, so from the last ')'.
      const stat = readFileSync(`/proc/${e}/stat`, 'utf8')
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
      if (Number(fields[2]) === pgid) out.push(Number(e))
    } catch {
      // Gone meanwhile.
    }
  }
  return out
}

export interface RunOptions {
  /** The repository's root (the cwd of shell blocks; the blocks' files go under its `target/`). */
  root: string
  /** Kill the block (and fail it) after this long. */
  timeoutMs: number
}

export interface RunResult {
  /** Why the block failed; empty when it passed. */
  problems: string[]
  stdout: string
  stderr: string
}

const pidsPreload = fileURLToPath(new URL('./doc-block-pids.cjs', import.meta.url))

const tscScript = fileURLToPath(new URL('../../node_modules/typescript/bin/tsc', import.meta.url))

/** Diagnostics of JavaScript blocks that fail them: names that are not defined. */
const UNDEFINED_NAME = new Set(['TS2304', 'TS2552'])

/**
 * `tsc`'s complaints about the block in `file` (as `README.md:12: TS2304 Cannot find name …`):
 * every error for TypeScript, the undefined names for JavaScript.
 */
function typeCheck(block: Block, file: string, typescript: boolean): Promise<string[]> {
  const args = [
    tscScript,
    '--ignoreConfig', // the repository's tsconfig.json is not the snippet's
    '--noEmit',
    '--pretty',
    'false',
    '--strict',
    '--module',
    'nodenext',
    '--moduleResolution',
    'nodenext',
    '--target',
    'es2022',
    '--lib',
    'es2022,esnext.disposable',
    '--types',
    'node',
    '--allowJs',
    '--checkJs',
    file,
  ]
  return new Promise((resolve) => {
    execFile(process.execPath, args, { timeout: 120_000 }, (err, stdout) => {
      const out: string[] = []
      for (const line of stdout.split('\n')) {
        const m = /^(.*?)\((\d+),\d+\): error (TS\d+): (.*)$/.exec(line)
        if (!m) continue
        if (!typescript && !UNDEFINED_NAME.has(m[3]!)) continue
        const where = m[1]!.endsWith(file.split('/').pop()!)
          ? `${block.file}:${block.line + Number(m[2])}`
          : m[1]!
        out.push(`${where}: ${m[3]} ${m[4]}`)
      }
      if (err && out.length === 0 && !/\): error TS\d+/.test(stdout))
        out.push(`tsc failed: ${String(err)}\n${stdout}`)
      resolve(out)
    })
  })
}

/** A file name for a block: `README.md:105` → `README-105`. */
function blockFileName(block: Block): string {
  return `${block.file.replace(/\.md$/, '').replace(/[^A-Za-z0-9_-]+/g, '_')}-${block.line}`
}

/** Whether a process of the process group `pgid` still exists. */
function groupAlive(pgid: number): boolean {
  try {
    process.kill(-pgid, 0)
    return true
  } catch {
    return false
  }
}

interface ProcessRun {
  /** Why it failed: time limit, exit status, processes left running, segments left. */
  problems: string[]
  stdout: string
  stderr: string
  timedOut: boolean
}

/**
 * Runs `command args` in `cwd` in a process group of its own, to its end or its time limit (then
 * the whole group is killed); then checks it left no process running and no shmpipe segment made
 * by one of its processes (those are killed and removed). `tag` names its files under `dir`.
 */
async function runProcess(
  command: string,
  args: string[],
  options: { cwd: string; dir: string; tag: string; timeoutMs: number },
): Promise<ProcessRun> {
  const pidsFile = join(options.dir, `${options.tag}.pids`)
  writeFileSync(pidsFile, '')
  const before = new Set(shmSegments().keys())
  const preload = `--require ${JSON.stringify(pidsPreload)}`
  const env = {
    ...process.env,
    NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ''} ${preload}`.trim(),
    SHMPIPE_DOC_BLOCK_PIDS: pidsFile,
  }
  const child = spawn(command, args, {
    cwd: options.cwd,
    env,
    detached: true, // its own process group: a timeout kills every process it started
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  const cap = (s: string): string => (s.length > 200_000 ? `…${s.slice(-200_000)}` : s)
  let stdout = ''
  let stderr = ''
  child.stdout.setEncoding('utf8').on('data', (c: string) => (stdout = cap(stdout + c)))
  child.stderr.setEncoding('utf8').on('data', (c: string) => (stderr = cap(stderr + c)))
  const problems: string[] = []
  let timedOut = false
  // Every process of its group seen while it runs (the preload misses processes that are not Node).
  const seen = new Set<number>()
  const watch = setInterval(() => {
    for (const pid of groupMembers(child.pid!)) seen.add(pid)
  }, 25)
  const timer = setTimeout(() => {
    timedOut = true
    try {
      process.kill(-child.pid!, 'SIGKILL')
    } catch {
      // Already gone.
    }
  }, options.timeoutMs)
  const exit = await new Promise<{ code: number | null; signal: string | null }>((resolve) => {
    child.on('error', (err) => resolve({ code: null, signal: String(err) }))
    child.on('exit', (code, signal) => resolve({ code, signal }))
  })
  clearTimeout(timer)
  clearInterval(watch)
  if (timedOut) problems.push(`did not finish within ${options.timeoutMs} ms (killed)`)
  else if (exit.code !== 0) problems.push(`exited with ${exit.signal ?? exit.code}`)

  // Processes it left running (in its group): a failure, and killed.
  const deadline = Date.now() + 2000
  while (groupAlive(child.pid!) && Date.now() < deadline)
    await new Promise((r) => setTimeout(r, 50))
  if (groupAlive(child.pid!)) {
    problems.push('left processes running after it exited (killed)')
    try {
      process.kill(-child.pid!, 'SIGKILL')
    } catch {
      // Gone meanwhile.
    }
  }
  child.stdout.destroy()
  child.stderr.destroy()

  // Segments it left: made by one of its processes (the preload's pids, or the first process).
  const ours = new Set([
    child.pid!,
    ...seen,
    ...readFileSync(pidsFile, 'utf8').split('\n').filter(Boolean).map(Number),
  ])
  const left = [...shmSegments()].filter(([name, pid]) => !before.has(name) && ours.has(pid))
  if (left.length > 0) {
    problems.push(
      `left in /dev/shm: ${left.map(([n, p]) => `${n} (pid ${p})`).join(', ')} (removed)`,
    )
    for (const [name] of left) rmSync(join('/dev/shm', name), { force: true })
  }
  return { problems, stdout, stderr, timedOut }
}

/** `target/doc-blocks/` under `root`, made if missing. */
function workDir(root: string): string {
  const dir = join(root, 'target', 'doc-blocks')
  mkdirSync(dir, { recursive: true })
  return dir
}

/**
 * Runs a block of language js, mjs, ts, cjs, sh or bash (see the module comment for what it must
 * do), or parses a json or toml block. Rust blocks run through `runDoctests`.
 */
export async function runBlock(block: Block, options: RunOptions): Promise<RunResult> {
  const how = handling(block)
  if (how === 'json') {
    try {
      JSON.parse(block.code)
      return { problems: [], stdout: '', stderr: '' }
    } catch (err) {
      return { problems: [`invalid JSON: ${String(err)}`], stdout: '', stderr: '' }
    }
  }
  const dir = workDir(options.root)
  const tag = blockFileName(block)
  const base = join(dir, tag)
  let command: string
  let args: string[]
  let typeProblems: string[] = []
  switch (how) {
    case 'esm':
    case 'ts':
    case 'cjs': {
      const file = `${base}.${{ esm: 'mjs', ts: 'mts', cjs: 'cjs' }[how]}`
      writeFileSync(file, block.code)
      typeProblems = await typeCheck(block, file, how === 'ts')
      command = process.execPath
      args = how === 'ts' ? ['--import=tsx', file] : [file]
      break
    }
    case 'shell':
      writeFileSync(`${base}.sh`, block.code)
      command = 'bash'
      args = ['-euo', 'pipefail', `${base}.sh`]
      break
    case 'toml':
      writeFileSync(`${base}.toml`, block.code)
      command = 'python3'
      args = ['-c', 'import sys, tomllib; tomllib.load(open(sys.argv[1], "rb"))', `${base}.toml`]
      break
    default:
      throw new Error(`${blockTitle(block)}: runBlock does not run ${how ?? 'this'} blocks`)
  }
  const r = await runProcess(command, args, {
    cwd: options.root,
    dir,
    tag,
    timeoutMs: options.timeoutMs,
  })
  return {
    problems: [...typeProblems.map((p) => `does not type-check: ${p}`), ...r.problems],
    stdout: r.stdout,
    stderr: r.stderr,
  }
}

/** The outcome of every doctest of one included Markdown file. */
export interface DoctestRun {
  /** Each doctest's name → its outcome (`ok`, `FAILED`, `ignored`) and its failure output. */
  results: Map<string, { outcome: string; output: string }>
  /** The doctest that was running when the time limit killed the run, if any. */
  hung: string | undefined
  /** What went wrong with the run as a whole (the time limit, leftovers), or nothing. */
  problems: string[]
  stdout: string
  stderr: string
}

/**
 * Runs the doctests of one included Markdown file, the struct `item` of `DOCTEST_MODULE`
 * (`cargo test -p shmpipe-core --release --doc -- doc_blocks::<item> --test-threads=1`), one at
 * a time so that a hang names its doctest. (A filter cannot pick one doctest: rustdoc splits its
 * test arguments at spaces, and a doctest's name has some.)
 */
export async function runDoctests(
  root: string,
  item: string,
  timeoutMs: number,
): Promise<DoctestRun> {
  const dir = workDir(root)
  const r = await runProcess(
    'cargo',
    [
      'test',
      '-p',
      'shmpipe-core',
      '--release',
      '--doc',
      '--',
      `doc_blocks::${item}`,
      '--test-threads=1',
    ],
    { cwd: root, dir, tag: `doctests-${item}`, timeoutMs },
  )
  const results = new Map<string, { outcome: string; output: string }>()
  let hung: string | undefined
  for (const line of r.stdout.split('\n')) {
    const done = /^test (.+) \.\.\. (ok|FAILED|ignored)/.exec(line)
    if (done) results.set(done[1]!, { outcome: done[2]!, output: '' })
    else if (r.timedOut) hung = /^test (.+) \.\.\. *$/.exec(line)?.[1] ?? hung
  }
  // The failures' output: `---- <name> stdout ----` sections.
  for (const section of r.stdout.split(/^---- /m).slice(1)) {
    const name = /^(.+) stdout ----/.exec(section)?.[1]
    if (name && results.has(name)) results.get(name)!.output = section
  }
  // The exit status is the doctests' business; what else failed belongs to the run.
  const problems = r.problems.filter((p) => !p.startsWith('exited with '))
  return { results, hung, problems, stdout: r.stdout, stderr: r.stderr }
}

/** Why the doctest `name` failed in `run`, or nothing if it passed. */
export function doctestProblems(run: DoctestRun, name: string): string[] {
  if (run.hung === name) return run.problems
  const result = run.results.get(name)
  if (!result)
    return run.hung
      ? [`not run: the doctest "${run.hung}" before it hung`]
      : [`cargo ran no doctest named "${name}"`, ...run.problems]
  const own = result.outcome === 'ok' ? [] : [`doctest ${result.outcome}`]
  return [...own, ...run.problems.filter((p) => !p.startsWith('did not finish'))]
}

/** Every block of the doc files under `root`, with its file relative to `root`. */
export function allBlocks(root: string): Block[] {
  return docFiles(root).flatMap((f) => extractBlocks(readFileSync(join(root, f), 'utf8'), f))
}
