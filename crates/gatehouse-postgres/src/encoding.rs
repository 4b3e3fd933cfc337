//! Reading client text in the session's real encoding.
//!
//! PostgreSQL converts every query from the session's `client_encoding`, which the client can
//! change at any time. The gateway must read the same characters the server reads, or the
//! record and the policy see a different statement than the one that runs. Two classes:
//!
//! * ASCII-safe encodings (UTF-8, the ISO 8859 and Windows single-byte sets, KOI8, EUC): every
//!   byte below 0x80 is the ASCII character it looks like, so quotes, backslashes and
//!   semicolons are where they seem. The gateway decodes these exactly.
//! * Encodings whose multi-byte characters can end in an ASCII byte (SJIS, BIG5, GBK, GB18030,
//!   UHC, JOHAB, SHIFT_JIS_2004): a trailing `\` or `'` inside a character can hide a statement
//!   from anyone who reads the bytes differently. PostgreSQL itself refuses them as server
//!   encodings; the gateway refuses them as client encodings.
//!
//! Encodings without a decoder here (EUC_TW, EUC_JIS_2004, MULE_INTERNAL) are refused too.

use std::borrow::Cow;

/// A client encoding the gateway can read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientEncoding {
    Utf8,
    /// No conversion: the server checks the bytes against its own encoding (or not at all when
    /// that is SQL_ASCII too); decoded as UTF-8, replacing what is not.
    SqlAscii,
    Latin1,
    /// ISO 8859-9, which WHATWG's tables conflate with windows-1254.
    Latin5,
    Table {
        name: &'static str,
        encoding: &'static encoding_rs::Encoding,
    },
}

/// Why an encoding is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodingError {
    #[error("client_encoding {0} is refused by the gateway: its multi-byte characters can contain quote and backslash bytes, so statements could read differently to the server; use UTF8")]
    Unsafe(String),
    #[error("client_encoding {0} is not supported by the gateway; use UTF8")]
    Unsupported(String),
    #[error("unknown client_encoding {0:?}")]
    Unknown(String),
}

impl ClientEncoding {
    /// The encoding PostgreSQL means by `name` (any of its spellings and aliases).
    pub fn from_name(name: &str) -> Result<ClientEncoding, EncodingError> {
        use encoding_rs as e;
        let clean: String = name
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .map(|c| c.to_ascii_lowercase())
            .collect();
        let table = |name, encoding| Ok(ClientEncoding::Table { name, encoding });
        match clean.as_str() {
            "utf8" | "unicode" => Ok(ClientEncoding::Utf8),
            "sqlascii" => Ok(ClientEncoding::SqlAscii),
            "latin1" | "iso88591" => Ok(ClientEncoding::Latin1),
            "latin5" | "iso88599" => Ok(ClientEncoding::Latin5),
            "latin2" | "iso88592" => table("LATIN2", e::ISO_8859_2),
            "latin3" | "iso88593" => table("LATIN3", e::ISO_8859_3),
            "latin4" | "iso88594" => table("LATIN4", e::ISO_8859_4),
            "latin6" | "iso885910" => table("LATIN6", e::ISO_8859_10),
            "latin7" | "iso885913" => table("LATIN7", e::ISO_8859_13),
            "latin8" | "iso885914" => table("LATIN8", e::ISO_8859_14),
            "latin9" | "iso885915" => table("LATIN9", e::ISO_8859_15),
            "latin10" | "iso885916" => table("LATIN10", e::ISO_8859_16),
            "iso88595" => table("ISO_8859_5", e::ISO_8859_5),
            "iso88596" => table("ISO_8859_6", e::ISO_8859_6),
            "iso88597" => table("ISO_8859_7", e::ISO_8859_7),
            "iso88598" => table("ISO_8859_8", e::ISO_8859_8),
            "win1250" | "windows1250" => table("WIN1250", e::WINDOWS_1250),
            "win1251" | "windows1251" | "win" => table("WIN1251", e::WINDOWS_1251),
            "win1252" | "windows1252" => table("WIN1252", e::WINDOWS_1252),
            "win1253" | "windows1253" => table("WIN1253", e::WINDOWS_1253),
            "win1254" | "windows1254" => table("WIN1254", e::WINDOWS_1254),
            "win1255" | "windows1255" => table("WIN1255", e::WINDOWS_1255),
            "win1256" | "windows1256" => table("WIN1256", e::WINDOWS_1256),
            "win1257" | "windows1257" => table("WIN1257", e::WINDOWS_1257),
            "win1258" | "windows1258" | "abc" | "tcvn" | "tcvn5712" | "vscii" => {
                table("WIN1258", e::WINDOWS_1258)
            }
            "win866" | "windows866" | "alt" => table("WIN866", e::IBM866),
            "win874" | "windows874" => table("WIN874", e::WINDOWS_874),
            "koi8r" | "koi8" => table("KOI8R", e::KOI8_R),
            "koi8u" => table("KOI8U", e::KOI8_U),
            "eucjp" => table("EUC_JP", e::EUC_JP),
            "euckr" => table("EUC_KR", e::EUC_KR),
            "euccn" => table("EUC_CN", e::GBK),
            "sjis" | "shiftjis" | "mskanji" | "win932" | "windows932" | "shiftjis2004" | "big5"
            | "win950" | "windows950" | "gbk" | "win936" | "windows936" | "gb18030" | "uhc"
            | "win949" | "windows949" | "johab" => Err(EncodingError::Unsafe(name.to_owned())),
            "euctw" | "eucjis2004" | "muleinternal" => {
                Err(EncodingError::Unsupported(name.to_owned()))
            }
            _ => Err(EncodingError::Unknown(name.to_owned())),
        }
    }

