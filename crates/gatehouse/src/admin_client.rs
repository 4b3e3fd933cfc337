//! The admin commands: thin clients of a running gateway's admin API.

use crate::{AccessCommand, ApprovalsCommand, KeysCommand};
use anyhow::{bail, Context};
use std::io::Write;
use std::process::ExitCode;

fn token() -> anyhow::Result<String> {
    std::env::var("GATEHOUSE_TOKEN")
        .ok()
        .filter(|t| !t.trim().is_empty())
        .map(|t| t.trim().to_owned())
        .context("set $GATEHOUSE_TOKEN to an admin credential (on first start: the key in <data_dir>/admin.key)")
}

fn request(
    method: reqwest::Method,
    server: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> anyhow::Result<serde_json::Value> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .build()?;
        let url = format!("{}/api/v1{path}", server.trim_end_matches('/'));
        let mut req = client.request(method, &url).bearer_auth(token()?);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let response = req
            .send()
            .await
            .with_context(|| format!("cannot reach the gateway at {server}"))?;
        let status = response.status();
        let value: serde_json::Value = response.json().await.unwrap_or(serde_json::Value::Null);
        if !status.is_success() {
            let message = value["error"]["message"]
                .as_str()
                .unwrap_or("request failed");
            bail!("{status}: {message}");
        }
        Ok(value)
    })
}

