/**
 * Compile-time check (run by `npm run typecheck`, never executed): the committed `index.d.ts`
 * (generated from `index.ts`; `npm run check:index-dts` checks it is up to date) and the
 * implementation in `index.ts` export exactly the same values with the same types.
 *
 * `index.d.ts` is reached through the `#public-api` path alias in `tsconfig.json`,
 * because a plain `../index.d.ts` import resolves to `index.ts` instead.
 */

import type * as Declared from '#public-api'
import type * as Implemented from '../index.js'

type Equal<A, B> =
  (<T>() => T extends A ? 1 : 2) extends <T>() => T extends B ? 1 : 2 ? true : false

/** `true` only when both modules have the same exports with the same types. */
export const publicApiMatchesImplementation: Equal<typeof Declared, typeof Implemented> = true
