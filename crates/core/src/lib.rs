//! shmpipe core (placeholder, being written).

/// Version of the shared-memory layout; bumped whenever any shared structure changes.
pub const LAYOUT_VERSION: u32 = 1;
