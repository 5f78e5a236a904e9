//! E-mail addresses: a local part of `[A-Za-z0-9._%+-]`, `@`, dot-separated domain labels, and a
//! top-level domain that exists: any two-letter country code or one of the common generic ones
//! (an embedded list; nothing is fetched). `nome@empresa` (no TLD) and `a@b.c` are not addresses.

use super::{Entity, Hit};

const GENERIC_TLDS: &[&str] = &[
    "com",
    "org",
    "net",
    "edu",
    "gov",
    "mil",
    "int",
    "info",
    "biz",
    "name",
    "pro",
    "mobi",
    "app",
    "dev",
    "cloud",
    "online",
    "site",
    "tech",
    "store",
    "shop",
    "xyz",
    "email",
    "live",
    "digital",
    "company",
    "global",
    "solutions",
    "agency",
    "services",
    "network",
    "systems",
    "software",
    "academy",
    "blog",
    "news",
    "media",
    "design",
    "studio",
    "club",
    "team",
    "work",
    "today",
    "world",
    "life",
    "space",
    "website",
    "page",
    "inc",
    "llc",
    "ltd",
    "group",
    "finance",
    "bank",
    "legal",
    "health",
    "care",
    "law",
    "med",
    "adv",
    "eng",
    "coop",
    "aero",
    "museum",
    "travel",
    "jobs",
];

fn local(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'%' | b'+' | b'-')
}

fn domain(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-')
}

pub fn scan(text: &str, hits: &mut Vec<Hit>) {
    let b = text.as_bytes();
    for at in memchr::memchr_iter(b'@', b) {
        let mut start = at;
        while start > 0 && b.get(start - 1).is_some_and(|c| local(*c)) {
            start -= 1;
        }
        while b.get(start) == Some(&b'.') {
            start += 1;
        }
        let mut end = at + 1;
        while b.get(end).is_some_and(|c| domain(*c)) {
            end += 1;
        }
        while end > at + 1 && matches!(b.get(end - 1), Some(b'.' | b'-')) {
            end -= 1;
        }
        if start == at || b.get(at - 1) == Some(&b'.') {
            continue;
        }
        // Glued to more address-like text (`a@b.com@c`): not one address.
        if b.get(end).is_some_and(|c| *c == b'@' || *c >= 0x80)
            || start > 0 && b.get(start - 1).is_some_and(|c| *c >= 0x80)
        {
            continue;
        }
        let host = text.get(at + 1..end).unwrap_or_default();
        let labels: Vec<&str> = host.split('.').collect();
        let tld = labels.last().copied().unwrap_or_default();
        let tld_ok = tld.bytes().all(|c| c.is_ascii_alphabetic())
            && (tld.len() == 2 || GENERIC_TLDS.iter().any(|g| g.eq_ignore_ascii_case(tld)));
        let labels_ok = labels.len() >= 2
            && labels.iter().all(|l| !l.is_empty() && l.len() <= 63 && !l.starts_with('-') && !l.ends_with('-'));
        if tld_ok && labels_ok && at - start <= 64 {
            hits.push(Hit { start, end, entity: Entity::Email });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn find(text: &str) -> Vec<&str> {
        super::super::found(text, scan)
    }

    #[test]
    fn addresses_and_near_misses() {
        assert_eq!(find("escreva para maria.silva+ia@empresa.com.br."), vec!["maria.silva+ia@empresa.com.br"]);
        assert_eq!(find("<joe@example.org>"), vec!["joe@example.org"]);
        assert!(find("nome@empresa").is_empty());
        assert!(find("a@b.c").is_empty());
        assert!(find("@handle no twitter").is_empty());
        assert!(find("x@foo.notatld").is_empty());
        assert_eq!(find("\"to\":\"ana@x.io\""), vec!["ana@x.io"]);
    }
}
