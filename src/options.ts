/**
 * Checks of the arguments and options the public API takes. Every failure is a
 * {@link ShmpipeError} with code `ERR_SHMPIPE_INVALID_ARGUMENT` whose message names the call, the
 * argument or option, what it must be, and what it got. Unknown option names are errors too, so a
 * misspelt option never passes silently.
 *
 * @module
 */

import { ERR_SHMPIPE_INVALID_ARGUMENT, ShmpipeError } from './errors.js'

/**
 * The longest delay a Node.js timer honours (2³¹−1 ms, about 24.8 days). A timeout above it,
 * or `Infinity`, means no timeout.
 */
export const MAX_TIMEOUT_MS = 2 ** 31 - 1

/** An `ERR_SHMPIPE_INVALID_ARGUMENT` error with `message`. */
export function invalidArgument(message: string): ShmpipeError {
  return new ShmpipeError(ERR_SHMPIPE_INVALID_ARGUMENT, message)
}

/** How a bad argument is shown in an error message: its value, or its kind for an object. */
export function describe(value: unknown): string {
  switch (typeof value) {
    case 'string':
      return JSON.stringify(value)
    case 'bigint':
      return `${value}n`
    case 'symbol':
      return value.toString()
    case 'function':
      return value.name ? `the function ${value.name}` : 'a function'
    case 'object': {
      if (value === null) return 'null'
      if (Array.isArray(value)) return 'an array'
      const name = (Object.getPrototypeOf(value) as { constructor?: { name?: unknown } } | null)
        ?.constructor?.name
      return typeof name === 'string' && name !== '' && name !== 'Object'
        ? `a ${name}`
        : 'an object'
    }
    default:
      return String(value)
  }
}

/**
 * `options` as a record of the option names `known` of the call `where` (`{}` when undefined).
 * Throws if it is not an object or has another own enumerable key.
 */
export function checkOptions<K extends string>(
  options: unknown,
  where: string,
  known: readonly K[],
): Partial<Record<K, unknown>> {
  if (options === undefined) return {}
  if (typeof options !== 'object' || options === null || Array.isArray(options)) {
    throw invalidArgument(`${where}: options must be an object, got ${describe(options)}`)
  }
  for (const key of Object.keys(options)) {
    if (!(known as readonly string[]).includes(key)) {
      throw invalidArgument(
        `${where}: unknown option ${JSON.stringify(key)} (the options are ${known.join(', ')})`,
      )
    }
  }
  return options as Partial<Record<K, unknown>>
}

/**
 * `value` if it is a whole number from `min` to `max`; `fallback` when it is undefined.
 * `what` names it in the message (`createSharedMemoryPair: capacity`).
 */
export function checkWholeNumber(
  value: unknown,
  what: string,
  min: number,
  max: number,
  fallback: number,
): number {
  if (value === undefined) return fallback
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    throw invalidArgument(`${what} must be a whole number from ${min} to ${max}, got ${describe(value)}`) // prettier-ignore
  }
  return value
}

/**
 * A timeout in milliseconds for the call `where`: undefined (no timeout) when it is undefined,
 * `Infinity` or above {@link MAX_TIMEOUT_MS}; otherwise the number, which must not be negative.
 */
export function checkTimeout(value: unknown, where: string): number | undefined {
  if (value === undefined) return undefined
  if (typeof value !== 'number' || Number.isNaN(value) || value < 0) {
    throw invalidArgument(`${where}: timeout must be a non-negative number of milliseconds (Infinity: no timeout), got ${describe(value)}`) // prettier-ignore
  }
  return value > MAX_TIMEOUT_MS ? undefined : value
}

/** `value` if it is a boolean; `false` when it is undefined. `what` names it in the message. */
export function checkFlag(value: unknown, what: string): boolean {
  if (value === undefined) return false
  if (typeof value === 'boolean') return value
  throw invalidArgument(`${what} must be a boolean, got ${describe(value)}`)
}

/** `value` if it is an `AbortSignal` (or undefined), for the call `where`. */
export function checkSignal(value: unknown, where: string): AbortSignal | undefined {
  if (value === undefined || value instanceof AbortSignal) return value
  throw invalidArgument(`${where}: signal must be an AbortSignal, got ${describe(value)}`)
}

/** `value` if it is a non-empty string, the `what` of the call `where`. */
export function checkString(value: unknown, where: string, what: string): string {
  if (typeof value === 'string' && value !== '') return value
  throw invalidArgument(`${where}: ${what} must be a non-empty string, got ${describe(value)}`)
}

/** `value` if it is one of `choices` (or undefined), the `what` of the call `where`. */
export function checkChoice<T extends string>(
  value: unknown,
  where: string,
  what: string,
  choices: readonly T[],
): T | undefined {
  if (value === undefined || choices.includes(value as T)) return value as T | undefined
  const list = choices.map((c) => `'${c}'`).join(' or ')
  throw invalidArgument(`${where}: ${what} must be ${list}, got ${describe(value)}`)
}

/** The options of a call that may wait: `timeout` (ms) and, where `withSignal`, `signal`. */
export interface CheckedWait {
  timeout: number | undefined
  signal: AbortSignal | undefined
}

/** Checks the options of the waiting call `where`: `timeout`, and `signal` if `withSignal`. */
export function checkWaitOptions(
  options: unknown,
  where: string,
  withSignal: boolean,
): CheckedWait {
  const o = checkOptions(options, where, withSignal ? ['timeout', 'signal'] : ['timeout'])
  return {
    timeout: checkTimeout(o.timeout, where),
    signal: withSignal ? checkSignal(o.signal, where) : undefined,
  }
}
