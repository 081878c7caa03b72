//! JSON parsed within a budget: how many values it may hold and about how much memory they may
//! take, both charged while parsing, so a body cannot grow in memory far beyond its size.
//!
//! Without it, `{"":0}` is 6 bytes on the wire and about 700 in memory (every object is a
//! B-tree node of 11 slots, however few keys it has): one 14.7 MiB batch of such objects became
//! 2.9-3.5 GB resident.

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

/// What a value costs in memory, as estimated: its own slot, plus for an object the B-tree
/// leaf it allocates at once (11 key and value slots), plus for each key or string its bytes.
const VALUE_BYTES: usize = std::mem::size_of::<Value>();
const OBJECT_BYTES: usize = 11 * (std::mem::size_of::<String>() + VALUE_BYTES) + 16;
const ENTRY_BYTES: usize = std::mem::size_of::<String>() + VALUE_BYTES;

/// Which bound a parse ran past.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exceeded {
    /// More values than the budget allows.
    Values { limit: usize },
    /// More estimated memory than the budget allows (bytes).
    Bytes { limit: usize },
}

impl fmt::Display for Exceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Values { limit } => write!(f, "more than {limit} JSON values"),
            Self::Bytes { limit } => write!(f, "JSON that would take more than {limit} bytes of memory"),
        }
    }
}

/// What is left of a budget; one per document, and one shared by the documents of a request.
/// (Atomics only so a request's future that holds one stays `Send`; one parse uses it at a time.)
#[derive(Debug)]
pub struct Budget {
    values: AtomicUsize,
    bytes: AtomicUsize,
    max_values: usize,
    max_bytes: usize,
    exceeded: OnceLock<Exceeded>,
}

impl Budget {
    /// A budget of `max_values` values and `max_bytes` bytes of parsed values.
    pub fn new(max_values: usize, max_bytes: usize) -> Self {
        Self {
            values: AtomicUsize::new(0),
            bytes: AtomicUsize::new(0),
            max_values,
            max_bytes,
            exceeded: OnceLock::new(),
        }
    }

    /// The bound this budget ran past, if it did.
    pub fn exceeded(&self) -> Option<Exceeded> {
        self.exceeded.get().copied()
    }

    fn charge(&self, values: usize, bytes: usize) -> Result<(), Exceeded> {
        let v = self.values.load(Ordering::Relaxed) + values;
        let b = self.bytes.load(Ordering::Relaxed).saturating_add(bytes);
        let over = if v > self.max_values {
            Some(Exceeded::Values { limit: self.max_values })
        } else if b > self.max_bytes {
            Some(Exceeded::Bytes { limit: self.max_bytes })
        } else {
            None
        };
        if let Some(e) = over {
            let _ = self.exceeded.set(e);
            return Err(e);
        }
        self.values.store(v, Ordering::Relaxed);
        self.bytes.store(b, Ordering::Relaxed);
        Ok(())
    }
}

/// Parses one JSON document from `bytes`, charging every budget in `budgets`.
pub fn parse(bytes: &[u8], budgets: &[&Budget]) -> Result<Value, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = Within(budgets).deserialize(&mut de)?;
    de.end()?;
    Ok(value)
}

/// The bound that `budgets` ran past, if any did.
pub fn exceeded(budgets: &[&Budget]) -> Option<Exceeded> {
    budgets.iter().find_map(|b| b.exceeded())
}

/// Deserializes a [`Value`] while charging each budget for what it builds.
#[derive(Clone, Copy)]
pub struct Within<'a>(pub &'a [&'a Budget]);

impl Within<'_> {
    fn charge<E: de::Error>(&self, values: usize, bytes: usize) -> Result<(), E> {
        for b in self.0 {
            b.charge(values, bytes).map_err(|e| E::custom(format!("the body holds {e}")))?;
        }
        Ok(())
    }
}

impl<'de> DeserializeSeed<'de> for Within<'_> {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Within<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        self.charge(1, VALUE_BYTES)?;
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        self.charge(1, VALUE_BYTES)?;
        Ok(Value::from(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        self.charge(1, VALUE_BYTES)?;
        Ok(Value::from(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        self.charge(1, VALUE_BYTES)?;
        Ok(Value::from(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        self.charge(1, VALUE_BYTES + v.len())?;
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        self.charge(1, VALUE_BYTES + v.len())?;
        Ok(Value::String(v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        self.charge(1, VALUE_BYTES)?;
        Ok(Value::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        self.visit_unit()
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        self.charge(1, VALUE_BYTES)?;
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(self)? {
            // A Vec holds up to twice the slots it uses while it grows.
            self.charge(0, VALUE_BYTES)?;
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        self.charge(1, VALUE_BYTES + OBJECT_BYTES)?;
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            self.charge(0, ENTRY_BYTES + key.len())?;
            let value = map.next_value_seed(self)?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_document_within_its_budget_parses_like_serde_json() {
        let text = br#"{"a": [1, -2, 3.5, true, null, "x"], "b": {"c": "d"}}"#;
        let budget = Budget::new(100, 1 << 20);
        let parsed = parse(text, &[&budget]).expect("within budget");
        assert_eq!(parsed, serde_json::from_slice::<Value>(text).unwrap());
        assert_eq!(budget.exceeded(), None);
    }

    #[test]
    fn the_value_past_the_count_ends_parsing_even_if_what_follows_is_not_json() {
        // The array is a value too: the fifth value is the 4.
        let budget = Budget::new(4, 1 << 20);
        let err = parse(b"[1, 2, 3, 4, !!!", &[&budget]).expect_err("over the count");
        assert_eq!(budget.exceeded(), Some(Exceeded::Values { limit: 4 }));
        assert!(err.to_string().contains("more than 4 JSON values"), "{err}");
        assert_eq!(err.column(), 11, "the error says where the budget ran out");
    }

    #[test]
    fn small_objects_are_charged_for_the_memory_they_take_not_their_size_on_the_wire() {
        let body = format!("[{}]", vec![r#"{"":0}"#; 1000].join(","));
        let budget = Budget::new(usize::MAX, 100 * 1024);
        parse(body.as_bytes(), &[&budget]).expect_err("7 KB of objects is over 100 KiB in memory");
        assert_eq!(budget.exceeded(), Some(Exceeded::Bytes { limit: 100 * 1024 }));
    }

    #[test]
    fn a_shared_budget_runs_out_across_documents_that_each_fit_their_own() {
        // Each document is three values: the array and its two numbers.
        let total = Budget::new(6, 1 << 20);
        for _ in 0..2 {
            let own = Budget::new(3, 1 << 20);
            parse(b"[1, 2]", &[&own, &total]).expect("fits both");
        }
        let own = Budget::new(3, 1 << 20);
        parse(b"[1, 2]", &[&own, &total]).expect_err("the shared budget is spent");
        assert_eq!((own.exceeded(), total.exceeded()), (None, Some(Exceeded::Values { limit: 6 })));
    }
}
