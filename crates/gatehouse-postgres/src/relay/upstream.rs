//! Upstream → client: every server message matched to the op it answers, finished statements
//! recorded, reported session settings checked, output relayed.

use super::{gated_end, write_out, Shared, FLUSH_AT};
use crate::codec;
use crate::encoding::ClientEncoding;
use crate::framer::{FrameError, Framer, Piece};
use crate::mask::{self, MessageMasker};
use crate::record::Tap;
use bytes::BytesMut;
use gatehouse_core::{EndCause, Gated, Session, Step};
use tokio::io::{AsyncRead, AsyncWrite};

pub(super) async fn run<R, W>(
    session: &Session,
    shared: &Shared,
    upstream: &mut Framer<R>,
    client: &mut Gated<W>,
) -> EndCause
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut out = BytesMut::with_capacity(FLUSH_AT);
    // Chunks of a large message follow its head: relayed unless the head was dropped.
    let mut relay_chunks = true;
    // A large message being masked as it streams, and how much of its body is still to come.
    let mut streaming: Option<(MessageMasker, usize)> = None;
    let recorder = session.recorder();
    let mut tap = Tap::new(session.recorded_rows());
    loop {
        let piece = if upstream.has_buffered_piece() {
            upstream.next().await
        } else {
            if let Err(e) = write_out(client, &mut out).await {
                return gated_end(e, false);
            }
            if let Some(recorder) = recorder {
                if let Err(e) = recorder.settle().await {
                    return EndCause::RecordingUnavailable(e.to_string());
                }
            }
            shared.activity.touch();
            upstream.next().await
        };
        let (tag, raw, len) = match piece {
            Ok(None) => {
                let _ = write_out(client, &mut out).await;
                return EndCause::UpstreamClosed;
            }
            Ok(Some(Piece::Whole { tag, raw })) => {
                let len = raw.len() - 5;
                (tag, raw, len)
            }
            Ok(Some(Piece::Head { tag, raw, len })) => {
                let masker = mask::masks(tag)
                    .then(|| shared.flow().shown_masker())
                    .flatten();
                if let Some(masker) = masker {
                    let left = len - (raw.len() - 5);
                    streaming = Some((MessageMasker::new(masker, tag, false), left));
                }
                (tag, raw, len)
            }
            Ok(Some(Piece::Chunk(raw))) => {
                shared.flow().add_bytes(raw.len());
                if let Some((masker, left)) = &mut streaming {
                    *left = left.saturating_sub(raw.len());
                    if relay_chunks {
                        masker.feed(&raw, &mut out);
                    }
                    if *left == 0 {
                        if relay_chunks {
                            masker.finish(&mut out);
                            shared.flow().add_masked(&masker.counts);
                        }
                        streaming = None;
                    }
                } else if relay_chunks {
                    out.extend_from_slice(&raw);
                }
                if out.len() >= FLUSH_AT {
                    if let Err(e) = write_out(client, &mut out).await {
                        return gated_end(e, false);
                    }
                }
                continue;
            }
            Ok(Some(Piece::Oversized { tag, len, .. })) => {
                return EndCause::UpstreamProtocol(format!(
                    "message of type {:?} is {len} bytes, more than a server sends",
                    char::from(tag)
                ))
            }
            Err(FrameError::Io(e)) => return EndCause::UpstreamIo(e.to_string()),
            Err(e) => return EndCause::UpstreamProtocol(e.to_string()),
        };
        let body = &raw[5..];
        if tag == b'S' {
            if let Err(end) = check_setting(shared, body) {
                return end;
            }
        }
        // Masked into the output before the op it answers can finish: its count goes with it.
        let start = out.len();
        let (masked, reaction, exempt) = {
            let mut flow = shared.flow();
            // Shown unmasked to an exempt caller, kept masked in the recording.
            let exempt = (recorder.is_some() && mask::masks(tag))
                .then(|| flow.exempt_masker())
                .flatten();
            let masked = match &mut streaming {
                Some((masker, _)) if raw.len() - 5 < len => {
                    out.extend_from_slice(&raw[..5]);
                    masker.feed(body, &mut out);
                    true
                }
                _ => match mask::masks(tag)
                    .then(|| {
                        // Outside any op (a notification to an idle listener), after a reload:
                        // the masking the caller has now.
                        if flow.in_flight() == 0
                            && flow.masking_generation != session.policy_generation()
                        {
                            flow.masking_generation = session.policy_generation();
                            flow.masking = session.masking();
                        }
                        flow.shown_masker()
                    })
                    .flatten()
                {
                    Some(masker) => {
                        let counts = MessageMasker::whole(masker, &raw, &mut out);
                        flow.add_masked(&counts);
                        true
                    }
                    None => false,
                },
            };
            (masked, flow.on_message(tag, body, len), exempt)
        };
        if let Some(violation) = reaction.violation {
            return EndCause::UpstreamProtocol(violation);
        }
        for done in &reaction.done {
            if let Err(e) = session.complete(done.id, &done.result) {
                return EndCause::AuditUnavailable(e.to_string());
            }
        }
        if let Some(refused) = &reaction.refused_parse {
            let name = String::from_utf8_lossy(&refused.name);
            let result = session.server_refused(
                &refused.command,
                Step::Prepare { name: &name },
                &refused.code,
                &refused.message,
            );
            if let Err(e) = result {
                return EndCause::AuditUnavailable(e.to_string());
            }
        }
        if !reaction.done.is_empty()
            || reaction.ready.is_some()
            || reaction.copy_in
            || reaction.drop
        {
            shared.activity.touch();
        }
        relay_chunks = !reaction.drop;
        if reaction.drop {
            out.truncate(start);
        } else {
            if !masked {
                out.extend_from_slice(&raw);
            }
            // What the client is shown, as it is shown (masked).
            if let Some(recorder) = recorder {
                if raw.len() - 5 < len {
                    tap.streamed(recorder, tag, len);
                } else if let Some(masker) = exempt {
                    let mut kept = BytesMut::with_capacity(out.len() - start);
                    MessageMasker::whole(masker, &out[start..], &mut kept);
                    tap.message(recorder, tag, &kept);
                } else {
                    tap.message(recorder, tag, &out[start..]);
                }
            }
        }
        // The client loop may be waiting for this answer.
        shared.answered.notify_one();
        if out.len() >= FLUSH_AT {
            if let Err(e) = write_out(client, &mut out).await {
                return gated_end(e, false);
            }
        }
    }
}

