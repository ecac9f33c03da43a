//! `vpd bench` in process, end to end on the tiny Llama-3 fixture: several policies over a
//! two-rate sweep write bench.json (every run, every request completed, acceptance reported for
//! the speculating policies), bench.md and bench.png; invalid settings are refused by name
//! before anything loads.
use std::process::{Command, Output};

use serde_json::Value;

const TINY: &str = "tests/fixtures/tiny-llama3";

fn vpd(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vpd")).args(args).output().expect("run vpd")
}

#[test]
fn a_policy_sweep_writes_every_run_and_its_reports() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().to_str().unwrap();
    let o = vpd(&[
        "bench", "--model", TINY, "--num-prompts", "6", "--request-rates", "4,inf", "--max-output", "6",
        "--policies", "nospec,single-lane,three-lane-adaptive", "--draft", "ngram:2", "--threads", "1", "--out", out,
        "--controller-objective", "tpot", "--save-detailed",
    ]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(stderr.contains("complete conversations"), "says how much of ShareGPT was read: {stderr}");
    // The fixture's context is 512 tokens: longer prompts are filtered, not failed.
    assert!(stderr.contains("prompts limited to 511 tokens"), "{stderr}");
    let report: Value = serde_json::from_slice(&std::fs::read(dir.path().join("bench.json")).unwrap()).unwrap();
    let runs = report["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 6, "3 policies x 2 rates");
    for r in runs {
        let s = &r["summary"];
        assert_eq!(s["completed"], 6, "{r}");
        let spec = r["policy"] != "nospec";
        assert_eq!(s["acceptance"].is_object(), spec, "{r}");
        // The serving thread's time adds up to its wall time, and every run ran forwards.
        let t = &s["serving_loop"];
        let part = |k: &str| t[k].as_f64().unwrap();
        assert!(t["forwards"].as_u64().unwrap() > 0, "{r}");
        let parts = ["target_forward_s", "draft_in_thread_s", "lane_wait_s", "idle_s", "host_s"].map(part);
        assert!(parts.iter().all(|&x| x >= 0.0), "{t}");
        // The host share is the rest of the wall time.
        assert!((parts.iter().sum::<f64>() - part("wall_s")).abs() < 1e-6, "{t}");
        // --save-detailed: every request, its lengths and times, and its own drafts.
        let reqs = r["requests"].as_array().unwrap();
        assert_eq!(reqs.len(), 6, "{r}");
        let (mut drafted, mut accepted) = (0, 0);
        for q in reqs {
            let out_tokens = q["output_tokens"].as_u64().unwrap();
            assert!((1..=6).contains(&out_tokens), "{q}");
            assert!(q["prompt_tokens"].as_u64().unwrap() > 0, "{q}");
            let ttft = q["ttft_ms"].as_f64().unwrap();
            assert!(ttft > 0.0 && q["e2el_ms"].as_f64().unwrap() >= ttft, "{q}");
            assert_eq!(q["tpot_ms"].is_f64(), out_tokens > 1, "{q}");
            assert!(q["error"].is_null(), "{q}");
            drafted += q["drafted"].as_u64().unwrap();
            accepted += q["accepted"].as_u64().unwrap();
        }
        assert!(accepted <= drafted, "{r}");
        if spec {
            assert_eq!(drafted, s["acceptance"]["drafted"].as_u64().unwrap(), "{r}");
            assert_eq!(accepted, s["acceptance"]["accepted"].as_u64().unwrap(), "{r}");
        } else {
            assert_eq!(drafted, 0, "{r}");
        }
        // The controller's view comes with adaptive runs only.
        let adaptive = r["policy"] == "three-lane-adaptive";
        assert_eq!(s["controller"].is_object(), adaptive, "{r}");
        if adaptive {
            assert!(s["controller"]["decisions"].as_u64().unwrap() > 0, "{r}");
            assert_eq!(s["controller"]["draft_step_ms"].as_array().unwrap().len(), 4, "{r}");
        }
    }
    let md = std::fs::read_to_string(dir.path().join("bench.md")).unwrap();
    assert!(md.contains("three-lane-adaptive") && md.contains("| policy |"), "{md}");
    assert!(md.contains("Controller:") && md.contains("controller objective tpot"), "{md}");
    // Only the finite rate is plotted; the PNG exists and is one.
    let png = std::fs::read(dir.path().join("bench.png")).unwrap();
    assert_eq!(&png[..4], b"\x89PNG");
}

#[test]
fn invalid_settings_are_refused_by_name() {
    for (args, field) in [
        (vec!["--request-rates", "0"], "request_rates"),
        (vec!["--request-rates=-1"], "request_rates"),
        (vec!["--policies", "fastest"], "policy"),
        (vec!["--num-draft", "0"], "num_draft"),
        (vec!["--burstiness", "0"], "burstiness"),
        (vec!["--dataset", "no/such/file.json"], "dataset"),
        (vec!["--slo", "ttft:abc"], "slo"),
        (vec!["--cuda-graphs"], "cuda_graphs"),
        (vec!["--decode-sms", "80"], "decode_sms"),
        (vec!["--prefill-sms", "32"], "prefill_sms"),
        (vec!["--decode-sms", "80", "--prefill-sms", "32"], "prefill_sms"),
        (vec!["--controller-objective", "fastest"], "controller-objective"),
    ] {
        let mut all = vec!["bench", "--model", TINY, "--num-prompts", "2"];
        all.extend(&args);
        let o = vpd(&all);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{args:?} was accepted");
        assert!(stderr.contains(field), "{args:?}: the error should name `{field}`: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}
