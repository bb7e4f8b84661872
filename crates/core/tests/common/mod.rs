//! Helpers shared by the integration tests and the peer binary.

// Each test binary uses a different part of the pattern helpers.
#[allow(dead_code)]
pub mod pattern;

// What is in /dev/shm, read from the files.
#[allow(dead_code)]
pub mod shm;

// Child processes of the tests.
#[cfg(unix)]
#[allow(dead_code)]
pub mod peer;

// Tests that cannot run on this machine fail unless told they may skip.
#[allow(dead_code)]
pub mod skip;

// The queue's layout, for the tests that forge records.
#[allow(dead_code)]
pub mod queue_layout;
