//! Payment cards: 13-19 digits, bare or in groups (4-4-4-4, 4-6-5, 4-6-4, with one kind of
//! separator), Luhn check and a real issuer range: Visa 4; Mastercard 51-55 and 2221-2720;
//! Amex 34, 37; Diners 300-305, 36, 38, 39; Discover 6011, 622126-622925, 644-649, 65; JCB
//! 3528-3589; UnionPay 62; Elo and Hipercard (Brazil) 4011, 4312, 4389, 4514, 4576, 5041, 5066,
//! 5067, 509, 606282, 6277, 6362, 6363, 650-652, 655, 3841. Luhn alone passes one number in ten.

use super::numbers::Window;

pub fn matches(w: &Window<'_>) -> bool {
    let n = w.digits.len();
    (13..=19).contains(&n) && grouped(w.shape) && issuer(w.digits) && luhn(w.digits)
}

fn grouped(shape: &[u8]) -> bool {
    if shape.len() == 1 {
        return true;
    }
    let sep = match shape.get(1) {
        Some(s @ (b' ' | b'-')) => *s,
        _ => return false,
    };
    let lens: Vec<u8> =
        shape.split(|c| *c == sep).filter_map(|g| (g.len() == 1).then(|| g.first().copied()).flatten()).collect();
    if lens.len() * 2 - 1 != shape.len() {
        return false;
    }
    match lens.as_slice() {
        [b'4', b'6', b'5' | b'4'] => true,
        [b'4', middle @ .., last] => {
            middle.iter().all(|l| *l == b'4') && (b'1'..=b'4').contains(last) && lens.len() >= 4
        }
        _ => false,
    }
}

pub fn luhn(digits: &[u8]) -> bool {
    let mut sum = 0;
    for (i, d) in digits.iter().rev().enumerate() {
        let mut v = u32::from(d.wrapping_sub(b'0'));
        if v > 9 {
            return false;
        }
        if i % 2 == 1 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    sum % 10 == 0
}

fn prefix(digits: &[u8], len: usize) -> u32 {
    digits.iter().take(len).fold(0, |acc, d| acc * 10 + u32::from(d.wrapping_sub(b'0')))
}

pub fn issuer(digits: &[u8]) -> bool {
    let (p1, p2, p3, p4, p6) =
        (prefix(digits, 1), prefix(digits, 2), prefix(digits, 3), prefix(digits, 4), prefix(digits, 6));
    p1 == 4
        || (51..=55).contains(&p2)
        || (2221..=2720).contains(&p4)
        || p2 == 34
        || p2 == 37
        || (300..=305).contains(&p3)
        || matches!(p2, 36 | 38 | 39)
        || p4 == 6011
        || (622126..=622925).contains(&p6)
        || (644..=649).contains(&p3)
        || p2 == 65
        || (3528..=3589).contains(&p4)
        || p2 == 62
        || matches!(p4, 5041 | 5066 | 5067 | 6277 | 6362 | 6363 | 3841)
        || p3 == 509
        || p6 == 606282
}

#[cfg(test)]
mod tests {
    use super::super::numbers::find;
    use super::super::Entity;
    use super::*;

    #[test]
    fn luhn_and_issuers() {
        assert!(luhn(b"4111111111111111"));
        assert!(!luhn(b"4111111111111112"));
        assert_eq!(find("cartão 4111 1111 1111 1111"), vec![(Entity::CreditCard, "4111 1111 1111 1111")]);
        assert_eq!(find("2221000000000009"), vec![(Entity::CreditCard, "2221000000000009")], "2-series Mastercard");
        assert_eq!(find("3782-822463-10005"), vec![(Entity::CreditCard, "3782-822463-10005")], "Amex");
        assert_eq!(find("6362970000457013"), vec![(Entity::CreditCard, "6362970000457013")], "Elo");
        assert!(find("4111 1111 1111 1112").is_empty(), "Luhn fails");
        assert!(find("1111111111111117").is_empty(), "Luhn passes but no issuer starts with 1");
        assert!(find("4111 1111-1111 1111").is_empty(), "mixed separators");
    }
}
