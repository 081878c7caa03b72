//! One `<type>.toml` file: what it may say, and every way it can be wrong, each reported as a
//! line naming the file.

use crate::handlers::RetryOverride;
use crate::webhooks::standard;
use serde::Deserialize;
use serde_json::Value;
use std::path::Path;

/// The file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(rename = "type")]
    kind: String,
    schema: String,
    #[serde(default)]
    retry: RetryOverride,
    http: Option<HttpFile>,
    sql: Option<SqlFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpFile {
    url: String,
    secret: Option<String>,
    secret_env: Option<String>,
    #[serde(default = "default_timeout_ms")]
    timeout_ms: u64,
    #[serde(default = "default_max_in_flight")]
    max_in_flight: usize,
    #[serde(default = "default_max_response_bytes")]
    max_response_bytes: usize,
    #[serde(default = "default_circuit_failures")]
    circuit_failures: u32,
    #[serde(default = "default_circuit_open_ms")]
    circuit_open_ms: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SqlFile {
    function: String,
}

fn default_timeout_ms() -> u64 {
    10_000
}
fn default_max_in_flight() -> usize {
    32
}
fn default_max_response_bytes() -> usize {
    64 * 1024
}
fn default_circuit_failures() -> u32 {
    5
}
fn default_circuit_open_ms() -> u64 {
    5_000
}

/// A declared type, checked as far as it can be without a database.
#[derive(Debug, Clone)]
pub struct Declaration {
    /// The file it came from, for messages.
    pub file: String,
    pub kind: String,
    pub schema: Value,
    pub retry: RetryOverride,
    pub handler: HandlerSpec,
}

/// The one handler a declaration names.
#[derive(Debug, Clone)]
pub enum HandlerSpec {
    Http(HttpSpec),
    Sql(SqlSpec),
}

/// An HTTP endpoint handler.
#[derive(Clone)]
pub struct HttpSpec {
    pub url: reqwest::Url,
    /// The Standard Webhooks key the calls are signed with.
    pub key: Vec<u8>,
    pub timeout_ms: u64,
    pub max_in_flight: usize,
    pub max_response_bytes: usize,
    pub circuit_failures: u32,
    pub circuit_open_ms: u64,
}

impl std::fmt::Debug for HttpSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpSpec").field("url", &self.url.as_str()).field("max_in_flight", &self.max_in_flight).finish()
    }
}

/// A Postgres function handler: `schema.name(payload jsonb, command_id uuid, tenant text)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlSpec {
    pub schema: String,
    pub name: String,
}

impl SqlSpec {
    /// `schema.name(jsonb, uuid, text)`, as operators write it.
    pub fn signature(&self) -> String {
        format!("{}.{}(jsonb, uuid, text)", self.schema, self.name)
    }
}

/// Reads and checks one file; `env` looks up `secret_env` variables. Every problem found is a
/// line of the error, each starting with the file's name.
pub fn read(path: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<Declaration, Vec<String>> {
    let name = path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned());
    let line = |what: String| format!("{name}: {what}");
    let text = std::fs::read_to_string(path).map_err(|e| vec![line(format!("cannot be read: {e}"))])?;
    let file: File = toml::from_str(&text)
        .map_err(|e| vec![line(format!("is not a valid declaration: {}", one_line(&e.to_string())))])?;
    let mut problems = Vec::new();
    let stem = name.strip_suffix(".toml").unwrap_or(&name);
    if stem != file.kind {
        problems.push(line(format!("declares type {:?} but is named {name:?}; name it {}.toml", file.kind, file.kind)));
    }
    let schema = match read_schema(path, &file.schema) {
        Ok(s) => Some(s),
        Err(e) => {
            problems.push(line(e));
            None
        }
    };
    if file.retry.max_attempts == Some(0) || file.retry.base_ms == Some(0) {
        problems.push(line("retry.max_attempts and retry.base_ms must be > 0".into()));
    }
    let handler = match (file.http, file.sql) {
        (Some(http), None) => http_spec(http, env).map(HandlerSpec::Http).map_err(|e| problems.push(line(e))).ok(),
        (None, Some(sql)) => sql_spec(&sql.function).map(HandlerSpec::Sql).map_err(|e| problems.push(line(e))).ok(),
        (Some(_), Some(_)) => {
            problems.push(line("names both [http] and [sql]; a type has exactly one handler".into()));
            None
        }
        (None, None) => {
            problems.push(line("names no handler: add an [http] or a [sql] table".into()));
            None
        }
    };
    match (schema, handler) {
        (Some(schema), Some(handler)) if problems.is_empty() => {
            Ok(Declaration { file: name, kind: file.kind, schema, retry: file.retry, handler })
        }
        _ => Err(problems),
    }
}

fn read_schema(declaration: &Path, relative: &str) -> Result<Value, String> {
    let path = declaration.parent().unwrap_or(Path::new(".")).join(relative);
    let text = std::fs::read_to_string(&path).map_err(|e| format!("schema {relative:?} cannot be read: {e}"))?;
    let schema: Value = serde_json::from_str(&text).map_err(|e| format!("schema {relative:?} is not JSON: {e}"))?;
    crate::schemas::compile(&schema).map_err(|e| format!("schema {relative:?} does not compile: {}", one_line(&e)))?;
    Ok(schema)
}

