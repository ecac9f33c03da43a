//! Hugging Face checkpoint directories: toy 2-layer Llama checkpoints written with the
//! `safetensors` serializer, opened through `vpd_formats::hf`, good and bad.
use std::path::Path;

use safetensors::tensor::TensorView;
use safetensors::Dtype;
use vpd_formats::hf::{self, expected_shapes};
use vpd_formats::{DType, FormatError, WeightSource};

const CONFIG: &str = r#"{
  "architectures": ["LlamaForCausalLM"], "model_type": "llama",
  "hidden_size": 16, "intermediate_size": 24, "num_hidden_layers": 2,
  "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 37,
  "rms_norm_eps": 1e-5, "rope_theta": 500000.0, "max_position_embeddings": 128,
  "tie_word_embeddings": false, "bos_token_id": 1, "eos_token_id": [2, 3],
  "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                   "high_freq_factor": 4.0, "original_max_position_embeddings": 64}
}"#;

/// Deterministic values, exactly representable in bf16 and f16 (multiples of 1/64 in [-2, 2)).
fn values(name: &str, n: usize) -> Vec<f32> {
    let seed = name
        .bytes()
        .fold(7u32, |a, b| a.wrapping_mul(31).wrapping_add(b.into()));
    (0..n)
        .map(|i| (((seed as usize + i * 13) % 256) as f32 - 128.0) / 64.0)
        .collect()
}

fn encode(v: &[f32], dtype: Dtype) -> Vec<u8> {
    match dtype {
        Dtype::F32 => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        Dtype::F16 => v
            .iter()
            .flat_map(|x| half::f16::from_f32(*x).to_le_bytes())
            .collect(),
        Dtype::BF16 => v
            .iter()
            .flat_map(|x| half::bf16::from_f32(*x).to_le_bytes())
            .collect(),
        Dtype::I64 => v.iter().flat_map(|x| (*x as i64).to_le_bytes()).collect(),
        _ => unreachable!(),
    }
}

/// (name, dtype, shape, bytes) of the toy model.
type Tensors = Vec<(String, Dtype, Vec<usize>, Vec<u8>)>;

fn toy_tensors(dtype: Dtype) -> Tensors {
    let cfg = hf::parse_llama_config(CONFIG, Path::new("config.json")).unwrap();
    expected_shapes(&cfg)
        .into_iter()
        .map(|(name, shape)| {
            let data = encode(&values(&name, shape.iter().product()), dtype);
            (name, dtype, shape, data)
        })
        .collect()
}

fn write_st(path: &Path, tensors: &[(String, Dtype, Vec<usize>, Vec<u8>)]) {
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    std::fs::write(path, safetensors::serialize(views, None).unwrap()).unwrap();
}

fn write_dir(config: &str, tensors: &Tensors) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.json"), config).unwrap();
    write_st(&dir.path().join("model.safetensors"), tensors);
    dir
}

/// Splits the tensors over two shards and writes the index.
fn write_sharded(tensors: &Tensors) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.json"), CONFIG).unwrap();
    let (a, b): (Tensors, Tensors) = tensors
        .iter()
        .cloned()
        .partition(|t| !t.0.contains("layers.1") && t.0 != "lm_head.weight");
    let names = [
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    ];
    write_st(&dir.path().join(names[0]), &a);
    write_st(&dir.path().join(names[1]), &b);
    let mut map = serde_json::Map::new();
    for (k, part) in [a, b].iter().enumerate() {
        for t in part {
            map.insert(t.0.clone(), names[k].into());
        }
    }
    let index = serde_json::json!({"metadata": {"total_size": 0}, "weight_map": map});
    std::fs::write(
        dir.path().join("model.safetensors.index.json"),
        index.to_string(),
    )
    .unwrap();
    dir
}

fn err_of(dir: &Path) -> FormatError {
    hf::open(dir).expect_err("open must fail")
}