    /// The name to record, or `None` for UTF-8.
    pub fn label(self) -> Option<&'static str> {
        match self {
            ClientEncoding::Utf8 => None,
            ClientEncoding::SqlAscii => Some("SQL_ASCII"),
            ClientEncoding::Latin1 => Some("LATIN1"),
            ClientEncoding::Latin5 => Some("LATIN5"),
            ClientEncoding::Table { name, .. } => Some(name),
        }
    }

    /// Decodes client text; `None` when the bytes are not valid in this encoding (the server
    /// would refuse them too).
    pub fn decode(self, bytes: &[u8]) -> Option<Cow<'_, str>> {
        match self {
            ClientEncoding::Utf8 => std::str::from_utf8(bytes).ok().map(Cow::Borrowed),
            ClientEncoding::SqlAscii => Some(String::from_utf8_lossy(bytes)),
            ClientEncoding::Latin1 => Some(latin(bytes, char::from)),
            ClientEncoding::Latin5 => Some(latin(bytes, latin5)),
            ClientEncoding::Table { encoding, .. } => {
                if bytes.is_ascii() {
                    // Every supported encoding is ASCII-safe: ASCII reads as itself.
                    return std::str::from_utf8(bytes).ok().map(Cow::Borrowed);
                }
                encoding.decode_without_bom_handling_and_without_replacement(bytes)
            }
        }
    }
}

fn latin(bytes: &[u8], map: impl Fn(u8) -> char) -> Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(ascii) if bytes.is_ascii() => Cow::Borrowed(ascii),
        _ => Cow::Owned(bytes.iter().map(|&b| map(b)).collect()),
    }
}

/// ISO 8859-9: Latin-1 with six Turkish letters in place of Icelandic ones.
fn latin5(b: u8) -> char {
    match b {
        0xD0 => 'Ğ',
        0xDD => 'İ',
        0xDE => 'Ş',
        0xF0 => 'ğ',
        0xFD => 'ı',
        0xFE => 'ş',
        other => char::from(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_aliases() {
        assert_eq!(ClientEncoding::from_name("UTF8"), Ok(ClientEncoding::Utf8));
        assert_eq!(
            ClientEncoding::from_name("unicode"),
            Ok(ClientEncoding::Utf8)
        );
        assert_eq!(ClientEncoding::from_name("utf-8"), Ok(ClientEncoding::Utf8));
        assert_eq!(
            ClientEncoding::from_name("Latin-1"),
            Ok(ClientEncoding::Latin1)
        );
        assert!(matches!(
            ClientEncoding::from_name("ISO_8859_15"),
            Ok(ClientEncoding::Table { name: "LATIN9", .. })
        ));
        for unsafe_name in [
            "SJIS",
            "Shift_JIS",
            "BIG5",
            "GBK",
            "GB18030",
            "UHC",
            "JOHAB",
            "win932",
        ] {
            assert!(
                matches!(
                    ClientEncoding::from_name(unsafe_name),
                    Err(EncodingError::Unsafe(_))
                ),
                "{unsafe_name}"
            );
        }
        assert!(matches!(
            ClientEncoding::from_name("EUC_TW"),
            Err(EncodingError::Unsupported(_))
        ));
        assert!(matches!(
            ClientEncoding::from_name("klingon"),
            Err(EncodingError::Unknown(_))
        ));
    }

    #[test]
    fn decodes_what_the_server_reads() {
        let latin9 = ClientEncoding::from_name("LATIN9").unwrap();
        // 0xA4 is the euro sign in LATIN9 (and the currency sign in LATIN1).
        assert_eq!(latin9.decode(b"SELECT '\xa4'").unwrap(), "SELECT '€'");
        assert_eq!(
            ClientEncoding::Latin1.decode(b"SELECT '\xa4'").unwrap(),
            "SELECT '¤'"
        );
        assert_eq!(ClientEncoding::Latin5.decode(b"\xdd").unwrap(), "İ");
        assert!(ClientEncoding::Utf8.decode(b"SELECT '\xff'").is_none());
        let koi8 = ClientEncoding::from_name("KOI8R").unwrap();
        assert_eq!(koi8.decode(b"\xc1").unwrap(), "а");
        let euc_jp = ClientEncoding::from_name("EUC_JP").unwrap();
        assert_eq!(euc_jp.decode(b"\xa4\xa2").unwrap(), "あ");
    }
}
