//! Property test: random byte mutations and truncations of a valid file never panic
//! `GgufFile::open`, `llama_config` or `read_f32`; they only return Ok or Err.
mod gguf_common;

use gguf_common::*;
use proptest::prelude::*;
use vpd_formats::gguf::GgufFile;
use vpd_formats::WeightSource;

fn exercise(f: &GgufFile) {
    let _ = f.llama_config();
    for t in f.tensors() {
        let _ = f.read_f32(&t.name);
    }
}

proptest! {
    // 256 cases by default; GGUF_FUZZ_CASES=20000 for a longer local run.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("GGUF_FUZZ_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(256),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn mutated_files_never_panic(
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), any::<bool>()), 1..8),
        cut in prop::option::of(any::<prop::sample::Index>()),
        ty in prop::sample::select(vec![F32, F16, Q8_0, Q4_0, Q4_1]),
    ) {
        let (g, _) = toy_llama(ty);
        let b = g.build();
        let mut bytes = b.bytes;
        for (at, v, in_header) in edits {
            // Half the edits land in the header/metadata/tensor infos, where parsing happens.
            let span = if in_header { b.data_start } else { bytes.len() };
            let i = at.index(span);
            bytes[i] = v;
        }
        if let Some(c) = cut {
            bytes.truncate(c.index(bytes.len()));
        }
        let (r, _, _dir) = open_bytes(&bytes);
        if let Ok(f) = r {
            exercise(&f);
        }
    }
}
