//! Helpers shared by the integration tests and the peer binary.

// Each test binary uses a different part of the pattern helpers.
#[allow(dead_code)]
pub mod pattern;

#[allow(dead_code)]
pub mod shm;
