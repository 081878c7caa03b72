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
    walk(v, 1, max_depth, max_string, &mut at.to_owned())
}

fn walk(
    v: &serde_json::Value,
    depth: usize,
    max_depth: usize,
    max_string: usize,
    path: &mut String,
) -> Result<(), ShapeError> {
    use serde_json::Value;
    let error = |code, message: String, path: &str| ShapeError { code, message, location: format!("body {path}") };
    if depth > max_depth {
        return Err(error("too_deep", format!("JSON is nested deeper than {max_depth} levels"), path));
    }
    let long = |s: &str, path: &str| {
        error("string_too_long", format!("a string is {} bytes; the limit is {max_string}", s.len()), path)
    };
    let nul = |path: &str| error("nul_character", "strings may not contain U+0000".to_owned(), path);
    match v {
        Value::String(s) if s.len() > max_string => Err(long(s, path)),
        // Postgres cannot store U+0000 in text or jsonb; refused here, not by a worker later.
        Value::String(s) if s.contains('\0') => Err(nul(path)),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let len = path.len();
                path.push_str(&format!("/{i}"));
                walk(item, depth + 1, max_depth, max_string, path)?;
                path.truncate(len);
            }
            Ok(())
        }
        Value::Object(map) => {
            for (k, item) in map {
                let len = path.len();
                path.push('/');
                path.push_str(&k.replace('~', "~0").replace('/', "~1"));
                if k.len() > max_string {
                    return Err(long(k, path));
                }
                if k.contains('\0') {
                    return Err(nul(path));
                }
                walk(item, depth + 1, max_depth, max_string, path)?;
                path.truncate(len);
            }
            Ok(())
        }
        _ => Ok(()),
    }
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
    }
}
