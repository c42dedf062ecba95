//! Caller-supplied text echoed back in error messages and audit lines: cut short, so that a
//! request cannot make a message (or a log line) as long as it likes.

/// How many bytes of a caller's text an echo keeps.
const LIMIT: usize = 128;

/// `text`, cut at a character boundary after at most [`LIMIT`] bytes, with `...` when cut.
pub fn truncate(text: &str) -> String {
    truncate_to(text, LIMIT)
}

/// `text`, cut at a character boundary after at most `limit` bytes, with `...` when cut.
pub fn truncate_to(text: &str, limit: usize) -> String {
    if text.len() <= limit {
        return text.to_owned();
    }
    let mut end = limit;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", text.get(..end).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_text_is_cut_at_a_character_boundary() {
        assert_eq!(truncate("short"), "short");
        let long = "é".repeat(100);
        let cut = truncate(&long);
        assert!(cut.ends_with("..."));
        assert!(cut.len() <= LIMIT + 3);
        assert!(long.starts_with(cut.trim_end_matches("...")));
    }
}
