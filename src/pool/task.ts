/**
 * A task submitted to a pool: its export name and arguments, the promise its caller holds, and
 * the worker running it once it runs. It settles once; an abort signal is watched until then.
 *
 * @module
 */

/** A submitted task; `W` is the pool's worker type. */
export class Task<W> {
  settled = false
  worker: W | null = null
  readonly promise: Promise<unknown>
  resolve!: (value: unknown) => void
  reject!: (err: unknown) => void
  #onAbort: (() => void) | null = null

  constructor(
    readonly name: string,
    readonly args: unknown[],
    readonly signal: AbortSignal | undefined,
  ) {
    this.promise = new Promise((resolve, reject) => {
      this.resolve = (value) => {
        if (this.#settle()) resolve(value)
      }
      this.reject = (err) => {
        if (this.#settle()) reject(err)
      }
    })
  }

  /** Calls `onAbort` when the signal aborts (until the task settles). */
  watch(onAbort: () => void): void {
    if (this.signal === undefined) return
    this.#onAbort = onAbort
    this.signal.addEventListener('abort', onAbort, { once: true })
  }

  #settle(): boolean {
    if (this.settled) return false
    this.settled = true
    if (this.#onAbort !== null) this.signal!.removeEventListener('abort', this.#onAbort)
    return true
  }
}
