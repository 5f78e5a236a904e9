//! IBAN: country code, two check digits, then the account (BBAN), written bare or in groups of
//! four; the length is fixed per country and the whole passes ISO 7064 mod 97-10.

use super::{Entity, Hit};

/// Country and IBAN length (ISO 13616 registry).
const LENGTHS: &[(&[u8; 2], usize)] = &[
    (b"AD", 24),
    (b"AE", 23),
    (b"AL", 28),
    (b"AT", 20),
    (b"AZ", 28),
    (b"BA", 20),
    (b"BE", 16),
    (b"BG", 22),
    (b"BH", 22),
    (b"BR", 29),
    (b"BY", 28),
    (b"CH", 21),
    (b"CR", 22),
    (b"CY", 28),
    (b"CZ", 24),
    (b"DE", 22),
    (b"DK", 18),
    (b"DO", 28),
    (b"EE", 20),
    (b"EG", 29),
    (b"ES", 24),
    (b"FI", 18),
    (b"FO", 18),
    (b"FR", 27),
    (b"GB", 22),
    (b"GE", 22),
    (b"GI", 23),
    (b"GL", 18),
    (b"GR", 27),
    (b"GT", 28),
    (b"HR", 21),
    (b"HU", 28),
    (b"IE", 22),
    (b"IL", 23),
    (b"IQ", 23),
    (b"IS", 26),
    (b"IT", 27),
    (b"JO", 30),
    (b"KW", 30),
    (b"KZ", 20),
    (b"LB", 28),
    (b"LC", 32),
    (b"LI", 21),
    (b"LT", 20),
    (b"LU", 20),
    (b"LV", 21),
    (b"MC", 27),
    (b"MD", 24),
    (b"ME", 22),
    (b"MK", 19),
    (b"MR", 27),
    (b"MT", 31),
    (b"MU", 30),
    (b"NL", 18),
    (b"NO", 15),
    (b"PK", 24),
    (b"PL", 28),
    (b"PS", 29),
    (b"PT", 25),
    (b"QA", 29),
    (b"RO", 24),
    (b"RS", 22),
    (b"SA", 24),
    (b"SC", 31),
    (b"SE", 24),
    (b"SI", 19),
    (b"SK", 24),
    (b"SM", 27),
    (b"ST", 25),
    (b"SV", 28),
    (b"TL", 23),
    (b"TN", 24),
    (b"TR", 26),
    (b"UA", 29),
    (b"VA", 22),
    (b"VG", 24),
    (b"XK", 20),
];

pub fn valid(iban: &[u8]) -> bool {
    let Some(country) = iban.get(..2) else { return false };
    let Some((_, len)) = LENGTHS.iter().find(|(c, _)| c.as_slice() == country) else { return false };
    if iban.len() != *len
        || !iban.iter().all(u8::is_ascii_alphanumeric)
        || !iban.get(2..4).is_some_and(|d| d.iter().all(u8::is_ascii_digit))
    {
        return false;
    }
    let rearranged = iban.iter().skip(4).chain(iban.iter().take(4));
    let mut r: u32 = 0;
    for c in rearranged {
        let c = c.to_ascii_uppercase();
        let v = if c.is_ascii_digit() { u32::from(c - b'0') } else { u32::from(c - b'A') + 10 };
        r = if v >= 10 { (r * 100 + v) % 97 } else { (r * 10 + v) % 97 };
    }
    r == 1
}

/// Scans alone (the recognizers share one pass over words: [`super::words`]).
pub fn scan(text: &str, hits: &mut Vec<Hit>) {
    super::words(text, super::EntitySet::of(&[Entity::Iban]), hits);
}

/// An IBAN starting at word start `i` (bare, or spaced every four characters): its end.
pub fn at(b: &[u8], i: usize) -> Option<usize> {
    let head = b.get(i..i + 4)?;
    let starts = head.first().is_some_and(u8::is_ascii_uppercase)
        && head.get(1).is_some_and(u8::is_ascii_uppercase)
        && head.get(2).is_some_and(u8::is_ascii_digit)
        && head.get(3).is_some_and(u8::is_ascii_digit);
    if !starts {
        return None;
    }
    let len = b.get(i..i + 2).and_then(|c| LENGTHS.iter().find(|(k, _)| k.as_slice() == c)).map(|(_, l)| *l)?;
    let mut chars = [0u8; 34];
    let mut n = 0;
    let mut j = i;
    let mut spaced = None;
    while n < len {
        match b.get(j) {
            Some(c) if c.is_ascii_alphanumeric() => {
                *chars.get_mut(n)? = *c;
                n += 1;
                j += 1;
            }
            Some(b' ')
                if n % 4 == 0 && spaced != Some(false) && b.get(j + 1).is_some_and(u8::is_ascii_alphanumeric) =>
            {
                spaced = Some(true);
                j += 1;
            }
            _ => break,
        }
        if n == 4 && spaced.is_none() && b.get(j).is_some_and(u8::is_ascii_alphanumeric) {
            spaced = Some(false);
        }
    }
    let end_ok = b.get(j).is_none_or(|c| !c.is_ascii_alphanumeric());
    (n == len && end_ok && valid(chars.get(..n)?)).then_some(j)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn find(text: &str) -> Vec<&str> {
        super::super::found(text, scan)
    }

    #[test]
    fn mod_97_and_lengths() {
        assert!(valid(b"GB82WEST12345698765432"));
        assert!(valid(b"DE89370400440532013000"));
        assert!(!valid(b"GB82WEST12345698765433"));
        assert_eq!(find("IBAN GB82 WEST 1234 5698 7654 32."), vec!["GB82 WEST 1234 5698 7654 32"]);
        assert_eq!(find("DE89370400440532013000"), vec!["DE89370400440532013000"]);
        assert!(find("GB82 WEST 1234 5698 7654 33").is_empty());
        assert!(find("ZZ82WEST12345698765432").is_empty(), "no such country");
    }
}