fn http_spec(h: HttpFile, env: &dyn Fn(&str) -> Option<String>) -> Result<HttpSpec, String> {
    let url = reqwest::Url::parse(&h.url).map_err(|e| format!("http.url {:?} is not a URL: {e}", h.url))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(format!("http.url {:?} must be an http or https URL with a host", h.url));
    }
    let secret = match (h.secret, h.secret_env) {
        (Some(s), None) => s,
        (None, Some(var)) => env(&var)
            .filter(|v| !v.is_empty())
            .ok_or(format!("http.secret_env names {var:?}, which is not set; export it or write http.secret"))?,
        (Some(_), Some(_)) => return Err("gives both http.secret and http.secret_env; give one".into()),
        (None, None) => {
            return Err("has no http.secret or http.secret_env: calls are signed (Standard Webhooks)".into())
        }
    };
    let key = standard::decode_secret(&secret)
        .ok_or("http secret must be a Standard Webhooks secret: whsec_ and base64 of 24 to 64 bytes")?;
    if h.timeout_ms == 0 || h.max_in_flight == 0 || h.max_response_bytes == 0 || h.circuit_failures == 0 {
        return Err("http.timeout_ms, max_in_flight, max_response_bytes and circuit_failures must be > 0".into());
    }
    Ok(HttpSpec {
        url,
        key,
        timeout_ms: h.timeout_ms,
        max_in_flight: h.max_in_flight,
        max_response_bytes: h.max_response_bytes,
        circuit_failures: h.circuit_failures,
        circuit_open_ms: h.circuit_open_ms.max(100),
    })
}

/// `billing.apply_invoice` or `apply_invoice` (schema `public`): unquoted Postgres identifiers,
/// which the database folds to lower case, so only lower case is accepted.
fn sql_spec(function: &str) -> Result<SqlSpec, String> {
    let (schema, name) = function.split_once('.').unwrap_or(("public", function));
    let ident = |s: &str| {
        !s.is_empty()
            && s.len() <= 63
            && s.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
            && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    };
    if !ident(schema) || !ident(name) {
        return Err(format!(
            "sql.function {function:?} must be name or schema.name, each lower-case letters, digits and '_' \
             (at most 63 bytes, not starting with a digit)"
        ));
    }
    Ok(SqlSpec { schema: schema.to_owned(), name: name.to_owned() })
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    fn dir() -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("sluice-decl-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("ok.schema.json"), r#"{"type": "object"}"#).unwrap();
        d
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn an_http_declaration_reads_with_its_defaults() {
        let d = dir();
        let f = d.join("order.place.toml");
        std::fs::write(&f, format!("type = \"order.place\"\nschema = \"ok.schema.json\"\n[http]\nurl = \"http://orders:9000/x\"\nsecret = \"{SECRET}\"\n")).unwrap();
        let decl = read(&f, &no_env).unwrap();
        assert_eq!(decl.kind, "order.place");
        let HandlerSpec::Http(h) = decl.handler else { panic!("http") };
        assert_eq!((h.timeout_ms, h.max_in_flight, h.circuit_failures), (10_000, 32, 5));
    }

    #[test]
    fn a_secret_may_come_from_the_environment_and_a_missing_one_is_named() {
        let d = dir();
        let f = d.join("order.place.toml");
        std::fs::write(&f, "type = \"order.place\"\nschema = \"ok.schema.json\"\n[http]\nurl = \"http://o/x\"\nsecret_env = \"ORDERS_SECRET\"\n").unwrap();
        assert!(read(&f, &|v| (v == "ORDERS_SECRET").then(|| SECRET.to_owned())).is_ok());
        let err = read(&f, &no_env).unwrap_err();
        assert_eq!(err.len(), 1);
        assert!(err[0].starts_with("order.place.toml: ") && err[0].contains("ORDERS_SECRET"), "{err:?}");
    }

    #[test]
    fn every_problem_of_a_file_is_one_line() {
        let d = dir();
        std::fs::write(d.join("bad.schema.json"), r#"{"type": 12}"#).unwrap();
        let f = d.join("x.y.toml");
        std::fs::write(&f, "type = \"x.z\"\nschema = \"bad.schema.json\"\n[sql]\nfunction = \"Billing.apply; drop\"\n")
            .unwrap();
        let err = read(&f, &no_env).unwrap_err();
        assert_eq!(err.len(), 3, "{err:#?}");
        assert!(err.iter().all(|l| l.starts_with("x.y.toml: ") && !l.contains('\n')), "{err:#?}");
        assert!(err[0].contains("named"), "{err:#?}");
        assert!(err[1].contains("does not compile"), "{err:#?}");
        assert!(err[2].contains("sql.function"), "{err:#?}");
    }

    #[test]
    fn bad_toml_unknown_keys_and_two_handlers_are_refused() {
        let d = dir();
        let f = d.join("a.b.toml");
        std::fs::write(&f, "type = \"a.b\"\nschema = ").unwrap();
        assert!(read(&f, &no_env).unwrap_err()[0].contains("is not a valid declaration"));
        std::fs::write(&f, "type = \"a.b\"\nschema = \"ok.schema.json\"\nretires = 3\n[sql]\nfunction = \"f\"\n")
            .unwrap();
        assert!(read(&f, &no_env).unwrap_err()[0].contains("retires"));
        std::fs::write(&f, format!("type = \"a.b\"\nschema = \"ok.schema.json\"\n[sql]\nfunction = \"f\"\n[http]\nurl = \"http://h/\"\nsecret = \"{SECRET}\"\n")).unwrap();
        assert!(read(&f, &no_env).unwrap_err()[0].contains("exactly one handler"));
    }

    #[test]
    fn a_function_without_a_schema_is_in_public_and_quoting_tricks_are_refused() {
        assert_eq!(sql_spec("apply").unwrap(), SqlSpec { schema: "public".into(), name: "apply".into() });
        assert_eq!(sql_spec("billing.apply_invoice").unwrap().signature(), "billing.apply_invoice(jsonb, uuid, text)");
        for bad in ["", "a.b.c", "\"x\".y", "x.y()", "x;y", "1x", "Apply", "a.", ".a"] {
            assert!(sql_spec(bad).is_err(), "{bad}");
        }
    }
}
