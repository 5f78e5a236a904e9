//! Phone numbers. Brazil: area code (DDD) from Anatel's list of 67, then a 9-digit mobile
//! starting with 9 or an 8-digit landline starting with 2-5; optional `+55`. International:
//! `+` and a country code, 8-15 digits in all (E.164); `+1` and unprefixed US forms follow the
//! North American plan (area and exchange start with 2-9). A bare run of digits is a phone only
//! after a context word: bare 10-11 digit runs are CPFs, orders and dates as often as phones.

use super::numbers::Window;

const DDD: [u8; 67] = [
    11, 12, 13, 14, 15, 16, 17, 18, 19, 21, 22, 24, 27, 28, 31, 32, 33, 34, 35, 37, 38, 41, 42, 43, 44, 45, 46, 47, 48,
    49, 51, 53, 54, 55, 61, 62, 63, 64, 65, 66, 67, 68, 69, 71, 73, 74, 75, 77, 79, 81, 82, 83, 84, 85, 86, 87, 88, 89,
    91, 92, 93, 94, 95, 96, 97, 98, 99,
];
const CONTEXT: &[&str] = &["tel", "telefone", "fone", "celular", "whatsapp", "phone", "ligue", "contato", "cel"];

pub fn matches(w: &Window<'_>) -> bool {
    let d = w.digits;
    if w.shape.first() == Some(&b'+') {
        return match d {
            [b'5', b'5', rest @ ..] => brazil(rest),
            [b'1', rest @ ..] => nanp(rest),
            _ => (8..=15).contains(&d.len()) && d.first() != Some(&b'0'),
        };
    }
    let formatted = !w.bare();
    if formatted {
        brazil(d) && brazil_shape(w.shape) || nanp(d) && nanp_shape(w.shape)
    } else {
        (brazil(d) || nanp(d)) && w.context(CONTEXT)
    }
}

fn brazil(d: &[u8]) -> bool {
    let ddd = d.get(..2).map(|p| {
        (p.first().copied().unwrap_or(0).wrapping_sub(b'0')) * 10 + p.get(1).copied().unwrap_or(0).wrapping_sub(b'0')
    });
    if !ddd.is_some_and(|v| DDD.contains(&v)) {
        return false;
    }
    match d.get(2..) {
        Some(n) if n.len() == 9 => n.first() == Some(&b'9'),
        Some(n) if n.len() == 8 => matches!(n.first(), Some(b'2'..=b'5')),
        _ => false,
    }
}

/// `(11) 98765-4321`, `11 98765-4321`, `(11) 3456 7890`, `11 987654321`, `(11)98765-4321`.
fn brazil_shape(shape: &[u8]) -> bool {
    let s = shape.strip_prefix(b"+2 ").unwrap_or(shape);
    matches!(
        s,
        b"(2) 5-4"
            | b"(2) 4-4"
            | b"(2)5-4"
            | b"(2)4-4"
            | b"(2) 5 4"
            | b"(2) 4 4"
            | b"2 5-4"
            | b"2 4-4"
            | b"2 5 4"
            | b"2 4 4"
            | b"(2) 9"
            | b"(2) 8"
            | b"2 9"
            | b"2 8"
            | b"2-5-4"
            | b"2-4-4"
    )
}

fn nanp(d: &[u8]) -> bool {
    d.len() == 10 && matches!(d.first(), Some(b'2'..=b'9')) && matches!(d.get(3), Some(b'2'..=b'9'))
}

fn nanp_shape(shape: &[u8]) -> bool {
    matches!(shape, b"(3) 3-4" | b"(3)3-4" | b"3-3-4" | b"3.3.4" | b"3 3-4" | b"(3) 3 4")
}

#[cfg(test)]
mod tests {
    use super::super::numbers::find;
    use super::super::Entity;

    #[test]
    fn brazilian_and_international() {
        for phone in [
            "(11) 98765-4321",
            "+55 11 98765-4321",
            "(21) 3456-7890",
            "+55 (11) 98765-4321",
            "+1 415 555 2671",
            "(415) 555-2671",
            "+44 20 7946 0958",
            "+1-415-555-2671",
        ] {
            assert_eq!(find(phone), vec![(Entity::Phone, phone)], "{phone}");
        }
        assert!(find("(10) 98765-4321").is_empty(), "DDD 10 does not exist");
        assert!(find("(11) 88765-4321").is_empty(), "9-digit numbers are mobiles starting with 9");
        assert!(find("11987654321").is_empty(), "bare, no context");
        assert_eq!(find("whatsapp 11987654321"), vec![(Entity::Phone, "11987654321")]);
        assert!(find("(123) 456-7890").is_empty(), "NANP area codes start with 2-9");
    }
}
