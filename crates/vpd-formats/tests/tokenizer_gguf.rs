//! The SmolLM2-135M-Instruct GGUF tokenizer against reference ids.
//!
//! Reference ids come from the Python `tokenizers` 0.21 package, building the tokenizer from
//! the same GGUF the way `Tokenizer::from_gguf` does (BPE over `tokenizer.ggml.tokens/merges`,
//! `Digits(individual_digits) + ByteLevel` pre-tokenizer, control tokens as specials).
//! `transformers` 4.55 (`AutoTokenizer.from_pretrained(dir, gguf_file=...)`) gives the same
//! ids except for a leading BOS: it loads the vocabulary as `LlamaTokenizerFast`, whose
//! `add_bos_token` defaults to true and ignores the file's `tokenizer.ggml.add_bos_token = false`.
//! We follow the file (as llama.cpp does). Chat renders come from Jinja2 with transformers'
//! settings (`trim_blocks`, `lstrip_blocks`).
use std::path::PathBuf;

use vpd_formats::gguf::GgufFile;
use vpd_formats::tokenizer::{ChatMessage, Tokenizer};

fn smollm() -> Tokenizer {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../assets/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(
        path.is_file(),
        "{} is missing: run `bash tools/fetch-assets.sh`",
        path.display()
    );
    let g = GgufFile::open(&path).expect("open GGUF");
    Tokenizer::from_gguf(&g).expect("tokenizer from GGUF")
}

const CASES: &[(&str, &[u32])] = &[
    ("Hello, world!", &[19556, 28, 905, 17]),
    ("12345", &[33, 34, 35, 36, 37]),
    (
        "The year 2024 had 366 days.",
        &[
            504, 713, 216, 34, 32, 34, 36, 761, 216, 35, 38, 38, 2009, 30,
        ],
    ),
    (
        "  leading and   multiple spaces  ",
        &[216, 2899, 284, 256, 2701, 5600, 256],
    ),
    (
        "fn main() {\n    println!(\"hi\");\n}\n",
        &[
            7853, 1085, 1000, 1662, 472, 1628, 34115, 17, 1470, 6004, 21646, 198, 109, 198,
        ],
    ),
    (
        "na\u{ef}ve caf\u{e9} \u{2013} Z\u{fc}rich \u{6771}\u{4eac} \u{65e5}\u{672c}\u{8a9e}",
        &[
            3546, 46494, 37366, 816, 1777, 7170, 5130, 17097, 247, 126, 16736, 122, 17097, 241,
            115, 40993, 179, 120, 248,
        ],
    ),
    (
        "emoji \u{1f389}\u{1f680} done \u{1f44d}\u{1f3fd}",
        &[
            391, 33777, 15107, 232, 227, 10813, 244, 218, 2294, 15107, 235, 231, 10813, 233, 138,
        ],
    ),
    (
        "line1\n\nline2\r\n\ttab",
        &[1311, 33, 198, 198, 1311, 34, 2738, 197, 15999],
    ),
    ("<|im_start|>user\nhi<|im_end|>", &[1, 4093, 198, 6004, 2]),
    (
        "I'm sure they'll say we've done it",
        &[57, 5248, 2090, 502, 3060, 1643, 392, 3543, 2294, 357],
    ),
    (
        "x=3.14159e-10; y = a[0]+b[12]",
        &[
            104, 45, 35, 30, 33, 36, 33, 37, 41, 85, 29, 33, 32, 43, 329, 446, 253, 75, 32, 18132,
            82, 75, 33, 34, 77,
        ],
    ),
    (
        "Call 555-0199 or +44 20 7946 0958",
        &[
            12800, 216, 37, 37, 37, 29, 32, 33, 41, 41, 355, 1232, 36, 36, 216, 34, 32, 216, 39,
            41, 36, 38, 216, 32, 41, 37, 40,
        ],
    ),
];

#[test]
fn smollm_ids_match_reference() {
    let tok = smollm();
    for (text, want) in CASES {
        assert_eq!(tok.encode(text, false).unwrap(), *want, "{text:?}");
        // add_bos_token is false in this GGUF: the BOS policy adds nothing.
        assert_eq!(
            tok.encode(text, true).unwrap(),
            *want,
            "{text:?} with specials"
        );
        assert_eq!(tok.decode(want, false).unwrap(), *text, "decode {text:?}");
    }
}

#[test]
fn smollm_special_tokens() {
    let tok = smollm();
    assert_eq!(tok.vocab_size(), 49152);
    assert_eq!(tok.bos_id(), Some(1));
    assert_eq!(tok.eos_ids(), &[2]);
    assert_eq!(tok.token_to_id("<|im_end|>"), Some(2));
    assert_eq!(tok.token_to_id("<|endoftext|>"), Some(0));
    assert_eq!(
        tok.decode(&[1, 4093, 198, 6004, 2], true).unwrap(),
        "user\nhi"
    );
    assert!(tok.decode(&[49152], false).is_err());
}

#[test]
fn smollm_chat_template_matches_jinja2() {
    let tok = smollm();
    let one = [ChatMessage::new("user", "What is 2+2?")];
    assert_eq!(
        tok.apply_chat_template(&one, true).unwrap(),
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n\
         <|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"
    );
    let three = [
        ChatMessage::new("system", "Be terse."),
        ChatMessage::new("user", "Hi"),
        ChatMessage::new("assistant", "Hello."),
    ];
    assert_eq!(
        tok.apply_chat_template(&three, false).unwrap(),
        "<|im_start|>system\nBe terse.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello.<|im_end|>\n"
    );
}

#[test]
fn smollm_to_json_round_trip() {
    let tok = smollm();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokenizer.json");
    std::fs::write(&path, tok.to_json().unwrap()).unwrap();
    let back = Tokenizer::from_file(&path, None).unwrap();
    assert_eq!(back.vocab_size(), tok.vocab_size());
    for (text, want) in CASES {
        assert_eq!(back.encode(text, true).unwrap(), *want, "{text:?}");
    }
}

#[test]
fn smollm_stream_holds_back_partial_utf8() {
    let tok = smollm();
    for (text, ids) in CASES {
        let mut stream = tok.decode_stream(false);
        let mut out = String::new();
        for &id in *ids {
            if let Some(chunk) = stream.step(id).unwrap() {
                assert!(
                    !chunk.contains('\u{FFFD}'),
                    "{text:?}: partial character emitted in {chunk:?}"
                );
                out.push_str(&chunk);
            }
        }
        assert_eq!(stream.flush().unwrap(), None);
        assert_eq!(out, *text);
    }
    // The stateless form: " 🎉" is split over ids 15107 (" " + 2 bytes), 232, 227; the
    // space is complete text, the partial emoji is held back.
    assert_eq!(
        tok.decode_incremental(&[391, 33777, 15107, 232], 2)
            .unwrap(),
        " "
    );
    assert_eq!(
        tok.decode_incremental(&[391, 33777, 15107, 232, 227], 2)
            .unwrap(),
        " \u{1f389}"
    );
}
