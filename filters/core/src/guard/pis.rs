//! PIS/PASEP/NIT/NIS: 11 digits, `ddd.ddddd.dd-d` or bare, one mod-11 check digit (weights
//! 3,2,9,8,7,6,5,4,3,2). One random number in eleven passes, so the bare form needs a context
//! word; the formatted form is distinctive enough.

use super::numbers::Window;

const CONTEXT: &[&str] = &["pis", "pasep", "nit", "nis", "pis/pasep"];

pub fn matches(w: &Window<'_>) -> bool {
    valid(w.digits) && (w.shape_is("3.5.2-1") || (w.bare() && w.context(CONTEXT)))
}

pub fn valid(digits: &[u8]) -> bool {
    const W: [u32; 10] = [3, 2, 9, 8, 7, 6, 5, 4, 3, 2];
    let Some(d) = super::digit_values::<11>(digits) else {
        return false;
    };
    if d.iter().all(|v| Some(v) == d.first()) {
        return false;
    }
    let r = W.iter().zip(d.iter()).map(|(w, v)| w * v).sum::<u32>() % 11;
    let dv = match 11 - r {
        10 | 11 => 0,
        v => v,
    };
    d.get(10) == Some(&dv)
}

#[cfg(test)]
mod tests {
    use super::super::numbers::find;
    use super::super::Entity;
    use super::*;

    #[test]
    fn check_digit_shape_and_context() {
        // Generated with validate-docbr's PIS().
        assert!(valid(b"83533740684"));
        assert!(!valid(b"83533740685"));
        assert_eq!(find("PIS 835.33740.68-4"), vec![(Entity::Pis, "835.33740.68-4")]);
        assert!(find("835.33740.68-5").is_empty());
        assert_eq!(find("NIT 80636083770"), vec![(Entity::Pis, "80636083770")]);
    }
}
