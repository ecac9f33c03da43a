//! The real ShareGPT V3 asset (fetched by `make assets`) through the vLLM-style filter. A
//! whitespace-and-punctuation count stands in for the tokenizer, so this needs no model; it
//! checks that the truncated file yields the expected number of complete conversations and
//! enough usable requests for a benchmark.
use std::path::PathBuf;

use vpd_bench::sharegpt;
use vpd_bench::workload::{arrival_times, sample_requests, FilterLimits};

fn rough_tokens(s: &str) -> usize {
    s.split(|c: char| c.is_whitespace() || c.is_ascii_punctuation())
        .filter(|w| !w.is_empty())
        .count()
}

#[test]
fn truncated_sharegpt_asset_yields_a_benchmark_workload() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../assets/ShareGPT_V3_unfiltered_cleaned_split.json");
    if !path.exists() {
        eprintln!("skipped: {} is missing (run `make assets`)", path.display());
        return;
    }
    let ds = sharegpt::load(&path).unwrap();
    eprintln!(
        "read {} complete conversations (truncated: {})",
        ds.conversations.len(),
        ds.truncated
    );
    assert!(ds.truncated);
    assert!(ds.conversations.len() > 15_000, "{}", ds.conversations.len());
    let (reqs, stats) = sample_requests(&ds, 1000, 0, FilterLimits::default(), rough_tokens).unwrap();
    eprintln!("{stats:?}");
    assert_eq!(reqs.len(), 1000);
    assert!(reqs
        .iter()
        .all(|r| r.prompt_len >= 4 && r.output_len >= 4 && r.prompt_len <= 1024));
    assert!(reqs.iter().all(|r| r.prompt_len + r.output_len <= 2048));
    let t = arrival_times(reqs.len(), 2.0, 1.0, 0).unwrap();
    assert!(t.last().unwrap() > &100.0);
}
