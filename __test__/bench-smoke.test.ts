/**
 * The transport benchmark's quick mode (`benches/transport.ts --quick`): every transport at a
 * small and a large size, a handful of messages each, every byte checked. Keeps the harness from
 * rotting silently: each transport must deliver every message, in order, with the right bytes,
 * and leave nothing behind.
 */

import { readdirSync } from 'node:fs'

import test from 'ava'

import { QUICK_SIZES, TRANSPORTS } from '../benches/transport/common.js'
import { childPids, runBenchmark } from '../benches/transport/driver.js'
import { shmSegments } from './helpers/processes.js'

test('quick mode: every transport delivers every message with the right bytes', async (t) => {
  const before = shmSegments()
  const results = await runBenchmark({
    sizes: QUICK_SIZES,
    transports: TRANSPORTS,
    quick: true,
    shmpipeReceive: 'get',
  })
  t.is(results.length, QUICK_SIZES.length * TRANSPORTS.length)
  for (const size of QUICK_SIZES) {
    for (const transport of TRANSPORTS) {
      const r = results.find((x) => x.size === size && x.transport === transport)
      const what = `${transport} at ${size} B`
      if (r === undefined) {
        t.fail(`${what}: no result`)
        continue
      }
      t.is(r.error, undefined, what)
      t.true(r.expected > 0, `${what}: nothing was planned`)
      t.is(r.delivered, r.expected, `${what}: messages delivered`)
      t.is(r.bad, 0, `${what}: messages with wrong bytes or out of order`)
      t.true(r.counts.length > 0 && r.counts.every((n) => n > 0), `${what}: rounds`)
      t.true(
        r.ns.every((ns) => ns > 0),
        `${what}: every round took some time`,
      )
      t.true(r.gbps > 0 && Number.isFinite(r.gbps), `${what}: throughput`)
    }
  }
  t.true(childPids.size > 0)
  const left = [...shmSegments()].filter(([name, pid]) => !before.has(name) && childPids.has(pid))
  t.deepEqual(left, [], 'shmpipe segments left in /dev/shm by the benchmark processes')
  const sockets = readdirSync('/tmp').filter((f) =>
    [...childPids].some((pid) => f.startsWith(`shmpipe-bench-${pid}-`)),
  )
  t.deepEqual(sockets, [], 'zeromq ipc:// sockets left in /tmp')
})
