//! Startup parameters: which the client may pass through to the server, and the settings the
//! server reports back that decide how the gateway reads the session.
//!
//! A startup packet can set any server setting, some of which change what a session is
//! (`role`, `session_authorization`, `session_replication_role = replica` turns triggers off)
//! or how its text reads (`standard_conforming_strings`, an unsafe `client_encoding`). Only
//! presentation settings that drivers send are forwarded; anything else is refused with a
//! clear error, and what was forwarded is recorded in `session.start`. The `options`
//! parameter (`-c name=value ...`, as libpq's PGOPTIONS sends it) is read into the same
//! settings and held to the same list.

use crate::codec;
use crate::encoding::ClientEncoding;
use crate::framer::{Framer, Piece};
use crate::relay::Initial;

/// Settings a client may set at startup (compared case-insensitively, like PostgreSQL).
pub const ALLOWED: &[&str] = &[
    "application_name",
    "client_encoding",
    "DateStyle",
    "TimeZone",
    "extra_float_digits",
    "IntervalStyle",
    "search_path",
    "bytea_output",
    "statement_timeout",
    "lock_timeout",
    "idle_in_transaction_session_timeout",
];

/// Longest parameter value kept in `session.start`.
const MAX_RECORDED_VALUE: usize = 256;

/// The parameters to forward, or why the startup is refused. `user`, `database` and
/// `replication` are the gateway's (replication was refused before).
pub fn forwarded(params: &[(String, String)]) -> Result<Vec<(String, String)>, String> {
    let mut out: Vec<(String, String)> = Vec::new();
    for (name, value) in params {
        match name.as_str() {
            "user" | "database" | "replication" => {}
            "options" => {
                for (name, value) in options(value)? {
                    out.push(check(&name, &value)?);
                }
            }
            _ => out.push(check(name, value)?),
        }
    }
    Ok(out)
}

fn check(name: &str, value: &str) -> Result<(String, String), String> {
    let Some(allowed) = ALLOWED.iter().find(|a| a.eq_ignore_ascii_case(name)) else {
        return Err(format!(
            "startup parameter \"{name}\" is not allowed through the gateway (allowed: {})",
            ALLOWED.join(", ")
        ));
    };
    if *allowed == "client_encoding" {
        ClientEncoding::from_name(value).map_err(|e| e.to_string())?;
    }
    Ok(((*allowed).to_owned(), value.to_owned()))
}

/// The `-c name=value` / `--name=value` settings of an `options` value, split on unescaped
/// whitespace with `\` escaping the next character, as the server reads it.
fn options(value: &str) -> Result<Vec<(String, String)>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(next) = chars.next() {
                    word.push(next);
                }
            }
            c if c.is_ascii_whitespace() => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
            }
            c => word.push(c),
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    let mut settings = Vec::new();
    let mut words = words.into_iter();
    while let Some(word) = words.next() {
        let setting = if word == "-c" {
            words
                .next()
                .ok_or_else(|| "startup option -c without a setting".to_owned())?
        } else if let Some(rest) = word.strip_prefix("-c") {
            rest.to_owned()
        } else if let Some(rest) = word.strip_prefix("--") {
            rest.to_owned()
        } else {
            return Err(format!(
                "startup option \"{word}\" is not allowed through the gateway (only -c name=value with an allowed setting)"
            ));
        };
        let (name, value) = setting
            .split_once('=')
            .ok_or_else(|| format!("startup option \"{setting}\" is not name=value"))?;
        settings.push((name.replace('-', "_"), value.to_owned()));
    }
    Ok(settings)
}

/// What `session.start` records of the forwarded parameters.
pub fn record(params: &[(String, String)]) -> serde_json::Value {
    let map: serde_json::Map<String, serde_json::Value> = params
        .iter()
        .map(|(k, v)| {
            let mut end = v.len().min(MAX_RECORDED_VALUE);
            while !v.is_char_boundary(end) {
                end -= 1;
            }
            (k.clone(), serde_json::Value::from(&v[..end]))
        })
        .collect();
    serde_json::json!({ "startup_parameters": map })
}

