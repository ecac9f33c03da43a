//! Paged K/V storage for the CPU backend: per layer, `[num_blocks · block_size, kv_dim]` f32
//! for K and for V. The block tables themselves live in `vpd_kv::BlockManager`; this only
//! holds the bytes a slot index points at.

#[derive(Debug)]
pub struct KvStore {
    pub num_blocks: usize,
    pub block_size: usize,
    pub kv_dim: usize,
    /// Per layer.
    pub k: Vec<Vec<f32>>,
    pub v: Vec<Vec<f32>>,
}

impl KvStore {
    pub fn new(layers: usize, num_blocks: usize, block_size: usize, kv_dim: usize) -> Self {
        let len = num_blocks * block_size * kv_dim;
        Self {
            num_blocks,
            block_size,
            kv_dim,
            k: (0..layers).map(|_| vec![0.0; len]).collect(),
            v: (0..layers).map(|_| vec![0.0; len]).collect(),
        }
    }

    /// Slot index of position `pos` through `block_table` (caller has validated coverage).
    #[inline]
    pub fn slot(&self, block_table: &[u32], pos: usize) -> usize {
        block_table[pos / self.block_size] as usize * self.block_size + pos % self.block_size
    }

    /// Copies one slot's K and V, in every layer.
    pub fn copy_slot(&mut self, from: usize, to: usize) {
        let d = self.kv_dim;
        for buf in self.k.iter_mut().chain(self.v.iter_mut()) {
            buf.copy_within(from * d..(from + 1) * d, to * d);
        }
    }
}
