//! The real-client test of issue 6: the official `openai` Python SDK, from the project-local
//! venv that `make test` installs (`.venv-sdk`), completes streaming and non-streaming
//! completions and chat against a `vpd serve` started here (tools/openai_sdk_check.py).
mod common;

use std::process::Command;

use common::server::Server;

#[test]
fn openai_python_sdk_talks_to_vpd_serve() {
    let python = common::repo().join(".venv-sdk/bin/python");
    if !python.exists() {
        if std::env::var_os("VPD_SKIP_SDK_TEST").is_some() {
            eprintln!("skipped: VPD_SKIP_SDK_TEST is set and .venv-sdk is missing");
            return;
        }
        panic!("{} is missing: run `make test` (it installs the openai SDK there), or set VPD_SKIP_SDK_TEST=1", python.display());
    }
    let model = common::smollm2_path();
    let s = Server::start(&["--model", model.to_str().unwrap(), "--served-model-name", "smollm2"]);
    let out = Command::new(&python)
        .arg(common::repo().join("tools/openai_sdk_check.py"))
        .args([&s.base, "smollm2"])
        .output()
        .expect("run python");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{text}");
    assert!(text.contains("OK"), "{text}");
    eprintln!("{text}");
}
