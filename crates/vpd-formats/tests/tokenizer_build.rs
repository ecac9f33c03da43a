//! Tokenizers built without a real model: synthetic byte-level vocabularies, hand-built GGUF
//! metadata, `tokenizer.json` + `tokenizer_config.json` files, chat templates, streaming.
use std::collections::HashMap;
use std::path::Path;

use vpd_formats::gguf::GgufValue;
use vpd_formats::tokenizer::{ChatMessage, Tokenizer};
use vpd_formats::FormatError;

#[test]
fn synthetic_llama3_sized() {
    let tok = Tokenizer::synthetic_byte_level(128256, 128001).unwrap();
    assert_eq!(tok.vocab_size(), 128256);
    assert_eq!((tok.bos_id(), tok.eos_ids()), (Some(128000), &[128001][..]));
    assert_eq!(tok.token_to_id("<|end_of_text|>"), Some(128001));
    let text = "héllo 🎉\n\tworld";
    let ids = tok.encode(text, true).unwrap();
    assert_eq!(ids[0], 128000);
    assert_eq!(ids.len(), 1 + text.len(), "one id per byte after BOS");
    assert_eq!(tok.decode(&ids, true).unwrap(), text);
    assert_eq!(
        tok.encode(text, false).unwrap(),
        text.bytes().map(u32::from).collect::<Vec<_>>()
    );
    // Every id decodes, fillers included.
    for id in (0..128256u32).step_by(7).chain([255, 256, 127999, 128255]) {
        assert!(tok.decode(&[id], false).is_ok(), "id {id}");
    }
    assert_eq!(tok.decode(&[5000], false).unwrap(), "<|reserved_5000|>");
    assert!(tok.decode(&[128256], false).is_err());
}

