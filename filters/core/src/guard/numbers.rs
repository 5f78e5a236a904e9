//! Candidate numbers: maximal runs of digit groups joined by one separator (`.`, `-`, `/`,
//! space, parentheses, a leading `+`), each described by its digits and its *shape* (the
//! separators as written and each group's length as one character: `3.3.3-2` for a formatted
//! CPF, `b` for eleven bare digits). A run may hold several numbers separated by spaces
//! (`tel 11 98765-4321`), so windows of it cut at spaces are tried, longest first from the left.
//! Every numeric recognizer decides on a window's digits and shape; no regex is involved.

use super::text::bounded;
use super::{Entity, EntitySet, Hit};

/// Longest run followed (groups).
const MAX_GROUPS: usize = 16;
/// Most digits a window may hold (a payment card has at most 19).
const MAX_DIGITS: usize = 24;

#[derive(Clone, Copy, Default)]
struct Group {
    /// Start of the separator before the group (or of its `+`/`(` lead, for the first).
    sep_start: usize,
    start: usize,
    end: usize,
}

/// One window of a run, as the recognizers see it.
pub struct Window<'a> {
    pub text: &'a str,
    pub start: usize,
    pub end: usize,
    /// ASCII digits.
    pub digits: &'a [u8],
    pub shape: &'a [u8],
    /// The run ended in `-X` (a São Paulo RG check digit).
    pub x_check: bool,
}

impl Window<'_> {
    /// Digit values.
    pub fn values(&self) -> impl Iterator<Item = u32> + '_ {
        self.digits.iter().map(|d| u32::from(d - b'0'))
    }

    pub fn bare(&self) -> bool {
        self.shape.len() == 1
    }

    pub fn shape_is(&self, shape: &str) -> bool {
        self.shape == shape.as_bytes()
    }

    pub fn context(&self, words: &[&str]) -> bool {
        super::text::context_before(self.text, self.start, words)
    }
}

fn len_char(len: usize) -> u8 {
    match len {
        0..=9 => b'0' + len as u8,
        10..=35 => b'a' + (len - 10) as u8,
        _ => b'~',
    }
}

/// Finds every numeric entity in `text` that `enabled` asks for.
pub fn scan(text: &str, enabled: EntitySet, hits: &mut Vec<Hit>) {
    if !enabled.any(NUMERIC) {
        return;
    }
    let b = text.as_bytes();
    let digit = |i: usize| b.get(i).is_some_and(u8::is_ascii_digit);
    let mut i = 0;
    while i < b.len() {
        let Some(&c) = b.get(i) else { break };
        let lead = if c.is_ascii_digit() {
            0
        } else if (c == b'+' || c == b'(') && digit(i + 1) {
            1
        } else {
            i += 1;
            continue;
        };
        if super::text::word_before(b, i) {
            // Inside a word (`abc123`, `v2`): skip the rest of it.
            i += 1;
            while b.get(i).is_some_and(u8::is_ascii_alphanumeric) {
                i += 1;
            }
            continue;
        }
        let mut groups = [Group::default(); MAX_GROUPS];
        let mut n = 0;
        let mut sep_start = i;
        let mut p = i + lead;
        loop {
            let s = p;
            while digit(p) {
                p += 1;
            }
            if let Some(g) = groups.get_mut(n) {
                *g = Group { sep_start, start: s, end: p };
            }
            n += 1;
            if n == MAX_GROUPS {
                break;
            }
            let opened = b.get(sep_start..s).is_some_and(|sep| sep.contains(&b'('));
            let mut q = p;
            match b.get(q) {
                Some(b')') if opened => {
                    q += 1;
                    if b.get(q) == Some(&b' ') {
                        q += 1;
                    }
                }
                Some(b'.' | b'-' | b'/' | b' ') => q += 1,
                _ => break,
            }
            if b.get(q) == Some(&b'(') && q == p + 1 && b.get(p) == Some(&b' ') {
                q += 1;
            }
            if digit(q) {
                sep_start = p;
                p = q;
            } else {
                break;
            }
        }
        let x_check = b.get(p) == Some(&b'-')
            && b.get(p + 1).is_some_and(|x| *x | 0x20 == b'x')
            && !super::text::word_at(b, p + 2);
        let run_end = if x_check { p + 2 } else { p };
        let glued = super::text::word_at(b, run_end);
        let last = if glued { n.checked_sub(2) } else { n.checked_sub(1) };
        if let Some(last) = last {
            windows(text, groups.get(..n).unwrap_or_default(), last, x_check && !glued, enabled, hits);
        }
        i = run_end.max(i + 1);
    }
}

/// Whether a run may be cut before group `k` (a space, possibly before a parenthesis).
fn cut_before(b: &[u8], g: &Group) -> bool {
    matches!(b.get(g.sep_start..g.start), Some(b" ") | Some(b" ("))
}

