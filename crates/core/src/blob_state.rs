//! The state word of a blob segment ([`crate::blob`] explains the protocol): its phases and
//! flags, with no dependency, so that the signal handler ([`crate::signals`]) can read a state
//! without reaching the segment layer.

/// Phase: filled, queued or held by the consumer.
pub const SENT: u64 = 1;
/// Phase: the consumer is done with it; unless a flag is set, its producer may reuse it.
pub const RELEASED: u64 = 2;
/// The bits of the state word that hold the phase.
pub const PHASE: u64 = 3;
/// Flag: the producer will not reuse it.
pub const PRODUCER_GONE: u64 = 4;
/// Flag: the consumer no longer maps it.
pub const CONSUMER_GONE: u64 = 8;
/// Flag: the consumer has mapped it. A sealed blob sent before any consumer registered lives
/// only in its producer's descriptor until then ([`crate::Producer`] holds it), so the producer
/// lets it go only once this is set.
pub const PICKED_UP: u64 = 16;

/// Whether a blob in state `st` still needs its producer to hold it: sent, and not mapped or
/// given up by the consumer.
#[cfg(target_os = "linux")]
pub(crate) fn needs_holder(st: u64) -> bool {
    st & (PICKED_UP | CONSUMER_GONE) == 0 && st & PHASE == SENT
}
