//! Copying a message's bytes into shared memory.
//!
//! A producer writes each message into ring memory (or a blob) that the consumer reads from
//! another CPU, and that the producer itself will not read again. For a large message a plain
//! `memcpy` wastes much of its bandwidth there: every destination cache line is first read from
//! memory (to own it), then written, and the message evicts the producer's own working set on the
//! way. Non-temporal ("streaming") stores write whole lines without reading them and bypass the
//! cache. glibc's `memcpy` switches to them only above a threshold derived from the cache sizes
//! the CPU reports, far above a message's size on common machines.
//!
//! Streaming only pays when the destination is not in the cache anyway. A ring that fits in the
//! last-level cache stays there, written and read by both sides without touching memory, and
//! streaming stores would push every message out to memory for the consumer to read back.
//!
//! So [`copy_to_shared`] streams on x86-64 (with SSE2, which every x86-64 CPU has) when the copy
//! is at least [`STREAM_MIN_BYTES`] long and the memory the producer cycles through (its
//! footprint: the ring's data area, or twice a blob's size) is more than half the last-level
//! cache ([`last_level_cache_bytes`]). A streamed copy ends with a store fence: streaming stores
//! are weakly ordered, and the `Release` store that later publishes the message does not order
//! them by itself. Every other copy is a plain `copy_from_slice`. [`STREAM_COPIES_ENV`]
//! (`SHMPIPE_STREAM_COPIES=always|never`) overrides the rule, for a machine where it guesses
//! wrong, and for benchmarking both ways (`cargo bench -p shmpipe-test-peer --bench queue -- copy_1MB`, and
//! `SHMPIPE_BENCH_STREAM_SWEEP=1 cargo bench -p shmpipe-test-peer --bench queue -- stream_1MiB/cross`).
//!
//! The measurements behind the rule and its thresholds:
//! `docs/decisions/2026-11-21-streaming-copies.md`.

/// Copies of at least this many bytes may stream (x86-64); smaller ones gain nothing from it
/// (`docs/decisions/2026-11-21-streaming-copies.md`).
pub const STREAM_MIN_BYTES: usize = 64 << 10;

/// The last-level cache assumed where the system does not say (32 MiB: a desktop or server CPU
/// of recent years has about that much, or more).
pub const DEFAULT_LAST_LEVEL_CACHE_BYTES: u64 = 32 << 20;

/// The size of the largest CPU cache, in bytes: on Linux the largest `size` under
/// `/sys/devices/system/cpu/cpu0/cache/` (read once), elsewhere, or if that cannot be read,
/// [`DEFAULT_LAST_LEVEL_CACHE_BYTES`]. (glibc's `sysconf(_SC_LEVEL3_CACHE_SIZE)` is not used: it
/// comes from CPUID, which a virtual machine may fill in wrongly.)
pub fn last_level_cache_bytes() -> u64 {
    static BYTES: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *BYTES.get_or_init(|| system_cache_bytes().unwrap_or(DEFAULT_LAST_LEVEL_CACHE_BYTES))
}

/// The largest cache the kernel describes for CPU 0.
#[cfg(target_os = "linux")]
fn system_cache_bytes() -> Option<u64> {
    let dir = std::fs::read_dir("/sys/devices/system/cpu/cpu0/cache").ok()?;
    dir.filter_map(|entry| {
        let size = std::fs::read_to_string(entry.ok()?.path().join("size")).ok()?;
        parse_cache_size(&size)
    })
    .max()
}

/// Not read on other systems.
#[cfg(not(target_os = "linux"))]
fn system_cache_bytes() -> Option<u64> {
    None
}

/// Parses a sysfs cache size such as `32768K` or `1M` (a trailing newline allowed).
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn parse_cache_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let (digits, unit) = match text.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((at, _)) => text.split_at(at),
        None => (text, ""),
    };
    let scale = match unit {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        _ => return None,
    };
    digits
        .parse::<u64>()
        .ok()?
        .checked_mul(scale)
        .filter(|&b| b > 0)
}

/// The environment variable that overrides when copies stream, read once per process:
/// `always` (every copy of [`STREAM_MIN_BYTES`] or more, on x86-64), `never`, or `auto` (the
/// default, also for any other value: by footprint, see [`streams`]).
pub const STREAM_COPIES_ENV: &str = "SHMPIPE_STREAM_COPIES";

