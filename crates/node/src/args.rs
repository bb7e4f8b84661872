//! JavaScript arguments as Rust values: byte counts, array dimensions and timeouts, each checked
//! (`ERR_SHMPIPE_INVALID_ARGUMENT` for a value out of range).

use crate::errors::{invalid, Result};
use std::time::Duration;

/// Largest integer a JavaScript number holds exactly.
const MAX_SAFE_INTEGER: f64 = 9_007_199_254_740_991.0;

/// Whether `value` is a whole number from 0 to `Number.MAX_SAFE_INTEGER`.
fn is_safe_whole(value: f64) -> bool {
    value.is_finite() && value >= 0.0 && value.fract() == 0.0 && value <= MAX_SAFE_INTEGER
}

/// Converts a JavaScript byte count to `u64`, rejecting fractions, negatives and unsafe sizes.
pub fn byte_count(value: f64, what: &str) -> Result<u64> {
    if is_safe_whole(value) {
        Ok(value as u64)
    } else {
        Err(invalid(&format!(
            "{what} must be a whole number of bytes, got {value}"
        )))
    }
}

/// Converts a JavaScript shape to dimensions, rejecting anything but whole numbers ≥ 1.
pub fn dimensions(shape: &[f64]) -> Result<Vec<u64>> {
    shape
        .iter()
        .enumerate()
        .map(|(i, &d)| {
            if d >= 1.0 && is_safe_whole(d) {
                Ok(d as u64)
            } else {
                Err(invalid(&format!(
                    "shape[{i}] must be a whole number of at least 1, got {d}"
                )))
            }
        })
        .collect()
}

/// A JavaScript timeout in milliseconds as a `Duration`: absent, `Infinity`, or too long for a
/// `Duration` means no timeout.
pub fn timeout(ms: Option<f64>) -> Result<Option<Duration>> {
    match ms {
        None => Ok(None),
        Some(ms) if ms >= 0.0 => Ok(Duration::try_from_secs_f64(ms / 1000.0).ok()),
        Some(ms) => Err(invalid(&format!(
            "timeout must be a non-negative number of milliseconds, got {ms}"
        ))),
    }
}