#[test]
fn synthetic_small_and_json_round_trip() {
    let tok = Tokenizer::synthetic_byte_level(260, 256).unwrap();
    assert_eq!((tok.bos_id(), tok.eos_ids()), (Some(257), &[256][..]));
    for id in 0..260 {
        tok.decode(&[id], false).unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tokenizer.json"), tok.to_json().unwrap()).unwrap();
    let back = Tokenizer::from_hf_dir(dir.path()).unwrap();
    assert_eq!(back.encode("ab", true).unwrap(), vec![257, 97, 98]);
    assert_eq!(back.vocab_size(), 260);
}

#[test]
fn synthetic_rejects_bad_sizes() {
    assert!(matches!(
        Tokenizer::synthetic_byte_level(100, 50),
        Err(FormatError::Tokenizer(_))
    ));
    assert!(matches!(
        Tokenizer::synthetic_byte_level(300, 12),
        Err(FormatError::Tokenizer(_))
    ));
    assert!(matches!(
        Tokenizer::synthetic_byte_level(300, 300),
        Err(FormatError::Tokenizer(_))
    ));
}

/// A toy GPT-2-style vocabulary: the 256 byte symbols, "ab", "Ġab", and two control tokens.
fn toy_metadata() -> HashMap<String, GgufValue> {
    let s = |x: &str| GgufValue::String(x.to_string());
    let map = vpd_formats::tokenizer::byte_to_char();
    let mut tokens: Vec<GgufValue> = map.iter().map(|c| s(&c.to_string())).collect();
    tokens.extend([s("ab"), s("Ġa"), s("Ġab"), s("<s>"), s("</s>"), s("<tool>")]);
    let mut types = vec![GgufValue::I32(1); 259];
    types.extend([GgufValue::I32(3), GgufValue::I32(3), GgufValue::I32(4)]);
    // Rank order matters: "Ġ a" before "a b", or " ab" would become Ġ + ab.
    let merges = vec![s("Ġ a"), s("a b"), s("Ġa b")];
    HashMap::from([
        ("tokenizer.ggml.model".to_string(), s("gpt2")),
        ("tokenizer.ggml.pre".to_string(), s("smollm")),
        (
            "tokenizer.ggml.tokens".to_string(),
            GgufValue::Array(tokens),
        ),
        (
            "tokenizer.ggml.token_type".to_string(),
            GgufValue::Array(types),
        ),
        (
            "tokenizer.ggml.merges".to_string(),
            GgufValue::Array(merges),
        ),
        (
            "tokenizer.ggml.bos_token_id".to_string(),
            GgufValue::U32(259),
        ),
        (
            "tokenizer.ggml.eos_token_id".to_string(),
            GgufValue::U32(260),
        ),
        (
            "tokenizer.ggml.add_bos_token".to_string(),
            GgufValue::Bool(true),
        ),
        (
            "tokenizer.chat_template".to_string(),
            s("{% for m in messages %}[{{ m.role }}]{{ m.content.strip() }}{% endfor %}"),
        ),
    ])
}

fn from_meta(m: &HashMap<String, GgufValue>) -> Result<Tokenizer, FormatError> {
    Tokenizer::from_gguf_metadata(Path::new("toy.gguf"), |k| m.get(k))
}

#[test]
fn gguf_metadata_toy_vocabulary() {
    let tok = from_meta(&toy_metadata()).unwrap();
    assert_eq!(tok.vocab_size(), 262);
    // Merges apply, digits split, BOS prepended because add_bos_token is true.
    assert_eq!(tok.encode("ab ab", true).unwrap(), vec![259, 256, 258]);
    assert_eq!(
        tok.encode("ab<tool>12", false).unwrap(),
        vec![256, 261, u32::from(b'1'), u32::from(b'2')]
    );
    assert_eq!(tok.decode(&[259, 256, 258, 260], true).unwrap(), "ab ab");
    assert_eq!(
        tok.decode(&[256, 261], true).unwrap(),
        "ab<tool>",
        "user-defined tokens are not special"
    );
    let chat = tok
        .apply_chat_template(&[ChatMessage::new("user", "  hi  ")], true)
        .unwrap();
    assert_eq!(chat, "[user]hi");

    let mut no_bos = toy_metadata();
    no_bos.insert(
        "tokenizer.ggml.add_bos_token".into(),
        GgufValue::Bool(false),
    );
    assert_eq!(
        from_meta(&no_bos).unwrap().encode("ab", true).unwrap(),
        vec![256]
    );
}

#[test]
fn gguf_metadata_errors_name_the_key() {
    let mut m = toy_metadata();
    m.insert(
        "tokenizer.ggml.model".into(),
        GgufValue::String("llama".into()),
    );
    let e = from_meta(&m).unwrap_err();
    assert!(
        matches!(e, FormatError::Unsupported { .. }) && e.to_string().contains("llama"),
        "{e}"
    );

    let mut m = toy_metadata();
    m.insert(
        "tokenizer.ggml.pre".into(),
        GgufValue::String("deepseek-coder".into()),
    );
    let e = from_meta(&m).unwrap_err();
    assert!(
        matches!(e, FormatError::Unsupported { .. }) && e.to_string().contains("deepseek-coder"),
        "{e}"
    );

    let mut m = toy_metadata();
    m.remove("tokenizer.ggml.merges");
    let e = from_meta(&m).unwrap_err();
    assert!(e.to_string().contains("tokenizer.ggml.merges"), "{e}");

    let mut m = toy_metadata();
    m.insert("tokenizer.ggml.eos_token_id".into(), GgufValue::U32(9999));
    let e = from_meta(&m).unwrap_err();
    assert!(e.to_string().contains("tokenizer.ggml.eos_token_id"), "{e}");

    let mut m = toy_metadata();
    m.insert(
        "tokenizer.ggml.token_type".into(),
        GgufValue::Array(vec![GgufValue::I32(1)]),
    );
    assert!(from_meta(&m)
        .unwrap_err()
        .to_string()
        .contains("token_type"));
}

fn write_hf_dir(config: &serde_json::Value) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let tok = from_meta(&toy_metadata()).unwrap();
    std::fs::write(dir.path().join("tokenizer.json"), tok.to_json().unwrap()).unwrap();
    std::fs::write(dir.path().join("tokenizer_config.json"), config.to_string()).unwrap();
    dir
}

