//! Behavioural unit tests of the block manager; each ends with `check_invariants`.

use vpd_kv::{BlockManager, CopyOp, KvError, DEFAULT_BLOCK_SIZE};

fn ok(m: &BlockManager) {
    m.check_invariants().unwrap();
}

#[test]
fn new_rejects_zero_block_size_and_empty_pool() {
    assert!(matches!(
        BlockManager::new(4, 0),
        Err(KvError::InvalidConfig(_))
    ));
    assert!(matches!(
        BlockManager::new(0, 16),
        Err(KvError::InvalidConfig(_))
    ));
    let m = BlockManager::with_default_block_size(8).unwrap();
    assert_eq!(m.block_size(), DEFAULT_BLOCK_SIZE);
    assert_eq!((m.num_free(), m.num_used(), m.num_total()), (8, 0, 8));
    ok(&m);
}

#[test]
fn append_allocates_blocks_on_demand() {
    let mut m = BlockManager::new(8, 4).unwrap();
    m.add_sequence(1).unwrap();
    assert_eq!(m.append(1, 0).unwrap(), vec![]);
    assert_eq!(m.block_table(1).unwrap(), &[] as &[u32]);
    m.append(1, 3).unwrap();
    assert_eq!(m.block_table(1).unwrap().len(), 1);
    m.append(1, 1).unwrap(); // fills block 0 exactly
    assert_eq!(m.block_table(1).unwrap().len(), 1);
    m.append(1, 1).unwrap();
    assert_eq!(m.block_table(1).unwrap().len(), 2);
    assert_eq!(m.seq_len(1), Some(5));
    assert_eq!((m.num_used(), m.num_free()), (2, 6));
    ok(&m);
}

#[test]
fn slot_maps_positions_to_block_and_offset() {
    let mut m = BlockManager::new(8, 4).unwrap();
    m.add_sequence(7).unwrap();
    m.append(7, 6).unwrap();
    let t = m.block_table(7).unwrap().to_vec();
    assert_eq!(m.slot(7, 0), Some((t[0], 0)));
    assert_eq!(m.slot(7, 3), Some((t[0], 3)));
    assert_eq!(m.slot(7, 5), Some((t[1], 1)));
    assert_eq!(m.slot(7, 6), None);
    assert_eq!(m.slot(99, 0), None);
    ok(&m);
}

#[test]
fn append_is_all_or_nothing_when_out_of_blocks() {
    let mut m = BlockManager::new(3, 4).unwrap();
    m.add_sequence(1).unwrap();
    m.append(1, 5).unwrap(); // 2 blocks
    assert!(!m.can_append(1, 8));
    assert_eq!(m.blocks_needed(1, 8), 2);
    assert_eq!(
        m.append(1, 8),
        Err(KvError::OutOfBlocks { needed: 2, free: 1 })
    );
    assert_eq!(m.seq_len(1), Some(5));
    assert_eq!(m.block_table(1).unwrap().len(), 2);
    assert_eq!(m.num_free(), 1);
    assert!(m.can_append(1, 7));
    ok(&m);
}

#[test]
fn append_with_overflowing_length_is_out_of_blocks_not_panic() {
    let mut m = BlockManager::new(3, 4).unwrap();
    m.add_sequence(1).unwrap();
    m.append(1, 1).unwrap();
    assert!(matches!(
        m.append(1, usize::MAX),
        Err(KvError::OutOfBlocks { .. })
    ));
    assert!(!m.can_append(1, usize::MAX));
    ok(&m);
}

#[test]
fn truncate_frees_tail_blocks() {
    let mut m = BlockManager::new(8, 4).unwrap();
    m.add_sequence(1).unwrap();
    m.append(1, 10).unwrap(); // 3 blocks
    m.truncate(1, 5).unwrap(); // rejected speculative tokens
    assert_eq!(m.seq_len(1), Some(5));
    assert_eq!(m.block_table(1).unwrap().len(), 2);
    assert_eq!(m.num_free(), 6);
    m.truncate(1, 0).unwrap();
    assert_eq!(m.block_table(1).unwrap().len(), 0);
    assert_eq!(m.num_free(), 8);
    ok(&m);
}

#[test]
fn truncate_beyond_length_is_an_error() {
    let mut m = BlockManager::new(8, 4).unwrap();
    m.add_sequence(1).unwrap();
    m.append(1, 3).unwrap();
    assert_eq!(
        m.truncate(1, 4),
        Err(KvError::TruncateBeyondLength {
            seq: 1,
            len: 3,
            requested: 4
        })
    );
    assert_eq!(m.seq_len(1), Some(3));
    ok(&m);
}

#[test]
fn free_releases_all_blocks() {
    let mut m = BlockManager::new(8, 4).unwrap();
    m.add_sequence(1).unwrap();
    m.append(1, 9).unwrap();
    m.free(1).unwrap();
    assert_eq!(m.num_free(), 8);
    assert_eq!(m.seq_len(1), None);
    assert_eq!(m.free(1), Err(KvError::UnknownSequence(1)));
    ok(&m);
}

