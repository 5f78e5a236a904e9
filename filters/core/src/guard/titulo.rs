//! Título de eleitor (voter registration): 12 digits, `dddd dddd dddd` or bare; digits 9-10 are
//! the state code (01-28); two mod-11 check digits, with São Paulo and Minas Gerais (01, 02)
//! turning a 0 into 1. Needs a context word: twelve digits are also order numbers.

use super::numbers::Window;

const CONTEXT: &[&str] = &["titulo", "eleitor", "titulo eleitoral", "titulo de eleitor"];

pub fn matches(w: &Window<'_>) -> bool {
    (w.bare() || w.shape_is("4 4 4")) && valid(w.digits) && w.context(CONTEXT)
}

pub fn valid(digits: &[u8]) -> bool {
    let Some(d) = super::digit_values::<12>(digits) else {
        return false;
    };
    let (Some(uf1), Some(uf2)) = (d.get(8), d.get(9)) else {
        return false;
    };
    let uf = uf1 * 10 + uf2;
    if !(1..=28).contains(&uf) {
        return false;
    }
    let special = uf == 1 || uf == 2;
    let digit = |sum: u32| match sum % 11 {
        0 if special => 1,
        10 => 0,
        r => r,
    };
    let dv1 = digit(d.iter().take(8).enumerate().map(|(i, v)| v * (i as u32 + 2)).sum());
    let dv2 = digit(uf1 * 7 + uf2 * 8 + dv1 * 9);
    d.get(10) == Some(&dv1) && d.get(11) == Some(&dv2)
}

#[cfg(test)]
mod tests {
    use super::super::numbers::find;
    use super::super::Entity;
    use super::*;

    #[test]
    fn state_code_and_check_digits() {
        assert!(valid(b"102385010671"));
        assert!(!valid(b"102385010672"));
        assert!(!valid(b"102385019971"), "state 99 does not exist");
        assert_eq!(find("título de eleitor 1023 8501 0671"), vec![(Entity::TituloEleitor, "1023 8501 0671")]);
        assert!(find("pedido 102385010671").is_empty());
    }
}
