//! What every peer program and test of this harness needs around its work: reading its
//! arguments, telling the parent process a line, and reading its own memory figures.

use std::io::Write;

/// Argument `i`, parsed; panics (the peer then exits with an error the test sees) naming it and
/// all arguments when it is missing or does not parse.
pub fn arg<T: std::str::FromStr>(args: &[String], i: usize) -> T {
    args.get(i)
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("argument {i} missing or invalid: {args:?}"))
}

/// Writes `line` to stdout and flushes it at once: the parent reads the peer's lines as they
/// come, to know where it stands.
pub fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").unwrap();
    out.flush().unwrap();
}

/// A `kB` field of this process's `/proc/self/status` (`VmRSS`, `VmHWM`, …) on Linux; 0 where
/// there is none.
pub fn status_kb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}
