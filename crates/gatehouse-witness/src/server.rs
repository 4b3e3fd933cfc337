//! The witness's HTTP face: `POST /add-checkpoint`, as C2SP `tlog-witness` defines it.
//!
//! Requests are unauthenticated (only the checkpoint's signature matters), so refusals that
//! anybody can provoke are counted and logged at most once a minute; a refusal that needs the
//! log's valid signature (an inconsistent or forked checkpoint: evidence the log misbehaved) is
//! logged every time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;

use crate::request::{size_body, MAX_BODY, SIZE_CONTENT_TYPE};
use crate::witness::{Answer, Witness};

/// How often refusals from unauthenticated requests are summarised in the log.
const SUMMARY_EVERY: Duration = Duration::from_secs(60);

struct Served {
    witness: Arc<Witness>,
    refused: AtomicU64,
    last_summary: Mutex<Option<Instant>>,
}

/// The witness's routes.
pub fn router(witness: Arc<Witness>) -> Router {
    let served = Arc::new(Served {
        witness,
        refused: AtomicU64::new(0),
        last_summary: Mutex::new(None),
    });
    Router::new()
        .route("/add-checkpoint", post(add_checkpoint))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(served)
}

async fn add_checkpoint(State(served): State<Arc<Served>>, body: Bytes) -> Response {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let witness = Arc::clone(&served.witness);
    // The state is synced to disk before answering: off the async threads.
    let answer = match tokio::task::spawn_blocking(move || witness.add_checkpoint(&body, now)).await
    {
        Ok(answer) => answer,
        Err(_) => Answer::Unavailable("the request handler failed".into()),
    };
    served.note(&answer);
    let status = StatusCode::from_u16(answer.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let text = |body: String| {
        (
            status,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            body,
        )
            .into_response()
    };
    match answer {
        Answer::Cosigned(lines) => text(lines),
        Answer::WrongOldSize(size) => (
            status,
            [(header::CONTENT_TYPE, SIZE_CONTENT_TYPE)],
            size_body(size),
        )
            .into_response(),
        Answer::BadRequest(why) => text(format!("bad request: {why}\n")),
        Answer::Forbidden => text("no signature by a key trusted for this origin\n".into()),
        Answer::UnknownOrigin => text("unknown log origin\n".into()),
        Answer::RootMismatch => text("same tree size as cosigned before, another root\n".into()),
        Answer::Inconsistent(why) => {
            text(format!("not consistent with what was cosigned: {why}\n"))
        }
        Answer::Unavailable(_) => {
            text("the witness cannot keep its state; nothing was cosigned\n".into())
        }
    }
}

impl Served {
    fn note(&self, answer: &Answer) {
        match answer {
            Answer::Cosigned(_) | Answer::WrongOldSize(_) => {}
            Answer::RootMismatch => {
                tracing::warn!("a validly signed checkpoint forks the log: same size, another root")
            }
            Answer::Inconsistent(why) => {
                tracing::warn!(reason = %why, "a validly signed checkpoint is not consistent with the one cosigned before")
            }
            Answer::Unavailable(why) => tracing::error!(error = %why, "witness state not kept"),
            Answer::BadRequest(_) | Answer::Forbidden | Answer::UnknownOrigin => {
                let refused = self.refused.fetch_add(1, Ordering::Relaxed) + 1;
                let mut last = self
                    .last_summary
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if last.is_none_or(|t| t.elapsed() >= SUMMARY_EVERY) {
                    *last = Some(Instant::now());
                    tracing::warn!(
                        refused_total = refused,
                        status = answer.status(),
                        "witness refused requests (bad, unsigned or for an unknown log)"
                    );
                }
            }
        }
    }
}