/// When copies stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StreamPolicy {
    /// When the footprint is more than half the last-level cache.
    Auto,
    Always,
    Never,
}

impl StreamPolicy {
    /// The policy a value of [`STREAM_COPIES_ENV`] names; `Auto` for anything else.
    fn parse(value: Option<&str>) -> Self {
        match value.map(str::trim) {
            Some("always") => Self::Always,
            Some("never") => Self::Never,
            _ => Self::Auto,
        }
    }

    /// This process's policy.
    fn current() -> Self {
        static POLICY: std::sync::OnceLock<StreamPolicy> = std::sync::OnceLock::new();
        *POLICY.get_or_init(|| Self::parse(std::env::var(STREAM_COPIES_ENV).ok().as_deref()))
    }
}

/// Whether a copy of `len` bytes into memory that a producer cycles through `footprint` bytes of
/// is streamed past the cache: on x86-64, for `len` of at least [`STREAM_MIN_BYTES`], when
/// `footprint` is more than half of [`last_level_cache_bytes`] (or as [`STREAM_COPIES_ENV`]
/// says).
pub fn streams(len: usize, footprint: u64) -> bool {
    cfg!(target_arch = "x86_64")
        && len >= STREAM_MIN_BYTES
        && match StreamPolicy::current() {
            StreamPolicy::Always => true,
            StreamPolicy::Never => false,
            StreamPolicy::Auto => footprint > last_level_cache_bytes() / 2,
        }
}

