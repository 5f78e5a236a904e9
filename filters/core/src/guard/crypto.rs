//! Bitcoin addresses, validated: legacy `1…`/`3…` by Base58Check (version 0x00/0x05, a
//! double-SHA-256 checksum over 21 bytes) and `bc1…` by the Bech32 (witness v0) or Bech32m
//! (v1+) checksum. A corrupted character fails the checksum, so a random string is never taken.

use super::{Entity, Hit};
use sha2::{Digest, Sha256};

const BASE58: &[u8; 58] = b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
const BECH32: &[u8; 32] = b"qpzry9x8gf2tvdw0s3jn54khce6mua7l";

pub fn scan(text: &str, hits: &mut Vec<Hit>) {
    let b = text.as_bytes();
    // Every address starts with `1`, `3` or `bc1`: jump between those bytes.
    let mut from = 0;
    while let Some(k) = memchr::memchr3(b'1', b'3', b'b', b.get(from..).unwrap_or_default()) {
        let i = from + k;
        from = i + 1;
        if super::text::word_before(b, i) {
            continue;
        }
        let mut end = i;
        while b.get(end).is_some_and(u8::is_ascii_alphanumeric) {
            end += 1;
        }
        from = end.max(i + 1);
        if end - i < 14 || super::text::word_at(b, end) {
            continue;
        }
        let word = b.get(i..end).unwrap_or_default();
        if base58check(word) || bech32(word) {
            hits.push(Hit { start: i, end, entity: Entity::CryptoWallet });
        }
    }
}

fn base58check(word: &[u8]) -> bool {
    if !(26..=35).contains(&word.len()) || !matches!(word.first(), Some(b'1' | b'3')) {
        return false;
    }
    // 25 bytes, big-endian base-256 accumulation.
    let mut bytes = [0u8; 25];
    for c in word {
        let Some(mut carry) = BASE58.iter().position(|a| a == c).map(|v| v as u32) else { return false };
        for byte in bytes.iter_mut().rev() {
            carry += u32::from(*byte) * 58;
            *byte = (carry & 0xff) as u8;
            carry >>= 8;
        }
        if carry != 0 {
            return false;
        }
    }
    let leading_ones = word.iter().take_while(|c| **c == b'1').count();
    let leading_zeros = bytes.iter().take_while(|b| **b == 0).count();
    if leading_ones != leading_zeros.min(leading_ones.max(leading_zeros)) || !matches!(bytes.first(), Some(0 | 5)) {
        return false;
    }
    let (payload, check) = bytes.split_at(21);
    let digest = Sha256::digest(Sha256::digest(payload));
    digest.get(..4) == Some(check)
}

fn bech32(word: &[u8]) -> bool {
    if !(14..=74).contains(&word.len()) || !word.starts_with(b"bc1") {
        return false;
    }
    let mut values = Vec::with_capacity(word.len());
    for c in word.get(3..).unwrap_or_default() {
        match BECH32.iter().position(|a| a == c) {
            Some(v) => values.push(v as u32),
            None => return false,
        }
    }
    if values.len() < 7 {
        return false;
    }
    let mut chk: u32 = 1;
    let mut feed = |v: u32| {
        let top = chk >> 25;
        chk = ((chk & 0x1ff_ffff) << 5) ^ v;
        for (i, g) in [0x3b6a_57b2u32, 0x2650_8e6d, 0x1ea1_19fa, 0x3d42_33dd, 0x2a14_62b3].iter().enumerate() {
            if (top >> i) & 1 == 1 {
                chk ^= g;
            }
        }
    };
    // The human-readable part "bc", expanded.
    for c in b"bc" {
        feed(u32::from(c >> 5));
    }
    feed(0);
    for c in b"bc" {
        feed(u32::from(c & 31));
    }
    for v in &values {
        feed(*v);
    }
    let version = values.first().copied().unwrap_or(0);
    let expected = if version == 0 { 1 } else { 0x2bc8_30a3 };
    chk == expected
}

#[cfg(test)]
mod tests {
    use super::*;

    fn find(text: &str) -> Vec<&str> {
        super::super::found(text, scan)
    }

    #[test]
    fn checksums() {
        let genesis = "1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNa";
        assert_eq!(find(&format!("envie para {genesis}.")), vec![genesis]);
        assert!(find("1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNb").is_empty(), "one character changed");
        assert_eq!(find("3J98t1WpEZ73CNmQviecrnyiWrnqRhWNLy"), vec!["3J98t1WpEZ73CNmQviecrnyiWrnqRhWNLy"]);
        let v0 = "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4";
        assert_eq!(find(v0), vec![v0]);
        assert!(find("bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t5").is_empty());
        let v1 = "bc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vqzk5jj0";
        assert_eq!(find(v1), vec![v1], "Bech32m (taproot)");
        assert!(find("da39a3ee5e6b4b0d3255bfef95601890afd80709").is_empty(), "a SHA-1 is not an address");
    }
}