#[test]
fn hf_dir_with_tokenizer_config() {
    let cfg = serde_json::json!({
        "bos_token": {"content": "<s>", "special": true}, "eos_token": "</s>",
        "chat_template": [
            {"name": "tool_use", "template": "unused"},
            {"name": "default", "template": "{{ bos_token }}{% for m in messages %}{% if m.role == 'system' %}{{ raise_exception('no system') }}{% endif %}{{ m.content | upper }}{{ eos_token }}{% endfor %}{% if add_generation_prompt %}>{% endif %}"}
        ]
    });
    let tok = Tokenizer::from_hf_dir(write_hf_dir(&cfg).path()).unwrap();
    assert_eq!((tok.bos_id(), tok.eos_ids()), (Some(259), &[260][..]));
    let msgs = [
        ChatMessage::new("user", "ab"),
        ChatMessage::new("assistant", "cd"),
    ];
    assert_eq!(
        tok.apply_chat_template(&msgs, true).unwrap(),
        "<s>AB</s>CD</s>>"
    );
    let e = tok
        .apply_chat_template(&[ChatMessage::new("system", "x")], false)
        .unwrap_err();
    assert!(
        matches!(e, FormatError::Template(ref m) if m.contains("no system")),
        "{e}"
    );
}

#[test]
fn tokenizer_config_errors() {
    let e =
        Tokenizer::from_hf_dir(write_hf_dir(&serde_json::json!({"eos_token": "<nope>"})).path())
            .unwrap_err();
    assert!(
        matches!(e, FormatError::Field { ref field, .. } if field == "eos_token"),
        "{e}"
    );
    let e = Tokenizer::from_hf_dir(
        write_hf_dir(&serde_json::json!({"chat_template": [{"name": "x", "template": "y"}]}))
            .path(),
    )
    .unwrap_err();
    assert!(
        matches!(e, FormatError::Field { ref field, .. } if field == "chat_template"),
        "{e}"
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tokenizer.json"), "{ not json").unwrap();
    assert!(
        matches!(Tokenizer::from_hf_dir(dir.path()), Err(FormatError::Tokenizer(ref m)) if m.contains("tokenizer.json"))
    );
}

#[test]
fn chat_template_missing_or_broken() {
    let mut tok = Tokenizer::synthetic_byte_level(300, 257).unwrap();
    let msgs = [ChatMessage::new("user", "hi")];
    let e = tok.apply_chat_template(&msgs, true).unwrap_err();
    assert!(
        matches!(e, FormatError::Template(ref m) if m.contains("no chat template")),
        "{e}"
    );
    tok.set_chat_template(Some("{% for m in messages %}{{ m.content".into()));
    assert!(matches!(
        tok.apply_chat_template(&msgs, true),
        Err(FormatError::Template(_))
    ));
    // Python methods templates rely on.
    tok.set_chat_template(Some(
        "{% for k, v in {'a': 1}.items() %}{{ k }}={{ v }}{% endfor %}|{{ ' x '.lstrip() }}|{{ 'a,b'.split(',') | length }}|{{ messages[0].content.startswith('h') }}|{{ bos_token }}".into(),
    ));
    assert_eq!(
        tok.apply_chat_template(&msgs, false).unwrap(),
        "a=1|x |2|True|<|begin_of_text|>"
    );
}

#[test]
fn stream_survives_invalid_bytes() {
    let tok = Tokenizer::synthetic_byte_level(300, 257).unwrap();
    // A lone continuation byte run never completes a character: emitted after 5 ids, not held forever.
    let mut stream = tok.decode_stream(false);
    let mut out = String::new();
    for id in [
        u32::from(b'o'),
        0x80,
        0x80,
        0x80,
        0x80,
        0x80,
        u32::from(b'k'),
    ] {
        out.extend(stream.step(id).unwrap());
    }
    out.extend(stream.flush().unwrap());
    assert!(
        out.starts_with('o') && out.ends_with('k') && out.contains('\u{FFFD}'),
        "{out:?}"
    );
    // A 4-byte character arriving byte by byte is emitted whole.
    let mut stream = tok.decode_stream(false);
    let chunks: Vec<Option<String>> = "🎉"
        .bytes()
        .map(|b| stream.step(u32::from(b)).unwrap())
        .collect();
    assert_eq!(chunks, vec![None, None, None, Some("🎉".to_string())]);
}
