/**
 * Tests of the segment inventory: the `shmpipe` command (`bin/shmpipe.mjs`, run as a real
 * process) and `listSegments()` / `cleanSegments()`, against child processes that own pipes and
 * are alive or SIGKILLed.
 *
 * Other test files and runs may share this machine's /dev/shm, so every `clean` here that
 * removes something names its segments; an unrestricted one is only run as a dry run.
 */

import { execFile, spawnSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { readFileSync, rmSync } from 'node:fs'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { promisify } from 'node:util'

import test, { type ExecutionContext } from 'ava'

import {
  cleanSegments,
  createSharedMemoryPair,
  ERR_SHMPIPE_EXISTS,
  ERR_SHMPIPE_INVALID_ARGUMENT,
  ERR_SHMPIPE_PEER_GONE,
  layoutVersion,
  listSegments,
  Receiver,
  SharedArray,
  ShmpipeError,
  type SegmentInfo,
} from '../index.js'
import {
  checkNoSegmentLeaks,
  entry,
  forkChild,
  repoRoot,
  shmExists,
  spawnNode,
  startChild,
} from './helpers/processes.js'
import { rootWithSetpriv } from './helpers/skip.js'
import { difference, mpscValue } from './helpers/values.js'

checkNoSegmentLeaks(test)

const cli = fileURLToPath(new URL('../bin/shmpipe.mjs', import.meta.url))

interface Run {
  status: number
  stdout: string
  stderr: string
}

/** Runs `node bin/shmpipe.mjs ...args` (or `npx shmpipe ...args`) to its end. */
async function shmpipe(args: string[], viaNpx = false): Promise<Run> {
  const [file, argv] = viaNpx
    ? ['npx', ['--no-install', 'shmpipe', ...args]]
    : [process.execPath, [cli, ...args]]
  try {
    const { stdout, stderr } = await promisify(execFile)(file, argv, { cwd: repoRoot })
    return { status: 0, stdout, stderr }
  } catch (err) {
    const e = err as { code?: unknown; stdout?: string; stderr?: string }
    if (typeof e.code !== 'number') throw err
    return { status: e.code, stdout: e.stdout ?? '', stderr: e.stderr ?? '' }
  }
}

async function lsJson(t: ExecutionContext, viaNpx = false): Promise<SegmentInfo[]> {
  const run = await shmpipe(['ls', '--json'], viaNpx)
  t.is(run.status, 0, run.stderr)
  return JSON.parse(run.stdout) as SegmentInfo[]
}

/**
 * A child that creates a pipe, reports its name and stays alive (blocked) until killed; its
 * pipe's memory in `backing` (`SHMPIPE_BACKING`), or by default in the platform's default.
 *
 * A sealed pipe (`memfd`) whose every holder is killed leaves only its record, which any process
 * of this user creating a pipe meanwhile removes: tests that list a killed owner's pipe use `shm`.
 */
async function pipeOwner(t: ExecutionContext, backing?: 'shm' | 'memfd') {
  const child = startChild(t, 'blocked', ['pair-atomics'], { SHMPIPE_BACKING: backing })
  const { name } = (await child.next()) as { name: string }
  // A SIGKILLed owner leaves its pipe: remove it whatever the test did.
  t.teardown(() => rmSync(`/dev/shm/${name}`, { force: true }))
  return { child, name }
}

test('shmpipe ls and clean: a live owner’s pipe is listed alive and never removed; once the owner is SIGKILLed it is listed dead and removed', async (t) => {
  const { child, name } = await pipeOwner(t, 'shm')
  const pid = child.process.pid!

  const live = (await lsJson(t)).find((s) => s.name === name)
  t.like(live, {
    kind: 'queue',
    backing: 'shm',
    ownerPid: pid,
    owner: 'alive',
    status: 'owner-alive',
    removable: false,
    ready: true,
  })
  t.true(live!.size >= 16 << 20, `size ${live?.size}`) // the default 16 MiB data area
  t.deepEqual(live!.heldBy, [pid])
  const text = await shmpipe(['ls'])
  t.is(text.status, 0)
  t.regex(text.stdout, /^NAME\s+KIND\s+BACKING\s+SIZE\s+PID\s+OWNER\s+AGE\s+STATUS$/m)
  t.regex(text.stdout, new RegExp(`^${name}\\s+queue\\s+shm\\s+16\\.\\d MiB\\s+${pid}\\s+alive\\s+`, 'm')) // prettier-ignore

  for (const args of [
    ['clean', name],
    ['clean', '--force-invalid', name],
  ]) {
    const run = await shmpipe(args)
    t.is(run.status, 0, run.stderr)
    t.regex(run.stdout, /^0 removed, 1 kept\.$/m)
    t.true(shmExists(name), `${args.join(' ')} removed a live owner’s pipe`)
  }

  await child.kill() // SIGKILL: no chance to clean up
  t.true(shmExists(name))
  const dead = (await lsJson(t)).find((s) => s.name === name)
  t.like(dead, { ownerPid: pid, owner: 'dead', status: 'owner-dead', removable: true })
  t.deepEqual(dead!.heldBy, [])

  const dry = await shmpipe(['clean', '--dry-run', '--json', name])
  t.is(dry.status, 0, dry.stderr)
  const dryReport = JSON.parse(dry.stdout) as { dryRun: boolean; removed: SegmentInfo[] }
  t.true(dryReport.dryRun)
  t.deepEqual(
    dryReport.removed.map((s) => s.name),
    [name],
  )
  t.true(shmExists(name), 'a dry run removes nothing')

  const run = await shmpipe(['clean', name])
  t.is(run.status, 0, run.stderr)
  t.regex(
    run.stdout,
    new RegExp(
      `^${name}\\s+queue\\s+.*\\s+${pid}\\s+dead\\s+\\d+[smhd]\\s+removed: owner dead$`,
      'm',
    ),
  )
  t.regex(run.stdout, /^1 removed, 0 kept\.$/m)
  t.false(shmExists(name))
  t.false((await lsJson(t)).some((s) => s.name === name))
  const again = await shmpipe(['clean', name])
  t.is(again.status, 0)
  t.regex(again.stderr, new RegExp(`^shmpipe: no shmpipe segment named ${name}$`, 'm'))
})

test('listSegments() and shmpipe ls show where a pipe’s memory lives: sealed memory (memfd) by default on Linux, named /dev/shm memory with SHMPIPE_BACKING=shm', async (t) => {
  const byDefault = process.platform === 'linux' ? 'memfd' : 'shm'
  const sealed = await pipeOwner(t, undefined)
  const named = await pipeOwner(t, 'shm')
  const listed = listSegments()
  for (const [{ child, name }, backing] of [
    [sealed, byDefault],
    [named, 'shm'],
  ] as const) {
    const pid = child.process.pid!
    const shown = listed.find((s) => s.name === name)
    t.like(shown, { kind: 'queue', backing, ownerPid: pid, owner: 'alive', status: 'owner-alive' })
    t.true(shown!.size >= 16 << 20, `${backing}: the ring's size, ${shown?.size}`)
    t.deepEqual(shown!.heldBy, [pid], backing)
  }
  const text = await shmpipe(['ls'])
  t.is(text.status, 0, text.stderr)
  for (const [{ child, name }, backing] of [
    [sealed, byDefault],
    [named, 'shm'],
  ] as const) {
    const row = new RegExp(`^${name}\\s+queue\\s+${backing}\\s+16\\.\\d MiB\\s+${child.process.pid}\\s+alive\\s`, 'm') // prettier-ignore
    t.regex(text.stdout, row)
  }
})

test('npx shmpipe runs the package’s command', async (t) => {
  const { name } = await pipeOwner(t)
  const listed = (await lsJson(t, true)).find((s) => s.name === name)
  t.like(listed, { status: 'owner-alive' })
  const dry = await shmpipe(['clean', '--dry-run'], true)
  t.is(dry.status, 0, dry.stderr)
  t.regex(dry.stdout, /^\d+ would remove, \d+ kept\.$/m)
  t.true(shmExists(name))
})

test('shmpipe: usage errors exit with status 2, help with 0', async (t) => {
  for (const args of [
    [],
    ['bogus'],
    ['ls', 'extra'],
    ['ls', '--dry-run'],
    ['clean', '--nope'],
    ['clean', 'a/b'],
  ]) {
    const run = await shmpipe(args)
    t.is(run.status, 2, `${args.join(' ')}: ${run.stderr}`)
    t.regex(run.stderr, /^shmpipe: /, args.join(' '))
  }
  const help = await shmpipe(['help'])
  t.is(help.status, 0)
  t.regex(help.stdout, /^Usage: shmpipe <command>/)
  t.deepEqual(await shmpipe(['--help']), help)
})

test('listSegments() and cleanSegments(): this process’s own pipe is alive and kept', (t) => {
  const [sender, receiver] = createSharedMemoryPair({ capacity: 4, bytes: 1 << 20 })
  t.teardown(() => {
    sender.close()
    receiver.close()
  })
  const mine = listSegments().find((s) => s.name === sender.name)
  t.like(mine, {
    kind: 'queue',
    ownerPid: process.pid,
    owner: 'alive',
    status: 'owner-alive',
    removable: false,
    layoutVersion: layoutVersion(),
  })
  t.true(mine!.heldBy!.includes(process.pid))
  const report = cleanSegments({ names: [sender.name] })
  t.deepEqual(report.removed, [])
  t.deepEqual(
    report.kept.map((s) => s.name),
    [sender.name],
  )
  t.true(shmExists(sender.name))
  sender.putSync('still works')
  t.is(receiver.getSync({ timeout: 1000 }), 'still works')

  const err = t.throws(() => cleanSegments({ names: ['no/slashes'] }), { instanceOf: ShmpipeError })
  t.is(err?.code, ERR_SHMPIPE_INVALID_ARGUMENT)
})

test('cleanSegments(): a SIGKILLed owner’s pipe is removed; a dry run only reports it', async (t) => {
  const { child, name } = await pipeOwner(t, 'shm')
  await child.kill()
  const dry = cleanSegments({ names: [name], dryRun: true })
  t.deepEqual(
    dry.removed.map((s) => [s.name, s.status]),
    [[name, 'owner-dead']],
  )
  t.true(shmExists(name))
  const report = cleanSegments({ names: [name] })
  t.deepEqual(
    report.removed.map((s) => [s.name, s.owner, s.ownerPid]),
    [[name, 'dead', child.process.pid]],
  )
  t.deepEqual(report.failed, [])
  t.false(shmExists(name))
})

const otherEndsOutliveTheCreator = test.macro({
  async exec(t, backing: 'shm' | 'memfd') {
    const { child: creator, name } = await pipeOwner(t, backing)
    const receiver = Receiver.attach(name)
    t.teardown(() => receiver.close())
    const producer = forkChild(t, 'produce', [name, '1', '200'])
    t.is(await producer.next(), 'ready')
    await creator.kill() // SIGKILL, with its own sender still open
    t.true(shmExists(name), 'the pipe outlives its creator')
    producer.process.send('go')
    for (let seq = 0; seq < 200; seq++) {
      const value = await receiver.get({ timeout: 10_000 })
      t.is(difference(value, mpscValue(1, seq)), null, `value ${seq}`)
    }
    t.is(await producer.next(), 'done')
    // The creator's sender died open: once drained, the stream ends with PEER_GONE, not CLOSED.
    const end = await t.throwsAsync(receiver.get({ timeout: 5000 }), { instanceOf: ShmpipeError })
    t.is(end?.code, ERR_SHMPIPE_PEER_GONE)
    receiver.close()
    const report = cleanSegments({ names: [name] })
    if (backing === 'memfd') {
      // The last holder to close removed the record; the kernel freed the memory.
      t.deepEqual(report.removed, [])
      t.false(shmExists(name), 'the last holder removed the record')
    } else {
      t.deepEqual(
        report.removed.map((s) => [s.name, s.status]),
        [[name, 'owner-dead']],
      )
      t.false(shmExists(name), 'clean removed what the dead creator left')
    }
  },
  title: (_, backing) =>
    backing === 'memfd'
      ? 'the creator SIGKILLed: the other ends keep working until they close, and the last of them removes the sealed pipe’s record'
      : 'the creator SIGKILLed: the other ends keep working until they close, then clean removes the named pipe',
})

test(otherEndsOutliveTheCreator, 'shm')
test(otherEndsOutliveTheCreator, 'memfd')

// ---------------------------------------------------------------------------------------------
// Other users' segments, shared arrays, and the processes that keep a segment

/**
 * Runs `script` (an ES module importing the package as `shmpipe`) in `node` to its end, through
 * the command `wrapper` if given; returns its pid and the JSON lines it printed.
 */
function runScript(script: string, wrapper: string[] = []): { pid: number; lines: unknown[] } {
  const code = `import * as shmpipe from ${JSON.stringify(pathToFileURL(entry).href)}\n${script}`
  const argv = [...wrapper, process.execPath, '--import=tsx', '--input-type=module', '-e', code]
  const out = spawnSync(argv[0]!, argv.slice(1), { cwd: repoRoot, encoding: 'utf8' })
  if (out.error) throw out.error
  const lines = out.stdout
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => JSON.parse(l) as unknown)
  if (lines.length === 0) throw new Error(`no output (${out.status ?? out.signal}): ${out.stderr}`)
  return { pid: out.pid, lines }
}

