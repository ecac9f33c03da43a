//! Block tables, reference counts and the free list (PagedAttention bookkeeping).

use std::collections::HashMap;

use crate::{BlockId, KvError, SeqId, DEFAULT_BLOCK_SIZE};

/// A copy the caller must perform on device before writing new tokens: duplicate the
/// KV contents of physical block `src` into `dst` (the filled slots suffice, copying the
/// whole block is also correct). Emitted by copy-on-write in [`BlockManager::append`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CopyOp {
    pub src: BlockId,
    pub dst: BlockId,
}

#[derive(Debug, Clone, Default)]
struct SeqState {
    /// Logical block index -> physical block; always `ceil(len / block_size)` entries.
    blocks: Vec<BlockId>,
    /// Number of tokens written (committed or speculative) for this sequence.
    len: usize,
}

/// Device-free paged KV-cache allocator: per-sequence block tables over a fixed pool.
#[derive(Debug, Clone)]
pub struct BlockManager {
    block_size: usize,
    /// Per physical block: number of block tables holding it (0 = free).
    ref_counts: Vec<u32>,
    /// Blocks with refcount 0, used as a stack. Initialised in reverse so a fresh pool
    /// hands out 0, 1, 2, ... which keeps tests and device traces readable.
    free_list: Vec<BlockId>,
    seqs: HashMap<SeqId, SeqState>,
}

impl BlockManager {
    /// A pool of `num_blocks` blocks of `block_size` token slots each.
    pub fn new(num_blocks: usize, block_size: usize) -> Result<Self, KvError> {
        if block_size == 0 {
            return Err(KvError::InvalidConfig("block_size must be > 0".into()));
        }
        if num_blocks == 0 {
            return Err(KvError::InvalidConfig("num_blocks must be > 0".into()));
        }
        // Every id must fit in BlockId.
        if num_blocks > BlockId::MAX as usize {
            return Err(KvError::InvalidConfig(format!(
                "num_blocks {num_blocks} exceeds {}",
                BlockId::MAX
            )));
        }
        Ok(Self {
            block_size,
            ref_counts: vec![0; num_blocks],
            free_list: (0..num_blocks as BlockId).rev().collect(),
            seqs: HashMap::new(),
        })
    }

    /// [`BlockManager::new`] with [`DEFAULT_BLOCK_SIZE`] (16) tokens per block.
    pub fn with_default_block_size(num_blocks: usize) -> Result<Self, KvError> {
        Self::new(num_blocks, DEFAULT_BLOCK_SIZE)
    }

    pub fn block_size(&self) -> usize {
        self.block_size
    }
    pub fn num_total(&self) -> usize {
        self.ref_counts.len()
    }
    pub fn num_free(&self) -> usize {
        self.free_list.len()
    }
    /// Blocks with refcount > 0 (a block shared by several sequences counts once).
    pub fn num_used(&self) -> usize {
        self.num_total() - self.num_free()
    }
    pub fn num_sequences(&self) -> usize {
        self.seqs.len()
    }
    pub fn contains(&self, seq: SeqId) -> bool {
        self.seqs.contains_key(&seq)
    }

    /// Number of block tables holding `block`; 0 for free or out-of-range ids.
    pub fn ref_count(&self, block: BlockId) -> u32 {
        self.ref_counts.get(block as usize).copied().unwrap_or(0)
    }

    /// Registers an empty sequence (no blocks until the first `append`).
    pub fn add_sequence(&mut self, seq: SeqId) -> Result<(), KvError> {
        if self.seqs.contains_key(&seq) {
            return Err(KvError::DuplicateSequence(seq));
        }
        self.seqs.insert(seq, SeqState::default());
        Ok(())
    }

    pub fn block_table(&self, seq: SeqId) -> Option<&[BlockId]> {
        self.seqs.get(&seq).map(|s| s.blocks.as_slice())
    }

