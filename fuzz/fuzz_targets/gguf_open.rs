//! Fuzzes the GGUF reader: any input must make `GgufFile::open` (and, when it succeeds,
//! `llama_config` and `read_f32` of every tensor) return, never panic or abort.
//!
//! `open` takes a path (the reader memory-maps files), so each input is written to a
//! per-process scratch file first. Seed the corpus with a small valid file, e.g. one written
//! by the test helper in `crates/vpd-formats/tests/gguf_common`.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use vpd_formats::gguf::GgufFile;
use vpd_formats::WeightSource;

fn scratch() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        std::env::temp_dir().join(format!("vpd-fuzz-gguf-{}.gguf", std::process::id()))
    })
}

fuzz_target!(|data: &[u8]| {
    let path = scratch();
    if std::fs::write(path, data).is_err() {
        return;
    }
    if let Ok(f) = GgufFile::open(path) {
        let _ = f.llama_config();
        for t in f.tensors() {
            // Skip huge claimed tensors so one input cannot exhaust memory (the data must be
            // in the file, so this only bounds the f32 copy).
            if t.numel() <= 1 << 24 {
                let _ = f.read_f32(&t.name);
            }
        }
    }
});
