//! Parsing the speculative options: `--draft layer-skip:K|model:PATH|ngram:N`,
//! `--num-draft L` and `--tree WIDTH,DEPTH`.
use std::path::PathBuf;
use std::str::FromStr;

use crate::error::EngineError;

/// The largest draft length accepted (`--num-draft`).
pub const MAX_DRAFT_LEN: usize = 16;
/// Default and largest tree node budget.
pub const DEFAULT_TREE_BUDGET: usize = 64;
pub const MAX_TREE_BUDGET: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DraftSpec {
    /// A separate draft model (GGUF file or HF directory) sharing the target's vocabulary.
    Model(PathBuf),
    /// The target's first K layers, final norm and LM head (self-speculation).
    LayerSkip(usize),
    /// Prompt lookup: match the last N tokens earlier in the context.
    Ngram(usize),
}

impl FromStr for DraftSpec {
    type Err = EngineError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |detail: String| EngineError::InvalidRequest { field: "draft", detail };
        let (kind, arg) = s
            .split_once(':')
            .ok_or_else(|| bad(format!("`{s}` is not KIND:ARG; use layer-skip:K, model:PATH or ngram:N")))?;
        let positive = |what: &str| {
            arg.parse::<usize>()
                .ok()
                .filter(|&v| v > 0)
                .ok_or_else(|| bad(format!("{what} in `{s}` must be a positive integer")))
        };
        match kind {
            "model" if !arg.is_empty() => Ok(Self::Model(PathBuf::from(arg))),
            "model" => Err(bad("model: needs a path".into())),
            "layer-skip" => Ok(Self::LayerSkip(positive("K")?)),
            "ngram" => Ok(Self::Ngram(positive("N")?)),
            other => Err(bad(format!("unknown drafter `{other}`; use layer-skip:K, model:PATH or ngram:N"))),
        }
    }
}

/// Shape of a draft token tree: up to `width` children per expanded node, `depth` levels,
/// at most `budget` nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TreeShape {
    pub width: usize,
    pub depth: usize,
    pub budget: usize,
}

impl TreeShape {
    /// Parses `WIDTH,DEPTH` with the given node budget.
    ///
    /// # Errors
    /// Malformed text, zero width or depth, depth over [`MAX_DRAFT_LEN`], or a budget outside
    /// `1..=MAX_TREE_BUDGET`.
    pub fn parse(s: &str, budget: usize) -> Result<Self, EngineError> {
        let bad = |detail: String| EngineError::InvalidRequest { field: "tree", detail };
        let (w, d) = s.split_once(',').ok_or_else(|| bad(format!("`{s}` is not WIDTH,DEPTH")))?;
        let num = |v: &str| v.trim().parse::<usize>().ok().filter(|&x| x > 0);
        let (width, depth) = match (num(w), num(d)) {
            (Some(w), Some(d)) => (w, d),
            _ => return Err(bad(format!("`{s}`: WIDTH and DEPTH must be positive integers"))),
        };
        if depth > MAX_DRAFT_LEN {
            return Err(bad(format!("depth {depth} exceeds the maximum draft length {MAX_DRAFT_LEN}")));
        }
        if !(1..=MAX_TREE_BUDGET).contains(&budget) {
            return Err(bad(format!("node budget {budget} is outside 1..={MAX_TREE_BUDGET}")));
        }
        // The smallest tree of this shape has one path of `depth` nodes plus `width - 1`
        // siblings at the first level; it must fit the budget.
        let min_nodes = depth + width - 1;
        if min_nodes > budget {
            return Err(bad(format!("a {width}-wide, {depth}-deep tree needs at least {min_nodes} nodes, over the budget of {budget}")));
        }
        Ok(Self { width, depth, budget })
    }
}

/// Checks `--num-draft`.
///
/// # Errors
/// `L` outside `1..=MAX_DRAFT_LEN`.
pub fn check_draft_len(l: usize) -> Result<(), EngineError> {
    if (1..=MAX_DRAFT_LEN).contains(&l) {
        Ok(())
    } else {
        Err(EngineError::InvalidRequest { field: "num_draft", detail: format!("{l} is outside 1..={MAX_DRAFT_LEN}") })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draft_specs_parse_and_reject_garbage() {
        assert_eq!("layer-skip:4".parse::<DraftSpec>().unwrap(), DraftSpec::LayerSkip(4));
        assert_eq!("ngram:3".parse::<DraftSpec>().unwrap(), DraftSpec::Ngram(3));
        assert_eq!("model:a/b.gguf".parse::<DraftSpec>().unwrap(), DraftSpec::Model("a/b.gguf".into()));
        for bad in ["", "layer-skip", "layer-skip:0", "ngram:x", "medusa:2", "model:"] {
            let e = bad.parse::<DraftSpec>().unwrap_err().to_string();
            assert!(e.contains("draft"), "{bad}: {e}");
        }
    }

    #[test]
    fn tree_shapes_respect_the_budget() {
        assert_eq!(TreeShape::parse("2,3", 64).unwrap(), TreeShape { width: 2, depth: 3, budget: 64 });
        assert!(TreeShape::parse("0,3", 64).is_err());
        assert!(TreeShape::parse("2", 64).is_err());
        assert!(TreeShape::parse("8,60", 64).is_err());
        assert!(TreeShape::parse("60,10", 64).unwrap_err().to_string().contains("budget"));
        assert!(check_draft_len(0).is_err() && check_draft_len(17).is_err() && check_draft_len(8).is_ok());
    }
}
