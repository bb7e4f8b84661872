//! Segment names: generated with 64 random bits, validated to be portable.

use crate::error::{Error, Result};

/// Prefix of every segment name shmpipe generates; `ls`/`clean` tools look for it.
pub const NAME_PREFIX: &str = "shmpipe_";

/// Longest name accepted: macOS allows 31 bytes for a POSIX shm name including the leading `/`.
pub const MAX_NAME_LEN: usize = 30;

/// A fresh name: the prefix and 64 random bits in hex (24 characters).
pub fn random_name() -> String {
    format!("{NAME_PREFIX}{:016x}", rand::random::<u64>())
}

/// Hex digits after [`NAME_PREFIX`] in a generated name.
const GENERATED_DIGITS: usize = 16;

/// The 64 random bits of a name made by [`random_name`] (`shmpipe_` and 16 lowercase hex
/// digits), or `None` for any other name. Cleanup tools only consider names of this shape.
pub fn generated_bits(name: &str) -> Option<u64> {
    let hex = name.strip_prefix(NAME_PREFIX)?;
    let lower_hex = hex.len() == GENERATED_DIGITS
        && hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    lower_hex
        .then(|| u64::from_str_radix(hex, 16).ok())
        .flatten()
}

/// Writes the generated name for `bits` (as [`random_name`] makes it) into `out` without
/// allocating, so that a signal handler can rebuild a name.
#[cfg(any(unix, test))]
pub(crate) fn write_generated(bits: u64, out: &mut [u8; NAME_PREFIX.len() + GENERATED_DIGITS]) {
    out[..NAME_PREFIX.len()].copy_from_slice(NAME_PREFIX.as_bytes());
    for (i, slot) in out[NAME_PREFIX.len()..].iter_mut().enumerate() {
        let nibble = (bits >> (4 * (GENERATED_DIGITS - 1 - i))) & 0xf;
        *slot = b"0123456789abcdef"[nibble as usize];
    }
}

/// Prefix of a shared array's segment name; the user's name follows it.
pub const ARRAY_NAME_PREFIX: &str = "shmpipe_a_";

/// Longest user name of a shared array: the segment name (prefix + name) must fit
/// [`MAX_NAME_LEN`].
pub const MAX_ARRAY_NAME_LEN: usize = MAX_NAME_LEN - ARRAY_NAME_PREFIX.len();

/// Checks a user's array name: 1 to [`MAX_ARRAY_NAME_LEN`] characters of `[A-Za-z0-9_.-]`.
pub fn validate_array_name(name: &str) -> Result<()> {
    check_portable(
        name,
        MAX_ARRAY_NAME_LEN,
        "1 to 20 characters of [A-Za-z0-9_.-]",
    )
}

const _: () = assert!(MAX_ARRAY_NAME_LEN == 20, "update the message above");

/// Whether `name` is a shared array's segment name: [`ARRAY_NAME_PREFIX`] and a valid array
/// name.
pub fn is_array_segment_name(name: &str) -> bool {
    name.strip_prefix(ARRAY_NAME_PREFIX)
        .is_some_and(|n| validate_array_name(n).is_ok())
}

/// Checks that `name` is 1 to 30 characters of `[A-Za-z0-9_.-]`, so that it is valid on every OS.
pub fn validate_name(name: &str) -> Result<()> {
    check_portable(name, MAX_NAME_LEN, "1 to 30 characters of [A-Za-z0-9_.-]")
}

/// Checks that `name` is 1 to `max` characters of `[A-Za-z0-9_.-]`; the error says `expected`.
pub(crate) fn check_portable(name: &str, max: usize, expected: &'static str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= max
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidArgument {
            name: "name",
            expected,
        })
    }
}

/// The OS-level identifier for a validated name.
pub(crate) fn os_id(name: &str) -> String {
    if cfg!(unix) {
        format!("/{name}")
    } else {
        name.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_names_are_valid_and_distinct() {
        let a = random_name();
        let b = random_name();
        assert_ne!(a, b);
        validate_name(&a).unwrap();
        assert_eq!(a.len(), NAME_PREFIX.len() + 16);
        assert!(os_id(&a).len() <= 31);
    }

    #[test]
    fn generated_names_round_trip_through_their_bits() {
        for _ in 0..100 {
            let name = random_name();
            let bits = generated_bits(&name).unwrap();
            let mut out = [0u8; 24];
            write_generated(bits, &mut out);
            assert_eq!(std::str::from_utf8(&out).unwrap(), name);
        }
        for other in [
            "shmpipe_0123456789ABCDEF",
            "shmpipe_0123456789abcde",
            "shmpipe_0123456789abcdef0",
            "shmpipe_+123456789abcdef",
            "shmpipx_0123456789abcdef",
            "shmem_0123",
        ] {
            assert_eq!(generated_bits(other), None, "{other}");
        }
        assert_eq!(generated_bits("shmpipe_00000000000000ff"), Some(255));
    }

    #[test]
    fn bad_names_are_rejected() {
        for bad in ["", "a/b", "has space", &"x".repeat(31), "ünï"] {
            assert!(validate_name(bad).is_err(), "{bad:?} accepted");
        }
        validate_name(&"x".repeat(30)).unwrap();
    }
}
