//! CNPJ (Cadastro Nacional da Pessoa Jurídica): 14 characters, `dd.ddd.ddd/dddd-dd` or bare,
//! two mod-11 check digits. From July 2026 the first 12 positions may be letters (`A`-`Z`),
//! valued as their ASCII code minus 48 (`A` = 17); the check digits stay numeric. Numeric
//! CNPJs come through the number scanner; alphanumeric ones through [`scan_alphanumeric`].

use super::numbers::Window;
use super::text::bounded;
use super::{Entity, Hit};

const W1: [u32; 12] = [5, 4, 3, 2, 9, 8, 7, 6, 5, 4, 3, 2];
const W2: [u32; 13] = [6, 5, 4, 3, 2, 9, 8, 7, 6, 5, 4, 3, 2];

pub fn matches(w: &Window<'_>) -> bool {
    (w.bare() || w.shape_is("2.3.3/4-2")) && valid(w.digits)
}

/// `chars` are the 14 significant characters (digits, or upper-case letters in the first 12).
pub fn valid(chars: &[u8]) -> bool {
    if chars.len() != 14 {
        return false;
    }
    let mut v = [0u32; 14];
    for (i, c) in chars.iter().enumerate() {
        let ok = c.is_ascii_digit() || (i < 12 && c.is_ascii_uppercase());
        if !ok {
            return false;
        }
        if let Some(slot) = v.get_mut(i) {
            *slot = u32::from(c - b'0');
        }
    }
    if chars.iter().all(|c| Some(c) == chars.first()) {
        return false;
    }
    let dv = |weights: &[u32]| {
        let r = weights.iter().zip(v.iter()).map(|(w, d)| w * d).sum::<u32>() % 11;
        if r < 2 {
            0
        } else {
            11 - r
        }
    };
    v.get(12) == Some(&dv(&W1)) && v.get(13) == Some(&dv(&W2))
}

/// Formatted alphanumeric CNPJs (at least one letter), found from their `/`:
/// `12.ABC.345/01DE-35`. Bare ones (`12ABC34501DE35`) come from the shared pass over words
/// ([`bare_at`]).
pub fn scan_alphanumeric(text: &str, hits: &mut Vec<Hit>) {
    let b = text.as_bytes();
    for slash in memchr::memchr_iter(b'/', b) {
        let Some(start) = slash.checked_sub(10) else { continue };
        if let Some(end) = candidate(b, start, 18) {
            hits.push(Hit { start, end, entity: Entity::Cnpj });
        }
    }
}

/// A bare alphanumeric CNPJ: the word at `start` (14 characters, ending in a digit).
pub fn bare_at(b: &[u8], start: usize, end: usize) -> Option<usize> {
    if end - start != 14 || !b.get(end - 1).is_some_and(u8::is_ascii_digit) {
        return None;
    }
    candidate(b, start, 14)
}

/// A CNPJ with at least one letter at `start`, formatted (`len` 18) or bare (14).
fn candidate(b: &[u8], start: usize, len: usize) -> Option<usize> {
    let candidate = b.get(start..start + len)?;
    if !bounded(b, start, start + len) {
        return None;
    }
    let formatted = len == 18;
    let mut chars = [0u8; 14];
    let mut n = 0;
    for (k, &ch) in candidate.iter().enumerate() {
        let sep = match (formatted, k) {
            (true, 2 | 6) => Some(b'.'),
            (true, 10) => Some(b'/'),
            (true, 15) => Some(b'-'),
            _ => None,
        };
        match sep {
            Some(s) if ch == s => {}
            Some(_) => return None,
            None => {
                *chars.get_mut(n)? = ch;
                n += 1;
            }
        }
    }
    (n == 14 && chars.iter().any(u8::is_ascii_uppercase) && valid(&chars)).then_some(start + len)
}

#[cfg(test)]
mod tests {
    use super::super::numbers::find;
    use super::*;

    #[test]
    fn numeric_and_alphanumeric() {
        assert!(valid(b"11222333000181"));
        assert!(!valid(b"11222333000182"));
        assert!(valid(b"12ABC34501DE35"), "the 2026 alphanumeric form");
        assert!(!valid(b"12ABC34501DE36"));
        assert!(!valid(b"00000000000000"));
        assert_eq!(find("CNPJ 11.222.333/0001-81"), vec![(Entity::Cnpj, "11.222.333/0001-81")]);
        assert!(find("11.222.333/0001-80").is_empty());
        let mut hits = Vec::new();
        let text = "empresa 12.ABC.345/01DE-35 e 12ABC34501DE35, não 12ABC34501DE36";
        scan_alphanumeric(text, &mut hits);
        super::super::words(text, super::super::EntitySet::of(&[Entity::Cnpj]), &mut hits);
        hits.sort_by_key(|h| h.start);
        let found: Vec<&str> = hits.iter().map(|h| &text[h.start..h.end]).collect();
        assert_eq!(found, vec!["12.ABC.345/01DE-35", "12ABC34501DE35"]);
    }
}
