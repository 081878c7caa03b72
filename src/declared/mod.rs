//! Command types declared in files instead of Rust: a JSON Schema and a handler that is an
//! HTTP endpoint of the operator's own service or a Postgres function. Each `<type>.toml` in
//! `commands.dir` is one type; everything sluice does for built-in types (validation at the
//! edge, idempotency, batches, retries, dead letters, metrics, OpenAPI) applies unchanged.
//! sluice refuses to start while any file is wrong, with one line per problem.

mod file;
mod http;
mod sql;

pub use file::{Declaration, HandlerSpec, HttpSpec, SqlSpec};
pub use http::HttpEndpoint;
pub use sql::{check_functions, SqlFunction};

use crate::config::CommandsSettings;
use std::path::Path;

/// The default `commands.dir`, which may be missing.
const DEFAULT_DIR: &str = "config/commands";

/// Why the declared types cannot be used: one line per problem.
#[derive(Debug, thiserror::Error)]
#[error("declared command types are invalid:\n{}", .0.join("\n"))]
pub struct Problems(pub Vec<String>);

/// Reads every `*.toml` in `commands.dir`, in name order: the sound declarations, and one
/// line per problem of the others.
pub fn load(settings: &CommandsSettings) -> (Vec<Declaration>, Vec<String>) {
    load_dir(&settings.dir, &|var| std::env::var(var).ok())
}

/// The declarations in `dir` that are sound, and one line per problem of the others; `env`
/// looks up `secret_env` variables.
pub fn load_dir(dir: &Path, env: &dyn Fn(&str) -> Option<String>) -> (Vec<Declaration>, Vec<String>) {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && dir == Path::new(DEFAULT_DIR) => {
            return (Vec::new(), Vec::new())
        }
        Err(e) => return (Vec::new(), vec![format!("commands.dir {}: cannot be read: {e}", dir.display())]),
    };
    let mut paths: Vec<_> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    paths.sort();
    let mut declared = Vec::new();
    let mut problems = Vec::new();
    for path in paths {
        match file::read(&path, env) {
            Ok(d) => declared.push(d),
            Err(lines) => problems.extend(lines),
        }
    }
    (declared, problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_example_declares_a_working_type_once_renamed() {
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/commands");
        let dir = std::env::temp_dir().join(format!("sluice-example-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        for name in ["order.place.toml", "order.place.schema.json.example"] {
            let from = if name.ends_with(".toml") { format!("{name}.example") } else { name.to_owned() };
            std::fs::copy(shipped.join(from), dir.join(name)).unwrap();
        }
        let secret = |v: &str| (v == "ORDERS_SECRET").then(|| "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_owned());
        let (declared, problems) = load_dir(&dir, &secret);
        assert_eq!(problems, Vec::<String>::new());
        assert_eq!(declared.len(), 1);
        assert!(matches!(declared[0].handler, HandlerSpec::Http(_)));
        let (declared, problems) = load_dir(&shipped, &secret);
        assert!(declared.is_empty() && problems.is_empty(), "the shipped directory declares nothing");
    }
}