/// Settings the gateway must read the client's text by: a client encoding it cannot read
/// safely, or `standard_conforming_strings` off (backslashes in plain strings would then
/// escape quotes the gateway's lexer reads as ends), end the session at once. Statements
/// already sent since the previous ReadyForQuery may have been read differently by the
/// server; they are named.
fn check_setting(shared: &Shared, body: &[u8]) -> Result<(), EndCause> {
    let Some((name, value)) = codec::parameter_status(body) else {
        return Ok(());
    };
    let problem = match name {
        "client_encoding" => match ClientEncoding::from_name(value) {
            Ok(encoding) => {
                shared.flow().encoding = encoding;
                return Ok(());
            }
            Err(e) => e.to_string(),
        },
        "standard_conforming_strings" if value != "on" => {
            "standard_conforming_strings is off: the gateway reads string literals as PostgreSQL does with it on, so statements could read differently to the server".to_owned()
        }
        _ => return Ok(()),
    };
    let suspect = shared.flow().statements_in_flight();
    let suffix = if suspect.is_empty() {
        String::new()
    } else {
        format!(
            " (statements recorded at seq {suspect:?} were sent before the change was reported and may have been read differently by the server)"
        )
    };
    Err(EndCause::UnsafeSessionState(format!("{problem}{suffix}")))
}