/// The session's starting state from the ParameterStatus messages of the server's startup;
/// `Err` when the server's settings cannot be read safely (the session is refused).
pub fn initial(startup_messages: &[u8], allow_fastpath: bool) -> Result<Initial, String> {
    let mut initial = Initial {
        encoding: ClientEncoding::Utf8,
        allow_fastpath,
    };
    let mut framer = Framer::new(startup_messages, usize::MAX, |_| false);
    loop {
        // Reading from a byte slice completes at once; poll it without a runtime.
        let piece = futures_now(framer.next());
        let Some(Ok(Some(Piece::Whole { tag: b'S', raw }))) = piece else {
            match piece {
                Some(Ok(Some(_))) => continue,
                _ => break,
            }
        };
        match codec::parameter_status(&raw[5..]) {
            Some(("client_encoding", value)) => {
                initial.encoding = ClientEncoding::from_name(value).map_err(|e| e.to_string())?;
            }
            Some(("standard_conforming_strings", value)) if value != "on" => {
                return Err("the server has standard_conforming_strings off, which the gateway cannot read safely; set it on for this role or database".to_owned());
            }
            _ => {}
        }
    }
    Ok(initial)
}

/// Polls a future that never waits (it reads from memory) once.
fn futures_now<F: std::future::Future>(future: F) -> Option<F::Output> {
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    let mut future = std::pin::pin!(future);
    match future.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(out) => Some(out),
        std::task::Poll::Pending => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn forwards_only_the_allow_list() {
        let ok = forwarded(&p(&[
            ("user", "x"),
            ("database", "d"),
            ("application_name", "app"),
            ("datestyle", "ISO"),
            ("client_encoding", "LATIN9"),
        ]))
        .unwrap();
        assert_eq!(
            ok,
            p(&[
                ("application_name", "app"),
                ("DateStyle", "ISO"),
                ("client_encoding", "LATIN9")
            ])
        );
        for bad in [
            ("role", "postgres"),
            ("session_replication_role", "replica"),
            ("session_authorization", "postgres"),
            ("standard_conforming_strings", "off"),
            ("client_encoding", "SJIS"),
        ] {
            let err = forwarded(&p(&[bad])).unwrap_err();
            assert!(err.contains(bad.0) || err.contains("SJIS"), "{err}");
        }
    }

    #[test]
    fn options_are_read_like_the_server_reads_them() {
        let ok = forwarded(&p(&[(
            "options",
            "-c search_path=a,b --application-name=x\\ y",
        )]))
        .unwrap();
        assert_eq!(
            ok,
            p(&[("search_path", "a,b"), ("application_name", "x y")])
        );
        assert!(forwarded(&p(&[("options", "-c role=postgres")])).is_err());
        assert!(forwarded(&p(&[("options", "-crole=postgres")])).is_err());
        assert!(forwarded(&p(&[("options", "--session_replication_role=replica")])).is_err());
        assert!(forwarded(&p(&[("options", "-d 5")])).is_err());
        assert!(forwarded(&p(&[("options", "-c")])).is_err());
    }

    #[test]
    fn reads_the_servers_settings() {
        let mut msgs = bytes::BytesMut::new();
        codec::message_with(&mut msgs, b'S', |b| {
            codec::put_cstr(b, "client_encoding");
            codec::put_cstr(b, "LATIN1");
        });
        let initial = initial(&msgs, false).unwrap();
        assert_eq!(initial.encoding, ClientEncoding::Latin1);
        codec::message_with(&mut msgs, b'S', |b| {
            codec::put_cstr(b, "standard_conforming_strings");
            codec::put_cstr(b, "off");
        });
        assert!(super::initial(&msgs, false).is_err());
    }
}
