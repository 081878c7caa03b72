//! Reading a batch body: a JSON object whose command list is bounded while it is parsed, or
//! NDJSON parsed line by line as it arrives. Either way a batch over the maximum is refused
//! once the item past the maximum is read, not after the whole body became values (a 16 MiB
//! body of tiny items would otherwise become hundreds of MiB of them).

use super::body::{read_bytes, ShapeLimit};
use super::error::ApiError;
use super::ApiState;
use crate::ingest::BatchOptions as Options;
use crate::json::Budget;
use axum::extract::Request;
use axum::http::header;
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use std::cell::Cell;
use std::fmt;

/// The refusal of a batch with more than `max` items.
pub(super) fn too_many(max: usize) -> ApiError {
    ApiError::bad_request(
        "invalid_batch_length",
        format!("a batch holds 1 to {max} commands; this one holds more"),
        Some("body commands"),
    )
}

/// The items and options of a JSON or NDJSON body; more than `batches.max_commands` items is
/// refused as soon as the one past the maximum is read.
pub(super) async fn read_batch(state: &ApiState, req: Request) -> Result<(Vec<Value>, Options), ApiError> {
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|ct| ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase())
        .unwrap_or_default();
    let query = req.uri().query().unwrap_or("").to_owned();
    let secret_header = req.headers().get("sluice-callback-secret").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let max = state.ingest.batches.max_commands;
    let b = &state.ingest.batches;
    let budgets = Budgets {
        item: ShapeLimit::from(state.ingest.limits.as_ref()),
        total: Budget::new(b.max_json_values, b.max_json_bytes),
    };
    match content_type.as_str() {
        "application/json" => {
            let bytes = read_bytes(req, state).await?;
            parse_json(&bytes, max, &budgets)
        }
        "application/x-ndjson" | "application/jsonl" => {
            let mut options: Options = serde_urlencoded_options(&query)?;
            if options.callback_secret.is_some() {
                return Err(ApiError::bad_request(
                    "invalid_query",
                    "send callback_secret in the Sluice-Callback-Secret header, not the URL (URLs get logged)",
                    Some("query callback_secret"),
                ));
            }
            options.callback_secret = secret_header;
            let items = read_ndjson(req, max, &budgets).await?;
            if items.len() > max {
                return Err(too_many(max));
            }
            Ok((items, options))
        }
        other => Err(ApiError::UnsupportedMediaType(format!(
            "a batch is application/json ({{\"commands\": [...]}}) or application/x-ndjson (one command per line), not {other:?}"
        ))),
    }
}

/// Parses NDJSON lines as the body arrives, so parsing overlaps the upload and the raw body is
/// never held whole; stops reading one item past `max` (enough to refuse the batch) and at the
/// route's body limit (413).
async fn read_ndjson(req: Request, max: usize, budgets: &Budgets) -> Result<Vec<Value>, ApiError> {
    use futures_util::StreamExt;
    let limit = req.extensions().get::<super::body::BodyLimit>().map_or(usize::MAX, |l| l.0);
    let declared = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(ApiError::TooLarge { limit });
    }
    let mut body = req.into_body().into_data_stream();
    let (mut items, mut pending, mut read, mut line) = (Vec::new(), Vec::<u8>::new(), 0usize, 0usize);
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| ApiError::bad_request("unreadable_body", e.to_string(), Some("body")))?;
        read += chunk.len();
        if read > limit {
            return Err(ApiError::TooLarge { limit });
        }
        // Only the new bytes are searched for line ends, so a long line arriving in many small
        // chunks costs linear time.
        let mut searched = pending.len();
        pending.extend_from_slice(&chunk);
        let mut start = 0;
        while let Some(end) = pending[searched..].iter().position(|b| *b == b'\n').map(|i| searched + i) {
            line += 1;
            parse_line(&pending[start..end], line, &mut items, budgets)?;
            start = end + 1;
            searched = start;
            if items.len() > max {
                return Ok(items);
            }
        }
        pending.drain(..start);
    }
    parse_line(&pending, line + 1, &mut items, budgets)?;
    Ok(items)
}

/// Each item's own budget (`limits.*`) and the whole batch's (`batches.max_json_*`).
pub(super) struct Budgets {
    item: ShapeLimit,
    total: Budget,
}

