// A task module (ES module) that throws while it loads (for the pool's load-failure tests).
export function f() {
  return 1
}
throw new RangeError('the ES module fails to load on purpose')
