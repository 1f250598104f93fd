//! Text from outside (a worker's `STATUS=`) made safe to print: control characters, which a
//! terminal would obey (colours, cursor moves, a title change, a bell), are shown escaped.

use std::borrow::Cow;

/// `text` with every control character (C0, DEL, C1) written as `\xNN` (`\u{NNNN}` for C1).
pub fn printable(text: &str) -> Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if !c.is_control() {
            out.push(c);
        } else if (c as u32) < 0x80 {
            out.push_str(&format!("\\x{:02x}", c as u32));
        } else {
            out.push_str(&format!("\\u{{{:04x}}}", c as u32));
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_the_rest_kept() {
        assert_eq!(printable("serving 3 requests é"), "serving 3 requests é");
        assert_eq!(
            printable("\x1b[31mred\x07\r\u{9b}"),
            "\\x1b[31mred\\x07\\x0d\\u{009b}"
        );
    }
}
