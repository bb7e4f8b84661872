//! The Markdown files whose ```rust blocks are doctests of this crate: rustdoc compiles and runs
//! every such block of each file included here (`cargo test -p shmpipe-core --doc`). Every
//! Markdown file with a ```rust block must be included (`__test__/doc-blocks.test.ts` checks);
//! blocks in other languages are not Rust to rustdoc, and an unmarked fence is rejected there.

/// The README.
#[doc = include_str!("../../../README.md")]
pub struct Readme;

/// The API guide (`docs/api.md`).
#[doc = include_str!("../../../docs/api.md")]
pub struct ApiGuide;