/** Prints `value` as a JSON line, then dies of SIGKILL (no cleanup of its own). */
const REPORT_AND_DIE = `
  const die = (value) => {
    process.stdout.write(JSON.stringify(value) + '\\n', () => process.kill(process.pid, 'SIGKILL'))
    setInterval(() => {}, 1 << 30)
  }
`

async function cleanJson(t: ExecutionContext, args: string[]) {
  const run = await shmpipe(['clean', '--json', ...args])
  t.is(run.status, 0, run.stderr)
  return JSON.parse(run.stdout) as { removed: SegmentInfo[]; kept: SegmentInfo[] }
}

test('as root, clean keeps another user’s segment whose owner is dead, shows it as another user’s, and --all-users removes it', async (t) => {
  if (!rootWithSetpriv(t)) return
  const asNobody = ['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups']
  const { pid, lines } = runScript(
    `${REPORT_AND_DIE}
     const [sender] = shmpipe.createSharedMemoryPair({ capacity: 4, bytes: 1 << 16 })
     die({ uid: process.getuid(), name: sender.name })`,
    asNobody,
  )
  const { uid, name } = lines[0] as { uid: number; name: string }
  t.teardown(() => rmSync(`/dev/shm/${name}`, { force: true }))
  t.is(uid, 65534, 'the creator ran as nobody')
  t.true(shmExists(name), 'its SIGKILLed creator left it')

  const listed = (await lsJson(t)).find((s) => s.name === name)
  t.like(listed, {
    kind: 'queue',
    uid: 65534,
    ownerPid: pid,
    owner: 'dead',
    status: 'other-user',
    detail: 'other user (uid 65534)',
    removable: false,
  })
  const text = await shmpipe(['ls'])
  t.regex(text.stdout, new RegExp(`^${name}\\s+queue\\s.*\\s${pid}\\s+dead\\s+\\S+\\s+other user \\(uid 65534\\)$`, 'm')) // prettier-ignore

  for (const args of [[name], ['--force', '--arrays', '--force-invalid', name]]) {
    const run = await shmpipe(['clean', ...args])
    t.is(run.status, 0, run.stderr)
    t.regex(run.stdout, new RegExp(`^${name}\\s.*kept: other user \\(uid 65534\\)$`, 'm'))
    t.regex(run.stdout, /^0 removed, 1 kept\.$/m)
    t.regex(run.stdout, /--all-users/)
    t.true(shmExists(name), `clean ${args.join(' ')} removed another user’s segment`)
  }
  t.like(
    listSegments({ allUsers: true }).find((s) => s.name === name),
    { status: 'owner-dead', removable: true },
  )
  t.like(cleanSegments({ names: [name] }).kept[0], { status: 'other-user' })

  const report = await cleanJson(t, ['--all-users', name])
  t.deepEqual(
    report.removed.map((s) => [s.name, s.status, s.uid]),
    [[name, 'owner-dead', 65534]],
  )
  t.false(shmExists(name))
})

