//! The planner's row estimate for a statement held for approval, so approvers see how many
//! rows a write would touch. Asked on a connection of its own, with the held credential, in a
//! read-only transaction with a short statement timeout, through the extended protocol (a
//! Parse holds exactly one statement, so nothing else in the text can run), and never with
//! `ANALYZE`: nothing is executed.

use crate::framer::{Framer, Piece};
use crate::upstream;
use bytes::{Buf, BytesMut};
use gatehouse_core::PostgresTarget;
use postgres_protocol::message::frontend;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// Everything needed to ask the server, for one session.
pub struct Estimator {
    pub target: PostgresTarget,
    pub tls: Option<Arc<rustls::ClientConfig>>,
    pub params: Vec<(String, String)>,
    pub timeout: Duration,
}

impl Estimator {
    /// `EXPLAIN (FORMAT JSON)` of `sql`: the top plan node's "Plan Rows".
    pub async fn rows(&self, sql: &str) -> Result<f64, String> {
        tokio::time::timeout(self.timeout, self.ask(sql))
            .await
            .map_err(|_| "the server did not answer in time".to_owned())?
    }

    async fn ask(&self, sql: &str) -> Result<f64, String> {
        let connected =
            upstream::connect(&self.target, self.tls.as_ref(), &self.params, self.timeout)
                .await
                .map_err(|e| e.to_string())?;
        let mut stream = connected.stream;
        let mut out = BytesMut::new();
        frontend::query(
            "BEGIN READ ONLY; SET LOCAL statement_timeout = '2s'",
            &mut out,
        )
        .map_err(|e| e.to_string())?;
        let explain = format!("EXPLAIN (FORMAT JSON) {sql}");
        frontend::parse("", &explain, std::iter::empty(), &mut out).map_err(|e| e.to_string())?;
        frontend::bind(
            "",
            "",
            std::iter::empty::<i16>(),
            std::iter::empty::<Option<&[u8]>>(),
            |_: Option<&[u8]>, _: &mut BytesMut| -> Result<postgres_protocol::IsNull, Box<dyn std::error::Error + Sync + Send>> {
                Ok(postgres_protocol::IsNull::Yes)
            },
            std::iter::empty::<i16>(),
            &mut out,
        )
        .map_err(|_| "cannot encode Bind".to_owned())?;
        frontend::execute("", 0, &mut out).map_err(|e| e.to_string())?;
        frontend::sync(&mut out);
        frontend::query("ROLLBACK", &mut out).map_err(|e| e.to_string())?;
        frontend::terminate(&mut out);
        stream.write_all(&out).await.map_err(|e| e.to_string())?;

        let mut framer = Framer::new(stream, 4 << 20, |_| false);
        let mut plan = String::new();
        let mut error = None;
        // Two ReadyForQuery for the setup and the EXPLAIN's Sync; the ROLLBACK's is not needed.
        let mut ready = 0;
        while ready < 2 {
            let Some(Piece::Whole { tag, raw }) = framer.next().await.map_err(|e| e.to_string())?
            else {
                return Err("the server closed the connection".into());
            };
            let mut body = &raw[5..];
            match tag {
                b'Z' => ready += 1,
                b'D' if plan.is_empty() && body.remaining() >= 6 => {
                    body.advance(2);
                    let len = usize::try_from(body.get_i32()).unwrap_or(0);
                    let len = len.min(body.remaining());
                    plan = String::from_utf8_lossy(&body[..len]).into_owned();
                }
                b'E' => {
                    error.get_or_insert_with(|| error_message(body));
                }
                _ => {}
            }
        }
        if let Some(error) = error {
            return Err(error);
        }
        let json: serde_json::Value =
            serde_json::from_str(&plan).map_err(|_| "the plan is not JSON".to_owned())?;
        json[0]["Plan"]["Plan Rows"]
            .as_f64()
            .ok_or_else(|| "the plan has no row estimate".to_owned())
    }
}

/// The `M` field of an ErrorResponse.
fn error_message(mut body: &[u8]) -> String {
    while let Some((&field, rest)) = body.split_first() {
        if field == 0 {
            break;
        }
        let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        if field == b'M' {
            return String::from_utf8_lossy(&rest[..end]).into_owned();
        }
        body = rest.get(end + 1..).unwrap_or_default();
    }
    "the server refused the EXPLAIN".into()
}
