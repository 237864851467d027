//! Reading the file schema so that *every* schema problem is reported, each with its full
//! key path (`tokens.lifetime`, `clients[2].scopes`), not just serde's first one.
//!
//! The YAML is parsed into a tree, then deserialised with `serde_path_to_error`; after each
//! error the offending node is repaired — an unknown key removed, a value of the wrong type
//! removed (its default applies) or, for a required key, replaced by a placeholder of a
//! type that deserialises — and deserialisation is tried again. The keys that were repaired
//! are returned so that validation does not also report on their placeholders.
//!
//! Not responsible for: YAML syntax (one error, with serde_yaml's line and column) or what
//! the values mean (validation).

use super::ConfigProblem;
use serde::de::DeserializeOwned;
use serde_path_to_error::Segment;
use serde_yaml::{Mapping, Value};

/// At most this many schema problems are reported (and repairs tried).
const MAX_PROBLEMS: usize = 100;

/// The outcome: the deserialised file when every problem could be repaired, the problems,
/// and the key paths whose values were repaired.
pub struct Lenient<T> {
    pub file: Option<T>,
    pub problems: Vec<ConfigProblem>,
    pub repaired: Vec<String>,
}

/// Deserialises `value` as `T`, collecting every schema problem.
pub fn deserialize<T: DeserializeOwned>(mut value: Value) -> Lenient<T> {
    let mut problems: Vec<ConfigProblem> = Vec::new();
    let mut repaired: Vec<String> = Vec::new();
    for _ in 0..MAX_PROBLEMS {
        let error = match serde_path_to_error::deserialize::<_, T>(value.clone()) {
            Ok(file) => {
                return Lenient {
                    file: Some(file),
                    problems,
                    repaired,
                }
            }
            Err(error) => error,
        };
        let segments: Vec<Segment> = error.path().iter().cloned().collect();
        let message = error.into_inner().to_string();
        let (segments, problem) = explain(segments, &message);
        let shown = render(&segments);
        if !repaired.contains(&shown) {
            problems.push(ConfigProblem {
                path: shown.clone(),
                message: problem,
            });
        }
        let fixed = if message.starts_with("unknown field") {
            remove(&mut value, &segments)
        } else if message.starts_with("missing field") || repaired.contains(&shown) {
            placeholder::<T>(&mut value, &segments)
        } else {
            remove(&mut value, &segments) || placeholder::<T>(&mut value, &segments)
        };
        if !repaired.contains(&shown) {
            repaired.push(shown);
        }
        if !fixed {
            break;
        }
    }
    Lenient {
        file: None,
        problems,
        repaired,
    }
}

/// The key path a message is about and the message to show. serde names an unknown or
/// missing key in its message and reports the enclosing map's path.
fn explain(mut segments: Vec<Segment>, message: &str) -> (Vec<Segment>, String) {
    let named = |prefix: &str| -> Option<String> {
        let rest = message.strip_prefix(prefix)?;
        let rest = rest.strip_prefix('`')?;
        rest.split('`').next().map(str::to_string)
    };
    if let Some(key) = named("unknown field ") {
        let expected = message
            .split_once(", expected ")
            .map(|(_, e)| format!("; expected {e}"))
            .unwrap_or_default();
        push_key(&mut segments, key);
        return (segments, format!("unknown key{expected}"));
    }
    if let Some(key) = named("missing field ") {
        push_key(&mut segments, key);
        return (segments, "is required".to_string());
    }
    if message.contains("untagged enum BypassFile") {
        return (
            segments,
            "must be false, or {until: <RFC 3339 time>, reason: <text>}".to_string(),
        );
    }
    let message = message
        .split(" at line ")
        .next()
        .unwrap_or(message)
        .to_string();
    (segments, message)
}

/// Appends the key a message names unless the path already ends with it.
fn push_key(segments: &mut Vec<Segment>, key: String) {
    let present = matches!(segments.last(), Some(Segment::Map { key: last }) if *last == key);
    if !present {
        segments.push(Segment::Map { key });
    }
}

/// `tenants[0].senderConstraint`; the whole file is `(file)`.
pub fn render(segments: &[Segment]) -> String {
    let mut out = String::new();
    for segment in segments {
        match segment {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Segment::Unknown => out.push_str(".?"),
        }
    }
    if out.is_empty() {
        "(file)".to_string()
    } else {
        out
    }
}

/// The parent node of `segments`' last element and that element.
fn parent<'v>(value: &'v mut Value, segments: &[Segment]) -> Option<(&'v mut Value, Segment)> {
    let (last, path) = segments.split_last()?;
    let mut node = value;
    for segment in path {
        node = match segment {
            Segment::Map { key } | Segment::Enum { variant: key } => {
                node.as_mapping_mut()?.get_mut(Value::String(key.clone()))?
            }
            Segment::Seq { index } => node.as_sequence_mut()?.get_mut(*index)?,
            Segment::Unknown => return None,
        };
    }
    Some((node, last.clone()))
}

/// Removes a mapping key (its default then applies); false when it is not a mapping key.
fn remove(value: &mut Value, segments: &[Segment]) -> bool {
    match parent(value, segments) {
        Some((node, Segment::Map { key })) => node
            .as_mapping_mut()
            .and_then(|m| m.remove(Value::String(key)))
            .is_some(),
        _ => false,
    }
}

/// Puts the first placeholder that deserialises at `segments` (a required key, or a list
/// element of the wrong type); false when none does.
fn placeholder<T: DeserializeOwned>(value: &mut Value, segments: &[Segment]) -> bool {
    let shown = render(segments);
    let candidates = [
        Value::String(String::new()),
        Value::String("1s".into()),
        Value::Mapping(Mapping::new()),
        Value::Sequence(Vec::new()),
        Value::Bool(false),
        Value::Number(0.into()),
    ];
    for candidate in candidates {
        let mut trial = value.clone();
        if !put(&mut trial, segments, candidate) {
            return false;
        }
        let still_here = match serde_path_to_error::deserialize::<_, T>(trial.clone()) {
            Ok(_) => false,
            Err(error) => {
                let segments: Vec<Segment> = error.path().iter().cloned().collect();
                let message = error.into_inner().to_string();
                render(&explain(segments, &message).0) == shown
            }
        };
        if !still_here {
            *value = trial;
            return true;
        }
    }
    false
}

fn put(value: &mut Value, segments: &[Segment], new: Value) -> bool {
    match parent(value, segments) {
        Some((node, Segment::Map { key })) => match node.as_mapping_mut() {
            Some(map) => {
                map.insert(Value::String(key), new);
                true
            }
            None => false,
        },
        Some((node, Segment::Seq { index })) => {
            match node.as_sequence_mut().and_then(|s| s.get_mut(index)) {
                Some(slot) => {
                    *slot = new;
                    true
                }
                None => false,
            }
        }
        _ => false,
    }
}