fn windows(text: &str, groups: &[Group], last: usize, x_check: bool, enabled: EntitySet, hits: &mut Vec<Hit>) {
    let b = text.as_bytes();
    let mut a = 0;
    while a <= last {
        let mut found = None;
        let mut z = last;
        loop {
            let cut_after = z == last || groups.get(z + 1).is_some_and(|g| cut_before(b, g));
            if cut_after {
                if let Some(hit) = window(text, groups, a, z, x_check && z + 1 == groups.len(), enabled) {
                    found = Some((z, hit));
                    break;
                }
            }
            if z == a {
                break;
            }
            z -= 1;
        }
        match found {
            Some((z, hit)) => {
                hits.push(hit);
                a = z + 1;
            }
            None => a += 1,
        }
        while a <= last && a > 0 && !groups.get(a).is_some_and(|g| cut_before(b, g)) {
            a += 1;
        }
    }
}

fn window(text: &str, groups: &[Group], a: usize, z: usize, x_check: bool, enabled: EntitySet) -> Option<Hit> {
    let b = text.as_bytes();
    let mut digits = [0u8; MAX_DIGITS];
    let mut nd = 0;
    let mut shape = [0u8; 3 * MAX_GROUPS + 4];
    let mut ns = 0;
    let push = |buf: &mut [u8], n: &mut usize, byte: u8| -> Option<()> {
        *buf.get_mut(*n)? = byte;
        *n += 1;
        Some(())
    };
    let first = groups.get(a)?;
    let lead = match b.get(first.sep_start..first.start)? {
        [.., b'+'] => Some(b'+'),
        [.., b'('] => Some(b'('),
        _ => None,
    };
    if let Some(lead) = lead {
        push(&mut shape, &mut ns, lead)?;
    }
    for (k, g) in groups.get(a..=z)?.iter().enumerate() {
        if k > 0 {
            for &s in b.get(g.sep_start..g.start)? {
                push(&mut shape, &mut ns, s)?;
            }
        }
        push(&mut shape, &mut ns, len_char(g.end - g.start))?;
        for &d in b.get(g.start..g.end)? {
            push(&mut digits, &mut nd, d)?;
        }
    }
    let mut end = groups.get(z)?.end;
    if x_check {
        push(&mut shape, &mut ns, b'-')?;
        push(&mut shape, &mut ns, b'X')?;
        end += 2;
    }
    let start = first.start - usize::from(lead.is_some());
    let w = Window { text, start, end, digits: digits.get(..nd)?, shape: shape.get(..ns)?, x_check };
    if !bounded(b, w.start + usize::from(lead.is_some()), w.end) {
        return None;
    }
    let entity = recognize(&w, enabled)?;
    Some(Hit { start: w.start, end: w.end, entity })
}

/// The entities decided here.
pub const NUMERIC: EntitySet = EntitySet::of(&[
    Entity::Cpf,
    Entity::Cnpj,
    Entity::Cns,
    Entity::CreditCard,
    Entity::TituloEleitor,
    Entity::Cnh,
    Entity::Pis,
    Entity::Rg,
    Entity::UsSsn,
    Entity::IpAddress,
    Entity::Phone,
]);

/// Strongest validator first: a window that is a valid CPF is not also tried as a phone.
fn recognize(w: &Window<'_>, enabled: EntitySet) -> Option<Entity> {
    type Check = fn(&Window<'_>) -> bool;
    // A CNH (which needs a context word) before the CPF: about one CNH in ten also passes the
    // CPF check digits, and the context word says which it is.
    let checks: [(Entity, Check); 11] = [
        (Entity::Cnh, super::cnh::matches),
        (Entity::Cpf, super::cpf::matches),
        (Entity::Cnpj, super::cnpj::matches),
        (Entity::Cns, super::cns::matches),
        (Entity::CreditCard, super::card::matches),
        (Entity::TituloEleitor, super::titulo::matches),
        (Entity::Pis, super::pis::matches),
        (Entity::Rg, super::rg::matches),
        (Entity::UsSsn, super::ssn::matches),
        (Entity::IpAddress, super::ip::matches_v4),
        (Entity::Phone, super::phone::matches),
    ];
    if w.x_check {
        return (enabled.contains(Entity::Rg) && super::rg::matches(w)).then_some(Entity::Rg);
    }
    checks.iter().find(|(entity, check)| enabled.contains(*entity) && check(w)).map(|(entity, _)| *entity)
}

#[cfg(test)]
pub(crate) fn find(text: &str) -> Vec<(Entity, &str)> {
    let mut hits = Vec::new();
    scan(text, EntitySet::ALL, &mut hits);
    hits.iter().map(|h| (h.entity, &text[h.start..h.end])).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_split_at_spaces_and_respect_words() {
        assert_eq!(
            find("CPF 529.982.247-25 e tel (11) 98765-4321."),
            vec![(Entity::Cpf, "529.982.247-25"), (Entity::Phone, "(11) 98765-4321")]
        );
        assert_eq!(find("em 2024 11 98765-4321"), vec![(Entity::Phone, "11 98765-4321")]);
        assert!(find("abc52998224725").is_empty());
        assert!(find("52998224725abc").is_empty());
        assert_eq!(find("+55 (11) 98765-4321"), vec![(Entity::Phone, "+55 (11) 98765-4321")]);
        assert!(find("versão 1.3.6.1.4.1 de 12/05/2024 custa R$ 1.234,56, CEP 01310-100").is_empty());
    }
}
