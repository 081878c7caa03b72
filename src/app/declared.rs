//! Adding the types declared in `commands.dir` to a process's catalog.

use super::{Catalog, CatalogError};
use crate::config::CommandsSettings;
use crate::declared::{HandlerSpec, HttpEndpoint, Problems, SqlFunction};

pub use crate::declared::Declaration;

/// Reads `commands.dir` and adds its types to `catalog`; every problem of every file (and
/// every name `catalog` already has) is reported at once.
pub fn load_into(catalog: &mut Catalog, settings: &CommandsSettings) -> Result<Vec<Declaration>, Problems> {
    let (declared, mut problems) = crate::declared::load(settings);
    if let Err(more) = add_to(catalog, &declared) {
        problems.extend(more.0);
    }
    if problems.is_empty() {
        Ok(declared)
    } else {
        Err(Problems(problems))
    }
}

/// Adds the declared types to `catalog`; a name it already has (a built-in type, or one the
/// application registered) is a problem, as is a name sluice does not accept.
fn add_to(catalog: &mut Catalog, declared: &[Declaration]) -> Result<(), Problems> {
    let mut problems = Vec::new();
    for d in declared {
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
            Err(CatalogError::Duplicate(kind)) => problems
                .push(format!("{}: type {kind:?} is already a built-in command type; choose another name", d.file)),
            Err(e) => problems.push(format!("{}: {e}", d.file)),
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Problems(problems))
    }
}
