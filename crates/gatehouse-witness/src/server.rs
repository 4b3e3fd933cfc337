//! The witness's HTTP face: `POST /add-checkpoint`, as C2SP `tlog-witness` defines it.
//!
//! Requests are unauthenticated (only the checkpoint's signature matters), so refusals that
//! anybody can provoke — including a 422, whose proof is the requester's own — are counted and
//! logged at most once a minute; a fork (a validly signed checkpoint of a size already
//! cosigned, with another root: evidence the log misbehaved) is logged every time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Body;
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

/// The longest a request's body may take to arrive: the server's header timeout does not
/// cover it, and a client that stalls mid-body must not hold a connection slot.
const BODY_TIMEOUT: Duration = Duration::from_secs(10);

async fn add_checkpoint(State(served): State<Arc<Served>>, body: Body) -> Response {
    let body = match tokio::time::timeout(BODY_TIMEOUT, axum::body::to_bytes(body, MAX_BODY)).await
    {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(_)) => {
            return (
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the body is larger than {MAX_BODY} bytes\n"),
            )
                .into_response()
        }
        Err(_) => {
            return (
                StatusCode::REQUEST_TIMEOUT,
                "the body did not arrive in time\n",
            )
                .into_response()
        }
    };
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
            Answer::Unavailable(why) => tracing::error!(error = %why, "witness state not kept"),
            // A 422 needs a validly signed checkpoint, but the proof is the requester's own:
            // anyone holding a newer checkpoint can provoke it, so it is summarised too.
            Answer::Inconsistent(_)
            | Answer::BadRequest(_)
            | Answer::Forbidden
            | Answer::UnknownOrigin => {
                let refused = self.refused.fetch_add(1, Ordering::Relaxed) + 1;
                let mut last = self
                    .last_summary
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if last.is_none_or(|t| t.elapsed() >= SUMMARY_EVERY) {
                    *last = Some(Instant::now());
                    let latest = match answer {
                        Answer::Inconsistent(why) => why.clone(),
                        _ => String::new(),
                    };
                    tracing::warn!(
                        refused_total = refused,
                        status = answer.status(),
                        latest = %latest,
                        "witness refused requests (bad, unsigned, for an unknown log, or not consistent with what it cosigned)"
                    );
                }
            }
        }
    }
}
