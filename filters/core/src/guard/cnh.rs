//! CNH (Carteira Nacional de Habilitação): 11 bare digits, two mod-11 check digits (the first
//! weighted 9..1; when it overflows, the second is lowered by 2). Eleven digits are also the
//! shape of a CPF (tried first) and of a mobile number, so a CNH needs a context word before it.

use super::numbers::Window;

const CONTEXT: &[&str] = &["cnh", "habilitacao", "carteira de motorista", "driver license", "registro cnh"];

pub fn matches(w: &Window<'_>) -> bool {
    w.bare() && valid(w.digits) && w.context(CONTEXT)
}

pub fn valid(digits: &[u8]) -> bool {
    let Some(d) = super::digit_values::<11>(digits) else {
        return false;
    };
    if d.iter().all(|v| Some(v) == d.first()) {
        return false;
    }
    let sum1: u32 = d.iter().take(9).enumerate().map(|(i, v)| v * (9 - i as u32)).sum();
    let (dv1, carry) = match sum1 % 11 {
        r if r >= 10 => (0, 2),
        r => (r, 0),
    };
    let sum2: u32 = d.iter().take(9).enumerate().map(|(i, v)| v * (i as u32 + 1)).sum();
    let mut dv2 = (sum2 % 11) as i64 - carry;
    if dv2 < 0 {
        dv2 += 11;
    }
    if dv2 >= 10 {
        dv2 = 0;
    }
    d.get(9) == Some(&dv1) && d.get(10).map(|v| i64::from(*v)) == Some(dv2)
}

#[cfg(test)]
mod tests {
    use super::super::numbers::find;
    use super::super::Entity;
    use super::*;

    #[test]
    fn check_digits_and_context() {
        // Generated with validate-docbr's CNH().
        assert!(valid(b"02650306461"));
        assert!(!valid(b"02650306462"));
        assert_eq!(find("Minha CNH: 02650306461"), vec![(Entity::Cnh, "02650306461")]);
        assert!(find("pedido 02650306461").is_empty(), "no context");
    }
}