#[test]
fn single_file_opens_with_config() {
    let dir = write_dir(CONFIG, &toy_tensors(Dtype::BF16));
    let ck = hf::open(dir.path()).unwrap();
    let c = ck.config();
    assert_eq!(
        (
            c.hidden_size,
            c.num_attention_heads,
            c.num_key_value_heads,
            c.head_dim
        ),
        (16, 4, 2, 4)
    );
    assert_eq!(c.eos_token_ids, vec![2, 3]);
    assert_eq!(
        c.rope_scaling
            .as_ref()
            .unwrap()
            .original_max_position_embeddings,
        64
    );
    assert_eq!(ck.dir(), dir.path());
    assert!(ck.generation_config().is_none());
    assert_eq!(ck.tensors().len(), 2 * 9 + 3);
    let q = ck.info("model.layers.1.self_attn.k_proj.weight").unwrap();
    assert_eq!((q.dtype, q.shape), (DType::BF16, vec![8, 16]));
}

#[test]
fn dtype_round_trips() {
    for (dtype, want) in [
        (Dtype::BF16, DType::BF16),
        (Dtype::F16, DType::F16),
        (Dtype::F32, DType::F32),
    ] {
        let dir = write_dir(CONFIG, &toy_tensors(dtype));
        let ck = hf::open(dir.path()).unwrap();
        for t in ck.tensors() {
            assert_eq!(t.dtype, want);
            assert_eq!(
                ck.read_f32(&t.name).unwrap(),
                values(&t.name, t.numel()),
                "{}",
                t.name
            );
        }
        let name = "model.layers.0.mlp.down_proj.weight";
        let expect = values(name, 16 * 24);
        match want {
            DType::BF16 => assert_eq!(
                ck.view_bf16(name)
                    .unwrap()
                    .iter()
                    .map(|x| x.to_f32())
                    .collect::<Vec<_>>(),
                expect
            ),
            DType::F16 => assert_eq!(
                ck.view_f16(name)
                    .unwrap()
                    .iter()
                    .map(|x| x.to_f32())
                    .collect::<Vec<_>>(),
                expect
            ),
            _ => match ck.view_f32(name) {
                Ok(v) => assert_eq!(v, &expect[..]),
                // safetensors only promises 8-byte header padding; f32 needs 4, so this holds.
                Err(e) => panic!("f32 view failed: {e}"),
            },
        }
        // Viewing as the wrong type is an error naming the tensor, not a reinterpretation.
        let wrong = if want == DType::F32 {
            ck.view_bf16(name).map(|_| ())
        } else {
            ck.view_f32(name).map(|_| ())
        };
        assert!(matches!(wrong, Err(FormatError::Tensor { ref tensor, .. }) if tensor == name));
    }
}

#[test]
fn sharded_checkpoint_opens_and_reads() {
    let tensors = toy_tensors(Dtype::F16);
    let dir = write_sharded(&tensors);
    let ck = hf::open(dir.path()).unwrap();
    assert_eq!(ck.tensors().len(), tensors.len());
    let p = ck.tensor_path("lm_head.weight").unwrap();
    assert!(p.ends_with("model-00002-of-00002.safetensors"));
    assert_eq!(
        ck.read_f32("model.norm.weight").unwrap(),
        values("model.norm.weight", 16)
    );
}

#[test]
fn generation_config_adds_eos_ids() {
    let dir = write_dir(CONFIG, &toy_tensors(Dtype::BF16));
    std::fs::write(
        dir.path().join("generation_config.json"),
        r#"{"do_sample": true, "temperature": 0.6, "top_p": 0.9, "eos_token_id": [3, 5], "transformers_version": "4.45"}"#,
    )
    .unwrap();
    let ck = hf::open(dir.path()).unwrap();
    assert_eq!(ck.config().eos_token_ids, vec![2, 3, 5]);
    let g = ck.generation_config().unwrap();
    assert_eq!(
        (g.do_sample, g.temperature, g.top_k, g.top_p),
        (Some(true), Some(0.6), None, Some(0.9))
    );
}

