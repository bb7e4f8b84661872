/**
 * Tests of the segment inventory: the `shmpipe` command (`bin/shmpipe.mjs`, run as a real
 * process) and `listSegments()` / `cleanSegments()`, against child processes that own pipes and
 * are alive or SIGKILLed.
 *
 * Other test files and runs may share this machine's /dev/shm, so every `clean` here that
 * removes something names its segments; an unrestricted one is only run as a dry run.
 */

import { execFile } from 'node:child_process'
import { rmSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'

import test, { type ExecutionContext } from 'ava'

import {
  cleanSegments,
  createSharedMemoryPair,
  ERR_SHMPIPE_INVALID_ARGUMENT,
  ERR_SHMPIPE_PEER_GONE,
  layoutVersion,
  listSegments,
  Receiver,
  ShmpipeError,
  type SegmentInfo,
} from '../index.js'
import {
  checkNoSegmentLeaks,
  forkChild,
  repoRoot,
  shmExists,
  startChild,
} from './helpers/processes.js'
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

/** A child that creates a pipe, reports its name and stays alive (blocked) until killed. */
async function pipeOwner(t: ExecutionContext) {
  const child = startChild(t, 'blocked', ['pair-atomics'])
  const { name } = (await child.next()) as { name: string }
  // A SIGKILLed owner leaves its pipe: remove it whatever the test did.
  t.teardown(() => rmSync(`/dev/shm/${name}`, { force: true }))
  return { child, name }
}

test('shmpipe ls and clean: a live owner’s pipe is listed alive and never removed; once the owner is SIGKILLed it is listed dead and removed', async (t) => {
  const { child, name } = await pipeOwner(t)
  const pid = child.process.pid!

  const live = (await lsJson(t)).find((s) => s.name === name)
  t.like(live, {
    kind: 'queue',
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
  t.regex(text.stdout, /^NAME\s+KIND\s+SIZE\s+PID\s+OWNER\s+STATUS$/m)
  t.regex(text.stdout, new RegExp(`^${name}\\s+queue\\s+16\\.\\d MiB\\s+${pid}\\s+alive\\s+`, 'm'))

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
    new RegExp(`^${name}\\s+queue\\s+.*\\s+${pid}\\s+dead\\s+removed: owner dead$`, 'm'),
  )
  t.regex(run.stdout, /^1 removed, 0 kept\.$/m)
  t.false(shmExists(name))
  t.false((await lsJson(t)).some((s) => s.name === name))
  const again = await shmpipe(['clean', name])
  t.is(again.status, 0)
  t.regex(again.stderr, new RegExp(`^shmpipe: no shmpipe segment named ${name}$`, 'm'))
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
  const { child, name } = await pipeOwner(t)
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

test('the creator SIGKILLed: the other ends keep working until they close, then clean removes the pipe', async (t) => {
  const { child: creator, name } = await pipeOwner(t)
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
  t.deepEqual(
    report.removed.map((s) => [s.name, s.status]),
    [[name, 'owner-dead']],
  )
  t.false(shmExists(name), 'clean removed what the dead creator left')
})
