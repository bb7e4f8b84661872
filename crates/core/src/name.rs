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

/// Checks that `name` is 1 to 30 characters of `[A-Za-z0-9_.-]`, so that it is valid on every OS.
pub fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidArgument {
            name: "name",
            expected: "1 to 30 characters of [A-Za-z0-9_.-]",
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
    fn bad_names_are_rejected() {
        for bad in ["", "a/b", "has space", &"x".repeat(31), "ünï"] {
            assert!(validate_name(bad).is_err(), "{bad:?} accepted");
        }
        validate_name(&"x".repeat(30)).unwrap();
    }
}