#[test]
fn tied_embeddings_need_no_lm_head() {
    let cfg = CONFIG.replace(
        r#""tie_word_embeddings": false"#,
        r#""tie_word_embeddings": true"#,
    );
    let mut t = toy_tensors(Dtype::BF16);
    t.retain(|x| x.0 != "lm_head.weight");
    let dir = write_dir(&cfg, &t);
    assert!(hf::open(dir.path()).unwrap().config().tie_word_embeddings);
}

#[test]
fn config_defaults() {
    let cfg = r#"{"model_type": "llama", "hidden_size": 16, "intermediate_size": 24, "num_hidden_layers": 2,
                  "num_attention_heads": 4, "vocab_size": 37, "eos_token_id": 2, "rope_scaling": null}"#;
    let c = hf::parse_llama_config(cfg, Path::new("config.json")).unwrap();
    assert_eq!(
        (c.num_key_value_heads, c.head_dim, c.rope_theta),
        (4, 4, 10000.0)
    );
    assert_eq!(
        (c.eos_token_ids, c.tie_word_embeddings, c.rope_scaling),
        (vec![2], false, None)
    );
}

#[test]
fn truncated_safetensors_is_corrupt() {
    let dir = write_dir(CONFIG, &toy_tensors(Dtype::BF16));
    let p = dir.path().join("model.safetensors");
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() - 10]).unwrap();
    let e = err_of(dir.path());
    assert!(
        matches!(e, FormatError::Corrupt { ref path, .. } if path == &p),
        "{e}"
    );
    assert!(e.to_string().contains("model.safetensors"), "{e}");
}