#[test]
fn unknown_and_duplicate_sequences_are_reported() {
    let mut m = BlockManager::new(4, 4).unwrap();
    assert_eq!(m.append(5, 1), Err(KvError::UnknownSequence(5)));
    assert_eq!(m.truncate(5, 0), Err(KvError::UnknownSequence(5)));
    assert_eq!(m.fork(5, 6), Err(KvError::UnknownSequence(5)));
    assert!(!m.can_append(5, 1));
    assert_eq!(m.blocks_needed(5, 5), 2); // as if it were a new sequence
    m.add_sequence(1).unwrap();
    assert_eq!(m.add_sequence(1), Err(KvError::DuplicateSequence(1)));
    assert_eq!(m.fork(1, 1), Err(KvError::DuplicateSequence(1)));
    assert_eq!(m.ref_count(1000), 0);
    ok(&m);
}

#[test]
fn fork_shares_blocks_and_copies_on_write() {
    let mut m = BlockManager::new(8, 4).unwrap();
    m.add_sequence(1).unwrap();
    m.append(1, 6).unwrap(); // [full, half]
    m.fork(1, 2).unwrap();
    let t = m.block_table(1).unwrap().to_vec();
    assert_eq!(m.block_table(2).unwrap(), t.as_slice());
    assert_eq!((m.ref_count(t[0]), m.ref_count(t[1])), (2, 2));
    assert_eq!(m.num_used(), 2);
    assert_eq!(m.blocks_needed(1, 1), 1); // the copy-on-write block

    let copies = m.append(1, 1).unwrap();
    let t1 = m.block_table(1).unwrap().to_vec();
    assert_eq!(
        copies,
        vec![CopyOp {
            src: t[1],
            dst: t1[1]
        }]
    );
    assert_eq!(t1[0], t[0]); // full prefix block stays shared
    assert_ne!(t1[1], t[1]);
    assert_eq!(
        (m.ref_count(t[0]), m.ref_count(t[1]), m.ref_count(t1[1])),
        (2, 1, 1)
    );

    // The child is now the sole owner of the old last block: no copy needed.
    assert_eq!(m.append(2, 1).unwrap(), vec![]);
    assert_eq!(m.block_table(2).unwrap(), t.as_slice());
    ok(&m);
}

#[test]
fn append_after_fork_on_full_block_needs_no_copy() {
    let mut m = BlockManager::new(8, 4).unwrap();
    m.add_sequence(1).unwrap();
    m.append(1, 8).unwrap();
    m.fork(1, 2).unwrap();
    assert_eq!(m.append(2, 3).unwrap(), vec![]);
    assert_eq!(m.block_table(2).unwrap().len(), 3);
    assert_eq!(
        m.block_table(2).unwrap()[..2],
        m.block_table(1).unwrap()[..]
    );
    ok(&m);
}

#[test]
fn truncate_into_shared_block_then_append_copies() {
    let mut m = BlockManager::new(8, 4).unwrap();
    m.add_sequence(1).unwrap();
    m.append(1, 8).unwrap();
    m.fork(1, 2).unwrap();
    m.truncate(2, 6).unwrap(); // block 1 is shared and now partial for seq 2
    let shared = m.block_table(2).unwrap()[1];
    let copies = m.append(2, 1).unwrap();
    assert_eq!(copies.len(), 1);
    assert_eq!(copies[0].src, shared);
    assert_eq!(m.block_table(1).unwrap()[1], shared);
    ok(&m);
}

#[test]
fn copy_on_write_is_all_or_nothing() {
    let mut m = BlockManager::new(2, 4).unwrap();
    m.add_sequence(1).unwrap();
    m.append(1, 6).unwrap(); // both blocks used
    m.fork(1, 2).unwrap();
    assert_eq!(
        m.append(2, 1),
        Err(KvError::OutOfBlocks { needed: 1, free: 0 })
    );
    assert_eq!(m.block_table(2), m.block_table(1));
    m.free(1).unwrap(); // now seq 2 owns the partial block alone
    assert_eq!(m.append(2, 2).unwrap(), vec![]);
    ok(&m);
}

#[test]
fn freeing_parent_keeps_shared_blocks_for_child() {
    let mut m = BlockManager::new(8, 4).unwrap();
    m.add_sequence(1).unwrap();
    m.append(1, 7).unwrap();
    m.fork(1, 2).unwrap();
    m.free(1).unwrap();
    assert_eq!(m.num_used(), 2);
    for &b in m.block_table(2).unwrap() {
        assert_eq!(m.ref_count(b), 1);
    }
    m.free(2).unwrap();
    assert_eq!(m.num_free(), 8);
    ok(&m);
}
