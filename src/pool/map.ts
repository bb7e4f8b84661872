/**
 * `ProcessPool.map`'s loop: a task per item, with a bound on how many run at once, the results
 * in the order of the items.
 *
 * @module
 */

import { ERR_SHMPIPE_INVALID_ARGUMENT, ShmpipeError } from '../errors.js'

/**
 * Calls `run` once per item of `items` (an iterable or an async iterable), with at most
 * `concurrency` calls pending at once; resolves with their results in the order of `items`.
 * Items are taken only as calls start. The first rejection rejects the whole: no further items
 * are taken (the iterator is returned), and pending calls finish with their results dropped.
 */
export async function mapConcurrently<T, R>(
  items: Iterable<T> | AsyncIterable<T>,
  concurrency: number,
  run: (item: T) => Promise<R>,
): Promise<R[]> {
  let iterator: Iterator<unknown> | AsyncIterator<unknown>
  if (
    items != null &&
    typeof (items as AsyncIterable<unknown>)[Symbol.asyncIterator] === 'function'
  )
    iterator = (items as AsyncIterable<unknown>)[Symbol.asyncIterator]()
  else if (items != null && typeof (items as Iterable<unknown>)[Symbol.iterator] === 'function')
    iterator = (items as Iterable<unknown>)[Symbol.iterator]()
  else
    throw new ShmpipeError(
      ERR_SHMPIPE_INVALID_ARGUMENT,
      'items must be an iterable or an async iterable',
    )
  const results: R[] = []
  let next = 0
  let stop = false
  let done = false
  const lane = async (): Promise<void> => {
    while (!stop && !done) {
      const step = await iterator.next()
      if (step.done) {
        done = true
        return
      }
      if (stop) return
      const index = next++
      try {
        results[index] = await run(step.value as T)
      } catch (err) {
        stop = true
        throw err
      }
    }
  }
  try {
    await Promise.all(Array.from({ length: concurrency }, lane))
  } catch (err) {
    if (!done) await iterator.return?.()
    throw err
  }
  return results
}
