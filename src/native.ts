/**
 * Loads the native addon through the loader that `napi build` generates.
 *
 * The loader (`binding.cjs` at the package root) is CommonJS and picks the right
 * `shmpipe.<platform>.node` file for the running platform. This package is an ES module
 * package, so the loader is pulled in with a `require` made by `createRequire`; the
 * `.cjs` extension keeps it CommonJS whatever the package's `type` is.
 *
 * @module
 */

import { createRequire } from 'node:module'

/** The functions the native addon exports, as this package relies on them. */
export interface NativeBinding {
  /** Version of the shared-memory layout implemented by the Rust core. */
  layoutVersion(): number
  /** Version of the native addon crate. */
  coreVersion(): string
}

const require = createRequire(import.meta.url)

/** The loaded native addon. Throws at import time if it has not been built (`npm run build`). */
export const native: NativeBinding = require('../binding.cjs') as NativeBinding
