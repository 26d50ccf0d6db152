//! Text from the queues, made safe to print.
//!
//! A parked message's attributes (its class, its reason, its job id) are whatever was sent to
//! the dead-letter queue: anyone who may send there may write terminal escapes (`ESC [`, or the
//! one-byte `CSI` U+009B) that recolour, hide or rewrite an operator's screen, line breaks that
//! forge table rows, or bidirectional overrides that show text in another order than it is.
//! [`printable`] escapes all of them and bounds the length for a table; [`json_printable`]
//! escapes what `serde_json` leaves raw.

/// Longest text a table cell shows, in characters after escaping (an ellipsis marks a cut).
/// The processor's reasons are at most 256 bytes; the library parks reasons up to 4 KiB.
pub const MAX_CELL_CHARS: usize = 256;

/// Whether `c` must not reach a terminal as it is: control characters (C0, DEL, C1) and the
/// invisible format characters that reorder or hide text (bidirectional marks, embeddings,
/// overrides and isolates; zero-width spaces and joiners; the byte-order mark).
fn unsafe_char(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{61c}'
                | '\u{200b}'..='\u{200f}'
                | '\u{202a}'..='\u{202e}'
                | '\u{2060}'..='\u{2069}'
                | '\u{feff}'
        )
}

/// `text` with every unsafe character escaped as `\u{..}` (`\n`, `\r`, `\t` as such) and `\`
/// as `\\`, so what is shown can be told apart from an escape; cut to [`MAX_CELL_CHARS`]
/// characters, ending in `…` when cut.
pub fn printable(text: &str) -> String {
    let mut shown = String::new();
    let mut chars = 0;
    for c in text.chars() {
        let piece = match c {
            '\\' => "\\\\".to_owned(),
            '\n' => "\\n".to_owned(),
            '\r' => "\\r".to_owned(),
            '\t' => "\\t".to_owned(),
            c if unsafe_char(c) => format!("\\u{{{:x}}}", u32::from(c)),
            c => c.to_string(),
        };
        // Room is kept for the ellipsis; an escape is never cut in half.
        let length = piece.chars().count();
        if chars + length > MAX_CELL_CHARS - 1 {
            shown.push('…');
            return shown;
        }
        chars += length;
        shown.push_str(&piece);
    }
    shown
}

/// JSON as `serde_json` writes it, with the characters it leaves raw (DEL, the C1 controls,
/// the invisible format characters) written as `\uXXXX` escapes. They can only stand inside
/// strings (JSON's own syntax is ASCII), so the document means the same; it is not cut.
pub fn json_printable(json: &str) -> String {
    let mut escaped = String::with_capacity(json.len());
    for c in json.chars() {
        // A raw line break or tab is JSON's own whitespace: serde_json escapes those in strings.
        if unsafe_char(c) && !matches!(c, '\n' | '\r' | '\t') {
            // Every such character is in the Basic Multilingual Plane: one `\u` escape.
            escaped.push_str(&format!("\\u{:04x}", u32::from(c)));
        } else {
            escaped.push(c);
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOSTILE: &str =
        "bad\u{1b}[31m red\u{9b}2J\u{7f}\r\nforged row\t\u{202e}txt.exe\u{200b}\\";

    fn assert_inert(shown: &str) {
        assert!(!shown.chars().any(unsafe_char), "{shown:?}");
    }

    #[test]
    fn escapes_and_line_breaks_are_shown_escaped_not_acted_on() {
        let shown = printable(HOSTILE);
        assert_inert(&shown);
        assert_eq!(
            shown,
            "bad\\u{1b}[31m red\\u{9b}2J\\u{7f}\\r\\nforged row\\t\\u{202e}txt.exe\\u{200b}\\\\"
        );
        assert_eq!(
            printable("line 3: sku must be 1 to 64 letters"),
            "line 3: sku must be 1 to 64 letters"
        );
    }

    #[test]
    fn long_text_is_cut_to_the_cell_bound_at_a_character_and_never_mid_escape() {
        for text in [
            "é".repeat(10_000),
            "\u{1b}".repeat(10_000),
            "x\u{1b}".repeat(10_000),
        ] {
            let shown = printable(&text);
            assert!(
                shown.chars().count() <= MAX_CELL_CHARS,
                "{}",
                shown.chars().count()
            );
            assert!(shown.ends_with('…'));
            assert_inert(&shown);
            let body = shown.trim_end_matches('…');
            assert!(
                body.split("\\u{")
                    .skip(1)
                    .all(|escape| escape.contains('}')),
                "an escape was cut: {shown}"
            );
        }
    }

    #[test]
    fn json_keeps_its_meaning_with_nothing_raw_that_a_terminal_acts_on() {
        let json = serde_json::to_string_pretty(&serde_json::json!({ "reason": HOSTILE })).unwrap();
        let raw_before = json.chars().any(unsafe_char);
        assert!(
            raw_before,
            "serde_json leaves DEL, C1 and bidi characters raw"
        );
        let escaped = json_printable(&json);
        assert!(
            !escaped.chars().any(|c| unsafe_char(c) && c != '\n'),
            "{escaped}"
        );
        let back: serde_json::Value = serde_json::from_str(&escaped).unwrap();
        assert_eq!(back["reason"], HOSTILE);
    }
}
