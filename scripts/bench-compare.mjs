#!/usr/bin/env node
// Compares the core queue's Criterion benchmarks (`benches/queue.rs`) of a base revision with
// the working tree, side by side in one run: the way to check that a change to the core did not
// slow its fast paths down.
//
// Usage: node scripts/bench-compare.mjs BASE [--rounds N] [--filter REGEX] [--suite queue|transport]
//   BASE      a git revision (a commit, `main`, `HEAD~3`)
//   --rounds  how many times each side runs (default 3)
//   --filter  queue: Criterion's benchmark filter, a regex on the benchmark ids (default: the
//             queue's fast paths: `spsc_in_process|cross_process_ping_pong|stream_1MiB`);
//             transport: the sizes, as `benches/transport.ts --sizes` takes them (default
//             `100,1e6,1e7,1e8`)
//   --suite   `queue` (default): the core's Criterion benches. `transport`: the Node package end
//             to end (`benches/transport.ts`, shmpipe's `get()` and `receive()` from one process
//             to another, with the same ring on both sides), each tree's addon and dist/ built
//             into its own target directory, with the repository's node_modules
//
// It checks BASE out in a temporary `git worktree`, builds the bench of both trees
// (`cargo bench --workspace --bench queue --no-run`: whichever crate holds it in that tree; it
// moved from shmpipe-core to shmpipe-test-peer), each into its own target directory
// under `target/bench-compare/` (the bench runs the `shmpipe-peer` binary of its own build, so
// the two builds must not share one), then runs the two bench binaries in turns, the order
// alternating from round to round (base, new; new, base; …) so that a machine getting busier or
// quieter weighs on both alike. Each run keeps its own Criterion directory. At the end it prints,
// per benchmark, each side's median over the rounds of Criterion's median estimate, and the
// ratio new/base (below 1: faster now); then the median of the rounds' own ratios (each round's
// two runs ran next to each other, so this one suffers less from load that changes between
// rounds), and those ratios, to show the spread.
// The `…/round_trip` lines the ping-pong bench prints (a median of 20,000 round trips) are
// compared the same way. The benchmark groups set their own warm-up and measurement times
// (`benches/queue.rs`), so a run of the default filter takes about a minute per side and round.
//
// The crossbeam and rtrb benchmarks run the same code on both sides: their ratios show how much
// two runs of identical code differ on this machine now.
import { execFileSync, spawn, spawnSync } from 'node:child_process'
import {
  existsSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const repo = join(dirname(fileURLToPath(import.meta.url)), '..')
const args = process.argv.slice(2)
const option = (name, fallback) => {
  const at = args.indexOf(name)
  if (at < 0) return fallback
  const [, value] = args.splice(at, 2)
  return value
}
const rounds = Number(option('--rounds', '3'))
const suite = option('--suite', 'queue')
const filter = option(
  '--filter',
  suite === 'transport' ? '100,1e6,1e7,1e8' : 'spsc_in_process|cross_process_ping_pong|stream_1MiB',
)
const base = args[0]
if (!base || args.length !== 1 || !(rounds >= 1) || !['queue', 'transport'].includes(suite)) {
  console.error(
    'usage: node scripts/bench-compare.mjs BASE [--rounds N] [--filter REGEX] [--suite queue|transport]',
  )
  process.exit(2)
}

const git = (...a) => execFileSync('git', a, { cwd: repo, encoding: 'utf8' }).trim()
const baseCommit = git('rev-parse', '--verify', `${base}^{commit}`)
const work = mkdtempSync(join(tmpdir(), 'shmpipe-bench-compare-'))
const baseTree = join(work, 'base')
const cleanup = () => {
  spawnSync('git', ['worktree', 'remove', '--force', baseTree], { cwd: repo, stdio: 'ignore' })
  rmSync(work, { recursive: true, force: true })
}
process.on('exit', cleanup)
for (const signal of ['SIGINT', 'SIGTERM']) process.on(signal, () => process.exit(130))
git('worktree', 'add', '--detach', baseTree, baseCommit)

/** Builds the queue bench of the tree at `src` into `targetDir`; returns the executable. */
function buildQueue(src, targetDir) {
  console.error(`building the bench of ${src} (target ${targetDir})…`)
  const out = execFileSync(
    'cargo',
    [
      'bench',
      '--workspace',
      '--bench',
      'queue',
      '--no-run',
      '--message-format=json-render-diagnostics',
    ],
    {
      cwd: src,
      env: { ...process.env, CARGO_TARGET_DIR: targetDir },
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'inherit'],
      maxBuffer: 1 << 28,
    },
  )
  const exe = out
    .split('\n')
    .filter((line) => line.startsWith('{'))
    .map((line) => JSON.parse(line))
    .find(
      (m) => m.reason === 'compiler-artifact' && m.target?.name === 'queue' && m.executable,
    )?.executable
  if (!exe) throw new Error(`no bench executable built in ${src}`)
  return exe
}

const targets = join(repo, 'target', 'bench-compare')
const baseTarget = join(targets, 'base')
const newTarget = join(targets, 'new')
/**
 * Builds the addon and `dist/` of the tree at `src` (`npm run build`, its Rust into `targetDir`),
 * using the repository's `node_modules` in the base tree.
 */
