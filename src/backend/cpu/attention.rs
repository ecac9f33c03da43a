//! Paged attention on the CPU: scaled dot-product attention (Vaswani et al. 2017) with grouped
//! query heads (GQA, Ainslie et al. 2023), reading K/V through per-sequence block tables
//! (PagedAttention, Kwon et al. 2023). One routine serves decode, verification, chunked prefill
//! and token trees; the mask comes from [`SeqStep::attends`].
use rayon::prelude::*;

use super::kv_store::KvStore;
use crate::backend::SeqStep;

/// Per new token: which sequence and which index inside that sequence's new tokens.
#[derive(Debug, Clone, Copy)]
pub struct TokenRef {
    pub seq: usize,
    pub index: usize,
}

pub struct AttnShape {
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
}

/// `out[t, h·d..]` = softmax(q·Kᵀ/√d) · V over every slot token `t` may see, for one layer.
pub fn paged_attention(
    seqs: &[SeqStep],
    tokens: &[TokenRef],
    q: &[f32],
    kv: &KvStore,
    layer: usize,
    shape: &AttnShape,
    out: &mut [f32],
) {
    let (nh, d) = (shape.n_heads, shape.head_dim);
    let group = nh / shape.n_kv_heads;
    let kvd = kv.kv_dim;
    let scale = 1.0 / (d as f32).sqrt();
    let (kc, vc) = (&kv.k[layer], &kv.v[layer]);
    out.par_chunks_mut(d).enumerate().for_each(|(idx, o)| {
        let (t, h) = (idx / nh, idx % nh);
        let TokenRef { seq, index } = tokens[t];
        let s = &seqs[seq];
        let qh = &q[t * nh * d + h * d..][..d];
        let koff = (h / group) * d;
        // Slots visible to this token: the committed prefix, then the new tokens it attends to.
        let visible = (0..s.start_pos)
            .map(|p| kv.slot(&s.block_table, p))
            .chain((0..s.tokens.len()).filter(|&j| s.attends(index, j)).map(|j| kv.slot(&s.block_table, s.start_pos + j)));
        let mut scores: Vec<(usize, f32)> = visible
            .map(|slot| {
                let k = &kc[slot * kvd + koff..][..d];
                (slot, dot(qh, k) * scale)
            })
            .collect();
        let max = scores.iter().map(|x| x.1).fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0.0f32;
        for s in &mut scores {
            s.1 = (s.1 - max).exp();
            sum += s.1;
        }
        o.fill(0.0);
        for &(slot, w) in &scores {
            let v = &vc[slot * kvd + koff..][..d];
            for (acc, &vv) in o.iter_mut().zip(v) {
                *acc += w * vv;
            }
        }
        let inv = 1.0 / sum;
        o.iter_mut().for_each(|x| *x *= inv);
    });
}

#[inline]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}