    pub fn seq_len(&self, seq: SeqId) -> Option<usize> {
        self.seqs.get(&seq).map(|s| s.len)
    }

    /// Physical location `(block, offset within block)` of token `pos`, if `pos < len`.
    pub fn slot(&self, seq: SeqId, pos: usize) -> Option<(BlockId, usize)> {
        let s = self.seqs.get(&seq)?;
        if pos >= s.len {
            return None;
        }
        let block = *s.blocks.get(pos / self.block_size)?;
        Some((block, pos % self.block_size))
    }

    /// Fresh blocks `append(seq, n)` would take, including a copy-on-write block.
    /// An unknown `seq` is treated as a new empty sequence, which is what admission
    /// control wants to know before `add_sequence`.
    pub fn blocks_needed(&self, seq: SeqId, n: usize) -> usize {
        match self.seqs.get(&seq) {
            Some(s) => self.needed_for(s, n),
            None => n.div_ceil(self.block_size),
        }
    }

    /// Whether `append(seq, n)` would succeed now.
    pub fn can_append(&self, seq: SeqId, n: usize) -> bool {
        self.seqs
            .get(&seq)
            .is_some_and(|s| self.needed_for(s, n) <= self.num_free())
    }

    fn needed_for(&self, s: &SeqState, n: usize) -> usize {
        let Some(new_len) = s.len.checked_add(n) else {
            return usize::MAX; // can never be satisfied; reported as OutOfBlocks
        };
        let grow = new_len.div_ceil(self.block_size) - s.blocks.len();
        grow + usize::from(self.needs_cow(s, n))
    }

    /// Writing into a partially filled last block that another table also holds would
    /// corrupt the other sequence's future tokens, so it must be copied first. Full
    /// shared blocks are never written again (new tokens go to new blocks).
    fn needs_cow(&self, s: &SeqState, n: usize) -> bool {
        n > 0
            && !s.len.is_multiple_of(self.block_size)
            && s.blocks
                .last()
                .is_some_and(|&b| self.ref_counts[b as usize] > 1)
    }

    fn alloc(&mut self) -> BlockId {
        // Callers check `needed <= num_free()` first, so this never runs dry.
        let b = self.free_list.pop().expect("free list checked by caller");
        self.ref_counts[b as usize] = 1;
        b
    }

    fn release(&mut self, b: BlockId) {
        let rc = &mut self.ref_counts[b as usize];
        *rc -= 1;
        if *rc == 0 {
            self.free_list.push(b);
        }
    }

    /// Reserves slots for `n` more tokens of `seq`. All-or-nothing: if the pool cannot
    /// supply every block needed, nothing changes and `OutOfBlocks` is returned.
    /// Returns the copies the caller must perform before writing (copy-on-write of a
    /// shared, partially filled last block; at most one per call).
    pub fn append(&mut self, seq: SeqId, n: usize) -> Result<Vec<CopyOp>, KvError> {
        let s = self.seqs.get(&seq).ok_or(KvError::UnknownSequence(seq))?;
        let needed = self.needed_for(s, n);
        if needed > self.num_free() {
            return Err(KvError::OutOfBlocks {
                needed,
                free: self.num_free(),
            });
        }
        let cow = self.needs_cow(s, n);
        let (old_len, old_blocks) = (s.len, s.blocks.len());
        let new_len = old_len + n; // cannot overflow: needed_for returned a finite count
        let mut copies = Vec::new();
        let mut fresh = Vec::with_capacity(needed);
        if cow {
            let src = self.seqs[&seq].blocks[old_blocks - 1];
            let dst = self.alloc();
            self.release(src); // refcount was > 1, so `src` stays allocated
            copies.push(CopyOp { src, dst });
            fresh.push(dst);
        }
        for _ in old_blocks..new_len.div_ceil(self.block_size) {
            fresh.push(self.alloc());
        }
        let s = self.seqs.get_mut(&seq).expect("checked above");
        let mut fresh = fresh.into_iter();
        if cow {
            s.blocks[old_blocks - 1] = fresh.next().expect("cow block allocated");
        }
        s.blocks.extend(fresh);
        s.len = new_len;
        Ok(copies)
    }

