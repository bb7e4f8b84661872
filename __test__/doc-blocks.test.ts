/**
 * Every code block of README.md, CONTRIBUTING.md and docs/**\/*.md runs here, one test per block
 * titled `<file>:<line> (<language>)`: a snippet that hangs, throws (an undefined name), exits
 * non-zero, leaves a process running or leaves a shmpipe segment in /dev/shm fails its test. What
 * each language means: `helpers/doc-blocks.ts`. Not run: `text` blocks (no test), and the
 * README's set-up commands (its first `sh` block: `npm ci && npm run build && npm run demo` and
 * `npm test`, which CI runs and `readme.test.ts` checks; run here they would recurse).
 *
 * The first tests run the runner on fixtures, so that it is seen to fail each kind of broken
 * block. Blocks run on Linux only (see `linux` below).
 */

import { readFileSync } from 'node:fs'
import { join } from 'node:path'

import test, { type ExecutionContext } from 'ava'

import {
  allBlocks,
  blockTitle,
  DOCTEST_MODULE,
  doctestName,
  doctestProblems,
  extractBlocks,
  handling,
  languageProblem,
  runBlock,
  runDoctests,
  type Block,
  type DoctestRun,
} from './helpers/doc-blocks.js'
import { repoRoot } from './helpers/processes.js'

/**
 * Where blocks run: Linux, where the runner sees every process of a block (/proc) and its
 * segments (/dev/shm) and kills a process group on time-out. Elsewhere these tests are listed as
 * skipped; CI's Linux jobs run them.
 */
const linux = process.platform === 'linux' ? test : test.skip

/** Time limits: a Node block, a shell block (packing, installing), a doctest (compiling). */
const LIMIT_MS = { node: 30_000, shell: 5 * 60_000, rust: 5 * 60_000 }

/** The README's set-up commands, which only CI runs. */
const SET_UP = ['npm ci && npm run build && npm run demo', 'npm test']