function buildNode(src, targetDir) {
  console.error(`building the addon and dist/ of ${src} (target ${targetDir})…`)
  if (src !== repo && !existsSync(join(src, 'node_modules'))) {
    symlinkSync(join(repo, 'node_modules'), join(src, 'node_modules'), 'dir')
  }
  execFileSync('npm', ['run', 'build'], {
    cwd: src,
    env: { ...process.env, CARGO_TARGET_DIR: targetDir },
    stdio: ['ignore', 'ignore', 'inherit'],
  })
}

const build = suite === 'queue' ? buildQueue : buildNode
const sides = {
  base: { src: baseTree, exe: build(baseTree, baseTarget) },
}
sides.new = { src: repo, exe: build(repo, newTarget) }

/** Runs one side's transport bench once; returns { "shmpipe get 1 MB" → ns per message }. */
function runTransport(side, round) {
  const out = join(work, `${side}-${round}.json`)
  const cells = {}
  for (const receive of ['get', 'receive']) {
    execFileSync(
      process.execPath,
      [
        '--import=tsx',
        'benches/transport.ts',
        '--transports=shmpipe',
        `--shmpipe-receive=${receive}`,
        `--sizes=${filter}`,
        `--json=${out}`,
      ],
      { cwd: sides[side].src, stdio: ['ignore', 'ignore', 'inherit'] },
    )
    for (const r of JSON.parse(readFileSync(out, 'utf8')).results) {
      if (r.error !== undefined) throw new Error(`${side}: ${receive} ${r.size} B: ${r.error}`)
      cells[`shmpipe ${receive}() ${String(r.size).padStart(10)} B`] = r.nsPerMessage
    }
  }
  return cells
}

/** Runs one side's bench once; returns { id → median ns } (Criterion's and round trips'). */
function runQueue(side, round) {
  const home = join(work, 'criterion', `${side}-${round}`)
  return new Promise((resolve, reject) => {
    const child = spawn(sides[side].exe, ['--bench', '--noplot', filter], {
      cwd: join(sides[side].src, 'crates', 'core'),
      env: { ...process.env, CRITERION_HOME: home },
      stdio: ['ignore', 'pipe', 'inherit'],
    })
    let stdout = ''
    child.stdout.on('data', (d) => (stdout += d))
    child.on('error', reject)
    child.on('exit', (code) => {
      writeFileSync(join(work, `${side}-${round}.log`), stdout)
      if (code !== 0) return reject(new Error(`${side} bench exited with ${code}`))
      const results = {}
      const walk = (dir) => {
        for (const e of readdirSync(dir, { withFileTypes: true })) {
          if (!e.isDirectory()) continue
          const here = join(dir, e.name)
          if (e.name === 'new' && existsSync(join(here, 'estimates.json'))) {
            const id = JSON.parse(readFileSync(join(here, 'benchmark.json'), 'utf8')).full_id
            results[id] = JSON.parse(
              readFileSync(join(here, 'estimates.json'), 'utf8'),
            ).median.point_estimate
          } else walk(here)
        }
      }
      if (existsSync(home)) walk(home)
      for (const [, id, micros] of stdout.matchAll(/^(\S+\/round_trip)\s+median ([\d.]+) µs/gm)) {
        results[id] = Number(micros) * 1000
      }
      resolve(results)
    })
  })
}

const results = { base: [], new: [] }
for (let round = 1; round <= rounds; round++) {
  const order = round % 2 ? ['base', 'new'] : ['new', 'base']
  for (const side of order) {
    console.error(`round ${round}/${rounds}: ${side}`)
    results[side].push(suite === 'queue' ? await runQueue(side, round) : runTransport(side, round))
  }
}

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b)
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2
}
const show = (ns) =>
  ns >= 1e6
    ? `${(ns / 1e6).toFixed(3)} ms`
    : ns >= 1e3
      ? `${(ns / 1e3).toFixed(2)} µs`
      : `${ns.toFixed(1)} ns`
const ids = [...new Set(results.base.flatMap((r) => Object.keys(r)))].filter((id) =>
  results.new.every((r) => id in r),
)
console.log(
  `base ${base} (${baseCommit.slice(0, 12)}) against the working tree; ${rounds} rounds; filter ${filter}`,
)
console.log(
  `${'benchmark'.padEnd(58)} ${'base'.padStart(11)} ${'new'.padStart(11)}  new/base  paired  (rounds)`,
)
for (const id of ids) {
  const old = results.base.map((r) => r[id])
  const now = results.new.map((r) => r[id])
  const ratios = now.map((n, i) => n / old[i])
  const perRound = ratios.map((r) => r.toFixed(3)).join(' ')
  const ratio = median(now) / median(old)
  const paired = median(ratios)
  console.log(
    `${id.padEnd(58)} ${show(median(old)).padStart(11)} ${show(median(now)).padStart(11)}  ${ratio.toFixed(3).padStart(8)}  ${paired.toFixed(3).padStart(6)}  (${perRound})`,
  )
}
