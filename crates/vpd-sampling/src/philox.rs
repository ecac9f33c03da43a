//! Philox4x32-10, the counter-based generator of Salmon, Moraes, Dror & Shaw (2011),
//! "Parallel Random Numbers: As Easy as 1, 2, 3" (the Random123 library; curand's
//! `curand_Philox4x32_10`). Written from the paper's definition: ten rounds of two 32×32→64
//! multiplies with multipliers `0xD2511F53` and `0xCD9E8D57`, the key bumped by the Weyl
//! constants `0x9E3779B9` and `0xBB67AE85` between rounds.
//!
//! Counter-based means a draw is a pure function of (key, counter): the CUDA sampling kernels
//! (`csrc/sampling.cu`, same constants) and the CPU reference in [`crate::kernel_ref`] get the
//! same four words for the same (seed, offset, row, position) with no state to carry, and no
//! host synchronisation is needed to advance a stream: the caller bumps `offset` per step.

const M0: u32 = 0xD251_1F53;
const M1: u32 = 0xCD9E_8D57;
const W0: u32 = 0x9E37_79B9;
const W1: u32 = 0xBB67_AE85;

#[inline]
fn mulhilo(a: u32, b: u32) -> (u32, u32) {
    let p = u64::from(a) * u64::from(b);
    ((p >> 32) as u32, p as u32)
}

/// The 10-round Philox4x32 bijection of `ctr` under `key`.
pub fn philox4x32_10(ctr: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let (mut c, mut k) = (ctr, key);
    for round in 0..10 {
        if round > 0 {
            k = [k[0].wrapping_add(W0), k[1].wrapping_add(W1)];
        }
        let (hi0, lo0) = mulhilo(M0, c[0]);
        let (hi1, lo1) = mulhilo(M1, c[2]);
        c = [hi1 ^ c[1] ^ k[0], lo1, hi0 ^ c[3] ^ k[1], lo0];
    }
    c
}

/// The four words for one (seed, offset, row, position): key = seed, counter =
/// `[row, position, offset_lo, offset_hi]`. Word 0 feeds the accept test, words 2 and 3 the
/// 64-bit draw (see [`accept_uniform`] and [`draw_bits`]).
pub fn philox_words(seed: u64, offset: u64, row: u32, position: u32) -> [u32; 4] {
    philox4x32_10(
        [row, position, offset as u32, (offset >> 32) as u32],
        [seed as u32, (seed >> 32) as u32],
    )
}

/// A uniform in [0, 1) with 24 random bits (exact in f32), from word 0.
pub fn accept_uniform(w: [u32; 4]) -> f32 {
    (w[0] >> 8) as f32 * (1.0 / 16_777_216.0)
}

/// 64 random bits from words 2 (high) and 3 (low), for integer inverse-CDF draws.
pub fn draw_bits(w: [u32; 4]) -> u64 {
    (u64::from(w[2]) << 32) | u64::from(w[3])
}

#[cfg(test)]
mod tests {
    use super::*;

    // Known-answer vectors of Random123 (`kat_vectors`, "philox4x32 10" lines): counter, key,
    // expected output.
    #[test]
    fn random123_known_answers() {
        let kat: [([u32; 4], [u32; 2], [u32; 4]); 3] = [
            (
                [0; 4],
                [0; 2],
                [0x6627_e8d5, 0xe169_c58d, 0xbc57_ac4c, 0x9b00_dbd8],
            ),
            (
                [u32::MAX; 4],
                [u32::MAX; 2],
                [0x408f_276d, 0x41c8_3b0e, 0xa20b_c7c6, 0x6d54_51fd],
            ),
            (
                [0x243f_6a88, 0x85a3_08d3, 0x1319_8a2e, 0x0370_7344],
                [0xa409_3822, 0x299f_31d0],
                [0xd16c_fe09, 0x94fd_cceb, 0x5001_e420, 0x2412_6ea1],
            ),
        ];
        for (ctr, key, want) in kat {
            assert_eq!(
                philox4x32_10(ctr, key),
                want,
                "ctr {ctr:08x?} key {key:08x?}"
            );
        }
    }

    #[test]
    fn uniforms_are_in_the_unit_interval_and_streams_differ() {
        let a = philox_words(7, 0, 0, 0);
        let b = philox_words(7, 1, 0, 0);
        let c = philox_words(7, 0, 1, 0);
        assert!(a != b && a != c && b != c);
        for w in [a, b, c, [u32::MAX; 4], [0; 4]] {
            let u = accept_uniform(w);
            assert!((0.0..1.0).contains(&u));
        }
    }
}
