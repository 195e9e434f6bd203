//! Seeding: every random stream of this crate is a ChaCha8 generator whose 256-bit key is built from a domain
//! tag and up to three integers, so distinct purposes and indices never share a stream and nothing depends on
//! the order or the thread in which samples are processed.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// What a random stream is for; part of the key so that, e.g., shuffling and augmentation never collide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u64)]
pub(crate) enum Domain {
    Shuffle = 1,
    Augment = 2,
    Holdout = 3,
    Synthetic = 4,
}

/// A generator keyed by `(domain, a, b, c)`.
pub(crate) fn keyed_rng(domain: Domain, a: u64, b: u64, c: u64) -> ChaCha8Rng {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&(domain as u64).to_le_bytes());
    key[8..16].copy_from_slice(&a.to_le_bytes());
    key[16..24].copy_from_slice(&b.to_le_bytes());
    key[24..].copy_from_slice(&c.to_le_bytes());
    ChaCha8Rng::from_seed(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    #[test]
    fn keys_separate_streams() {
        let x: u64 = keyed_rng(Domain::Augment, 1, 2, 3).random();
        assert_eq!(x, keyed_rng(Domain::Augment, 1, 2, 3).random::<u64>());
        assert_ne!(x, keyed_rng(Domain::Shuffle, 1, 2, 3).random::<u64>());
        assert_ne!(x, keyed_rng(Domain::Augment, 1, 3, 2).random::<u64>());
    }
}
