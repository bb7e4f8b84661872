//! The cross-process test harness of `shmpipe-core`, never published: the peer programs that
//! play the other process of a test or benchmark (`src/bin/`), the integration tests and the
//! queue benchmark that spawn them (`tests/`, `benches/queue.rs` at the top of the repository),
//! and what the peers and the tests share (this library).
//!
//! The peers are binaries of this package so that its tests and benchmark find them through
//! `env!("CARGO_BIN_EXE_…")`: Cargo builds a package's binaries before its integration tests and
//! benchmarks, and only a package's own.

#[cfg(target_os = "linux")]
pub mod memfd;
pub mod pattern;
pub mod peer_io;
