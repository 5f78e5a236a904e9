//! Secrets: credentials with a known vendor prefix (checked for length and alphabet), PEM
//! private keys, JWTs, and password assignments (`password=…`, `senha: …`: only the value is the
//! finding).

use super::{Entity, Hit};
use aho_corasick::{AhoCorasick, MatchKind};

/// A vendor prefix: what follows, from which alphabet, how long.
struct Prefix {
    prefix: &'static str,
    entity: Entity,
    alphabet: fn(u8) -> bool,
    min: usize,
    max: usize,
}

fn upper_digit(c: u8) -> bool {
    c.is_ascii_uppercase() || c.is_ascii_digit()
}
fn alnum(c: u8) -> bool {
    c.is_ascii_alphanumeric()
}
fn token(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'-'
}
fn slack(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'-'
}
fn github_pat(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

const PREFIXES: &[Prefix] = &[
    Prefix { prefix: "AKIA", entity: Entity::AwsAccessKey, alphabet: upper_digit, min: 16, max: 16 },
    Prefix { prefix: "ASIA", entity: Entity::AwsAccessKey, alphabet: upper_digit, min: 16, max: 16 },
    Prefix { prefix: "sk-ant-", entity: Entity::AnthropicApiKey, alphabet: token, min: 32, max: 200 },
    Prefix { prefix: "sk-proj-", entity: Entity::OpenAiApiKey, alphabet: token, min: 20, max: 300 },
    Prefix { prefix: "sk-svcacct-", entity: Entity::OpenAiApiKey, alphabet: token, min: 20, max: 300 },
    Prefix { prefix: "sk-admin-", entity: Entity::OpenAiApiKey, alphabet: token, min: 20, max: 300 },
    Prefix { prefix: "sk-", entity: Entity::OpenAiApiKey, alphabet: alnum, min: 32, max: 200 },
    Prefix { prefix: "ghp_", entity: Entity::GithubToken, alphabet: alnum, min: 36, max: 36 },
    Prefix { prefix: "gho_", entity: Entity::GithubToken, alphabet: alnum, min: 36, max: 36 },
    Prefix { prefix: "ghu_", entity: Entity::GithubToken, alphabet: alnum, min: 36, max: 36 },
    Prefix { prefix: "ghs_", entity: Entity::GithubToken, alphabet: alnum, min: 36, max: 36 },
    Prefix { prefix: "ghr_", entity: Entity::GithubToken, alphabet: alnum, min: 36, max: 36 },
    Prefix { prefix: "github_pat_", entity: Entity::GithubToken, alphabet: github_pat, min: 22, max: 255 },
    Prefix { prefix: "xoxb-", entity: Entity::SlackToken, alphabet: slack, min: 10, max: 255 },
    Prefix { prefix: "xoxp-", entity: Entity::SlackToken, alphabet: slack, min: 10, max: 255 },
    Prefix { prefix: "xoxa-", entity: Entity::SlackToken, alphabet: slack, min: 10, max: 255 },
    Prefix { prefix: "xoxr-", entity: Entity::SlackToken, alphabet: slack, min: 10, max: 255 },
    Prefix { prefix: "xoxs-", entity: Entity::SlackToken, alphabet: slack, min: 10, max: 255 },
    Prefix { prefix: "AIza", entity: Entity::GoogleApiKey, alphabet: token, min: 35, max: 35 },
    Prefix { prefix: "ya29.", entity: Entity::GoogleApiKey, alphabet: token, min: 20, max: 2048 },
    Prefix { prefix: "eyJ", entity: Entity::Jwt, alphabet: token, min: 10, max: 8192 },
    Prefix { prefix: "-----BEGIN ", entity: Entity::PrivateKey, alphabet: token, min: 0, max: 0 },
];

/// Words that introduce a password (matched case-insensitively, as words).
const PASSWORD_WORDS: &[&str] =
    &["password", "passwd", "pwd", "senha", "pass", "passphrase", "secret_key", "client_secret"];

/// Longest of [`PASSWORD_WORDS`].
const MAX_PASSWORD_WORD: usize = 13;

pub struct Secrets {
    prefixes: AhoCorasick,
    passwords: AhoCorasick,
}

impl Secrets {
    pub fn new() -> Result<Secrets, String> {
        let prefixes = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .kind(Some(aho_corasick::AhoCorasickKind::DFA))
            .build(PREFIXES.iter().map(|p| p.prefix))
            .map_err(|e| e.to_string())?;
        let passwords = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .ascii_case_insensitive(true)
            .kind(Some(aho_corasick::AhoCorasickKind::DFA))
            .build(PASSWORD_WORDS)
            .map_err(|e| e.to_string())?;
        Ok(Secrets { prefixes, passwords })
    }

    pub fn scan(&self, text: &str, passwords: bool, hits: &mut Vec<Hit>) {
        let b = text.as_bytes();
        for m in self.prefixes.find_iter(b) {
            let Some(p) = PREFIXES.get(m.pattern().as_usize()) else { continue };
            if super::text::word_before(b, m.start()) || (m.start() > 0 && b.get(m.start() - 1) == Some(&b'-')) {
                continue;
            }
            let end = match p.entity {
                Entity::PrivateKey => private_key(text, m.start()),
                Entity::Jwt => jwt(b, m.start()),
                _ => {
                    let mut end = m.end();
                    while b.get(end).is_some_and(|c| (p.alphabet)(*c)) {
                        end += 1;
                    }
                    let len = end - m.end();
                    let glued = super::text::word_at(b, end);
                    (len >= p.min && len <= p.max && !glued).then_some(end)
                }
            };
            if let Some(end) = end {
                hits.push(Hit { start: m.start(), end, entity: p.entity });
            }
        }
        if passwords {
            // An assignment needs `=` or `:`: look for the password word just before each.
            let mut last_end = 0;
            for at in memchr::memchr2_iter(b'=', b':', b) {
                let from = at.saturating_sub(MAX_PASSWORD_WORD + 3).max(last_end);
                let Some(window) = b.get(from..at) else { continue };
                let Some(m) = self.passwords.find_iter(window).last() else { continue };
                if let Some(hit) = password_value(b, from + m.start(), from + m.end()) {
                    if hit.start >= last_end {
                        last_end = hit.end;
                        hits.push(hit);
                    }
                }
            }
        }
    }
}

/// `-----BEGIN … PRIVATE KEY-----` through the matching END line (or the end of the text).
fn private_key(text: &str, start: usize) -> Option<usize> {
    let rest = text.get(start..)?;
    let header_end = rest.get(11..)?.find("-----")? + 11;
    let label = rest.get(11..header_end)?;
    if !label.ends_with("PRIVATE KEY") {
        return None;
    }
    let footer = format!("-----END {label}-----");
    Some(match rest.find(&footer) {
        Some(at) => start + at + footer.len(),
        None => text.len(),
    })
}

/// Three base64url segments separated by dots, the first (the header) starting `eyJ` (`{"`).
fn jwt(b: &[u8], start: usize) -> Option<usize> {
    let mut end = start;
    let mut segments = 1;
    let mut seg_len = 0;
    loop {
        match b.get(end) {
            Some(c) if c.is_ascii_alphanumeric() || *c == b'_' || *c == b'-' => seg_len += 1,
            Some(b'.') if seg_len >= 10 && segments < 3 => {
                segments += 1;
                seg_len = 0;
            }
            _ => break,
        }
        end += 1;
    }
    (segments == 3 && seg_len >= 10 && !super::text::word_at(b, end)).then_some(end)
}

/// `password = "value"`, `senha: value`: the value (at least 4 non-space characters).
fn password_value(b: &[u8], word_start: usize, word_end: usize) -> Option<Hit> {
    if word_start > 0 && b.get(word_start - 1).is_some_and(|c| c.is_ascii_alphanumeric()) {
        return None;
    }
    let mut i = word_end;
    // `password_hash`, `passwords` are other words; `db_password`/`"password"` are fine.
    if b.get(i).is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_') {
        return None;
    }
    if b.get(i) == Some(&b'"') || b.get(i) == Some(&b'\'') {
        i += 1;
    }
    while b.get(i) == Some(&b' ') {
        i += 1;
    }
    if !matches!(b.get(i), Some(b'=' | b':')) {
        return None;
    }
    i += 1;
    while b.get(i) == Some(&b' ') {
        i += 1;
    }
    let quote = match b.get(i) {
        Some(q @ (b'"' | b'\'')) => {
            i += 1;
            Some(*q)
        }
        _ => None,
    };
    let start = i;
    while let Some(c) = b.get(i) {
        let stop = match quote {
            Some(q) => *c == q,
            None => c.is_ascii_whitespace() || matches!(c, b',' | b';' | b'"' | b'\'' | b'}' | b')'),
        };
        if stop {
            break;
        }
        i += 1;
    }
    // Sentences end with a dot; a password rarely does.
    while quote.is_none() && i > start && b.get(i - 1) == Some(&b'.') {
        i -= 1;
    }
    let value = b.get(start..i).unwrap_or_default();
    // A password mixes kinds of characters (or is long); `password: click here` is prose.
    let kinds = [
        value.iter().any(u8::is_ascii_lowercase),
        value.iter().any(u8::is_ascii_uppercase),
        value.iter().any(u8::is_ascii_digit),
        value.iter().any(|c| !c.is_ascii_alphanumeric()),
    ];
    let mixed = kinds.iter().filter(|k| **k).count() >= 2 || value.len() >= 12;
    (value.len() >= 4 && mixed).then_some(Hit { start, end: i, entity: Entity::Password })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn find(text: &str) -> Vec<(Entity, &str)> {
        let mut hits = Vec::new();
        Secrets::new().unwrap().scan(text, true, &mut hits);
        hits.iter().map(|h| (h.entity, &text[h.start..h.end])).collect()
    }

    #[test]
    fn vendor_keys() {
        assert_eq!(find("key AKIAIOSFODNN7EXAMPLE ok"), vec![(Entity::AwsAccessKey, "AKIAIOSFODNN7EXAMPLE")]);
        assert!(find("AKIAIOSFODNN7EXAMPL").is_empty(), "too short");
        let openai = "sk-proj-abcdefghijklmnopqrstuvwxyz0123456789";
        assert_eq!(find(openai), vec![(Entity::OpenAiApiKey, openai)]);
        let anthropic = "sk-ant-api03-abcdefghijklmnopqrstuvwxyz0123456789ABCDEF";
        assert_eq!(find(anthropic), vec![(Entity::AnthropicApiKey, anthropic)]);
        let gh = "ghp_abcdefghijklmnopqrstuvwxyz0123456789";
        assert_eq!(find(gh), vec![(Entity::GithubToken, gh)]);
        assert_eq!(find("xoxb-1234567890-abcdef"), vec![(Entity::SlackToken, "xoxb-1234567890-abcdef")]);
        let google = "AIzaSyA-1234567890abcdefghijklmnopqrstu";
        assert_eq!(find(google), vec![(Entity::GoogleApiKey, google)]);
        assert!(find("task-management is not a key").is_empty());
        assert!(find("risk-assessment-framework-for-teams-and-more-words").is_empty());
    }

    #[test]
    fn pem_jwt_and_passwords() {
        let pem = "-----BEGIN RSA PRIVATE KEY-----\nMIIEabc\n-----END RSA PRIVATE KEY-----";
        assert_eq!(find(&format!("x {pem} y")), vec![(Entity::PrivateKey, pem)]);
        assert!(find("-----BEGIN CERTIFICATE-----").is_empty());
        let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U";
        assert_eq!(find(jwt), vec![(Entity::Jwt, jwt)]);
        assert_eq!(find("password=hunter22 e"), vec![(Entity::Password, "hunter22")]);
        assert_eq!(find("minha senha: \"abc 123!\""), vec![(Entity::Password, "abc 123!")]);
        assert_eq!(find("{\"db_password\": \"s3cr3t!\"}"), vec![(Entity::Password, "s3cr3t!")]);
        assert!(find("reset your password: click the link").is_empty(), "a plain word is not a password");
        assert!(find("password reset").is_empty());
    }
}