function commands(code: string): string[] {
  return code
    .split('\n')
    .map((l) => l.replace(/#.*/, '').trim())
    .filter(Boolean)
}

const docBlocksSource = readFileSync(join(repoRoot, DOCTEST_MODULE), 'utf8')

/** The doctests of each included file, run once for all its blocks. */
const doctestRuns = new Map<string, Promise<DoctestRun>>()

/** Runs `block` as the real tests do, failing `t` with the reasons and the block's output. */
async function check(t: ExecutionContext, block: Block): Promise<void> {
  const problem = languageProblem(block)
  if (problem) return t.fail(problem)
  const how = handling(block)!
  if (how === 'rust') {
    const name = doctestName(block, docBlocksSource)
    if (!name)
      return t.fail(
        `${block.file} has a rust block but ${DOCTEST_MODULE} does not include it as a doctest ` +
          `(add: #[doc = include_str!("../../../${block.file}")] pub struct …;)`,
      )
    const item = /doc_blocks::(\w+)/.exec(name)![1]!
    t.timeout(LIMIT_MS.rust + 30_000)
    if (!doctestRuns.has(item)) doctestRuns.set(item, runDoctests(repoRoot, item, LIMIT_MS.rust))
    const run = await doctestRuns.get(item)!
    const problems = doctestProblems(run, name)
    if (problems.length > 0) {
      t.log(
        `--- code\n${block.code}--- doctest\n${run.results.get(name)?.output ?? run.stdout}\n--- stderr\n${run.stderr.slice(-5000)}`,
      )
      const offset = Number(/\(line (\d+)\)$/.exec(name)![1]) - block.line
      t.fail(
        `${blockTitle(block)}: ${problems.join('; ')} ` +
          `(line N of ${DOCTEST_MODULE} in rustdoc's output is ${block.file}:N-${offset})`,
      )
    } else t.deepEqual(problems, [])
    return
  }
  const limit = how === 'shell' ? LIMIT_MS.shell : LIMIT_MS.node
  t.timeout(limit + 30_000)
  const r = await runBlock(block, { root: repoRoot, timeoutMs: limit })
  if (r.problems.length > 0) {
    t.log(`--- code\n${block.code}--- stdout\n${r.stdout}\n--- stderr\n${r.stderr}`)
    t.fail(`${blockTitle(block)}: ${r.problems.join('; ')}`)
  } else t.deepEqual(r.problems, [])
}

// ---------------------------------------------------------------------------------------------
// The runner, on fixtures: each broken kind of block is reported.

/** The one block of a fixture file `fixture.md` with a `lang` fence around `code`. */
function fixture(lang: string, code: string, file = 'docs/fixture.md'): Block {
  const blocks = extractBlocks(`# Fixture\n\nSome text.\n\n\`\`\`${lang}\n${code}\n\`\`\`\n`, file)
  if (blocks.length !== 1) throw new Error(`expected one block, got ${blocks.length}`)
  return blocks[0]!
}

const run = (block: Block, timeoutMs = LIMIT_MS.node) =>
  runBlock(block, { root: repoRoot, timeoutMs })

test('runner: blocks are found with their line, language and code (fences nested in lists too)', (t) => {
  const md = [
    '# T', // 1
    '```js', // 2
    "console.log('a')", // 3
    '```', // 4
    '- item', // 5
    '', // 6
    '  ```sh', // 7
    '  echo b', // 8
    '  ```', // 9
    '~~~~text', // 10
    '```', // 11: not a closing fence of a ~~~~ block
    '~~~~', // 12
    '```', // 13
    'unmarked', // 14
    '```', // 15
  ].join('\n')
  t.deepEqual(extractBlocks(md, 'x.md'), [
    { file: 'x.md', line: 2, info: 'js', code: "console.log('a')\n" },
    { file: 'x.md', line: 7, info: 'sh', code: 'echo b\n' },
    { file: 'x.md', line: 10, info: 'text', code: '```\n' },
    { file: 'x.md', line: 13, info: '', code: 'unmarked\n' },
  ])
})

linux('runner: working blocks pass (js, ts, cjs with shmpipe; sh; json)', async (t) => {
  t.timeout(120_000)
  const pipe = `const [sender, receiver] = createSharedMemoryPair({ capacity: 2 })
await sender.put({ a: new Float64Array([1, 2]) })
const got = (await receiver.get({ timeout: 5000 })) as { a: Float64Array }
if (got.a[1] !== 2) throw new Error('wrong value')
sender.close()
receiver.close()`
  const untyped = pipe.replace(' as { a: Float64Array }', '')
  const blocks = [
    fixture('js', `import { createSharedMemoryPair } from 'shmpipe'\n${untyped}`),
    fixture(
      'ts',
      `import { createSharedMemoryPair, type PipeOptions } from 'shmpipe'\nconst o: PipeOptions = {}\nvoid o\n${pipe}`,
    ),
    fixture(
      'cjs',
      `const { createSharedMemoryPair } = require('shmpipe')\n;(async () => {\n${untyped}\n})()`,
    ),
    fixture('sh', 'test -f package.json && echo "in the root"'),
    fixture('json', '{ "a": [1, 2] }'),
  ]
  for (const block of blocks) {
    const r = await run(block)
    t.deepEqual(r.problems, [], `${block.info}: ${r.stderr}`)
  }
})

linux('runner: a block that hangs is killed at its time limit and fails', async (t) => {
  const started = Date.now()
  const r = await run(fixture('js', 'setInterval(() => {}, 1000)'), 2000)
  t.deepEqual(r.problems, ['did not finish within 2000 ms (killed)'])
  t.true(Date.now() - started < 10_000)
})

linux('runner: a block that names an undefined variable fails (tsc, and the run)', async (t) => {
  const r = await run(fixture('js', 'console.log(frobnicate.length)'))
  t.deepEqual(r.problems, [
    "does not type-check: docs/fixture.md:6: TS2304 Cannot find name 'frobnicate'.",
    'exited with 1',
  ])
  t.regex(r.stderr, /ReferenceError: frobnicate is not defined/)
})

linux(
  'runner: an undefined name in code the run does not reach fails too (js, cjs, ts)',
  async (t) => {
    const code = 'if (process.argv.length > 99) repair(1)'
    for (const lang of ['js', 'cjs', 'ts']) {
      const r = await run(fixture(lang, code))
      t.deepEqual(
        r.problems,
        ["does not type-check: docs/fixture.md:6: TS2304 Cannot find name 'repair'."],
        lang,
      )
    }
  },
)

linux(
  'runner: a ts block must type-check; a js block only must name nothing undefined',
  async (t) => {
    const code =
      "import { createSharedMemoryPair } from 'shmpipe'\nconst n: number = createSharedMemoryPair"
    const ts = await run(fixture('ts', code))
    t.is(ts.problems.length, 1)
    t.regex(ts.problems[0]!, /^does not type-check: docs\/fixture\.md:7: TS2322 /)
    const js = await run(
      fixture('js', "const o = {}\nconsole.log(o.missing === undefined ? 'ok' : 'no')"),
    )
    t.deepEqual(js.problems, [])
  },
)

linux('runner: a sh block whose command fails fails (bash -e, pipefail, -u)', async (t) => {
  for (const code of ['false\necho after', 'false | cat', 'echo "$UNDEFINED_VARIABLE_X"']) {
    const r = await run(fixture('sh', code))
    t.deepEqual(r.problems, ['exited with 1'], code)
  }
})

linux('runner: a block whose child process leaves a segment in /dev/shm fails', async (t) => {
  // A child (a process the block starts, not the block itself) makes a pipe and is SIGKILLed:
  // its queue stays in /dev/shm.
  const code = `import { spawn } from 'node:child_process'
const child = spawn(process.execPath, ['--input-type=module', '-e', \`
  import { createSharedMemoryPair } from 'shmpipe'
  const [s] = createSharedMemoryPair({ capacity: 2 })
  console.log(s.name)
  setInterval(() => {}, 1000)\`], { stdio: ['ignore', 'pipe', 'inherit'] })
const name = await new Promise((resolve) => child.stdout.once('data', (d) => resolve(String(d).trim())))
child.kill('SIGKILL')
await new Promise((resolve) => child.on('exit', resolve))
console.log(name)`
  const r = await run(fixture('js', code))
  const name = r.stdout.trim()
  t.regex(name, /^shmpipe_[0-9a-f]+$/)
  t.is(r.problems.length, 1)
  t.true(r.problems[0]!.startsWith(`left in /dev/shm: ${name} (pid `), r.problems[0])
})

linux('runner: a shared array left behind fails', async (t) => {
  const r = await run(
    fixture(
      'js',
      `import { SharedArray } from 'shmpipe'\nSharedArray.create('docleak${process.pid}', 'float64', [4])`,
    ),
  )
  t.is(r.problems.length, 1)
  t.true(r.problems[0]!.startsWith(`left in /dev/shm: shmpipe_a_docleak${process.pid} (pid `))
})

linux('runner: a block that leaves a process running fails', async (t) => {
  const code = `import { spawn } from 'node:child_process'
spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)'], { stdio: 'ignore' }).unref()`
  const r = await run(fixture('js', code))
  t.deepEqual(r.problems, ['left processes running after it exited (killed)'])
})

test('runner: an unknown language and an unmarked fence fail', (t) => {
  t.regex(
    languageProblem(fixture('python', 'print(1)'))!,
    /^docs\/fixture\.md:5: unknown language "python"/,
  )
  t.regex(
    languageProblem(fixture('rust,ignore', 'fn main() {}'))!,
    /unknown language "rust,ignore"/,
  )
  t.regex(
    languageProblem(fixture('', 'let x = 1;'))!,
    /^docs\/fixture\.md:5: a fence without a language/,
  )
  t.is(languageProblem(fixture('text', 'a diagram')), undefined)
})

test('runner: a rust block in a file the doctest module does not include fails', (t) => {
  t.is(
    doctestName(fixture('rust', 'let x = 1;', 'docs/not-included.md'), docBlocksSource),
    undefined,
  )
  // …and a file it includes gets rustdoc's name: the attribute's line + the block's line - 1.
  const source = '//! m\n\n/// x\n#[doc = include_str!("../../../docs/x.md")]\npub struct X;\n'
  t.is(
    doctestName(fixture('rust', 'let x = 1;', 'docs/x.md'), source),
    `${DOCTEST_MODULE} - doc_blocks::X (line 8)`,
  )
})

test('runner: a doctest that fails, hangs or was never run is reported', (t) => {
  const run: DoctestRun = {
    results: new Map([
      ['m - doc_blocks::R (line 3)', { outcome: 'ok', output: '' }],
      ['m - doc_blocks::R (line 9)', { outcome: 'FAILED', output: 'error[E0277]' }],
    ]),
    hung: 'm - doc_blocks::R (line 20)',
    problems: ['did not finish within 10 ms (killed)'],
    stdout: '',
    stderr: '',
  }
  t.deepEqual(doctestProblems(run, 'm - doc_blocks::R (line 3)'), [])
  t.deepEqual(doctestProblems(run, 'm - doc_blocks::R (line 9)'), ['doctest FAILED'])
  t.deepEqual(doctestProblems(run, 'm - doc_blocks::R (line 20)'), [
    'did not finish within 10 ms (killed)',
  ])
  t.deepEqual(doctestProblems(run, 'm - doc_blocks::R (line 30)'), [
    'not run: the doctest "m - doc_blocks::R (line 20)" before it hung',
  ])
})

linux('runner: a rust doctest runs through cargo, and one not in the run fails', async (t) => {
  t.timeout(LIMIT_MS.rust + 30_000)
  // docs/api.md is included and holds a rust block: its doctests run; a line that holds no
  // block is not among them.
  const run = await runDoctests(repoRoot, 'ApiGuide', LIMIT_MS.rust)
  t.true(run.results.size >= 1, run.stdout)
  const name = doctestName(
    { ...fixture('rust', 'let x = 1;', 'docs/api.md'), line: 1 },
    docBlocksSource,
  )!
  t.deepEqual(doctestProblems(run, name), [`cargo ran no doctest named "${name}"`])
})

linux('runner: invalid json and toml fail', async (t) => {
  t.regex((await run(fixture('json', '{ a: 1 }'))).problems[0] ?? '', /^invalid JSON/)
  t.deepEqual((await run(fixture('toml', '[a]\nb = 1'))).problems, [])
  t.deepEqual((await run(fixture('toml', '[a\nb = '))).problems, ['exited with 1'])
})

// ---------------------------------------------------------------------------------------------
// The repository's Markdown.

/** Set when this file runs inside a block (a block that runs `npm test`): it must not recurse. */
const insideBlock = process.env.SHMPIPE_DOC_BLOCK_PIDS !== undefined
if (insideBlock)
  test('the doc blocks are not run from inside a doc block', (t) => {
    t.fail('a Markdown code block ran the test suite (npm test or ava): mark it `text`')
  })

let firstReadmeShell = true
for (const block of insideBlock ? [] : allBlocks(repoRoot)) {
  if (block.info === 'text') continue
  if (block.file === 'README.md' && handling(block) === 'shell' && firstReadmeShell) {
    firstReadmeShell = false
    if (commands(block.code).join('\n') === SET_UP.join('\n')) {
      test(`${blockTitle(block)}: the set-up commands, run by CI (not here: npm test would recurse)`, (t) => {
        t.deepEqual(commands(block.code), SET_UP)
      })
      continue
    }
  }
  // Blocks the runner rejects before running anything fail on every platform.
  const rejected =
    languageProblem(block) !== undefined ||
    (handling(block) === 'rust' && !doctestName(block, docBlocksSource))
  ;(rejected ? test : linux)(blockTitle(block), (t) => check(t, block))
}
