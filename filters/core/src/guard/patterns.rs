//! User regular expressions, compiled once at configuration time with the `regex` crate (finite
//! automata: linear in the input, no backtracking, so no ReDoS), with a size limit. Look-around
//! and back-references do not exist in its syntax and are refused when configured.

use regex::Regex;

/// Compiled program size cap per rule.
pub const MAX_PROGRAM_BYTES: usize = 1 << 20;

pub fn compile(pattern: &str) -> Result<Regex, String> {
    regex::RegexBuilder::new(pattern)
        .size_limit(MAX_PROGRAM_BYTES)
        .dfa_size_limit(MAX_PROGRAM_BYTES)
        .build()
        .map_err(|e| e.to_string().lines().last().unwrap_or("invalid pattern").trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compiled_once_and_linear() {
        assert!(compile("EMP-[0-9]{6}").is_ok());
        let err = compile("(unclosed").unwrap_err();
        assert!(err.contains("unclosed"), "{err}");
        assert!(compile("(?=look)ahead").is_err(), "look-around is refused");
        assert!(compile(r"(a)\1").is_err(), "back-references are refused");
        // The classic catastrophic pattern runs in linear time.
        let re = compile("(a+)+$").unwrap();
        let text = "a".repeat(64 * 1024) + "!";
        assert!(!re.is_match(&text));
    }
}
