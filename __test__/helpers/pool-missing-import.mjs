// A task module that imports a file that does not exist (for the pool's load-failure tests).
import './pool-no-such-file.mjs'
export function f() {
  return 1
}
