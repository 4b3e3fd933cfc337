//! `gatehouse sessions replay ID`: a recorded session rendered as psql would have shown it.

use serde_json::Value;
use std::fmt::Write as _;
use std::io::Write;
use std::time::Duration;

/// The longest pause between two events when replaying in time.
const MAX_PAUSE: Duration = Duration::from_secs(3);

pub struct Pace {
    /// `None`: no waiting.
    pub speed: Option<f64>,
}

/// Renders the admin API's replay to `out`, pausing between events as they were timed.
pub fn render(replay: &Value, pace: &Pace, out: &mut impl Write) -> std::io::Result<()> {
    let integrity = &replay["integrity"];
    let verified = match integrity["session_end_seq"].as_u64() {
        Some(seq) if integrity["verified"] == true => {
            format!("matches the audit log (session.end at seq {seq})")
        }
        _ => format!(
            "NOT verified: {}",
            integrity["why"]
                .as_str()
                .unwrap_or("no audit record holds its hash")
        ),
    };
    writeln!(
        out,
        "-- session {} on {} ({}), started {}\n-- recording sha256 {}: {verified}",
        s(&replay["session"]),
        s(&replay["connection"]),
        s(&replay["protocol"]),
        s(&replay["started"]),
        s(&replay["sha256"]),
    )?;
    let mut table = Table::default();
    let mut last_ms = 0.0;
    for event in replay["events"].as_array().into_iter().flatten() {
        let at = event["at_ms"].as_f64().unwrap_or(last_ms);
        if let Some(speed) = pace.speed {
            let gap = ((at - last_ms).max(0.0) / 1000.0 / speed).min(MAX_PAUSE.as_secs_f64());
            if gap > 0.001 {
                out.flush()?;
                std::thread::sleep(Duration::from_secs_f64(gap));
            }
        }
        last_ms = at;
        let text = line(event, &mut table, at);
        if !text.is_empty() {
            out.write_all(text.as_bytes())?;
        }
    }
    out.write_all(table.finish().as_bytes())?;
    out.flush()
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or("?")
}

/// The text one event adds (rows are held until their result ends).
fn line(event: &Value, table: &mut Table, at_ms: f64) -> String {
    match event["type"].as_str().unwrap_or("") {
        "statement" => {
            let mut text = table.finish();
            let _ = writeln!(
                text,
                "\n[{:>9.3}s] => {}",
                at_ms / 1000.0,
                event["text"].as_str().unwrap_or("(text unknown)")
            );
            if let Some(tail) = event["statement_tail"].as_str() {
                let _ = writeln!(text, "   … (cut) … {tail}");
            }
            if let Some(why) = event["refused"].as_str() {
                let _ = writeln!(text, "ERROR:  {why}");
            }
            text
        }
        "columns" => {
            let text = table.finish();
            table.columns = event["names"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|n| n.as_str().unwrap_or("").to_owned())
                .collect();
            table.open = true;
            text
        }
        "row" => {
            let row = event["values"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|v| v.as_str().unwrap_or("").to_owned())
                .collect();
            table.rows.push(row);
            table.open = true;
            String::new()
        }
        "copy" => {
            let mut text = table.finish();
            text.push_str(event["data"].as_str().unwrap_or(""));
            if !text.ends_with('\n') {
                text.push('\n');
            }
            text
        }
        "omitted" => {
            table.omitted += event["messages"].as_u64().unwrap_or(0);
            String::new()
        }
        "complete" => {
            let mut text = table.finish();
            let tag = event["tag"].as_str().unwrap_or("");
            if !tag.is_empty() && !tag.starts_with("SELECT") {
                let _ = writeln!(text, "{tag}");
            }
            text
        }
        "error" | "notice" => {
            let mut text = table.finish();
            let severity = event["severity"].as_str().unwrap_or("ERROR");
            let _ = writeln!(text, "{severity}:  {}", event["message"].as_str().unwrap_or(""));
            for (key, label) in [("detail", "DETAIL"), ("hint", "HINT")] {
                if let Some(v) = event[key].as_str() {
                    let _ = writeln!(text, "{label}:  {v}");
                }
            }
            text
        }
        "notification" => format!(
            "Asynchronous notification \"{}\" with payload \"{}\" received from server process with PID {}.\n",
            event["channel"].as_str().unwrap_or(""),
            event["payload"].as_str().unwrap_or(""),
            event["pid"]
        ),
        "result" => {
            let mut text = table.finish();
            if let Some(ns) = event["duration_ns"].as_u64() {
                let _ = writeln!(text, "Time: {:.3} ms", ns as f64 / 1e6);
            }
            text
        }
        "truncated" => format!(
            "{}-- the recording reached its size cap here; later messages were not kept\n",
            table.finish()
        ),
        "end" => format!(
            "{}\n-- session ended: {}\n",
            table.finish(),
            event["reason"].as_str().unwrap_or(event["cause"].as_str().unwrap_or(""))
        ),
        "unreadable" => format!(
            "{}-- unreadable: {}\n",
            table.finish(),
            event["reason"].as_str().unwrap_or("a message could not be read")
        ),
        _ => String::new(),
    }
}

