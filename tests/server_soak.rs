//! Soak: a few hundred requests at a rate above the server's capacity, streaming and not,
//! greedy and sampled, with random client disconnects, against `vpd serve` with a drafter
//! (three-lane-adaptive). Every request must end in exactly one explicit way: completed,
//! refused with 429, failed with an error, or dropped by the client; the runtime must account
//! for every admitted request; no KV block may leak; the server must stay up.
mod common;

use std::time::Duration;

use common::server::{client, metric, Server};
use futures_util::StreamExt;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

const REQUESTS: usize = 300;
const BURST: usize = 60;

#[derive(Debug, PartialEq)]
enum End {
    Completed,
    Refused,
    Failed(String),
    Dropped,
}

async fn one(c: reqwest::Client, url: String, body: Value, drop_after: Option<usize>) -> End {
    let streaming = body["stream"] == json!(true);
    let r = match c.post(&url).json(&body).send().await {
        Ok(r) => r,
        Err(e) => return End::Failed(format!("transport: {e}")),
    };
    let status = r.status().as_u16();
    if status == 429 {
        let v: Value = r.json().await.unwrap_or_default();
        assert_eq!(v["error"]["type"], "rate_limit_error", "{v}");
        return End::Refused;
    }
    assert_eq!(status, 200, "unexpected status {status}: {:?}", r.text().await);
    if !streaming {
        let v: Value = r.json().await.expect("json body");
        assert!(v["choices"][0]["finish_reason"].is_string(), "{v}");
        return End::Completed;
    }
    let mut bytes = r.bytes_stream();
    let (mut seen, mut text) = (0, String::new());
    while let Some(chunk) = bytes.next().await {
        let Ok(chunk) = chunk else {
            return End::Failed("stream broke".into());
        };
        text.push_str(&String::from_utf8_lossy(&chunk));
        seen += 1;
        if drop_after.is_some_and(|k| seen >= k) {
            return End::Dropped;
        }
    }
    if let Some(err) = text.lines().find(|l| l.contains("\"error\"")) {
        return End::Failed(err.to_string());
    }
    assert!(text.contains("data: [DONE]"), "stream ended without [DONE]: {text}");
    assert!(text.contains("\"finish_reason\":\"length\"") || text.contains("\"finish_reason\":\"stop\""), "{text}");
    End::Completed
}

#[test]
fn soak_above_capacity_with_disconnects_loses_nothing_and_leaks_nothing() {
    let s = Server::start(&[
        "--model", "tests/fixtures/tiny-llama3",
        "--draft", "ngram:2",
        "--max-running", "4",
        "--max-waiting", "12",
        "--kv-tokens", "2048",
        "--max-model-len", "512",
    ]);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let c = client();
        let url = s.url("/v1/completions");
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        let mut tasks = Vec::with_capacity(REQUESTS);
        for i in 0..REQUESTS {
            let prompt: Vec<u32> = (0..rng.random_range(1..200)).map(|_| rng.random_range(0..256)).collect();
            let stream = rng.random_bool(0.7);
            let body = json!({
                "prompt": prompt,
                "max_tokens": rng.random_range(1..120),
                "temperature": if rng.random_bool(0.5) { 0.0 } else { 0.8 },
                "seed": i,
                "ignore_eos": rng.random_bool(0.8),
                "stream": stream,
            });
            let drop_after = (stream && rng.random_bool(0.25)).then(|| rng.random_range(1..6));
            tasks.push(tokio::spawn(one(c.clone(), url.clone(), body, drop_after)));
            // A burst of 60 at once (far more than 4 running + 12 waiting, so some must get
            // 429 however fast the machine), then about 100 requests/s.
            if i >= BURST {
                tokio::time::sleep(Duration::from_micros(rng.random_range(0..20000))).await;
            }
        }
        let mut ends = Vec::with_capacity(REQUESTS);
        for t in tasks {
            ends.push(t.await.expect("client task"));
        }
        let count = |f: &dyn Fn(&End) -> bool| ends.iter().filter(|e| f(e)).count();
        let (done, refused, dropped) = (
            count(&|e| *e == End::Completed),
            count(&|e| *e == End::Refused),
            count(&|e| *e == End::Dropped),
        );
        let failed: Vec<&End> = ends.iter().filter(|e| matches!(e, End::Failed(_))).collect();
        eprintln!("soak: {done} completed, {refused} refused (429), {dropped} dropped by the client, {} failed", failed.len());
        assert!(failed.is_empty(), "{failed:?}");
        assert!(refused > 0, "the burst was meant to exceed the waiting queue");
        assert!(done > 0);
        // Let the runtime notice the last disconnects, then check its books.
        let admitted = (REQUESTS - refused) as f64;
        for _ in 0..400 {
            if metric(&c, &s, "vpd:request_success_total").await >= admitted {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert_eq!(metric(&c, &s, "vpd:request_success_total").await, admitted, "every admitted request ended, once");
        assert_eq!(metric(&c, &s, "vpd:kv_cache_used_blocks").await, 0.0, "no KV block leaked");
        assert_eq!(metric(&c, &s, "vpd:num_requests_running").await, 0.0);
        assert_eq!(metric(&c, &s, "vpd:num_requests_waiting").await, 0.0);
        assert_eq!(metric(&c, &s, "vpd:engine_faults_total").await, 0.0);
        assert_eq!(c.get(s.url("/health")).send().await.unwrap().status().as_u16(), 200);
    });
}