test('an array left by a SIGKILLed process is listed with its owner and age, kept by plain clean, named in the EXISTS error, and removed by clean <name>', async (t) => {
  const array = `inv${randomBytes(6).toString('hex')}`
  const segment = `shmpipe_a_${array}`
  t.teardown(() => rmSync(`/dev/shm/${segment}`, { force: true }))
  const before = Date.now() - 2000
  const { pid } = runScript(
    `${REPORT_AND_DIE}
     shmpipe.SharedArray.create(${JSON.stringify(array)}, 'float64', [4])
     die('created')`,
  )
  t.true(shmExists(segment))
  await new Promise((r) => setTimeout(r, 1100)) // an age of a second at least

  const listed = (await lsJson(t)).find((s) => s.name === segment)
  t.like(listed, {
    kind: 'array',
    ownerPid: pid,
    owner: 'dead',
    status: 'array',
    detail: 'shared array, open in no process',
    removable: false,
    uid: process.getuid!(),
  })
  t.deepEqual(listed!.heldBy, [])
  t.true(listed!.createdAt! >= before && listed!.createdAt! <= Date.now() - 1000, `createdAt ${listed?.createdAt}`) // prettier-ignore
  const text = await shmpipe(['ls'])
  t.regex(text.stdout, /^NAME\s+KIND\s+BACKING\s+SIZE\s+PID\s+OWNER\s+AGE\s+STATUS$/m)
  t.regex(text.stdout, new RegExp(`^${segment}\\s+array\\s.*\\s${pid}\\s+dead\\s+[1-9]\\d*s\\s+shared array, open in no process$`, 'm')) // prettier-ignore

  // Unrestricted, but only dry runs (other runs share /dev/shm).
  const plain = await cleanJson(t, ['--dry-run'])
  t.like(
    plain.kept.find((s) => s.name === segment),
    { status: 'array', removable: false },
  )
  t.false(
    plain.removed.some((s) => s.name === segment),
    'plain clean would remove the array',
  )
  const withArrays = await cleanJson(t, ['--dry-run', '--arrays'])
  t.true(
    withArrays.removed.some((s) => s.name === segment),
    '--arrays would not remove it',
  )
  t.true(shmExists(segment))

  const err = t.throws(() => SharedArray.create(array, 'float64', [4]), {
    instanceOf: ShmpipeError,
  })
  t.is(err?.code, ERR_SHMPIPE_EXISTS)
  t.true(err!.message.includes('`npx shmpipe ls`'), err?.message)
  t.true(err!.message.includes(`\`npx shmpipe clean ${segment}\``), err?.message)

  const byArrayName = await shmpipe(['clean', array])
  t.is(byArrayName.status, 0, byArrayName.stderr)
  t.regex(byArrayName.stderr, new RegExp(`^shmpipe: no shmpipe segment named ${array} \\(a shared array named ${array} is ${segment}\\)$`, 'm')) // prettier-ignore
  t.true(shmExists(segment))

  const run = await shmpipe(['clean', segment])
  t.is(run.status, 0, run.stderr)
  t.regex(run.stdout, new RegExp(`^${segment}\\s+array\\s.*removed: shared array, open in no process$`, 'm')) // prettier-ignore
  t.regex(run.stdout, /^1 removed, 0 kept\.$/m)
  t.false(shmExists(segment))
  const again = SharedArray.create(array, 'float64', [4]) // the name is free again
  again.close()
  SharedArray.delete(array)
})

