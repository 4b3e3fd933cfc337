//! Character-level rules shared by notes, key names and checkpoints.

use super::NoteError;

/// Whether `name` may be a key name: non-empty, no Unicode white space, no `+` (the vkey
/// separator) and no control characters.
pub fn is_valid_key_name(name: &str) -> bool {
    !name.is_empty()
        && !name
            .chars()
            .any(|c| c == '+' || c.is_whitespace() || c.is_control())
}

pub(crate) fn check_key_name(name: &str) -> Result<(), NoteError> {
    if is_valid_key_name(name) {
        Ok(())
    } else {
        Err(NoteError::InvalidKeyName)
    }
}

/// Signed notes are UTF-8 with no ASCII control characters but newline.
pub(crate) fn check_note_chars(text: &[u8]) -> Result<&str, NoteError> {
    let text = std::str::from_utf8(text).map_err(|_| NoteError::NotUtf8)?;
    if let Some(offset) = text.bytes().position(|b| b < 0x20 && b != b'\n') {
        return Err(NoteError::ControlCharacter { offset });
    }
    Ok(text)
}

/// The body rules: non-empty, newline-terminated, no empty line, legal characters.
pub(crate) fn check_body(body: &str) -> Result<(), NoteError> {
    check_note_chars(body.as_bytes())?;
    if body.is_empty() {
        return Err(NoteError::EmptyBody);
    }
    if !body.ends_with('\n') {
        return Err(NoteError::BodyNotNewlineTerminated);
    }
    if body.starts_with('\n') || body.contains("\n\n") {
        return Err(NoteError::EmptyLineInBody);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_names() {
        assert!(is_valid_key_name("example.com/log"));
        assert!(is_valid_key_name("PeterNeumann"));
        assert!(is_valid_key_name("ünïcode/ok"));
        for bad in [
            "",
            "a b",
            "a+b",
            "a\tb",
            "a\u{a0}b",
            "a\u{2003}b",
            "a\u{7f}",
            "\n",
        ] {
            assert!(!is_valid_key_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn bodies() {
        assert_eq!(check_body("a\nb\n"), Ok(()));
        assert_eq!(check_body(""), Err(NoteError::EmptyBody));
        assert_eq!(check_body("a"), Err(NoteError::BodyNotNewlineTerminated));
        assert_eq!(check_body("\n"), Err(NoteError::EmptyLineInBody));
        assert_eq!(check_body("a\n\nb\n"), Err(NoteError::EmptyLineInBody));
        assert_eq!(
            check_body("a\rb\n"),
            Err(NoteError::ControlCharacter { offset: 1 })
        );
    }
}