#[test]
fn absurd_header_length_is_corrupt() {
    let dir = write_dir(CONFIG, &toy_tensors(Dtype::BF16));
    let p = dir.path().join("model.safetensors");
    let mut bytes = std::fs::read(&p).unwrap();
    bytes[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    std::fs::write(&p, &bytes).unwrap();
    let e = err_of(dir.path());
    assert!(matches!(e, FormatError::Corrupt { .. }), "{e}");
    assert!(
        e.to_string().contains("model.safetensors")
            && e.to_string().contains(&u64::MAX.to_string()),
        "{e}"
    );
}

#[test]
fn missing_tensor_is_named() {
    let mut t = toy_tensors(Dtype::BF16);
    t.retain(|x| x.0 != "model.layers.1.mlp.up_proj.weight");
    let e = err_of(write_dir(CONFIG, &t).path());
    assert!(
        matches!(e, FormatError::Tensor { ref tensor, .. } if tensor == "model.layers.1.mlp.up_proj.weight"),
        "{e}"
    );
    let s = e.to_string();
    assert!(
        s.contains("model.safetensors") && s.contains("missing") && s.contains("[24, 16]"),
        "{s}"
    );
}

#[test]
fn wrong_shape_is_named() {
    let mut t = toy_tensors(Dtype::BF16);
    let o = t
        .iter_mut()
        .find(|x| x.0 == "model.layers.0.self_attn.o_proj.weight")
        .unwrap();
    o.2 = vec![8, 32];
    let e = err_of(write_dir(CONFIG, &t).path());
    assert!(
        matches!(e, FormatError::Tensor { ref tensor, .. } if tensor == "model.layers.0.self_attn.o_proj.weight"),
        "{e}"
    );
    let s = e.to_string();
    assert!(
        s.contains("model.safetensors") && s.contains("[8, 32]") && s.contains("[16, 16]"),
        "{s}"
    );
}

#[test]
fn unsupported_architecture_is_named() {
    let cfg = CONFIG
        .replace("LlamaForCausalLM", "MistralForCausalLM")
        .replace(r#""llama""#, r#""mistral""#);
    let e = err_of(write_dir(&cfg, &toy_tensors(Dtype::BF16)).path());
    assert!(
        matches!(
            e,
            FormatError::Unsupported {
                what: "architecture",
                ..
            }
        ),
        "{e}"
    );
    assert!(
        e.to_string().contains("MistralForCausalLM") && e.to_string().contains("config.json"),
        "{e}"
    );
}

#[test]
fn unsupported_dtype_is_named() {
    let mut t = toy_tensors(Dtype::BF16);
    t.push((
        "model.layers.0.self_attn.rotary_emb.positions".into(),
        Dtype::I64,
        vec![4],
        encode(&[0.0; 4], Dtype::I64),
    ));
    let e = err_of(write_dir(CONFIG, &t).path());
    assert!(
        matches!(
            e,
            FormatError::Unsupported {
                what: "tensor dtype",
                ..
            }
        ),
        "{e}"
    );
    let s = e.to_string();
    assert!(
        s.contains("rotary_emb.positions") && s.contains("I64") && s.contains("model.safetensors"),
        "{s}"
    );
}

#[test]
fn missing_shard_is_named() {
    let dir = write_sharded(&toy_tensors(Dtype::BF16));
    std::fs::remove_file(dir.path().join("model-00002-of-00002.safetensors")).unwrap();
    let e = err_of(dir.path());
    assert!(
        matches!(e, FormatError::Field { ref field, .. } if field == "weight_map"),
        "{e}"
    );
    let s = e.to_string();
    assert!(
        s.contains("model.safetensors.index.json")
            && s.contains("model-00002-of-00002.safetensors"),
        "{s}"
    );
}

#[test]
fn duplicate_tensor_across_shards_is_refused() {
    let tensors = toy_tensors(Dtype::BF16);
    let dir = write_sharded(&tensors);
    // Rewrite shard 2 with an extra copy of a shard-1 tensor.
    let mut b: Tensors = tensors
        .iter()
        .filter(|t| t.0.contains("layers.1") || t.0 == "lm_head.weight")
        .cloned()
        .collect();
    b.push(
        tensors
            .iter()
            .find(|t| t.0 == "model.norm.weight")
            .unwrap()
            .clone(),
    );
    write_st(&dir.path().join("model-00002-of-00002.safetensors"), &b);
    let e = err_of(dir.path());
    assert!(
        matches!(e, FormatError::Tensor { ref tensor, .. } if tensor == "model.norm.weight"),
        "{e}"
    );
    assert!(e.to_string().contains("duplicate"), "{e}");
}

#[test]
fn heads_not_multiple_of_kv_heads() {
    let cfg = CONFIG.replace(r#""num_key_value_heads": 2"#, r#""num_key_value_heads": 3"#);
    let e = err_of(write_dir(&cfg, &toy_tensors(Dtype::BF16)).path());
    assert!(
        matches!(e, FormatError::Field { ref field, .. } if field == "num_attention_heads"),
        "{e}"
    );
    assert!(
        e.to_string().contains("config.json") && e.to_string().contains("num_key_value_heads"),
        "{e}"
    );
}

#[test]
fn unknown_rope_scaling_type() {
    let cfg = CONFIG.replace(r#""rope_type": "llama3""#, r#""rope_type": "yarn""#);
    let e = err_of(write_dir(&cfg, &toy_tensors(Dtype::BF16)).path());
    assert!(
        matches!(
            e,
            FormatError::Unsupported {
                what: "rope_scaling",
                ..
            }
        ),
        "{e}"
    );
    assert!(
        e.to_string().contains("yarn") && e.to_string().contains("config.json"),
        "{e}"
    );
}

#[test]
fn bad_json_config() {
    let e = err_of(write_dir("{\"hidden_size\": 16,", &toy_tensors(Dtype::BF16)).path());
    assert!(matches!(e, FormatError::Corrupt { .. }), "{e}");
    assert!(
        e.to_string().contains("config.json") && e.to_string().contains("JSON"),
        "{e}"
    );
}

#[test]
fn mistyped_field_is_named() {
    let cfg = CONFIG.replace(r#""hidden_size": 16"#, r#""hidden_size": "16""#);
    let e = err_of(write_dir(&cfg, &toy_tensors(Dtype::BF16)).path());
    assert!(
        matches!(e, FormatError::Field { ref field, .. } if field == "hidden_size"),
        "{e}"
    );
}

#[test]
fn missing_weights_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.json"), CONFIG).unwrap();
    let e = err_of(dir.path());
    assert!(
        matches!(e, FormatError::Io { .. }) && e.to_string().contains("model.safetensors"),
        "{e}"
    );
}
