//! Chat templates: the Jinja templates of `tokenizer_config.json` / GGUF
//! `tokenizer.chat_template`, rendered with `minijinja`.
//!
//! The environment mirrors what `transformers.apply_chat_template` provides: `trim_blocks` and
//! `lstrip_blocks` on, loop controls, `messages`, `add_generation_prompt`, `bos_token`,
//! `eos_token` and a `raise_exception(msg)` function. Templates are written for Python's
//! Jinja2, so the handful of Python `str`/`dict` methods they call (`.strip()`,
//! `.startswith()`, `.items()`, ...) are supplied by an unknown-method callback.
use std::path::Path;

use minijinja::value::{Value, ValueKind};
use minijinja::{Environment, Error, ErrorKind, State};
use serde::{Deserialize, Serialize};

use super::Tokenizer;
use crate::error::{FormatError, Result};

/// One turn of a conversation, as in the OpenAI / Hugging Face message format.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// `chat_template` of `tokenizer_config.json`: a string, or a list of `{name, template}`
/// from which the one named "default" is used.
pub(super) fn template_from_config(
    v: Option<&serde_json::Value>,
    path: &Path,
) -> Result<Option<String>> {
    let field = |detail: String| FormatError::Field {
        path: path.to_path_buf(),
        field: "chat_template".into(),
        detail,
    };
    match v {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
        Some(serde_json::Value::Array(items)) => {
            for item in items {
                if item.get("name").and_then(|n| n.as_str()) == Some("default") {
                    let t = item.get("template").and_then(|t| t.as_str());
                    return t
                        .map(|t| Some(t.to_string()))
                        .ok_or_else(|| field("entry \"default\" has no template string".into()));
                }
            }
            Err(field(
                "a list of templates without one named \"default\"".into(),
            ))
        }
        Some(other) => Err(field(format!(
            "expected a string or a list of {{name, template}}, found {other}"
        ))),
    }
}

impl Tokenizer {
    /// Renders the chat template over `messages`.
    ///
    /// # Errors
    /// `FormatError::Template` when there is no template, it does not parse, or rendering
    /// fails (including a template's own `raise_exception`).
    pub fn apply_chat_template(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String> {
        let Some(source) = self.chat_template.as_deref() else {
            return Err(FormatError::Template(
                "this tokenizer has no chat template (no `chat_template` in tokenizer_config.json or \
                 `tokenizer.chat_template` in the GGUF); pass a template or use raw prompts"
                    .into(),
            ));
        };
        let token = |id: Option<u32>| id.and_then(|i| self.id_to_token(i)).unwrap_or_default();
        let eos = token(self.eos_ids.first().copied());
        render(
            source,
            messages,
            add_generation_prompt,
            &token(self.bos_id),
            &eos,
        )
    }
}

/// Renders `source` with the context `transformers` gives chat templates.
///
/// # Errors
/// Template syntax or rendering errors, as `FormatError::Template`.
pub fn render(
    source: &str,
    messages: &[ChatMessage],
    add_generation_prompt: bool,
    bos_token: &str,
    eos_token: &str,
) -> Result<String> {
    let mut env = Environment::new();
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.set_unknown_method_callback(python_method);
    env.add_function(
        "raise_exception",
        |msg: String| -> std::result::Result<Value, Error> {
            Err(Error::new(ErrorKind::InvalidOperation, msg))
        },
    );
    let tpl = env
        .template_from_str(source)
        .map_err(|e| FormatError::Template(format!("cannot parse: {e:#}")))?;
    let ctx = minijinja::context! {
        messages => messages,
        add_generation_prompt => add_generation_prompt,
        bos_token => bos_token,
        eos_token => eos_token,
    };
    tpl.render(ctx)
        .map_err(|e| FormatError::Template(format!("cannot render: {e:#}")))
}

fn str_arg<'a>(
    args: &'a [Value],
    i: usize,
    method: &str,
) -> std::result::Result<Option<&'a str>, Error> {
    match args.get(i) {
        None => Ok(None),
        Some(v) if v.is_none() => Ok(None),
        Some(v) => v.as_str().map(Some).ok_or_else(|| {
            Error::new(
                ErrorKind::InvalidOperation,
                format!("{method}() expects a string argument"),
            )
        }),
    }
}

/// The Python `str` and `dict` methods chat templates use, on minijinja values.
fn python_method(
    _: &State,
    value: &Value,
    method: &str,
    args: &[Value],
) -> std::result::Result<Value, Error> {
    if let Some(s) = value.as_str() {
        let a0 = str_arg(args, 0, method)?;
        let trim_set = |c: char| a0.map_or(c.is_whitespace(), |set| set.contains(c));
        return Ok(match method {
            "strip" => s.trim_matches(trim_set).into(),
            "lstrip" => s.trim_start_matches(trim_set).into(),
            "rstrip" => s.trim_end_matches(trim_set).into(),
            "startswith" => s.starts_with(a0.unwrap_or_default()).into(),
            "endswith" => s.ends_with(a0.unwrap_or_default()).into(),
            "upper" => s.to_uppercase().into(),
            "lower" => s.to_lowercase().into(),
            "capitalize" => {
                let mut c = s.chars();
                c.next()
                    .map_or(String::new(), |f| {
                        f.to_uppercase()
                            .chain(c.flat_map(char::to_lowercase))
                            .collect()
                    })
                    .into()
            }
            "title" => title_case(s).into(),
            "replace" => s
                .replace(
                    a0.unwrap_or_default(),
                    str_arg(args, 1, method)?.unwrap_or_default(),
                )
                .into(),
            "split" => match a0 {
                Some(sep) if !sep.is_empty() => {
                    Value::from_serialize(s.split(sep).collect::<Vec<_>>())
                }
                _ => Value::from_serialize(s.split_whitespace().collect::<Vec<_>>()),
            },
            _ => {
                return Err(Error::new(
                    ErrorKind::UnknownMethod,
                    format!("str has no method {method}"),
                ))
            }
        });
    }
    if value.kind() == ValueKind::Map {
        let keys: Vec<Value> = value.try_iter()?.collect();
        return match method {
            "keys" => Ok(Value::from(keys)),
            "values" => Ok(Value::from(
                keys.iter()
                    .map(|k| value.get_item(k))
                    .collect::<std::result::Result<Vec<_>, _>>()?,
            )),
            "items" => {
                let pairs = keys
                    .into_iter()
                    .map(|k| Ok(Value::from(vec![k.clone(), value.get_item(&k)?])));
                Ok(Value::from(
                    pairs.collect::<std::result::Result<Vec<_>, Error>>()?,
                ))
            }
            "get" => {
                let key = args.first().cloned().unwrap_or_default();
                let v = value.get_item(&key)?;
                Ok(if v.is_undefined() {
                    args.get(1).cloned().unwrap_or(Value::from(()))
                } else {
                    v
                })
            }
            _ => Err(Error::new(
                ErrorKind::UnknownMethod,
                format!("dict has no method {method}"),
            )),
        };
    }
    Err(Error::new(
        ErrorKind::UnknownMethod,
        format!("{} has no method {method}", value.kind()),
    ))
}

fn title_case(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut start = true;
    for c in s.chars() {
        if start {
            out.extend(c.to_uppercase());
        } else {
            out.extend(c.to_lowercase());
        }
        start = !c.is_alphanumeric();
    }
    out
}
