//! Corruption helpers shared by the hardening tests.
use super::*;
use vpd_formats::FormatError as E;

/// Opens `bytes`, expects an error, and checks the message names the file.
pub fn open_err(bytes: &[u8]) -> (E, String) {
    let (r, path, _dir) = open_bytes(bytes);
    let e = r.expect_err("corrupt file opened");
    let msg = e.to_string();
    assert!(
        msg.contains(&*path.to_string_lossy()),
        "message does not name the file: {msg}"
    );
    (e, msg)
}

pub fn valid() -> (Gguf, Built) {
    let (g, _) = toy_llama(Q8_0);
    let b = g.build();
    (g, b)
}

pub fn patch(bytes: &mut [u8], at: usize, v: &[u8]) {
    bytes[at..at + v.len()].copy_from_slice(v);
}

pub fn assert_tensor(e: &E, name: &str, msg: &str, needle: &str) {
    assert!(
        matches!(e, E::Tensor { tensor, .. } if tensor == name),
        "{msg}"
    );
    assert!(msg.contains(needle), "`{needle}` not in: {msg}");
}

pub fn assert_field(e: &E, key: &str, msg: &str, needle: &str) {
    assert!(matches!(e, E::Field { field, .. } if field == key), "{msg}");
    assert!(msg.contains(needle), "`{needle}` not in: {msg}");
}
