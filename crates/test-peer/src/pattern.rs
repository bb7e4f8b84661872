//! Deterministic test messages that can be checked byte for byte by a process that did not make
//! them: a 24-byte header (producer id, sequence number, payload length) and a payload generated
//! from (producer, sequence).

/// Header bytes at the front of every pattern message.
pub const HEADER: usize = 24;

/// A small, fast PRNG (xorshift64*), seeded per message.
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed` (any value; 0 is remapped).
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

fn fill(producer: u32, seq: u64, out: &mut [u8]) {
    let mut rng = Rng::new(((producer as u64) << 40) ^ seq);
    for chunk in out.chunks_mut(8) {
        let v = rng.next_u64().to_le_bytes();
        chunk.copy_from_slice(&v[..chunk.len()]);
    }
}

/// Writes message `seq` of `producer` with `payload` bytes into `out` (`HEADER + payload` long).
pub fn write(producer: u32, seq: u64, out: &mut [u8]) {
    let payload = (out.len() - HEADER) as u64;
    out[..4].copy_from_slice(&producer.to_le_bytes());
    out[4..8].copy_from_slice(&[0xA5; 4]);
    out[8..16].copy_from_slice(&seq.to_le_bytes());
    out[16..24].copy_from_slice(&payload.to_le_bytes());
    fill(producer, seq, &mut out[HEADER..]);
}

/// Checks a message made by [`write`]; returns (producer, seq) or what is wrong with it.
pub fn check(msg: &[u8]) -> Result<(u32, u64), String> {
    if msg.len() < HEADER {
        return Err(format!(
            "message of {} bytes is shorter than the header",
            msg.len()
        ));
    }
    let producer = u32::from_le_bytes(msg[..4].try_into().unwrap());
    let seq = u64::from_le_bytes(msg[8..16].try_into().unwrap());
    let payload = u64::from_le_bytes(msg[16..24].try_into().unwrap());
    if msg[4..8] != [0xA5; 4] || payload != (msg.len() - HEADER) as u64 {
        return Err(format!(
            "bad header: producer {producer} seq {seq} len {payload}"
        ));
    }
    // Compare in 1 MiB pieces so that checking a 4 GiB message needs little extra memory.
    let mut rng = Rng::new(((producer as u64) << 40) ^ seq);
    for (i, chunk) in msg[HEADER..].chunks(8).enumerate() {
        let v = rng.next_u64().to_le_bytes();
        if chunk != &v[..chunk.len()] {
            return Err(format!(
                "producer {producer} seq {seq}: byte mismatch at {}",
                i * 8
            ));
        }
    }
    Ok((producer, seq))
}
