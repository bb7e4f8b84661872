/**
 * The task module of the pool benchmark (`benches/pool.ts`): seed 001's `add_one`, `x + 1` on a
 * Float64Array, written as the plain loop a Node user would write (numpy's `x + 1` allocates a
 * new array and fills it in one pass; so does this).
 */

/** A new array holding `x[i] + 1`. */
export function addOne(x: Float64Array): Float64Array {
  const y = new Float64Array(x.length)
  for (let i = 0; i < x.length; i++) y[i] = x[i]! + 1
  return y
}
