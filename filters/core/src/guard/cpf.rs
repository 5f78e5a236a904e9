//! CPF (Cadastro de Pessoas Físicas): 11 digits, `ddd.ddd.ddd-dd` or bare, two mod-11 check
//! digits; eleven equal digits are not a CPF. Bare and formatted forms are both taken: the
//! checksum leaves a 1-in-100 chance for a random number.

use super::numbers::Window;

pub fn matches(w: &Window<'_>) -> bool {
    (w.bare() || w.shape_is("3.3.3-2")) && valid(w.digits)
}

pub fn valid(digits: &[u8]) -> bool {
    let Some(d) = super::digit_values::<11>(digits) else {
        return false;
    };
    if d.iter().all(|v| Some(v) == d.first()) {
        return false;
    }
    let check = |n: usize| {
        let sum: u32 = d.iter().take(n).enumerate().map(|(i, v)| v * (n as u32 + 1 - i as u32)).sum();
        let r = sum % 11;
        if r < 2 {
            0
        } else {
            11 - r
        }
    };
    d.get(9) == Some(&check(9)) && d.get(10) == Some(&check(10))
}

#[cfg(test)]
mod tests {
    use super::super::numbers::find;
    use super::super::Entity;
    use super::*;

    #[test]
    fn check_digits() {
        assert!(valid(b"52998224725"));
        assert!(valid(b"11144477735"));
        assert!(!valid(b"52998224726"), "wrong second digit");
        assert!(!valid(b"52998224715"), "wrong first digit");
        assert!(!valid(b"11111111111"), "all equal");
        assert!(!valid(b"5299822472"));
    }

    #[test]
    fn in_text() {
        assert_eq!(find("meu cpf: 529.982.247-25."), vec![(Entity::Cpf, "529.982.247-25")]);
        assert_eq!(find("52998224725"), vec![(Entity::Cpf, "52998224725")]);
        assert!(find("529.982.247-26").is_empty(), "decoy with a wrong digit");
        assert!(find("529.982.24725").is_empty(), "half formatted");
        assert_eq!(find("\"529.982.247-25\""), vec![(Entity::Cpf, "529.982.247-25")]);
    }
}