pub fn keys(cmd: KeysCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        KeysCommand::Create {
            name,
            groups,
            server,
        } => {
            let body = serde_json::json!({ "name": name, "groups": groups });
            let created = request(reqwest::Method::POST, &server.server, "/keys", Some(body))?;
            let key = created["key"]
                .as_str()
                .context("the gateway returned no key")?;
            println!("{key}");
        }
        KeysCommand::List { server } => {
            let keys = request(reqwest::Method::GET, &server.server, "/keys", None)?;
            println!(
                "{:<24} {:<10} {:<32} {:<30} REVOKED",
                "NAME", "PREFIX", "GROUPS", "CREATED"
            );
            for k in keys.as_array().into_iter().flatten() {
                let groups: Vec<&str> = k["groups"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|g| g.as_str())
                    .collect();
                println!(
                    "{:<24} {:<10} {:<32} {:<30} {}",
                    k["name"].as_str().unwrap_or(""),
                    k["prefix"].as_str().unwrap_or(""),
                    groups.join(","),
                    k["created_at"].as_str().unwrap_or(""),
                    k["revoked_at"].as_str().unwrap_or("-"),
                );
            }
        }
        KeysCommand::Revoke { name, server } => {
            let path = format!("/keys/{}/revoke", encode_segment(&name));
            request(reqwest::Method::POST, &server.server, &path, None)?;
            eprintln!("revoked {name}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn sessions(server: &str, limit: u32, open: bool) -> anyhow::Result<ExitCode> {
    let query = if open {
        "/sessions?open=true".to_owned()
    } else {
        format!("/sessions?limit={limit}")
    };
    let sessions = request(reqwest::Method::GET, server, &query, None)?;
    println!(
        "{:<26} {:<10} {:<12} {:<28} {:<30} {:>6} END",
        "ID", "PROTOCOL", "CONNECTION", "SUBJECT", "STARTED", "STMTS"
    );
    for s in sessions.as_array().into_iter().flatten() {
        println!(
            "{:<26} {:<10} {:<12} {:<28} {:<30} {:>6} {}",
            s["id"].as_str().unwrap_or(""),
            s["protocol"].as_str().unwrap_or(""),
            s["connection"].as_str().unwrap_or(""),
            s["subject"].as_str().unwrap_or(""),
            s["started_at"].as_str().unwrap_or(""),
            s["statements"].as_u64().unwrap_or(0),
            s["end_reason"].as_str().unwrap_or("(open)"),
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Asks the running gateway to sign a checkpoint now.
pub fn checkpoint(server: &str) -> anyhow::Result<ExitCode> {
    let signed = request(reqwest::Method::POST, server, "/audit/checkpoint", None)?;
    println!(
        "signed checkpoint of records 1..{} (root {}), in the log at seq {}",
        signed["size"],
        signed["root"].as_str().unwrap_or("-"),
        signed["record_seq"]
    );
    Ok(ExitCode::SUCCESS)
}

pub fn kill_session(server: &str, id: &str) -> anyhow::Result<ExitCode> {
    let path = format!("/sessions/{}/kill", encode_segment(id));
    request(reqwest::Method::POST, server, &path, None)?;
    eprintln!("ended session {id}");
    Ok(ExitCode::SUCCESS)
}

pub fn replay(
    server: &str,
    id: &str,
    speed: f64,
    no_wait: bool,
    format: crate::ReplayFormat,
) -> anyhow::Result<ExitCode> {
    if !(speed > 0.0 && speed.is_finite()) {
        bail!("--speed must be a positive number");
    }
    let path = format!("/sessions/{}/recording", encode_segment(id));
    let replay = request(reqwest::Method::GET, server, &path, None)?;
    let mut out = std::io::stdout().lock();
    match format {
        crate::ReplayFormat::Json => {
            serde_json::to_writer_pretty(&mut out, &replay)?;
            writeln!(out)?;
        }
        crate::ReplayFormat::Text => {
            let pace = crate::replay::Pace {
                speed: (!no_wait).then_some(speed),
            };
            crate::replay::render(&replay, &pace, &mut out)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn approvals(cmd: ApprovalsCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ApprovalsCommand::List {
            state,
            limit,
            json,
            server,
        } => {
            let mut path = format!("/approvals?limit={limit}");
            if let Some(state) = state {
                path.push_str(&format!("&state={}", encode_segment(&state)));
            }
            let list = request(reqwest::Method::GET, &server.server, &path, None)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
                return Ok(ExitCode::SUCCESS);
            }
            println!(
                "{:<21} {:<9} {:<12} {:<34} {:<24} {:>5}  STATEMENT",
                "ID", "STATE", "CONNECTION", "REQUESTER", "RULE", "OK"
            );
            for r in list.as_array().into_iter().flatten() {
                let requester = chain(&r["requester"]);
                let statement: String = r["statement"]
                    .as_str()
                    .unwrap_or("")
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ");
                println!(
                    "{:<21} {:<9} {:<12} {:<34} {:<24} {:>2}/{:<2}  {}",
                    r["id"].as_str().unwrap_or(""),
                    r["state"].as_str().unwrap_or(""),
                    r["connection"].as_str().unwrap_or(""),
                    requester,
                    r["rule"].as_str().unwrap_or(""),
                    r["approvals"].as_array().map_or(0, Vec::len),
                    r["required"].as_u64().unwrap_or(1),
                    statement.chars().take(80).collect::<String>(),
                );
            }
        }
        ApprovalsCommand::Show { id, server } => {
            let path = format!("/approvals/{}", encode_segment(&id));
            let r = request(reqwest::Method::GET, &server.server, &path, None)?;
            println!("{}", serde_json::to_string_pretty(&r)?);
        }
        ApprovalsCommand::Approve {
            id,
            comment,
            server,
        } => {
            let path = format!("/approvals/{}/approve", encode_segment(&id));
            let body = serde_json::json!({ "comment": comment });
            let r = request(reqwest::Method::POST, &server.server, &path, Some(body))?;
            eprintln!(
                "{id}: {} ({}/{} approvals)",
                r["state"].as_str().unwrap_or("?"),
                r["approvals"].as_array().map_or(0, Vec::len),
                r["required"].as_u64().unwrap_or(1)
            );
        }
        ApprovalsCommand::Deny { id, reason, server } => {
            let path = format!("/approvals/{}/deny", encode_segment(&id));
            let body = serde_json::json!({ "reason": reason });
            request(reqwest::Method::POST, &server.server, &path, Some(body))?;
            eprintln!("{id}: denied");
        }
        ApprovalsCommand::Revoke { id, reason, server } => {
            let path = format!("/approvals/{}/revoke", encode_segment(&id));
            let body = serde_json::json!({ "reason": reason });
            request(reqwest::Method::POST, &server.server, &path, Some(body))?;
            eprintln!("{id}: revoked");
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn access(cmd: AccessCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        AccessCommand::Request {
            connection,
            duration,
            reason,
            server,
        } => {
            let body = serde_json::json!({
                "connection": connection, "duration": duration, "reason": reason,
            });
            let r = request(reqwest::Method::POST, &server.server, "/access", Some(body))?;
            let id = r["id"].as_str().unwrap_or("?");
            println!("{id}");
            eprintln!(
                "access to {connection} for {duration} requested; an approver runs: gatehouse approvals approve {id}"
            );
        }
        AccessCommand::List { server } => {
            let list = request(reqwest::Method::GET, &server.server, "/access", None)?;
            println!(
                "{:<21} {:<9} {:<12} {:<34} {:<26} REASON",
                "ID", "STATE", "CONNECTION", "REQUESTER", "GRANTED UNTIL"
            );
            for r in list.as_array().into_iter().flatten() {
                println!(
                    "{:<21} {:<9} {:<12} {:<34} {:<26} {}",
                    r["id"].as_str().unwrap_or(""),
                    r["state"].as_str().unwrap_or(""),
                    r["connection"].as_str().unwrap_or(""),
                    chain(&r["requester"]),
                    r["granted_until"].as_str().unwrap_or("-"),
                    r["reason"].as_str().unwrap_or(""),
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `agent-7 for alice@example.com`: the requester with its actor chain, outermost first.
fn chain(requester: &serde_json::Value) -> String {
    let mut out = String::new();
    for actor in requester["actors"].as_array().into_iter().flatten().rev() {
        out.push_str(actor.as_str().unwrap_or("?"));
        out.push_str(" for ");
    }
    out.push_str(requester["subject"].as_str().unwrap_or(""));
    out
}

/// Percent-encodes a path segment (key names are restricted, but be safe).
fn encode_segment(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
