//! Finds the line of a key path in YAML text, for errors found after deserialising.
//!
//! serde_norway keeps no spans once a value is built, so semantic checks (a missing env var,
//! an empty allow list) re-find their key here. This is a small indentation-aware scan of
//! block-style YAML: mappings, sequences (`- ` items, compact or indented), quoted keys,
//! comments, block scalars. It does not descend into flow collections (`{ a: 1 }`), anchors
//! or merge keys; callers fall back to the nearest enclosing key.

/// One step of a key path: a mapping key or a sequence index.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Key(String),
    Index(usize),
}

/// Interprets `"[3]"` as sequence index 3, anything else as a mapping key.
fn seg(s: &str) -> Seg {
    s.strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .and_then(|n| n.parse().ok())
        .map_or_else(|| Seg::Key(s.to_string()), Seg::Index)
}

/// Renders a path the way serde_norway does: `auth.oidc[0].issuer`.
pub(crate) fn display_path(path: &[&str]) -> String {
    let mut out = String::new();
    for s in path {
        match seg(s) {
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
            Seg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(&k);
            }
        }
    }
    out
}

/// The 1-based line where `path` (keys, or `"[n]"` for sequence items) is defined.
pub fn locate(text: &str, path: &[&str]) -> Option<usize> {
    let target: Vec<Seg> = path.iter().map(|s| seg(s)).collect();
    if target.is_empty() {
        return None;
    }
    let mut stack: Vec<(usize, Seg)> = Vec::new();
    let mut flow_depth: i64 = 0;
    let mut block_scalar_parent: Option<usize> = None;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);

    for (i, line) in text.lines().enumerate() {
        let indent = line.len() - line.trim_start_matches(' ').len();
        let content = &line[indent..];
        if content.trim().is_empty() {
            continue;
        }
        if let Some(parent) = block_scalar_parent {
            if indent > parent {
                continue;
            }
            block_scalar_parent = None;
        }
        if flow_depth > 0 {
            flow_depth += bracket_delta(content);
            continue;
        }
        if content.starts_with('#') {
            continue;
        }
        if content.starts_with("---") || content.starts_with("...") || content.starts_with('%') {
            stack.clear();
            continue;
        }
        let mut col = indent;
        let mut rest = content;
        loop {
            if rest == "-" || rest.starts_with("- ") {
                push_item(&mut stack, col);
                if matches(&stack, &target) {
                    return Some(i + 1);
                }
                let after = &rest[1..];
                let value = after.trim_start_matches(' ');
                col += 1 + after.len() - value.len();
                rest = value;
                if rest.is_empty() || rest.starts_with('#') {
                    break;
                }
                continue;
            }
            match split_key(rest) {
                Some((key, value)) => {
                    push_key(&mut stack, col, key);
                    if matches(&stack, &target) {
                        return Some(i + 1);
                    }
                    let value = value.trim_start();
                    if value.starts_with('|') || value.starts_with('>') {
                        block_scalar_parent = Some(col);
                    } else if value.starts_with('[') || value.starts_with('{') {
                        flow_depth += bracket_delta(value);
                    }
                }
                None => {
                    if rest.starts_with('[') || rest.starts_with('{') {
                        flow_depth += bracket_delta(rest);
                    }
                }
            }
            break;
        }
    }
    None
}

/// Like [`locate`], but falls back to the nearest enclosing key that exists.
pub(crate) fn locate_nearest(text: &str, path: &[&str]) -> Option<usize> {
    (1..=path.len())
        .rev()
        .find_map(|n| locate(text, &path[..n]))
}

fn matches(stack: &[(usize, Seg)], target: &[Seg]) -> bool {
    stack.len() == target.len() && stack.iter().zip(target).all(|((_, a), b)| a == b)
}

/// A key at column `col` closes every entry at that column or deeper.
fn push_key(stack: &mut Vec<(usize, Seg)>, col: usize, key: String) {
    while stack.last().is_some_and(|(c, _)| *c >= col) {
        stack.pop();
    }
    stack.push((col, Seg::Key(key)));
}

/// A `- ` at column `col` is the next item of the sequence at that column, or the first.
/// Sequence items may sit at their parent key's column, so only deeper entries and the
/// previous item are closed.
fn push_item(stack: &mut Vec<(usize, Seg)>, col: usize) {
    while stack.last().is_some_and(|(c, _)| *c > col) {
        stack.pop();
    }
    if let Some((c, Seg::Index(n))) = stack.last() {
        if *c == col {
            let next = n + 1;
            stack.pop();
            stack.push((col, Seg::Index(next)));
            return;
        }
    }
    stack.push((col, Seg::Index(0)));
}

/// Splits `key: value` (plain, 'single' or "double" quoted key); `None` if not a key line.
fn split_key(s: &str) -> Option<(String, &str)> {
    let (key, after) = match s.chars().next()? {
        '"' | '\'' => {
            let (key, len) = quoted(s)?;
            (key, s[len..].trim_start_matches(' '))
        }
        '[' | '{' | '#' | '&' | '*' | '!' | '|' | '>' | '?' => return None,
        _ => {
            let bytes = s.as_bytes();
            let mut colon = None;
            for (j, &b) in bytes.iter().enumerate() {
                let prev_space = j > 0 && matches!(bytes[j - 1], b' ' | b'\t');
                if b == b'#' && prev_space {
                    return None;
                }
                let next_ok = bytes.get(j + 1).is_none_or(|n| matches!(n, b' ' | b'\t'));
                if b == b':' && next_ok {
                    colon = Some(j);
                    break;
                }
            }
            let at = colon?;
            (s[..at].trim_end().to_string(), &s[at..])
        }
    };
    let value = after.strip_prefix(':')?;
    if value.is_empty() || value.starts_with([' ', '\t']) {
        Some((key, value))
    } else {
        None
    }
}

