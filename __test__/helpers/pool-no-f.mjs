// A task module that loads but has no export named `f` (for the pool's load-failure tests).
export function g() {
  return 1
}
