//! Typed command types: a serde payload type that names its `type` and schema, and a handler
//! that receives the payload already decoded. This is how an application adds its own work to
//! sluice (`App::builder(..).command::<PlaceOrder>(PlaceOrderHandler)`); the shipped types are
//! written the same way.

use super::{payload, Handler, HandlerError, HandlerFuture, HandlerManyFuture, Outcome};
use crate::command::Envelope;
use serde::de::DeserializeOwned;
use serde_json::Value;
use sqlx::PgConnection;
use std::future::Future;
use std::marker::PhantomData;

/// A command type: its payload, its name on the wire and its JSON Schema.
pub trait CommandType: DeserializeOwned + Send + Sync + 'static {
    /// The `type` producers submit, e.g. `order.place`.
    const TYPE: &'static str;
    /// Whether producers may submit it; false for types sluice makes itself (a verified
    /// webhook), so that no key can forge one.
    const SUBMITTABLE: bool = true;
    /// The payload's JSON Schema; the API validates every submission against it.
    fn schema() -> PayloadSchema;
}

/// Where a command type's JSON Schema comes from.
#[derive(Debug, Clone)]
pub enum PayloadSchema {
    /// The text of a schema file, e.g. `include_str!("../schemas/order.place.json")`.
    Text(&'static str),
    /// A schema built in code, e.g. [`PayloadSchema::derived`].
    Value(Value),
}

impl PayloadSchema {
    /// The schema `schemars` derives from the payload type (`#[derive(JsonSchema)]`).
    pub fn derived<T: schemars::JsonSchema>() -> Self {
        Self::Value(schemars::schema_for!(T).to_value())
    }

    /// The schema as JSON; an unparsable file is reported when the type is registered.
    pub fn into_value(self) -> Result<Value, serde_json::Error> {
        match self {
            Self::Text(text) => serde_json::from_str(text),
            Self::Value(v) => Ok(v),
        }
    }
}

/// One command as a handler receives it: the decoded payload and its envelope (id, tenant,
/// submission time, batch).
#[derive(Debug)]
pub struct Incoming<'a, C> {
    pub payload: C,
    pub envelope: &'a Envelope,
}

/// The business logic of the command type `C`.
///
/// `handle` runs inside the worker's transaction, which also holds the command's inbox row:
/// whatever it writes through `tx` commits exactly once with the outcome, or not at all. It
/// must not commit, and a [`Outcome::Rejected`] must not have written anything.
pub trait Handle<C: CommandType>: Send + Sync + 'static {
    /// Applies one command.
    fn handle(
        &self,
        tx: &mut PgConnection,
        cmd: Incoming<'_, C>,
    ) -> impl Future<Output = Result<Outcome, HandlerError>> + Send;

    /// Names of what the command will lock (an account, a customer). The worker takes every
    /// key of a transaction at its start, sorted, so transactions holding several commands
    /// cannot deadlock each other.
    fn lock_keys(&self, _payload: &C, _envelope: &Envelope) -> Vec<String> {
        Vec::new()
    }

    /// Applies several commands of this type in one transaction, one outcome each, in order.
    /// The default calls [`Handle::handle`] for each; override it to use multi-row
    /// statements. Any error rolls the whole batch back and the worker retries each command
    /// on its own.
    fn handle_many(
        &self,
        tx: &mut PgConnection,
        cmds: Vec<Incoming<'_, C>>,
    ) -> impl Future<Output = Result<Vec<Outcome>, HandlerError>> + Send {
        async move {
            let mut outcomes = Vec::with_capacity(cmds.len());
            for cmd in cmds {
                outcomes.push(self.handle(tx, cmd).await?);
            }
            Ok(outcomes)
        }
    }
}

/// A typed handler seen through the worker's untyped [`Handler`] interface.
pub(crate) struct Typed<C, H> {
    handler: H,
    payload: PhantomData<fn() -> C>,
}

impl<C, H> Typed<C, H> {
    pub(crate) fn new(handler: H) -> Self {
        Self { handler, payload: PhantomData }
    }
}

impl<C: CommandType, H: Handle<C>> Handler for Typed<C, H> {
    fn handle<'a>(&'a self, tx: &'a mut PgConnection, cmd: &'a Envelope) -> HandlerFuture<'a> {
        Box::pin(async move {
            let payload: C = payload(cmd)?;
            self.handler.handle(tx, Incoming { payload, envelope: cmd }).await
        })
    }

    fn lock_keys(&self, cmd: &Envelope) -> Vec<String> {
        // An undecodable payload takes no lock; `handle` then dead-letters it.
        payload::<C>(cmd).map(|p| self.handler.lock_keys(&p, cmd)).unwrap_or_default()
    }

    fn handle_many<'a>(&'a self, tx: &'a mut PgConnection, cmds: &'a [&'a Envelope]) -> HandlerManyFuture<'a> {
        Box::pin(async move {
            let mut decoded = Vec::with_capacity(cmds.len());
            for cmd in cmds {
                decoded.push(Incoming { payload: payload::<C>(cmd)?, envelope: cmd });
            }
            self.handler.handle_many(tx, decoded).await
        })
    }
}
