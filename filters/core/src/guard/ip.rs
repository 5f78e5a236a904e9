//! IP addresses. IPv4: four dotted decimal octets ≤ 255 without leading zeros, as a whole run
//! (so `1.3.6.1.4.1`, an OID, is not an address). IPv6: a run of hex digits, colons and dots
//! with at least two colons, accepted only if the standard library parses it.

use super::numbers::Window;
use super::{Entity, Hit};

pub fn matches_v4(w: &Window<'_>) -> bool {
    if w.shape.len() != 7 || !w.shape.iter().skip(1).step_by(2).all(|s| *s == b'.') {
        return false;
    }
    let text = w.text.get(w.start..w.end).unwrap_or_default();
    text.split('.').all(|octet| {
        !octet.is_empty()
            && octet.len() <= 3
            && (octet == "0" || !octet.starts_with('0'))
            && octet.parse::<u16>().is_ok_and(|v| v <= 255)
    }) && text.split('.').count() == 4
}

pub fn scan_v6(text: &str, hits: &mut Vec<Hit>) {
    let b = text.as_bytes();
    let part = |c: u8| c.is_ascii_hexdigit() || c == b':' || c == b'.';
    let mut from = 0;
    while let Some(colon) = memchr::memchr(b':', b.get(from..).unwrap_or_default()) {
        let colon = from + colon;
        let mut start = colon;
        while start > 0 && b.get(start - 1).is_some_and(|c| part(*c)) {
            start -= 1;
        }
        let mut end = colon;
        while b.get(end).is_some_and(|c| part(*c)) {
            end += 1;
        }
        from = end.max(colon + 1);
        // A trailing dot ends a sentence, not an address.
        while end > start && b.get(end - 1) == Some(&b'.') {
            end -= 1;
        }
        let candidate = text.get(start..end).unwrap_or_default();
        let colons = candidate.bytes().filter(|c| *c == b':').count();
        let edge = |i: Option<usize>| i.is_none_or(|i| !super::text::word_at(b, i));
        if colons >= 2
            && candidate.bytes().any(|c| c.is_ascii_hexdigit())
            && edge(start.checked_sub(1))
            && edge(Some(end))
            && candidate.parse::<std::net::Ipv6Addr>().is_ok()
        {
            hits.push(Hit { start, end, entity: Entity::IpAddress });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::numbers::find;
    use super::*;

    #[test]
    fn v4_and_v6() {
        assert_eq!(find("host 192.168.0.1."), vec![(Entity::IpAddress, "192.168.0.1")]);
        assert!(find("1.3.6.1.4.1").is_empty());
        assert!(find("256.1.1.1").is_empty());
        assert!(find("01.2.3.4").is_empty());
        let mut hits = Vec::new();
        let text = "v6 2001:db8::8a2e:370:7334, loopback ::1 e hora 12:30:45, mac 00:1A:2B:3C:4D:5E.";
        scan_v6(text, &mut hits);
        let found: Vec<&str> = hits.iter().map(|h| &text[h.start..h.end]).collect();
        assert_eq!(found, vec!["2001:db8::8a2e:370:7334", "::1"]);
    }
}