/// One NDJSON line (1-based `line`); blank lines are skipped.
fn parse_line(bytes: &[u8], line: usize, items: &mut Vec<Value>, budgets: &Budgets) -> Result<(), ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(());
    }
    let item = budgets.item.budget();
    let charged = [&item, &budgets.total];
    let v = crate::json::parse(bytes, &charged).map_err(|e| match crate::json::exceeded(&charged) {
        Some(exceeded) => ApiError::JsonTooLarge {
            message: format!("the batch holds {exceeded} (at item {})", items.len()),
            location: format!("body line {line} column {}", e.column()),
        },
        None => ApiError::bad_request(
            "malformed_json",
            format!("line {line} is not JSON: {e}"),
            Some(&format!("body line {line} column {}", e.column())),
        ),
    })?;
    items.push(v);
    Ok(())
}

fn serde_urlencoded_options(query: &str) -> Result<Options, ApiError> {
    axum::extract::Query::<Options>::try_from_uri(
        &format!("/?{query}")
            .parse()
            .map_err(|_| ApiError::bad_request("invalid_query", "the query string is not valid", Some("query")))?,
    )
    .map(|q| q.0)
    .map_err(|e| ApiError::bad_request("invalid_query", e.body_text(), Some("query")))
}

/// `{"commands": [...], options...}`, with at most `max` commands.
fn parse_json(bytes: &[u8], max: usize, budgets: &Budgets) -> Result<(Vec<Value>, Options), ApiError> {
    let exceeded = Cell::new(false);
    let over_budget = Cell::new(None);
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let seed = BatchSeed { max, exceeded: &exceeded, budgets, over_budget: &over_budget };
    let parsed = seed.deserialize(&mut de).and_then(|batch| {
        de.end()?;
        Ok(batch)
    });
    match parsed {
        Ok(batch) => Ok(batch),
        Err(_) if exceeded.get() => Err(too_many(max)),
        Err(e) => {
            let location = format!("body line {} column {}", e.line(), e.column());
            Err(match over_budget.get() {
                Some((index, exceeded)) => ApiError::JsonTooLarge {
                    message: format!("the batch holds {exceeded} (at /commands/{index})"),
                    location,
                },
                None => ApiError::bad_request(
                    "malformed_batch",
                    format!("body is not a batch ({{\"commands\": [...]}}): {e}"),
                    Some(&location),
                ),
            })
        }
    }
}

/// Reads the batch object: `commands` through [`Bounded`], the options as their own types. An
/// unknown or repeated field is refused before its value is read.
struct BatchSeed<'a> {
    max: usize,
    exceeded: &'a Cell<bool>,
    budgets: &'a Budgets,
    /// The item at which a budget ran out, and which.
    over_budget: &'a Cell<Option<(usize, crate::json::Exceeded)>>,
}

/// The fields a JSON batch may have.
const FIELDS: &[&str] = &["commands", "all_or_nothing", "callback_url", "callback_secret", "priority"];

impl<'de> DeserializeSeed<'de> for BatchSeed<'_> {
    type Value = (Vec<Value>, Options);

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for BatchSeed<'_> {
    type Value = (Vec<Value>, Options);

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object with a commands array")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut commands = None;
        let (mut all_or_nothing, mut callback_url, mut callback_secret) = (None, None, None);
        let mut priority = None;
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "commands" => {
                    unset(&commands, "commands")?;
                    let bounded = Bounded {
                        max: self.max,
                        exceeded: self.exceeded,
                        budgets: self.budgets,
                        over_budget: self.over_budget,
                    };
                    commands = Some(map.next_value_seed(bounded)?);
                }
                "all_or_nothing" => {
                    unset(&all_or_nothing, "all_or_nothing")?;
                    all_or_nothing = Some(map.next_value::<bool>()?);
                }
                "callback_url" => {
                    unset(&callback_url, "callback_url")?;
                    callback_url = Some(map.next_value::<Option<String>>()?);
                }
                "callback_secret" => {
                    unset(&callback_secret, "callback_secret")?;
                    callback_secret = Some(map.next_value::<Option<String>>()?);
                }
                "priority" => {
                    unset(&priority, "priority")?;
                    priority = Some(map.next_value::<Option<crate::command::Priority>>()?);
                }
                other => return Err(de::Error::unknown_field(other, FIELDS)),
            }
        }
        let commands = commands.ok_or_else(|| de::Error::missing_field("commands"))?;
        let options = Options {
            all_or_nothing: all_or_nothing.unwrap_or(false),
            callback_url: callback_url.flatten(),
            callback_secret: callback_secret.flatten(),
            priority: priority.flatten(),
        };
        Ok((commands, options))
    }
}

