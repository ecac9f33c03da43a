//! Random operation sequences against a tiny pool, checked after every operation against
//! `check_invariants`, a model of each sequence's tokens, and a simulated device memory:
//! tokens are written through `slot()` after applying the returned `CopyOp`s, so a
//! missing copy-on-write (one sequence overwriting another's slot) is detected.

use std::collections::HashMap;

use proptest::prelude::*;
use vpd_kv::{BlockManager, KvError};

const BLOCKS: usize = 7;
const BS: usize = 3;

#[derive(Debug, Clone)]
enum Op {
    Add(u64),
    Append(u64, usize),
    Truncate(u64, usize),
    Free(u64),
    Fork(u64, u64),
}

fn op() -> impl Strategy<Value = Op> {
    let id = 0u64..5;
    prop_oneof![
        1 => id.clone().prop_map(Op::Add),
        3 => (id.clone(), 0usize..8).prop_map(|(s, n)| Op::Append(s, n)),
        2 => (id.clone(), 0usize..12).prop_map(|(s, n)| Op::Truncate(s, n)),
        1 => id.clone().prop_map(Op::Free),
        1 => (id.clone(), id).prop_map(|(p, c)| Op::Fork(p, c)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_ops_keep_invariants_and_match_model(ops in prop::collection::vec(op(), 1..60)) {
        let mut m = BlockManager::new(BLOCKS, BS).unwrap();
        let mut model: HashMap<u64, Vec<u64>> = HashMap::new();
        let mut mem = vec![[None::<u64>; BS]; BLOCKS];
        let mut next_token = 0u64;
        for op in ops {
            match op {
                Op::Add(s) => {
                    let r = m.add_sequence(s);
                    prop_assert_eq!(r.is_ok(), !model.contains_key(&s));
                    model.entry(s).or_default();
                }
                Op::Append(s, n) => {
                    let predicted = model.contains_key(&s).then(|| m.can_append(s, n));
                    let needed = m.blocks_needed(s, n);
                    let free_before = m.num_free();
                    match m.append(s, n) {
                        Ok(copies) => {
                            prop_assert_eq!(predicted, Some(true));
                            prop_assert!(copies.len() <= 1);
                            prop_assert_eq!(m.num_free() + needed, free_before);
                            for c in copies {
                                mem[c.dst as usize] = mem[c.src as usize];
                            }
                            let toks = model.get_mut(&s).unwrap();
                            for pos in toks.len()..toks.len() + n {
                                let (b, off) = m.slot(s, pos).unwrap();
                                mem[b as usize][off] = Some(next_token);
                                toks.push(next_token);
                                next_token += 1;
                            }
                        }
                        Err(KvError::OutOfBlocks { needed: e, free }) => {
                            prop_assert_eq!(predicted, Some(false));
                            prop_assert_eq!((e, free), (needed, free_before));
                            prop_assert_eq!(m.num_free(), free_before);
                        }
                        Err(e) => {
                            prop_assert_eq!(e, KvError::UnknownSequence(s));
                            prop_assert!(predicted.is_none());
                        }
                    }
                }
                Op::Truncate(s, n) => {
                    let ok = model.get(&s).is_some_and(|t| n <= t.len());
                    prop_assert_eq!(m.truncate(s, n).is_ok(), ok);
                    if ok {
                        model.get_mut(&s).unwrap().truncate(n);
                    }
                }
                Op::Free(s) => {
                    prop_assert_eq!(m.free(s).is_ok(), model.remove(&s).is_some());
                }
                Op::Fork(p, c) => {
                    let ok = model.contains_key(&p) && !model.contains_key(&c);
                    prop_assert_eq!(m.fork(p, c).is_ok(), ok);
                    if ok {
                        model.insert(c, model[&p].clone());
                    }
                }
            }
            if let Err(e) = m.check_invariants() {
                return Err(TestCaseError::fail(e));
            }
            for s in 0u64..5 {
                prop_assert_eq!(m.seq_len(s), model.get(&s).map(Vec::len));
            }
            for (&s, toks) in &model {
                for (pos, &t) in toks.iter().enumerate() {
                    let (b, off) = m.slot(s, pos).unwrap();
                    prop_assert_eq!(mem[b as usize][off], Some(t), "seq {} pos {}", s, pos);
                }
            }
        }
        // Freeing everything returns the whole pool.
        for s in model.keys() {
            m.free(*s).unwrap();
        }
        prop_assert_eq!(m.num_free(), BLOCKS);
        m.check_invariants().map_err(TestCaseError::fail)?;
    }
}
