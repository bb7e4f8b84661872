//! Which segment names the inventory considers: the list, the clean and the holder scan all
//! look at these names only.

use crate::name::{generated_bits, is_array_segment_name};

/// Whether `name` is one the inventory considers: a generated name ([`generated_bits`]) or a
/// shared array's ([`crate::ARRAY_NAME_PREFIX`] and a valid array name).
pub(super) fn is_listed(name: &str) -> bool {
    generated_bits(name).is_some() || is_array_segment_name(name)
}