/// A field seen twice is refused (as serde's derived code does).
fn unset<T, E: de::Error>(slot: &Option<T>, field: &'static str) -> Result<(), E> {
    match slot {
        Some(_) => Err(E::duplicate_field(field)),
        None => Ok(()),
    }
}

/// An array of at most `max` values, each within its own and the batch's budget; sets
/// `exceeded` when it finds one more, `over_budget` when a budget runs out.
struct Bounded<'a> {
    max: usize,
    exceeded: &'a Cell<bool>,
    budgets: &'a Budgets,
    over_budget: &'a Cell<Option<(usize, crate::json::Exceeded)>>,
}

impl<'de> DeserializeSeed<'de> for Bounded<'_> {
    type Value = Vec<Value>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Bounded<'_> {
    type Value = Vec<Value>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of commands")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::new();
        loop {
            let own = self.budgets.item.budget();
            let charged = [&own, &self.budgets.total];
            let item = match seq.next_element_seed(crate::json::Within(&charged)) {
                Ok(Some(item)) => item,
                Ok(None) => break,
                Err(e) => {
                    if let Some(exceeded) = crate::json::exceeded(&charged) {
                        self.over_budget.set(Some((items.len(), exceeded)));
                    }
                    return Err(e);
                }
            };
            if items.len() == self.max {
                self.exceeded.set(true);
                return Err(de::Error::custom(format!("more than {} commands", self.max)));
            }
            items.push(item);
        }
        Ok(items)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budgets() -> Budgets {
        Budgets { item: ShapeLimit::default(), total: Budget::new(1000, 1 << 20) }
    }

    fn parse_json(bytes: &[u8], max: usize) -> Result<(Vec<Value>, Options), ApiError> {
        super::parse_json(bytes, max, &budgets())
    }

    #[test]
    fn a_json_batch_over_the_batch_budget_is_refused_at_the_item_where_it_ran_out() {
        let item = format!("[{}]", vec!["1"; 400].join(","));
        let body = format!(r#"{{"commands": [{item}, {item}, {item}, !!!"#);
        match super::parse_json(body.as_bytes(), 10, &budgets()) {
            Err(ApiError::JsonTooLarge { message, location }) => {
                assert!(message.contains("more than 1000 JSON values (at /commands/2)"), "{message}");
                assert!(location.starts_with("body line 1 column"), "{location}");
            }
            other => panic!("refused for its budget, not {:?}", other.err()),
        }
    }

    fn code(r: Result<(Vec<Value>, Options), ApiError>) -> Option<String> {
        match r {
            Err(ApiError::BadRequest { code, .. }) => Some(code.to_string()),
            _ => None,
        }
    }

    #[test]
    fn a_json_batch_over_the_maximum_is_refused_at_the_item_past_it() {
        // What follows the third item is not even JSON: parsing stopped at the third.
        assert_eq!(code(parse_json(br#"{"commands": [1, 2, 3, {"#, 2)).as_deref(), Some("invalid_batch_length"));
    }

    #[test]
    fn a_json_batch_keeps_its_options_and_refuses_unknown_repeated_or_missing_fields() {
        let (items, options) = parse_json(br#"{"all_or_nothing": true, "commands": [1]}"#, 5).ok().unwrap();
        assert_eq!((items.len(), options.all_or_nothing), (1, true));
        // An unknown field is refused before its value is read: this one is not even JSON.
        assert_eq!(code(parse_json(br#"{"commandz": [1, 2"#, 5)).as_deref(), Some("malformed_batch"));
        for body in [
            &br#"{"commands": [1], "commands": [2]}"#[..],
            br#"{"commands": [1], "callback_url": "a", "callback_url": "b"}"#,
            br#"{"all_or_nothing": true}"#,
            br#"{"commands": [1]} trailing"#,
        ] {
            assert_eq!(
                code(parse_json(body, 5)).as_deref(),
                Some("malformed_batch"),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }
}
