//! Deny lists of keywords and phrases, with allow-list exceptions, matched with one Aho-Corasick
//! automaton over the folded text (lower case, accents and invisible characters removed: `Instruções`,
//! `instrucoes` and `INSTRU\u{200b}ÇÕES` are one word), as whole words. The automaton is built
//! once at configuration time; thousands of terms cost a larger automaton, not a slower scan.
//! Leftmost-longest matching lets an allowed phrase (`kill process`) shadow a denied word
//! inside it (`kill`).

use super::text::{bounded, Folded};
use aho_corasick::{AhoCorasick, MatchKind};

/// A keyword hit in the original text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeywordHit {
    pub start: usize,
    pub end: usize,
    /// Index of the rule whose deny list matched.
    pub rule: usize,
}

pub struct Keywords {
    automaton: AhoCorasick,
    /// Per pattern: the rule it belongs to, or `None` for an allow-list phrase.
    owners: Vec<Option<usize>>,
}

/// Folds a configured term the way texts are folded; `None` if nothing is left.
pub fn fold_term(term: &str) -> Option<String> {
    let folded = Folded::new(term.trim()).text.into_owned();
    (!folded.is_empty()).then_some(folded)
}

impl Keywords {
    /// `rules`: per rule, its deny terms and its allow terms. Terms are folded here.
    pub fn new(rules: &[(Vec<String>, Vec<String>)]) -> Result<Keywords, String> {
        let mut patterns = Vec::new();
        let mut owners = Vec::new();
        for (index, (deny, allow)) in rules.iter().enumerate() {
            for term in deny.iter().filter_map(|t| fold_term(t)) {
                patterns.push(term);
                owners.push(Some(index));
            }
            for term in allow.iter().filter_map(|t| fold_term(t)) {
                patterns.push(term);
                owners.push(None);
            }
        }
        let automaton = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .ascii_case_insensitive(true)
            .kind(Some(aho_corasick::AhoCorasickKind::DFA))
            .build(&patterns)
            .map_err(|e| e.to_string())?;
        Ok(Keywords { automaton, owners })
    }

    pub fn scan(&self, folded: &Folded, hits: &mut Vec<KeywordHit>) {
        let hay = folded.text.as_bytes();
        for m in self.automaton.find_iter(hay) {
            let Some(Some(rule)) = self.owners.get(m.pattern().as_usize()) else { continue };
            if !bounded(hay, m.start(), m.end()) {
                continue;
            }
            let (start, end) = folded.original(m.start(), m.end());
            hits.push(KeywordHit { start, end, rule: *rule });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn find(rules: &[(Vec<String>, Vec<String>)], text: &str) -> Vec<(usize, String)> {
        let keywords = Keywords::new(rules).unwrap();
        let mut hits = Vec::new();
        keywords.scan(&Folded::new(text), &mut hits);
        hits.iter().map(|h| (h.rule, text[h.start..h.end].to_string())).collect()
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn folded_whole_words_with_exceptions() {
        let rules =
            vec![(strings(&["projeto sigiloso", "kill"]), strings(&["kill process"])), (strings(&["Ação"]), vec![])];
        assert_eq!(find(&rules, "O PROJETO  SIGILOSO"), vec![]);
        assert_eq!(find(&rules, "sobre o Projeto Sigiloso."), vec![(0, "Projeto Sigiloso".into())]);
        assert_eq!(find(&rules, "kill it, then kill process 7"), vec![(0, "kill".into())]);
        assert_eq!(find(&rules, "skill"), vec![]);
        assert_eq!(find(&rules, "uma ACAO e uma ação"), vec![(1, "ACAO".into()), (1, "ação".into())]);
    }

    #[test]
    fn thousands_of_terms() {
        let deny: Vec<String> = (0..5000).map(|i| format!("termo{i}")).collect();
        let rules = vec![(deny, vec![])];
        assert_eq!(find(&rules, "x termo4999 y termo5000"), vec![(0, "termo4999".into())]);
    }
}
