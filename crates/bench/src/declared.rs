//! Declared command types for the bench: `bench.http`, posted to a minimal endpoint in this
//! process, and `bench.sql`, a trivial Postgres function; both carry `event.record`'s payload,
//! so their rates compare with the built-in type's in the same round.

use anyhow::Context;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::path::PathBuf;

/// What `bench.sql` calls: one insert, like `event.record`'s.
pub const SQL_FUNCTION: &str = r#"
CREATE TABLE IF NOT EXISTS bench_rows (command_id uuid PRIMARY KEY, payload jsonb NOT NULL);
CREATE OR REPLACE FUNCTION bench_apply(payload jsonb, command_id uuid, tenant text) RETURNS jsonb
LANGUAGE sql AS $$
    INSERT INTO bench_rows VALUES (command_id, payload) RETURNING jsonb_build_object('ok', true)
$$;
"#;

/// A `commands.dir` declaring both types, and the endpoint `bench.http` posts to.
pub struct Declared {
    pub dir: PathBuf,
    endpoint: tokio::task::JoinHandle<()>,
}

impl Drop for Declared {
    fn drop(&mut self) {
        self.endpoint.abort();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Starts the endpoint and writes the declarations.
pub async fn prepare() -> anyhow::Result<Declared> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let endpoint = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
                    let _ = req.into_body().collect().await;
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(Bytes::from_static(
                        b"{\"ok\":true}",
                    ))))
                });
                let _ =
                    hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
            });
        }
    });
    let dir = std::env::temp_dir().join(format!("sluice-bench-commands-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).context("bench commands dir")?;
    std::fs::write(dir.join("any.schema.json"), r#"{"type": "object"}"#)?;
    // Any Standard Webhooks secret: the endpoint does not verify (its cost is the receiver's).
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    std::fs::write(
        dir.join("bench.http.toml"),
        format!(
            "type = \"bench.http\"\nschema = \"any.schema.json\"\n[http]\nurl = \"http://{addr}/\"\nsecret = \"{secret}\"\nmax_in_flight = 256\n"
        ),
    )?;
    std::fs::write(
        dir.join("bench.sql.toml"),
        "type = \"bench.sql\"\nschema = \"any.schema.json\"\n[sql]\nfunction = \"bench_apply\"\n",
    )?;
    Ok(Declared { dir, endpoint })
}
