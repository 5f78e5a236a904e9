//! CNS (Cartão Nacional de Saúde, the SUS card): 15 digits, `ddd dddd dddd dddd` or bare,
//! starting with 1 or 2 (definitive) or 7, 8, 9 (provisional); the digits weighted 15..1 sum to
//! a multiple of 11. Health data is sensitive personal data under LGPD (art. 5 II). One random
//! number in eleven passes, so the bare form needs a context word.

use super::numbers::Window;

const CONTEXT: &[&str] = &["cns", "sus", "cartao nacional de saude", "cartao do sus", "cartao sus"];

pub fn matches(w: &Window<'_>) -> bool {
    valid(w.digits) && (w.shape_is("3 4 4 4") || (w.bare() && w.context(CONTEXT)))
}

pub fn valid(digits: &[u8]) -> bool {
    let Some(d) = super::digit_values::<15>(digits) else {
        return false;
    };
    if !matches!(d.first(), Some(1 | 2 | 7 | 8 | 9)) {
        return false;
    }
    d.iter().enumerate().map(|(i, v)| v * (15 - i as u32)).sum::<u32>() % 11 == 0
}

#[cfg(test)]
mod tests {
    use super::super::numbers::find;
    use super::super::Entity;
    use super::*;

    #[test]
    fn sums_to_eleven() {
        // Generated with validate-docbr's CNS().
        assert!(valid(b"291417776310002"));
        assert!(valid(b"806690753915000"));
        assert!(!valid(b"291417776310003"));
        assert!(!valid(b"391417776310002"), "first digit 3 is not a CNS");
        assert_eq!(find("806 6907 5391 5000"), vec![(Entity::Cns, "806 6907 5391 5000")]);
        assert_eq!(find("cartão SUS 291417776310002"), vec![(Entity::Cns, "291417776310002")]);
        assert!(find("protocolo 291417776310002").is_empty());
    }
}