/// A result table being collected.
#[derive(Default)]
struct Table {
    open: bool,
    columns: Vec<String>,
    rows: Vec<Vec<String>>,
    omitted: u64,
}

impl Table {
    /// The table as psql's aligned format prints it, and a fresh one.
    fn finish(&mut self) -> String {
        if !self.open {
            return String::new();
        }
        let table = std::mem::take(self);
        let width = table
            .columns
            .len()
            .max(table.rows.iter().map(Vec::len).max().unwrap_or(0));
        let mut widths = vec![0usize; width];
        for (i, c) in table.columns.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
        for row in &table.rows {
            for (i, v) in row.iter().enumerate() {
                widths[i] = widths[i].max(v.chars().count());
            }
        }
        let mut text = String::new();
        let header: Vec<String> = (0..width)
            .map(|i| center(table.columns.get(i).map_or("", String::as_str), widths[i]))
            .collect();
        let _ = writeln!(text, " {}", header.join(" | ").trim_end());
        let rule: Vec<String> = widths.iter().map(|w| "-".repeat(w + 2)).collect();
        let _ = writeln!(text, "{}", rule.join("+"));
        for row in &table.rows {
            let cells: Vec<String> = (0..width)
                .map(|i| {
                    let v = row.get(i).map_or("", String::as_str);
                    if looks_numeric(v) {
                        format!("{v:>w$}", w = widths[i])
                    } else {
                        format!("{v:<w$}", w = widths[i])
                    }
                })
                .collect();
            let _ = writeln!(text, " {}", cells.join(" | ").trim_end());
        }
        let shown = table.rows.len() as u64;
        let total = shown + table.omitted;
        let _ = writeln!(text, "({total} row{})", if total == 1 { "" } else { "s" });
        if table.omitted > 0 {
            let _ = writeln!(
                text,
                "-- {shown} shown; {} not kept in the recording",
                table.omitted
            );
        }
        text.push('\n');
        text
    }
}

fn center(text: &str, width: usize) -> String {
    let len = text.chars().count();
    let left = (width.saturating_sub(len)) / 2;
    let right = width.saturating_sub(len) - left;
    format!("{}{text}{}", " ".repeat(left), " ".repeat(right))
}

fn looks_numeric(v: &str) -> bool {
    !v.is_empty() && v.parse::<f64>().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_session_renders_like_psql() {
        let replay = json!({
            "session": "s1", "connection": "db", "protocol": "postgres", "started": "t",
            "sha256": "ab", "integrity": { "verified": true, "session_end_seq": 9 },
            "events": [
                { "type": "statement", "at_ms": 1.0, "text": "SELECT id, card FROM t" },
                { "type": "columns", "at_ms": 2.0, "names": ["id", "card"] },
                { "type": "row", "at_ms": 2.0, "values": ["1", "****-****-****-1111"] },
                { "type": "row", "at_ms": 2.0, "values": ["22", null] },
                { "type": "omitted", "at_ms": 2.0, "messages": 3 },
                { "type": "complete", "at_ms": 2.0, "tag": "SELECT 5" },
                { "type": "result", "at_ms": 2.0, "duration_ns": 1_500_000 },
                { "type": "statement", "at_ms": 3.0, "text": "DROP TABLE t", "refused": "blocked by rule \"no-drop\"" },
                { "type": "error", "at_ms": 4.0, "severity": "ERROR", "message": "duplicate key", "detail": "Key (card)=(****)" },
                { "type": "end", "at_ms": 5.0, "reason": "client terminated the session" },
            ]
        });
        let mut out = Vec::new();
        render(&replay, &Pace { speed: None }, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("matches the audit log (session.end at seq 9)"),
            "{text}"
        );
        assert!(text.contains(" id |        card\n----+---------------------\n  1 | ****-****-****-1111\n 22 |\n(5 rows)\n-- 2 shown; 3 not kept"), "{text}");
        assert!(text.contains("Time: 1.500 ms"));
        assert!(text.contains("=> DROP TABLE t\nERROR:  blocked by rule \"no-drop\""));
        assert!(text.contains("DETAIL:  Key (card)=(****)"));
        assert!(text.contains("-- session ended: client terminated the session"));
    }
}
