//! Minimal RFC 4180 CSV writing, with a guard against spreadsheet formula injection.

/// Appends one field to `out`.
///
/// * A field starting with `=`, `+`, `-`, `@`, tab or carriage return gets a leading `'`, so
///   a spreadsheet shows it as text instead of evaluating it (audit data includes arbitrary
///   SQL and client-chosen user names).
/// * A field containing `,`, `"`, `\n` or `\r` is quoted, with `"` doubled.
pub(crate) fn write_field(out: &mut String, value: &str) {
    let guard = value.starts_with(['=', '+', '-', '@', '\t', '\r']);
    let quote = value.contains([',', '"', '\n', '\r']);
    if quote {
        out.push('"');
    }
    if guard {
        out.push('\'');
    }
    if quote {
        for (i, part) in value.split('"').enumerate() {
            if i > 0 {
                out.push_str("\"\"");
            }
            out.push_str(part);
        }
        out.push('"');
    } else {
        out.push_str(value);
    }
}

/// Appends a whole row, comma-separated and terminated by CRLF (RFC 4180).
pub(crate) fn write_row<'a>(out: &mut String, fields: impl IntoIterator<Item = &'a str>) {
    for (i, field) in fields.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_field(out, field);
    }
    out.push_str("\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        let cases = [
            ("", ""),
            ("plain", "plain"),
            ("a,b", "\"a,b\""),
            ("say \"hi\"", "\"say \"\"hi\"\"\""),
            ("line\nbreak", "\"line\nbreak\""),
            ("cr\rx", "\"cr\rx\""),
            ("=SUM(A1)", "'=SUM(A1)"),
            ("+1", "'+1"),
            ("-1", "'-1"),
            ("@cmd", "'@cmd"),
            ("\tx", "'\tx"),
            ("=1,\"2\"", "\"'=1,\"\"2\"\"\""),
            ("a=b", "a=b"),
            ("ünïcode", "ünïcode"),
        ];
        for (input, want) in cases {
            let mut out = String::new();
            write_field(&mut out, input);
            assert_eq!(out, want, "{input:?}");
        }
    }

    #[test]
    fn rows() {
        let mut out = String::new();
        write_row(&mut out, ["1", "a,b", ""]);
        write_row(&mut out, ["2"]);
        assert_eq!(out, "1,\"a,b\",\r\n2\r\n");
    }
}