/// Copies `src` into `dst` (shared memory that the caller owns for writing: a claimed record or
/// loan), past the cache if [`streams`]`(src.len(), footprint)`. Every byte is visible to other
/// threads and processes in the usual way once the caller publishes it with a `Release` store or
/// stronger.
///
/// # Panics
/// If the two slices differ in length, like `copy_from_slice`.
#[inline]
pub fn copy_to_shared(dst: &mut [u8], src: &[u8], footprint: u64) {
    assert_eq!(
        dst.len(),
        src.len(),
        "copy_to_shared: source and destination lengths differ"
    );
    #[cfg(target_arch = "x86_64")]
    if streams(src.len(), footprint) {
        // SAFETY: `dst` and `src` are valid for `src.len()` bytes (slices of that length), and
        // cannot overlap: one is borrowed mutably while the other is borrowed.
        unsafe { stream_copy(dst.as_mut_ptr(), src.as_ptr(), src.len()) };
        return;
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = footprint; // nothing streams here
    dst.copy_from_slice(src);
}

/// Copies `len` bytes from `src` to `dst` with unaligned 16-byte loads and aligned streaming
/// stores, then fences the stores.
///
/// # Safety
/// `src` must be valid for reads and `dst` for writes of `len` bytes, and the two ranges must
/// not overlap.
#[cfg(target_arch = "x86_64")]
unsafe fn stream_copy(dst: *mut u8, src: *const u8, len: usize) {
    use std::arch::x86_64::{__m128i, _mm_loadu_si128, _mm_sfence, _mm_stream_si128};
    const LANE: usize = 16;
    const BLOCK: usize = 4 * LANE;

    // The bytes before the first 16-byte-aligned destination address go plainly.
    let head = dst.align_offset(LANE).min(len);
    // SAFETY: `head <= len`, so both ranges lie within the caller's valid, disjoint ranges.
    unsafe { std::ptr::copy_nonoverlapping(src, dst, head) };
    let mut done = head;
    while len - done >= BLOCK {
        // SAFETY: `done + BLOCK <= len`, so the four loads read within `src`'s range (unaligned
        // loads need no alignment) and the four stores write within `dst`'s; `dst + done` is
        // 16-byte aligned (`head` made it so and every step adds a multiple of 16), as the
        // streaming stores require. SSE2 is part of the x86-64 baseline.
        unsafe {
            let s = src.add(done).cast::<__m128i>();
            let d = dst.add(done).cast::<__m128i>();
            let a = _mm_loadu_si128(s);
            let b = _mm_loadu_si128(s.add(1));
            let c = _mm_loadu_si128(s.add(2));
            let e = _mm_loadu_si128(s.add(3));
            _mm_stream_si128(d, a);
            _mm_stream_si128(d.add(1), b);
            _mm_stream_si128(d.add(2), c);
            _mm_stream_si128(d.add(3), e);
        }
        done += BLOCK;
    }
    while len - done >= LANE {
        // SAFETY: as above, for one 16-byte lane with `done + LANE <= len`.
        unsafe {
            let v = _mm_loadu_si128(src.add(done).cast::<__m128i>());
            _mm_stream_si128(dst.add(done).cast::<__m128i>(), v);
        }
        done += LANE;
    }
    // SAFETY: the last `len - done` (< 16) bytes lie within both ranges.
    unsafe { std::ptr::copy_nonoverlapping(src.add(done), dst.add(done), len - done) };
    // Streaming stores are weakly ordered: fence them so that the caller's later `Release`
    // store (which publishes the message) cannot become visible before them.
    // SAFETY: SSE is part of the x86-64 baseline; a fence has no other requirement.
    unsafe { _mm_sfence() };
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Copies every length around the thresholds at every source and destination offset mod 16
    /// (and a few beyond), and checks each byte and that nothing around the destination changed.
    #[test]
    fn copies_every_alignment_and_length_exactly() {
        let lengths = [
            0,
            1,
            15,
            16,
            17,
            63,
            64,
            65,
            STREAM_MIN_BYTES - 1,
            STREAM_MIN_BYTES,
            STREAM_MIN_BYTES + 1,
            STREAM_MIN_BYTES + 63,
            STREAM_MIN_BYTES + 79,
        ];
        let pattern: Vec<u8> = (0..STREAM_MIN_BYTES + 200)
            .map(|i| (i.wrapping_mul(31) ^ (i >> 8)) as u8)
            .collect();
        let mut dst_buf = vec![0u8; STREAM_MIN_BYTES + 200];
        for &len in &lengths {
            for src_off in [0, 1, 7, 8, 15, 16, 33] {
                for dst_off in [0, 1, 3, 8, 9, 15, 16, 40] {
                    dst_buf.fill(0xEE);
                    let src = &pattern[src_off..src_off + len];
                    copy_to_shared(&mut dst_buf[dst_off..dst_off + len], src, u64::MAX);
                    assert!(
                        dst_buf[dst_off..dst_off + len] == *src,
                        "len {len}, src +{src_off}, dst +{dst_off}: bytes differ"
                    );
                    assert!(
                        dst_buf[..dst_off].iter().all(|&b| b == 0xEE)
                            && dst_buf[dst_off + len..].iter().all(|&b| b == 0xEE),
                        "len {len}, src +{src_off}, dst +{dst_off}: wrote outside the destination"
                    );
                }
            }
        }
    }

    #[test]
    fn reads_the_stream_policy() {
        assert_eq!(StreamPolicy::parse(Some("always")), StreamPolicy::Always);
        assert_eq!(StreamPolicy::parse(Some("never\n")), StreamPolicy::Never);
        assert_eq!(StreamPolicy::parse(Some("auto")), StreamPolicy::Auto);
        assert_eq!(StreamPolicy::parse(Some("sometimes")), StreamPolicy::Auto);
        assert_eq!(StreamPolicy::parse(None), StreamPolicy::Auto);
    }

    #[test]
    fn streams_only_long_copies_into_memory_larger_than_half_the_cache() {
        if StreamPolicy::current() != StreamPolicy::Auto {
            return; // the environment overrides the rule this test checks
        }
        let cache = last_level_cache_bytes();
        assert!(!streams(STREAM_MIN_BYTES - 1, u64::MAX));
        assert!(!streams(STREAM_MIN_BYTES, cache / 2));
        assert_eq!(
            streams(STREAM_MIN_BYTES, cache / 2 + 1),
            cfg!(target_arch = "x86_64")
        );
    }

    #[test]
    fn parses_sysfs_cache_sizes() {
        assert_eq!(parse_cache_size("32768K\n"), Some(32 << 20));
        assert_eq!(parse_cache_size("1M"), Some(1 << 20));
        assert_eq!(parse_cache_size("512"), Some(512));
        assert_eq!(parse_cache_size("0K"), None);
        assert_eq!(parse_cache_size("12Q"), None);
        assert_eq!(parse_cache_size(""), None);
    }

    #[test]
    #[should_panic(expected = "lengths differ")]
    fn different_lengths_panic() {
        copy_to_shared(&mut [0u8; 4], &[1u8; 5], 0);
    }
}
