/**
 * What a test does when this machine cannot run it (not root, a tool missing): it fails, unless
 * `SHMPIPE_TEST_ALLOW_SKIP=1` is set, in which case it logs why and passes. CI runs as root on
 * Linux, where every such test must run; the Rust tests follow the same rule
 * (`crates/test-peer/tests/common/skip.rs`).
 */

import { spawnSync } from 'node:child_process'
import type { ExecutionContext } from 'ava'

/** The environment variable that lets a test that cannot run here pass after saying why. */
export const ALLOW_SKIP = 'SHMPIPE_TEST_ALLOW_SKIP'

/** Whether a test that cannot run here may pass without running. */
export const skipsAllowed = process.env[ALLOW_SKIP] === '1'

/** Call where the test cannot run, with the reason; the caller returns right after. */
export function cannotRun(t: ExecutionContext, reason: string): void {
  if (skipsAllowed) {
    t.log(`SKIPPED (${ALLOW_SKIP}=1): ${reason}`)
    t.pass()
  } else {
    t.fail(
      `this test cannot run here: ${reason}. CI runs it (as root, on Linux); set ${ALLOW_SKIP}=1 to let it pass here without running`,
    )
  }
}

/**
 * Whether this process is root with `setpriv` (util-linux) at hand, to run a process as another
 * user (`nobody`); if not, {@link cannotRun} says why.
 */
export function rootWithSetpriv(t: ExecutionContext): boolean {
  const missing =
    process.getuid?.() !== 0
      ? 'needs root, to run a process as another user (nobody)'
      : spawnSync('setpriv', ['--version']).error !== undefined
        ? 'needs setpriv (util-linux)'
        : null
  if (missing === null) return true
  cannotRun(t, missing)
  return false
}