test('a sent message kept as maybe-in-use names the live process that may receive it, and --force removes it', async (t) => {
  // The pipe's owner (alive, holding the pipe: its receiver may still take the message).
  const owner = spawnNode(t, [
    '--import=tsx',
    '--input-type=module',
    '-e',
    `import * as shmpipe from ${JSON.stringify(pathToFileURL(entry).href)}
     const [sender] = shmpipe.createSharedMemoryPair({ capacity: 4, bytes: 1 << 16, backing: 'shm' })
     console.log(JSON.stringify({ name: sender.name }))
     setInterval(() => {}, 1 << 30)`,
  ])
  // Named: a sealed pipe with no receiver keeps a value sent to it in its sender, not /dev/shm.
  const { name } = (await owner.next()) as { name: string }
  t.teardown(() => rmSync(`/dev/shm/${name}`, { force: true }))
  const ownerPid = owner.process.pid!
  const command = readFileSync(`/proc/${ownerPid}/comm`, 'utf8').trim() // `node`, or `nodejs`…
  // A sender that sends a message too large for the ring (its own segment), then dies.
  const { pid: senderPid } = runScript(
    `${REPORT_AND_DIE}
     const sender = shmpipe.Sender.attach(${JSON.stringify(name)})
     await sender.put(new Uint8Array(1 << 20))
     die('sent')`,
  )
  const blobs = listSegments().filter((s) => s.ownerPid === senderPid && s.kind === 'blob')
  t.is(blobs.length, 1, JSON.stringify(blobs))
  const blob = blobs[0]!.name
  t.teardown(() => rmSync(`/dev/shm/${blob}`, { force: true }))

  const listed = (await lsJson(t)).find((s) => s.name === blob)
  t.like(listed, { status: 'maybe-in-use', owner: 'dead', removable: false })
  // Other processes on this machine may hold pipes too, and be named with it.
  t.true(
    listed!.mayBeUsedBy.some((p) => p.pid === ownerPid && p.command === command),
    JSON.stringify(listed?.mayBeUsedBy),
  )
  t.true(listed!.detail.startsWith('owner dead, maybe in use: a receiver may be alive ('), listed?.detail) // prettier-ignore
  t.true(listed!.detail.includes(`pid ${ownerPid} (${command})`), listed?.detail)

  const kept = await shmpipe(['clean', blob])
  t.is(kept.status, 0, kept.stderr)
  t.regex(kept.stdout, new RegExp(`^${blob}\\s+blob\\s.*kept: owner dead, maybe in use: .*pid ${ownerPid} \\(${command.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}\\)`, 'm')) // prettier-ignore
  t.regex(kept.stdout, /--force removes them/)
  t.true(shmExists(blob))

  const forced = await cleanJson(t, ['--force', blob])
  t.deepEqual(
    forced.removed.map((s) => [s.name, s.status]),
    [[blob, 'maybe-in-use']],
  )
  t.false(shmExists(blob))
  t.true(shmExists(name), '--force removed only what was named')
})

test('listSegments() and cleanSegments() refuse options of another type or name', (t) => {
  const calls: [string, () => unknown][] = [
    ['listSegments: allUsers must be a boolean', () => listSegments({ allUsers: 'yes' as never })],
    ['listSegments: unknown option "allUser"', () => listSegments({ allUser: true } as never)],
    ['cleanSegments: force must be a boolean', () => cleanSegments({ force: 1 as never, dryRun: true })], // prettier-ignore
    ['cleanSegments: arrays must be a boolean', () => cleanSegments({ arrays: 'no' as never, dryRun: true })], // prettier-ignore
    ['cleanSegments: unknown option "array"', () => cleanSegments({ array: true, dryRun: true } as never)], // prettier-ignore
    ['cleanSegments: names must be an array of strings', () => cleanSegments({ names: 'shmpipe_a_x' as never })], // prettier-ignore
    ['cleanSegments: options must be an object', () => cleanSegments(null as never)],
  ]
  for (const [message, call] of calls) {
    const err = t.throws(call, { instanceOf: ShmpipeError }, message)
    t.is(err?.code, ERR_SHMPIPE_INVALID_ARGUMENT, message)
    t.true(err?.message.startsWith(message), `${err?.message} starts with ${message}`)
  }
})
