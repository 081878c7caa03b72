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

use crate::app::Catalog;
use crate::config::CommandsSettings;
use std::path::Path;

/// The default `commands.dir`, which may be missing.
const DEFAULT_DIR: &str = "config/commands";

/// Why the declared types cannot be used: one line per problem.
#[derive(Debug, thiserror::Error)]
#[error("declared command types are invalid:\n{}", .0.join("\n"))]
pub struct Problems(pub Vec<String>);

/// Reads every `*.toml` in `commands.dir`, in name order, and adds the types to `catalog`;
/// every problem of every file (and every name `catalog` already has) is reported at once.
pub fn load_into(catalog: &mut Catalog, settings: &CommandsSettings) -> Result<Vec<Declaration>, Problems> {
    let (declared, mut problems) = load_dir(&settings.dir, &|var| std::env::var(var).ok());
    if let Err(more) = add_to(catalog, &declared) {
        problems.extend(more.0);
    }
    if problems.is_empty() {
        Ok(declared)
    } else {
        Err(Problems(problems))
    }
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

/// Adds the declared types to `catalog`; a name it already has (a built-in type, or one the
/// application registered) is a problem, as is a name sluice does not accept.
pub fn add_to(catalog: &mut Catalog, declared: &[Declaration]) -> Result<(), Problems> {
    let mut problems = Vec::new();
    for d in declared {
        if catalog.schemas.knows(&d.kind) {
            problems
                .push(format!("{}: type {:?} is already a built-in command type; choose another name", d.file, d.kind));
            continue;
        }
        let added = match &d.handler {
            HandlerSpec::Http(spec) => match HttpEndpoint::new(spec) {
                Ok(h) => catalog.declare(&d.kind, d.schema.clone(), h),
                Err(e) => {
                    problems.push(format!("{}: the HTTP client cannot be built: {e}", d.file));
                    continue;
                }
            },
            HandlerSpec::Sql(spec) => catalog.declare(&d.kind, d.schema.clone(), SqlFunction::new(spec.clone())),
        };
        match added {
            Ok(()) => {
                if d.retry != Default::default() {
                    catalog.handlers.set_retry(&d.kind, d.retry);
                }
            }
            Err(e) => problems.push(format!("{}: {e}", d.file)),
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Problems(problems))
    }
}
