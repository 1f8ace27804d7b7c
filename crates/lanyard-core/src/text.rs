//! Caller-supplied text in messages: bounded, and never with control
//! characters (which could rewrite an operator's terminal or forge log lines).

/// `s` without control characters, at most `max` characters, quoted as Rust
/// debug text (so invisible or unusual characters show as escapes).
pub fn shown(s: &str, max: usize) -> String {
    let bounded: String = s.chars().filter(|c| !c.is_control()).take(max).collect();
    format!("{bounded:?}")
}

/// Whether `s` contains a control character (C0, DEL or C1).
pub fn has_control(s: &str) -> bool {
    s.chars().any(char::is_control)
}

/// `s` with every control character replaced by its `\u{..}` escape, for
/// printing stored text (descriptions, reasons) to a terminal.
pub fn escape_control(s: &str) -> String {
    if !has_control(s) {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if c.is_control() && c != '\n' {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_never_pass() {
        assert_eq!(shown("a\u{1b}[2Jb", 10), "\"a[2Jb\"");
        assert_eq!(shown(&"x".repeat(100), 3), "\"xxx\"");
        assert!(has_control("a\u{7f}"));
        assert!(has_control("a\u{9b}"), "C1 CSI");
        assert!(!has_control("ünïcode ok"));
        assert_eq!(escape_control("a\u{1b}b"), "a\\u{1b}b");
        assert_eq!(escape_control("line\nnext"), "line\nnext");
    }
}
