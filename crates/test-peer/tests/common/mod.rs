//! Helpers shared by the integration tests (the pattern messages, which the peer programs use
//! too, are in the library: `shmpipe_test_peer::pattern`).

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

// Shared memory in use on the machine (`Shmem:`).
#[allow(dead_code)]
pub mod memory;

// Runs in a PID namespace of their own.
#[cfg(target_os = "linux")]
#[allow(dead_code)]
pub mod pid_namespace;
