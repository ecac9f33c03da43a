//! `vpd bench --url` end to end against a small mock OpenAI server on 127.0.0.1: the model
//! name and context come from `GET /v1/models`, the outputs are written with the run labelled by it,
//! a 429 counts as a failed request, and bad URLs are refused with a clear error.
//! (The client's timing and failure handling are tested in `crates/vpd-bench/tests`.)
use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

fn vpd(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vpd"))
        .args(args)
        .output()
        .expect("run vpd")
}

/// Streams `max_tokens` one-word chunks and a usage event; every third request gets a 429.
async fn completions(State(n): State<Arc<AtomicUsize>>, Json(b): Json<Value>) -> Response {
    if n.fetch_add(1, Ordering::SeqCst) % 3 == 2 {
        let e = json!({"error": {"message": "waiting queue is full", "code": 429}});
        return (StatusCode::TOO_MANY_REQUESTS, Json(e)).into_response();
    }
    let m = b["max_tokens"].as_u64().unwrap_or(0);
    let mut s = String::new();
    for _ in 0..m {
        s += &format!(
            "data: {}\n\n",
            json!({"choices": [{"index": 0, "text": "w "}]})
        );
    }
    s += &format!(
        "data: {}\n\ndata: [DONE]\n\n",
        json!({"choices": [], "usage": {"completion_tokens": m}})
    );
    ([(header::CONTENT_TYPE, "text/event-stream")], s).into_response()
}

fn start_mock() -> String {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let app = Router::new()
                .route("/v1/completions", post(completions))
                .route(
                    "/v1/models",
                    get(|| async { Json(json!({"data": [{"id": "mock-served", "max_model_len": 1000}]})) }),
                )
                .with_state(Arc::new(AtomicUsize::new(0)));
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(l.local_addr().unwrap()).unwrap();
            axum::serve(l, app).await.unwrap();
        });
    });
    format!("http://{}", rx.recv().unwrap())
}

/// A small ShareGPT file: six conversations with prompts and replies long enough for the
/// filter (≥ 4 tokens each).
fn dataset(dir: &Path) -> String {
    let convs: Vec<Value> = (0..6)
        .map(|i| {
            json!({"id": i.to_string(), "conversations": [
                {"from": "human", "value": format!("Please tell me a short story about the number {i} and a cat.")},
                {"from": "gpt", "value": "Once upon a time there was a cat who counted everything it saw."},
            ]})
        })
        .collect();
    let p = dir.join("sharegpt.json");
    std::fs::write(&p, serde_json::to_string(&convs).unwrap()).unwrap();
    p.display().to_string()
}

#[test]
fn bench_url_writes_the_report_and_counts_429s() {
    let d = tempfile::tempdir().unwrap();
    let model = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tiny-llama3");
    let data = dataset(d.path());
    let out = d.path().join("out");
    let url = start_mock();
    let o = vpd(&[
        "bench",
        "--url",
        &url,
        "--model",
        model,
        "--dataset",
        &data,
        "--num-prompts",
        "6",
        "--request-rates",
        "inf",
        "--max-output",
        "5",
        "--out",
        out.to_str().unwrap(),
        "--save-detailed",
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("429 Too Many Requests: waiting queue is full"),
        "{err}"
    );
    // The server's max_model_len bounds the prompts, as the model's context does in process.
    assert!(err.contains("prompts limited to 999 tokens by the model's context of 1000"), "{err}");
    let j: Value = serde_json::from_slice(&std::fs::read(out.join("bench.json")).unwrap()).unwrap();
    let run = &j["runs"][0];
    assert_eq!(run["policy"], "mock-served");
    assert_eq!(
        (
            run["summary"]["completed"].as_u64(),
            run["summary"]["failed"].as_u64()
        ),
        (Some(4), Some(2))
    );
    assert_eq!(run["summary"]["total_output_tokens"], 4 * 5);
    // --save-detailed: the two refused requests carry the server's reason, the rest their tokens.
    let reqs = run["requests"].as_array().unwrap();
    let failed: Vec<&Value> = reqs.iter().filter(|q| !q["error"].is_null()).collect();
    assert_eq!((reqs.len(), failed.len()), (6, 2), "{reqs:?}");
    assert!(failed.iter().all(|q| q["error"].as_str().unwrap().contains("429")), "{failed:?}");
    assert!(reqs.iter().filter(|q| q["error"].is_null()).all(|q| q["output_tokens"] == 5), "{reqs:?}");
    assert!(j["device"].as_str().unwrap().contains(&url));
    assert!(out.join("bench.md").exists());
    assert!(String::from_utf8_lossy(&o.stdout).contains("| mock-served | inf | 4/6 |"));
}

#[test]
fn bench_url_refuses_bad_urls_and_misplaced_options() {
    for (args, needle) in [
        (&["--url", "https://127.0.0.1:1"][..], "no TLS"),
        (&["--url", "127.0.0.1:1"][..], "must start with http://"),
        (
            &["--url", "http://127.0.0.1:1", "--max-concurrency", "0"][..],
            "max_concurrency",
        ),
        (&["--served-model-name", "x"][..], "--url"),
    ] {
        let o = vpd(&[&["bench"][..], args].concat());
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            !o.status.success() && !err.contains("panicked"),
            "{args:?}: {err}"
        );
        assert!(
            err.contains(needle),
            "{args:?}: stderr does not name `{needle}`: {err}"
        );
    }
}
