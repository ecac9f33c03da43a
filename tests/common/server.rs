//! A `vpd serve` child process for the HTTP tests, and a small streaming client.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::Value;

pub struct Server {
    pub child: Child,
    pub base: String,
}

impl Server {
    /// Starts `vpd serve --port 0 ARGS` and waits for its "listening on" line.
    pub fn start(args: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_vpd"))
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .args(["serve", "--port", "0"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn vpd serve");
        let out = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(out).read_line(&mut line).expect("read the listening line");
        let base = line
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap_or_else(|| panic!("no address in {line:?}"))
            .to_string();
        Self { child, base }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        for _ in 0..600 {
            if let Ok(Some(s)) = self.child.try_wait() {
                return s;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("vpd serve did not exit within 30 s of SIGTERM");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .expect("client")
}

async fn send(c: &reqwest::Client, url: &str, body: &str) -> reqwest::Response {
    c.post(url)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .expect("send")
}

pub async fn post(c: &reqwest::Client, url: &str, body: &str) -> (u16, Value) {
    let r = send(c, url, body).await;
    let status = r.status().as_u16();
    let text = r.text().await.expect("body");
    let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, v)
}

/// The `data:` payloads of a streamed response, `[DONE]` included (as a string).
pub async fn stream(c: &reqwest::Client, url: &str, body: &str) -> (u16, Vec<Value>) {
    let r = send(c, url, body).await;
    let status = r.status().as_u16();
    let mut events = Vec::new();
    let mut buf = String::new();
    let mut bytes = r.bytes_stream();
    while let Some(chunk) = bytes.next().await {
        buf.push_str(&String::from_utf8_lossy(&chunk.expect("chunk")));
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            for line in block.lines() {
                if let Some(d) = line.strip_prefix("data: ") {
                    events.push(serde_json::from_str(d).unwrap_or(Value::String(d.to_string())));
                }
            }
        }
    }
    (status, events)
}

pub async fn metric(c: &reqwest::Client, server: &Server, name: &str) -> f64 {
    let text = c
        .get(server.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics body");
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with('{'))
        .map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()).unwrap_or(f64::NAN))
        .sum()
}
