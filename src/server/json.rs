//! Reading request bodies so that every problem names its field. Bodies are parsed to a JSON
//! value first and read field by field (not deserialised straight into a struct, whose type
//! errors name only a line and column). Python's `json.dumps` writes `NaN`, `Infinity` and
//! `-Infinity` literals, which are not JSON: they are read as markers here, so that
//! `"temperature": NaN` gets "`temperature`: must be a finite number, got NaN" rather than a
//! parse error.
use serde_json::{Map, Value};

use super::error::ApiError;

/// Non-finite literals; each is read as a string of a NUL marker and the literal.
const NON_FINITE: [&str; 3] = ["-Infinity", "Infinity", "NaN"];

/// Parses a request body that must be a JSON object.
///
/// # Errors
/// A 400 for invalid UTF-8, invalid JSON (with the text around the error), or a non-object.
pub fn parse_object(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    let text = std::str::from_utf8(body)
        .map_err(|e| ApiError::field("body", format!("is not UTF-8: {e}")))?;
    let value = match serde_json::from_str::<Value>(text) {
        Ok(v) => v,
        Err(first) => serde_json::from_str::<Value>(&quote_non_finite(text)).map_err(|_| {
            ApiError::field("body", format!("invalid JSON: {first}{}", near(text, &first)))
        })?,
    };
    match value {
        Value::Object(m) => Ok(m),
        other => Err(ApiError::field(
            "body",
            format!("must be a JSON object, got {}", kind(&other)),
        )),
    }
}

/// The text just before a parse error, so that the message shows which field it was in.
fn near(text: &str, e: &serde_json::Error) -> String {
    let line = text.lines().nth(e.line().saturating_sub(1)).unwrap_or("");
    let col = e.column().min(line.len());
    let mut from = col.saturating_sub(40);
    while !line.is_char_boundary(from) {
        from -= 1;
    }
    let mut to = col;
    while !line.is_char_boundary(to) {
        to -= 1;
    }
    format!(" (near `{}`)", &line[from..to])
}

/// Rewrites the non-finite literals outside strings as marked strings.
fn quote_non_finite(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    let (mut in_string, mut escaped) = (false, false);
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if in_string {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
        } else if c == '"' {
            in_string = true;
        } else if let Some(lit) = NON_FINITE.iter().find(|l| rest.starts_with(*l)) {
            // `\u0000` in JSON text: a raw NUL inside a string is not valid JSON.
            out.push_str("\"\\u0000");
            out.push_str(lit);
            out.push('"');
            rest = &rest[lit.len()..];
            continue;
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

pub fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(s) if s.starts_with('\u{0}') => "a non-finite number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Typed, field-naming access to a request object. A missing field and `null` both read as
/// absent, as OpenAI's API treats them.
pub struct Fields<'a>(pub &'a Map<String, Value>);

impl<'a> Fields<'a> {
    pub fn get(&self, name: &str) -> Option<&'a Value> {
        self.0.get(name).filter(|v| !v.is_null())
    }

    /// A finite number.
    pub fn f64(&self, name: &str) -> Result<Option<f64>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Number(n)) => n
                .as_f64()
                .filter(|x| x.is_finite())
                .map(Some)
                .ok_or_else(|| ApiError::field(name, "must be a finite number")),
            Some(Value::String(s)) if s.starts_with('\u{0}') => Err(ApiError::field(
                name,
                format!("must be a finite number, got {}", &s[1..]),
            )),
            Some(v) => Err(ApiError::field(
                name,
                format!("must be a number, got {}", kind(v)),
            )),
        }
    }

    /// An integer (a float with a fraction, or out of the i64 range, is an error).
    pub fn i64(&self, name: &str) -> Result<Option<i64>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Number(n)) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
                (Some(i), _, _) => Ok(Some(i)),
                (None, Some(u), _) => Err(ApiError::field(name, format!("{u} is out of range"))),
                (_, _, Some(f)) if f.is_finite() && f.fract() == 0.0 && f.abs() < 9.0e15 => {
                    Ok(Some(f as i64))
                }
                _ => Err(ApiError::field(name, format!("must be an integer, got {n}"))),
            },
            Some(Value::String(s)) if s.starts_with('\u{0}') => Err(ApiError::field(
                name,
                format!("must be an integer, got {}", &s[1..]),
            )),
            Some(v) => Err(ApiError::field(
                name,
                format!("must be an integer, got {}", kind(v)),
            )),
        }
    }

    pub fn bool(&self, name: &str) -> Result<Option<bool>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(ApiError::field(
                name,
                format!("must be a boolean, got {}", kind(v)),
            )),
        }
    }

    pub fn str(&self, name: &str) -> Result<Option<&'a str>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::String(s)) if !s.starts_with('\u{0}') => Ok(Some(s)),
            Some(v) => Err(ApiError::field(
                name,
                format!("must be a string, got {}", kind(v)),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_finite_literals_become_named_errors() {
        let m = parse_object(br#"{"temperature": NaN, "top_p": -Infinity, "s": "NaN is text"}"#)
            .unwrap();
        let f = Fields(&m);
        let e = f.f64("temperature").unwrap_err();
        assert!(e.message.contains("`temperature`") && e.message.contains("NaN"), "{e:?}");
        assert!(f.f64("top_p").unwrap_err().message.contains("-Infinity"));
        assert_eq!(f.str("s").unwrap(), Some("NaN is text"));
    }

    #[test]
    fn parse_errors_show_where() {
        let e = parse_object(br#"{"max_tokens": 1e999}"#).unwrap_err();
        assert!(e.message.contains("max_tokens"), "{}", e.message);
        assert!(parse_object(b"[1]").unwrap_err().message.contains("object"));
        assert!(parse_object(b"\xff").unwrap_err().message.contains("UTF-8"));
    }

    #[test]
    fn integers_are_checked() {
        let m = parse_object(br#"{"a": 3, "b": 2.5, "c": 18446744073709551615, "d": 4.0}"#).unwrap();
        let f = Fields(&m);
        assert_eq!(f.i64("a").unwrap(), Some(3));
        assert!(f.i64("b").is_err());
        assert!(f.i64("c").unwrap_err().message.contains("out of range"));
        assert_eq!(f.i64("d").unwrap(), Some(4));
        assert_eq!(f.i64("missing").unwrap(), None);
    }
}
