//! The shape limits every JSON document sluice takes in is held to: depth, string length, no
//! U+0000.

/// A JSON document past a shape limit, and where (a JSON pointer after `body`).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ShapeError {
    /// `too_deep`, `string_too_long` or `nul_character`.
    pub code: &'static str,
    pub message: String,
    /// `body /a/b/1`.
    pub location: String,
}

/// Refuses JSON nested deeper than `max_depth` or holding a string (or key) longer than
/// `max_string`, naming where (a JSON pointer under `at`).
pub fn check_shape(v: &serde_json::Value, max_depth: usize, max_string: usize, at: &str) -> Result<(), ShapeError> {
    let limits = Limits { max_depth, max_string };
    walk(v, 1, limits, &mut Vec::new()).map_err(|(code, message, path)| ShapeError {
        code,
        message,
        location: format!("body {at}{}", pointer(&path)),
    })
}

#[derive(Clone, Copy)]
struct Limits {
    max_depth: usize,
    max_string: usize,
}

/// One step of the way down to a value.
enum Step<'a> {
    Key(&'a str),
    Index(usize),
}

/// A breach: its code, its message and the way to it.
type Breach<'a> = (&'static str, String, Vec<Step<'a>>);

/// The way down is kept as borrowed steps and written out only for a breach: building the
/// pointer for every key cost two allocations a key on every command.
fn walk<'a>(v: &'a serde_json::Value, depth: usize, l: Limits, path: &mut Vec<Step<'a>>) -> Result<(), Breach<'a>> {
    use serde_json::Value;
    let mut breach = |code, message: String| Err((code, message, std::mem::take(path)));
    if depth > l.max_depth {
        return breach("too_deep", format!("JSON is nested deeper than {} levels", l.max_depth));
    }
    let long = |s: &str| format!("a string is {} bytes; the limit is {}", s.len(), l.max_string);
    let nul = || "strings may not contain U+0000".to_owned();
    match v {
        Value::String(s) if s.len() > l.max_string => breach("string_too_long", long(s)),
        // Postgres cannot store U+0000 in text or jsonb; refused here, not by a worker later.
        Value::String(s) if s.contains('\0') => breach("nul_character", nul()),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                path.push(Step::Index(i));
                walk(item, depth + 1, l, path)?;
                path.pop();
            }
            Ok(())
        }
        Value::Object(map) => {
            for (k, item) in map {
                path.push(Step::Key(k));
                if k.len() > l.max_string {
                    return Err(("string_too_long", long(k), std::mem::take(path)));
                }
                if k.contains('\0') {
                    return Err(("nul_character", nul(), std::mem::take(path)));
                }
                walk(item, depth + 1, l, path)?;
                path.pop();
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// `path` as a JSON pointer (RFC 6901: `~` and `/` in keys escaped).
fn pointer(path: &[Step<'_>]) -> String {
    let mut out = String::new();
    for step in path {
        out.push('/');
        match step {
            Step::Key(k) => out.push_str(&k.replace('~', "~0").replace('/', "~1")),
            Step::Index(i) => out.push_str(&i.to_string()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn deep_nesting_and_long_strings_are_refused_with_their_location() {
        let ok = json!({"a": {"b": ["short"]}});
        assert!(check_shape(&ok, 4, 8, "").is_ok());
        let deep = check_shape(&json!({"a": {"b": {"c": {"d": 1}}}}), 4, 8, "").unwrap_err();
        assert_eq!((deep.code, deep.location.as_str()), ("too_deep", "body /a/b/c/d"));
        let long = check_shape(&json!({"a": ["ok", "far too long"]}), 4, 8, "/payload").unwrap_err();
        assert_eq!((long.code, long.location.as_str()), ("string_too_long", "body /payload/a/1"));
        let key = check_shape(&json!({"x/y~z": {"n\u{0}": 1}}), 4, 8, "").unwrap_err();
        assert_eq!((key.code, key.location.as_str()), ("nul_character", "body /x~1y~0z/n\u{0}"));
    }
}
