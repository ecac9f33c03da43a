//! An incremental reader of Server-Sent Events (the WHATWG "event stream" format) as OpenAI
//! streaming endpoints send them: lines of `field: value`, an event ending at a blank line.
//! Only `data` matters here; an event's `data` lines are joined with `\n`. Comment lines
//! (`:`…) and other fields (`event`, `id`, `retry`) are skipped.
//!
//! Bytes arrive in arbitrary pieces (a network read can end mid-line or mid-UTF-8 character),
//! so the reader buffers the unfinished line between [`SseReader::feed`] calls.

/// A line longer than this without a newline is garbage, not SSE: stop buffering it rather
/// than let a misbehaving server grow our memory without bound.
const MAX_LINE_BYTES: usize = 16 << 20;

/// What was wrong with the byte stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SseError {
    #[error("SSE line is not UTF-8")]
    NotUtf8,
    #[error("SSE line longer than {MAX_LINE_BYTES} bytes")]
    LineTooLong,
}

/// Splits a byte stream into the `data` payloads of its events.
#[derive(Debug, Default)]
pub struct SseReader {
    /// The unfinished line.
    line: Vec<u8>,
    /// The `data` of the event being read; `None` until its first `data` line.
    data: Option<String>,
}

impl SseReader {
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads `bytes` and appends the payload of every event they complete to `out`.
    ///
    /// # Errors
    /// [`SseError`] for a line that is not UTF-8 or too long; the reader should not be fed
    /// again after an error.
    pub fn feed(&mut self, bytes: &[u8], out: &mut Vec<String>) -> Result<(), SseError> {
        let mut rest = bytes;
        while let Some(nl) = rest.iter().position(|&b| b == b'\n') {
            self.line.extend_from_slice(&rest[..nl]);
            rest = &rest[nl + 1..];
            let line = std::mem::take(&mut self.line);
            self.line_done(&line, out)?;
        }
        if self.line.len() + rest.len() > MAX_LINE_BYTES {
            return Err(SseError::LineTooLong);
        }
        self.line.extend_from_slice(rest);
        Ok(())
    }

    /// The stream ended: an event without its closing blank line still counts (servers that
    /// close right after the last `data:` line are common), as does an unterminated last line.
    ///
    /// # Errors
    /// [`SseError::NotUtf8`] for a last line that is not UTF-8.
    pub fn finish(&mut self, out: &mut Vec<String>) -> Result<(), SseError> {
        if !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            self.line_done(&line, out)?;
        }
        out.extend(self.data.take());
        Ok(())
    }

    fn line_done(&mut self, line: &[u8], out: &mut Vec<String>) -> Result<(), SseError> {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            out.extend(self.data.take());
            return Ok(());
        }
        let line = std::str::from_utf8(line).map_err(|_| SseError::NotUtf8)?;
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        if field == "data" {
            // The format allows one optional space after the colon.
            let value = value.strip_prefix(' ').unwrap_or(value);
            match &mut self.data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(value);
                }
                None => self.data = Some(value.to_owned()),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(pieces: &[&[u8]]) -> Result<Vec<String>, SseError> {
        let mut r = SseReader::new();
        let mut out = Vec::new();
        for p in pieces {
            r.feed(p, &mut out)?;
        }
        r.finish(&mut out)?;
        Ok(out)
    }

    #[test]
    fn events_split_anywhere_join_the_same() {
        let s = b"data: {\"a\":1}\n\n: keep-alive\n\ndata:x\r\ndata: y\r\n\r\nevent: e\nid: 3\ndata: [DONE]\n\n";
        let whole = read_all(&[s]).unwrap();
        assert_eq!(whole, ["{\"a\":1}", "x\ny", "[DONE]"]);
        for cut in 0..s.len() {
            assert_eq!(
                read_all(&[&s[..cut], &s[cut..]]).unwrap(),
                whole,
                "cut at {cut}"
            );
        }
        let bytewise: Vec<&[u8]> = s.chunks(1).collect();
        assert_eq!(read_all(&bytewise).unwrap(), whole);
    }

    #[test]
    fn unterminated_last_event_counts() {
        assert_eq!(read_all(&[b"data: a\n\ndata: b"]).unwrap(), ["a", "b"]);
        assert_eq!(read_all(&[b"data: a\n"]).unwrap(), ["a"]);
        assert!(read_all(&[b"hello\n\n"]).unwrap().is_empty());
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert_eq!(read_all(&[b"data: \xff\xfe\n\n"]), Err(SseError::NotUtf8));
        // A multi-byte character split across reads is fine.
        let s = "data: é\n\n".as_bytes();
        assert_eq!(read_all(&[&s[..7], &s[7..]]).unwrap(), ["é"]);
        let mut r = SseReader::new();
        let big = vec![b'x'; MAX_LINE_BYTES + 1];
        assert_eq!(r.feed(&big, &mut Vec::new()), Err(SseError::LineTooLong));
    }
}
