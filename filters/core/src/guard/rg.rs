//! RG (Registro Geral): no national standard. São Paulo's (`dd.ddd.ddd-d`, the check digit may
//! be `X`) has a mod-11 check digit (weights 2..9; 10 is `X`, 11 is 0), validated here; other
//! states' numbers have no check digit to test. Always needs a context word (`RG`, identidade):
//! one random number in eleven passes.

use super::numbers::Window;

const CONTEXT: &[&str] = &["rg", "registro geral", "identidade", "carteira de identidade"];

pub fn matches(w: &Window<'_>) -> bool {
    let shaped =
        if w.x_check { w.shape_is("2.3.3-X") || w.shape_is("8-X") } else { w.shape_is("2.3.3-1") || w.shape_is("9") };
    shaped && valid(w.digits, w.x_check) && w.context(CONTEXT)
}

/// `digits`: 9 digits, or 8 when the check digit is `X` (`x_check`).
pub fn valid(digits: &[u8], x_check: bool) -> bool {
    let body = if x_check { digits } else { digits.get(..8).unwrap_or_default() };
    let Some(d) = super::digit_values::<8>(body) else {
        return false;
    };
    let sum: u32 = d.iter().enumerate().map(|(i, v)| v * (i as u32 + 2)).sum();
    let dv = match 11 - sum % 11 {
        11 => 0,
        v => v,
    };
    if x_check {
        dv == 10
    } else {
        digits.len() == 9 && digits.get(8).map(|c| u32::from(c - b'0')) == Some(dv)
    }
}

#[cfg(test)]
mod tests {
    use super::super::numbers::find;
    use super::super::Entity;
    use super::*;

    #[test]
    fn sao_paulo_check_digit() {
        // Generated with Faker's pt_BR `rg()`.
        assert!(valid(b"253660087", false));
        assert!(!valid(b"253660088", false));
        assert!(valid(b"22948461", true), "check digit X");
        assert!(!valid(b"25366008", true));
        assert_eq!(find("RG 25.366.008-7"), vec![(Entity::Rg, "25.366.008-7")]);
        assert_eq!(find("RG: 22.948.461-X."), vec![(Entity::Rg, "22.948.461-X")]);
        assert!(find("lote 25.366.008-7").is_empty(), "no context");
    }
}