    /// Rolls `seq` back to `new_len` tokens (e.g. rejected speculative tokens) and frees
    /// tail blocks no longer needed. `new_len > len` is an error.
    pub fn truncate(&mut self, seq: SeqId, new_len: usize) -> Result<(), KvError> {
        let s = self
            .seqs
            .get_mut(&seq)
            .ok_or(KvError::UnknownSequence(seq))?;
        if new_len > s.len {
            return Err(KvError::TruncateBeyondLength {
                seq,
                len: s.len,
                requested: new_len,
            });
        }
        s.len = new_len;
        let tail = s.blocks.split_off(new_len.div_ceil(self.block_size));
        for b in tail {
            self.release(b);
        }
        Ok(())
    }

    /// Removes `seq` and drops its references to all of its blocks.
    pub fn free(&mut self, seq: SeqId) -> Result<(), KvError> {
        let s = self
            .seqs
            .remove(&seq)
            .ok_or(KvError::UnknownSequence(seq))?;
        for b in s.blocks {
            self.release(b);
        }
        Ok(())
    }

    /// Creates `child` sharing all of `parent`'s blocks (refcounts + 1, no allocation).
    pub fn fork(&mut self, parent: SeqId, child: SeqId) -> Result<(), KvError> {
        if self.seqs.contains_key(&child) {
            return Err(KvError::DuplicateSequence(child));
        }
        let s = self
            .seqs
            .get(&parent)
            .ok_or(KvError::UnknownSequence(parent))?
            .clone();
        for &b in &s.blocks {
            self.ref_counts[b as usize] += 1;
        }
        self.seqs.insert(child, s);
        Ok(())
    }

    /// Verifies the bookkeeping: free + used == total; every block's refcount equals the
    /// number of tables holding it; the free list holds exactly the refcount-0 blocks,
    /// once each; each table has `ceil(len / block_size)` blocks, none repeated.
    pub fn check_invariants(&self) -> Result<(), String> {
        let total = self.num_total();
        // `num_used` is derived from the free list, so count refcounts independently.
        let used = self.ref_counts.iter().filter(|&&rc| rc > 0).count();
        if self.num_free() + used != total {
            return Err(format!(
                "free {} + used {used} != total {total}",
                self.num_free()
            ));
        }
        let mut holders = vec![0u32; total];
        for (&seq, s) in &self.seqs {
            let want = s.len.div_ceil(self.block_size);
            if s.blocks.len() != want {
                return Err(format!(
                    "seq {seq}: {} blocks for len {}, expected {want}",
                    s.blocks.len(),
                    s.len
                ));
            }
            let mut seen = std::collections::HashSet::new();
            for &b in &s.blocks {
                if b as usize >= total {
                    return Err(format!("seq {seq}: block {b} out of range"));
                }
                if !seen.insert(b) {
                    return Err(format!("seq {seq}: block {b} appears twice"));
                }
                holders[b as usize] += 1;
            }
        }
        let mut in_free = vec![false; total];
        for &b in &self.free_list {
            let i = b as usize;
            if i >= total {
                return Err(format!("free list: block {b} out of range"));
            }
            if std::mem::replace(&mut in_free[i], true) {
                return Err(format!("free list: block {b} duplicated"));
            }
        }
        for (i, (&rc, &held)) in self.ref_counts.iter().zip(&holders).enumerate() {
            if rc != held {
                return Err(format!(
                    "block {i}: refcount {rc} but held by {held} tables"
                ));
            }
            if (rc == 0) != in_free[i] {
                return Err(format!(
                    "block {i}: refcount {rc} but in_free={}",
                    in_free[i]
                ));
            }
        }
        Ok(())
    }
}
