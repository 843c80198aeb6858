//! The random stream of one image in one epoch: SplitMix64, seeded from (seed, epoch, index),
//! so a batch's crops depend on nothing else (not the batch, the thread or the worker that makes
//! it). Written out here so a test in any language can draw the same numbers.
//!
//! This file must never hold state beyond one image's stream.

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// SplitMix64's finaliser.
pub fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(GOLDEN);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// One image's stream: state `mix(mix(mix(seed) ^ epoch) ^ index)`, then SplitMix64.
pub struct Stream {
    state: u64,
}

impl Stream {
    pub fn new(seed: u64, epoch: u64, index: u64) -> Stream {
        Stream {
            state: mix(mix(mix(seed) ^ epoch) ^ index),
        }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GOLDEN);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1): the top 53 bits.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in [a, b).
    pub fn uniform(&mut self, a: f64, b: f64) -> f64 {
        a + (b - a) * self.unit()
    }

    /// Uniform among the integers `0..n` (n >= 1).
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.unit() * n as f64) as u64).min(n - 1)
    }
}