/// Parses a quoted scalar at the start of `s`; returns its text and byte length.
fn quoted(s: &str) -> Option<(String, usize)> {
    let quote = s.chars().next()?;
    let mut out = String::new();
    let mut chars = s.char_indices().skip(1).peekable();
    while let Some((j, c)) = chars.next() {
        match c {
            '\'' if quote == '\'' => {
                if chars.peek().is_some_and(|&(_, n)| n == '\'') {
                    chars.next();
                    out.push('\'');
                } else {
                    return Some((out, j + 1));
                }
            }
            '"' if quote == '"' => return Some((out, j + 1)),
            '\\' if quote == '"' => {
                let (_, escaped) = chars.next()?;
                out.push(match escaped {
                    'n' => '\n',
                    't' => '\t',
                    other => other,
                });
            }
            other => out.push(other),
        }
    }
    None
}

/// Net count of flow brackets opened on a line, ignoring quoted text and comments.
fn bracket_delta(s: &str) -> i64 {
    let mut delta = 0;
    let mut quote: Option<char> = None;
    let mut prev = ' ';
    for c in s.chars() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None => match c {
                '\'' | '"' => quote = Some(c),
                '#' if prev == ' ' => break,
                '[' | '{' => delta += 1,
                ']' | '}' => delta -= 1,
                _ => {}
            },
        }
        prev = c;
    }
    delta
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "\
# comment: not a key
data_dir: ./data   # trailing: comment
log: { level: info, format: text }
auth:
  oidc:
    - issuer: https://a.example.com
      audiences: [x]
    - issuer: \"https://b.example.com\"
      audiences:
        - y
        - z
  api_keys:
    enabled: true
compact:
- a: 1
- b: 2
after_compact: 1
notes: |
  connections:
    fake: 1
'quoted key': 1
\"double \\\"q\\\"\": 2
multi: {
  inner: 1 }
connections:
  demo:
    upstream:
      host: 127.0.0.1
      port: 5432   # default
    allow:
      groups: [developers]
  other.name:
    allow:
      any_authenticated: true
";

    #[test]
    fn locate_table() {
        let cases: &[(&[&str], Option<usize>)] = &[
            (&["data_dir"], Some(2)),
            (&["log"], Some(3)),
            (&["log", "level"], None),
            (&["auth"], Some(4)),
            (&["auth", "oidc"], Some(5)),
            (&["auth", "oidc", "[0]"], Some(6)),
            (&["auth", "oidc", "[0]", "issuer"], Some(6)),
            (&["auth", "oidc", "[0]", "audiences"], Some(7)),
            (&["auth", "oidc", "[1]", "issuer"], Some(8)),
            (&["auth", "oidc", "[1]", "audiences", "[1]"], Some(11)),
            (&["auth", "oidc", "[2]"], None),
            (&["auth", "api_keys", "enabled"], Some(13)),
            (&["compact", "[0]", "a"], Some(15)),
            (&["compact", "[1]", "b"], Some(16)),
            (&["after_compact"], Some(17)),
            (&["notes"], Some(18)),
            (&["connections", "fake"], None),
            (&["quoted key"], Some(21)),
            (&["double \"q\""], Some(22)),
            (&["multi"], Some(23)),
            (&["inner"], None),
            (&["connections"], Some(25)),
            (&["connections", "demo", "upstream", "port"], Some(29)),
            (&["connections", "demo", "allow"], Some(30)),
            (&["connections", "demo", "allow", "groups"], Some(31)),
            (
                &["connections", "other.name", "allow", "any_authenticated"],
                Some(34),
            ),
            (&["connections", "missing"], None),
            (&["upstream"], None),
            (&[], None),
        ];
        for (path, want) in cases {
            assert_eq!(locate(DOC, path), *want, "path {path:?}");
        }
    }

    #[test]
    fn nearest_falls_back_to_enclosing_key() {
        assert_eq!(locate_nearest(DOC, &["log", "format"]), Some(3));
        assert_eq!(
            locate_nearest(DOC, &["connections", "demo", "upstream", "password"]),
            Some(27)
        );
        assert_eq!(locate_nearest(DOC, &["nope", "x"]), None);
    }

    #[test]
    fn crlf_and_bom_are_tolerated() {
        let doc = "\u{feff}a:\r\n  b: 1\r\n";
        assert_eq!(locate(doc, &["a", "b"]), Some(2));
    }

    #[test]
    fn display_path_matches_serde_norway() {
        assert_eq!(
            display_path(&["auth", "oidc", "[0]", "issuer"]),
            "auth.oidc[0].issuer"
        );
        assert_eq!(display_path(&["connections", "demo"]), "connections.demo");
    }
}
