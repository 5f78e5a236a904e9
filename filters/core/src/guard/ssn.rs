//! US Social Security number: `ddd-dd-dddd` (or with spaces, or bare with a context word).
//! Area not 000, 666 or 900-999 (the ITIN space); group not 00; serial not 0000; published
//! sample numbers refused.

use super::numbers::Window;

const CONTEXT: &[&str] = &["ssn", "social security"];
const SAMPLES: &[&[u8]] = &[b"078051120", b"219099999", b"123456789"];

pub fn matches(w: &Window<'_>) -> bool {
    valid(w.digits) && (w.shape_is("3-2-4") || ((w.shape_is("3 2 4") || w.bare()) && w.context(CONTEXT)))
}

pub fn valid(digits: &[u8]) -> bool {
    if digits.len() != 9 || !digits.iter().all(u8::is_ascii_digit) || SAMPLES.contains(&digits) {
        return false;
    }
    let area = digits.get(..3).unwrap_or_default();
    let group = digits.get(3..5).unwrap_or_default();
    let serial = digits.get(5..).unwrap_or_default();
    area != b"000" && area != b"666" && area.first() != Some(&b'9') && group != b"00" && serial != b"0000"
}

#[cfg(test)]
mod tests {
    use super::super::numbers::find;
    use super::super::Entity;
    use super::*;

    #[test]
    fn rules() {
        assert_eq!(find("SSN 536-90-4399"), vec![(Entity::UsSsn, "536-90-4399")]);
        for bad in ["000-12-3456", "666-12-3456", "900-12-3456", "536-00-4399", "536-90-0000", "078-05-1120"] {
            assert!(find(bad).is_empty(), "{bad}");
        }
        assert_eq!(find("ssn: 536904399"), vec![(Entity::UsSsn, "536904399")]);
        assert!(valid(b"536904399"));
    }
}
