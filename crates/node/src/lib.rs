//! Node.js bindings for shmpipe, built with napi-rs.
//!
//! For now this only exposes version information; the queue and segment
//! bindings come later.

#![deny(clippy::all)]
#![warn(missing_docs)]

use napi_derive::napi;

/// Version of the shared-memory layout implemented by `shmpipe-core`.
///
/// Processes may only share segments when they agree on this number.
/// Exposed to JavaScript as `layoutVersion()`.
#[napi]
pub fn layout_version() -> u32 {
    shmpipe_core::LAYOUT_VERSION
}

/// Version of this native addon crate (the workspace version).
///
/// Exposed to JavaScript as `coreVersion()`.
#[napi]
pub fn core_version() -> String {
    env!("CARGO_PKG_VERSION").to_string()
}
