//! Prompt-token estimation without a vocabulary.
//!
//! One pass over the text counts a few per-script features (word runs, letters, case changes,
//! digits, punctuation, whitespace, CJK, …); a linear model with weights fitted against o200k
//! (tiktoken) turns them into a token count. No tables beyond 128 bytes, a few KB of code.
//!
//! Speed: ASCII text, most of any prompt, code or JSON, is read 8 bytes at a time (SWAR):
//! character classes become byte masks, counts are popcounts, and run starts are masks ANDed
//! with their own shift; other text goes through a per-character path. Both paths compute the
//! same features (a property test checks it), so the estimate does not depend on which ran.
//!
//! Accuracy is measured, not assumed: `tests::estimator_error_against_tiktoken` compares it with
//! tiktoken-rs o200k on `testdata/estimator/corpus.jsonl` (English, Portuguese, Chinese, code and
//! JSON, plus Russian, Japanese and Korean; built by `tools/estimator_corpus.py`) and fails if
//! the held-out error regresses; the figures are in the README. Weights come from
//! `tests::fit_weights` (run with `--ignored`) on the even-indexed half of the corpus; the
//! odd-indexed half is held out.
//!
//! Known inaccuracies: base64 blobs and long runs of one character are overestimated (every
//! vocabulary-free estimator fails there); image parts are not counted (providers bill images
//! separately). The estimate never exceeds the byte length, which bounds every BPE tokenizer.

/// Feature vector; see [`FEATURES`] for the meaning of each slot.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Features {
    counts: [u32; N],
    bytes: u64,
}

const N: usize = 14;

/// Names of the feature slots, in order (used by the fitting tool's report).
pub const FEATURES: [&str; N] = [
    "segments",
    "word_runs",
    "ascii_letters",
    "case_changes",
    "digit_runs",
    "digits",
    "punct_runs",
    "punct",
    "space_runs",
    "newlines",
    "latin_ext",
    "greek_cyrillic",
    "cjk",
    "other",
];

const SEGMENTS: usize = 0;
const WORD_RUNS: usize = 1;
const ASCII_LETTERS: usize = 2;
const CASE_CHANGES: usize = 3;
const DIGIT_RUNS: usize = 4;
const DIGITS: usize = 5;
const PUNCT_RUNS: usize = 6;
const PUNCT: usize = 7;
const SPACE_RUNS: usize = 8;
const NEWLINES: usize = 9;
const LATIN_EXT: usize = 10;
const GREEK_CYRILLIC: usize = 11;
const CJK: usize = 12;
const OTHER: usize = 13;

/// Weights fitted by `tests::fit_weights` against tiktoken-rs 0.12 o200k_base.
const WEIGHTS: [f64; N] =
    [0.0, 0.7351, -0.0220, 1.2408, 1.4944, 0.0451, 0.8196, 0.0721, 0.4436, 0.7388, 1.0280, 0.2368, 0.7199, 2.0919];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    Letter { upper: bool },
    LatinExt,
    Digit,
    Punct,
    Space,
    Newline,
    GreekCyrillic,
    Cjk,
    Other,
}

/// `classify` for every ASCII byte, computed at compile time.
#[allow(clippy::indexing_slicing)] // b < 128 = the table's length; const blocks cannot use get_mut
const ASCII_CLASS: [Class; 128] = {
    let mut table = [Class::Punct; 128];
    let mut b = 0;
    while b < 128 {
        table[b] = classify(b as u8 as char);
        b += 1;
    }
    table
};

const fn classify(c: char) -> Class {
    match c {
        'a'..='z' => Class::Letter { upper: false },
        'A'..='Z' => Class::Letter { upper: true },
        '0'..='9' => Class::Digit,
        ' ' => Class::Space,
        '\n' | '\r' | '\t' => Class::Newline,
        _ if c.is_ascii() => Class::Punct,
        '\u{00C0}'..='\u{024F}' | '\u{1E00}'..='\u{1EFF}' => Class::LatinExt,
        '\u{0370}'..='\u{03FF}' | '\u{0400}'..='\u{052F}' => Class::GreekCyrillic,
        '\u{2E80}'..='\u{9FFF}' | '\u{AC00}'..='\u{D7AF}' | '\u{F900}'..='\u{FAFF}' | '\u{FF00}'..='\u{FFEF}' => {
            Class::Cjk
        }
        _ if c.is_whitespace() => Class::Space,
        _ => Class::Other,
    }
}

/// Running state between characters: the class of the previous one.
type Previous = Option<Class>;

/// Adds one character's features (the per-character path).
fn step(c: &mut [u32; N], previous: &mut Previous, class: Class) {
    let continues_word = matches!(previous, Some(Class::Letter { .. } | Class::LatinExt));
    match class {
        Class::Letter { upper } => {
            c[ASCII_LETTERS] += 1;
            if !continues_word {
                c[WORD_RUNS] += 1;
            } else if upper && *previous == Some(Class::Letter { upper: false }) {
                c[CASE_CHANGES] += 1;
            }
        }
        Class::LatinExt => {
            c[LATIN_EXT] += 1;
            if !continues_word {
                c[WORD_RUNS] += 1;
            }
        }
        Class::Digit => {
            c[DIGITS] += 1;
            if *previous != Some(Class::Digit) {
                c[DIGIT_RUNS] += 1;
            }
        }
        Class::Punct => {
            c[PUNCT] += 1;
            if *previous != Some(Class::Punct) {
                c[PUNCT_RUNS] += 1;
            }
        }
        Class::Space => {
            if *previous != Some(Class::Space) {
                c[SPACE_RUNS] += 1;
            }
        }
        Class::Newline => c[NEWLINES] += 1,
        Class::GreekCyrillic => c[GREEK_CYRILLIC] += 1,
        Class::Cjk => c[CJK] += 1,
        Class::Other => c[OTHER] += 1,
    }
    *previous = Some(class);
}

const HIGH: u64 = 0x8080_8080_8080_8080;
const LOW: u64 = 0x0101_0101_0101_0101;

/// High bit of each byte set where the byte is `>= c` (valid for ASCII bytes, `c <= 0x80`).
#[inline(always)]
fn at_least(w: u64, c: u8) -> u64 {
    w.wrapping_add(LOW.wrapping_mul(u64::from(0x80 - c))) & HIGH
}

/// High bit of each byte set where `lo <= byte <= hi`.
#[inline(always)]
fn between(w: u64, lo: u8, hi: u8) -> u64 {
    at_least(w, lo) & !at_least(w, hi + 1)
}

/// Per-byte-lane counters of the SWAR path: each lane counts one byte position of every word
/// (≤ 31 per lane between flushes, so the multiply horizontal sum cannot overflow).
#[derive(Default, Clone, Copy)]
struct Lanes {
    letters: u64,
    word_runs: u64,
    case_changes: u64,
    digits: u64,
    digit_runs: u64,
    punct: u64,
    punct_runs: u64,
    space_runs: u64,
    newlines: u64,
}

/// Sum of the 8 byte lanes of `lanes` (each lane < 32).
#[inline(always)]
fn lane_sum(lanes: u64) -> u32 {
    (lanes.wrapping_mul(LOW) >> 56) as u32
}

impl Lanes {
    fn flush(&mut self, c: &mut [u32; N]) {
        c[ASCII_LETTERS] += lane_sum(self.letters);
        c[WORD_RUNS] += lane_sum(self.word_runs);
        c[CASE_CHANGES] += lane_sum(self.case_changes);
        c[DIGITS] += lane_sum(self.digits);
        c[DIGIT_RUNS] += lane_sum(self.digit_runs);
        c[PUNCT] += lane_sum(self.punct);
        c[PUNCT_RUNS] += lane_sum(self.punct_runs);
        c[SPACE_RUNS] += lane_sum(self.space_runs);
        c[NEWLINES] += lane_sum(self.newlines);
        *self = Lanes::default();
    }
}

/// The SWAR path: counts the features of the longest run of whole 8-byte ASCII words at the
/// start of `bytes` (equal to a `step` per byte) and returns how many bytes it consumed. Run
/// carries between words are kept as the previous word's top-byte bits; the `previous` class is
/// read at the start of the run and set at its end.
fn ascii_run(c: &mut [u32; N], previous: &mut Previous, bytes: &[u8]) -> usize {
    let bit = |yes: bool| if yes { 0x80u64 } else { 0 };
    let prev = *previous;
    let mut carry_word = bit(matches!(prev, Some(Class::Letter { .. } | Class::LatinExt)));
    let mut carry_lower = bit(prev == Some(Class::Letter { upper: false }));
    let mut carry_digit = bit(prev == Some(Class::Digit));
    let mut carry_punct = bit(prev == Some(Class::Punct));
    let mut carry_space = bit(prev == Some(Class::Space));
    let mut lanes = Lanes::default();
    let mut in_lanes = 0;
    let mut consumed = 0;
    for word in bytes.chunks_exact(8) {
        let mut buf = [0u8; 8];
        buf.copy_from_slice(word);
        let w = u64::from_le_bytes(buf);
        if w & HIGH != 0 {
            break;
        }
        let lower = between(w, b'a', b'z');
        let upper = between(w, b'A', b'Z');
        let letters = lower | upper;
        let digits = between(w, b'0', b'9');
        let space = between(w, b' ', b' ');
        let newline = between(w, b'\t', b'\n') | between(w, b'\r', b'\r');
        let punct = HIGH & !(letters | digits | space | newline);
        lanes.letters += letters >> 7;
        lanes.word_runs += (letters & !((letters << 8) | carry_word)) >> 7;
        lanes.case_changes += (upper & ((lower << 8) | carry_lower)) >> 7;
        lanes.digits += digits >> 7;
        lanes.digit_runs += (digits & !((digits << 8) | carry_digit)) >> 7;
        lanes.punct += punct >> 7;
        lanes.punct_runs += (punct & !((punct << 8) | carry_punct)) >> 7;
        lanes.space_runs += (space & !((space << 8) | carry_space)) >> 7;
        lanes.newlines += newline >> 7;
        carry_word = (letters >> 56) & 0x80;
        carry_lower = (lower >> 56) & 0x80;
        carry_digit = (digits >> 56) & 0x80;
        carry_punct = (punct >> 56) & 0x80;
        carry_space = (space >> 56) & 0x80;
        consumed += 8;
        in_lanes += 1;
        if in_lanes == 31 {
            lanes.flush(c);
            in_lanes = 0;
        }
    }
    lanes.flush(c);
    if consumed > 0 {
        *previous = bytes.get(consumed - 1).and_then(|b| ASCII_CLASS.get(usize::from(*b))).copied();
    }
    consumed
}

impl Features {
    /// Adds the features of one text segment (a message, a part, a field).
    pub fn add_str(&mut self, text: &str) {
        if text.is_empty() {
            return;
        }
        self.bytes += text.len() as u64;
        let c = &mut self.counts;
        c[SEGMENTS] += 1;
        let mut previous: Previous = None;
        let bytes = text.as_bytes();
        let mut i = 0;
        while let Some(&byte) = bytes.get(i) {
            if byte < 0x80 {
                let consumed = ascii_run(c, &mut previous, bytes.get(i..).unwrap_or(&[]));
                if consumed > 0 {
                    i += consumed;
                    continue;
                }
            }
            let class = if byte < 0x80 {
                i += 1;
                ASCII_CLASS.get(usize::from(byte)).copied().unwrap_or(Class::Punct)
            } else {
                let ch = text.get(i..).and_then(|rest| rest.chars().next()).unwrap_or('\u{FFFD}');
                i += ch.len_utf8().max(1);
                classify(ch)
            };
            step(c, &mut previous, class);
        }
    }

    /// The per-character path alone (the reference the SWAR path must equal).
    #[cfg(test)]
    fn add_str_scalar(&mut self, text: &str) {
        if text.is_empty() {
            return;
        }
        self.bytes += text.len() as u64;
        self.counts[SEGMENTS] += 1;
        let mut previous: Previous = None;
        for ch in text.chars() {
            step(&mut self.counts, &mut previous, classify(ch));
        }
    }

    /// Adds another feature vector (e.g. several messages of one request).
    pub fn merge(&mut self, other: &Features) {
        for (a, b) in self.counts.iter_mut().zip(other.counts.iter()) {
            *a += b;
        }
        self.bytes += other.bytes;
    }

    /// Estimated token count: the fitted linear model, clamped to `[0, bytes]`.
    pub fn estimate(&self) -> u64 {
        let raw: f64 = self.counts.iter().zip(WEIGHTS.iter()).map(|(c, w)| f64::from(*c) * w).sum();
        let rounded = raw.round().max(0.0) as u64;
        rounded.min(self.bytes)
    }

    #[cfg(all(test, not(target_arch = "wasm32")))]
    fn vector(&self) -> [f64; N] {
        self.counts.map(f64::from)
    }
}

/// Estimated tokens of one text.
pub fn estimate_tokens(text: &str) -> u64 {
    let mut features = Features::default();
    features.add_str(text);
    features.estimate()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_text_is_zero_and_never_above_bytes() {
        assert_eq!(estimate_tokens(""), 0);
        for text in ["a", "!!!!!!!!", "世界", "    \n\n\t", "0", "é"] {
            assert!(estimate_tokens(text) <= text.len() as u64, "{text:?}");
        }
    }

    #[test]
    fn more_text_never_estimates_fewer_tokens() {
        let base = "The quick brown fox jumps over the lazy dog. ";
        let mut last = 0;
        for n in 1..20 {
            let estimate = estimate_tokens(&base.repeat(n));
            assert!(estimate >= last);
            last = estimate;
        }
    }

    #[test]
    fn swar_and_scalar_paths_count_the_same_features() {
        for text in [
            "Hello World, getWeather(x=123456, y=7) -- olá mundo!\n\tEnd.",
            "aaaaaaaaBBBBBBBB12345678        !!!!!!!!\r\n\r\n",
            "ação e CORAÇÃO ünïcödé 世界 Привет 😀 12 3",
            "x",
            "{\"model\":\"gpt-4o\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}",
        ] {
            let (mut swar, mut scalar) = (Features::default(), Features::default());
            swar.add_str(text);
            scalar.add_str_scalar(text);
            assert_eq!(swar, scalar, "{text:?}");
        }
    }

    mod prop {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn swar_equals_scalar_on_any_text(text in "[ -~\\n\\t\\ráéçÇ世界Ж😀]{0,64}") {
                let (mut swar, mut scalar) = (Features::default(), Features::default());
                swar.add_str(&text);
                scalar.add_str_scalar(&text);
                prop_assert_eq!(swar, scalar);
            }
        }
    }

    #[test]
    fn features_add_up_across_segments() {
        let mut split = Features::default();
        split.add_str("Hello world, ");
        split.add_str("olá mundo 世界 12345");
        let mut other = Features::default();
        other.add_str("Hello world, ");
        let mut rest = Features::default();
        rest.add_str("olá mundo 世界 12345");
        other.merge(&rest);
        assert_eq!(split, other);
    }

    #[cfg(not(target_arch = "wasm32"))]
    mod against_tiktoken {
        use super::*;

        struct Entry {
            lang: String,
            text: String,
            tokens: f64,
        }

        fn corpus() -> Vec<Entry> {
            let bpe = tiktoken_rs::o200k_base().unwrap();
            let path = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/estimator/corpus.jsonl");
            std::fs::read_to_string(path)
                .unwrap()
                .lines()
                .map(|line| {
                    let v: serde_json::Value = serde_json::from_str(line).unwrap();
                    let text = v["text"].as_str().unwrap().to_string();
                    let tokens = bpe.encode_ordinary(&text).len() as f64;
                    Entry { lang: v["lang"].as_str().unwrap().to_string(), text, tokens }
                })
                .collect()
        }

        fn features(text: &str) -> Features {
            let mut f = Features::default();
            f.add_str(text);
            f
        }

        /// Mean absolute percentage error of `estimate` over `entries`.
        fn mape<'a>(entries: impl Iterator<Item = &'a Entry>, estimate: impl Fn(&str) -> f64) -> (f64, usize) {
            let errors: Vec<f64> = entries.map(|e| ((estimate(&e.text) - e.tokens) / e.tokens).abs()).collect();
            (100.0 * errors.iter().sum::<f64>() / errors.len().max(1) as f64, errors.len())
        }

        /// Held-out error per language, and the bytes/4 baseline. Fails on regression.
        #[test]
        fn estimator_error_against_tiktoken() {
            let corpus = corpus();
            let held_out: Vec<&Entry> = corpus.iter().skip(1).step_by(2).collect();
            let ours = |t: &str| features(t).estimate() as f64;
            let bytes4 = |t: &str| (t.len() as f64 / 4.0).round();
            println!("estimator vs tiktoken-rs o200k_base, held-out half of the corpus (MAPE %):");
            println!("{:<8} {:>6} {:>10} {:>10}", "kind", "n", "tollgate", "bytes/4");
            for lang in ["en", "pt", "zh", "code", "json", "ru", "ja", "ko"] {
                let (ours_mape, n) = mape(held_out.iter().copied().filter(|e| e.lang == lang), ours);
                let (b4, _) = mape(held_out.iter().copied().filter(|e| e.lang == lang), bytes4);
                println!("{lang:<8} {n:>6} {ours_mape:>10.1} {b4:>10.1}");
                assert!(ours_mape < 10.0, "{lang}: {ours_mape:.1}% MAPE");
            }
            let (all, n) = mape(held_out.iter().copied(), ours);
            let (all_b4, _) = mape(held_out.iter().copied(), bytes4);
            let (big, nbig) = mape(held_out.iter().copied().filter(|e| e.tokens >= 100.0), ours);
            println!("{:<8} {n:>6} {all:>10.1} {all_b4:>10.1}", "all");
            println!("{:<8} {nbig:>6} {big:>10.1}", ">=100tok");
            let estimated: f64 = held_out.iter().map(|e| ours(&e.text)).sum();
            let exact: f64 = held_out.iter().map(|e| e.tokens).sum();
            println!(
                "aggregate error (sum of estimates vs sum of counts): {:+.1}%",
                100.0 * (estimated - exact) / exact
            );
            assert!(all < 6.0, "held-out MAPE {all:.1}% (bytes/4: {all_b4:.1}%)");
            assert!(all < all_b4 / 2.0, "must be well ahead of bytes/4");
        }

        /// Fits WEIGHTS by least squares on relative error over the even-indexed half.
        /// `cargo test -p tollgate-core fit_weights -- --ignored --nocapture`
        #[test]
        #[ignore]
        fn fit_weights() {
            let corpus = corpus();
            let train: Vec<&Entry> = corpus.iter().step_by(2).collect();
            // Minimise Σ (w·x/y − 1)²: normal equations A w = b with rows x/y.
            let mut a = [[0.0f64; N]; N];
            let mut b = [0.0f64; N];
            for entry in &train {
                let x = features(&entry.text).vector().map(|v| v / entry.tokens);
                for i in 0..N {
                    b[i] += x[i];
                    for j in 0..N {
                        a[i][j] += x[i] * x[j];
                    }
                }
            }
            // Ridge term keeps unused features (e.g. Greek/Cyrillic absent from the corpus) at 0.
            for (i, row) in a.iter_mut().enumerate() {
                row[i] += 1e-3;
            }
            // No per-segment intercept: a request is many short segments (messages, parts) and
            // a negative intercept fitted on whole documents would undercount it.
            a[SEGMENTS] = [0.0; N];
            a[0][0] = 1.0;
            b[0] = 0.0;
            for row in a.iter_mut().skip(1) {
                row[0] = 0.0;
            }
            let w = solve(a, b);
            println!("const WEIGHTS: [f64; N] = [");
            for (name, weight) in FEATURES.iter().zip(w.iter()) {
                println!("    {weight:.4}, // {name}");
            }
            println!("];");
        }

        fn solve(mut a: [[f64; N]; N], mut b: [f64; N]) -> [f64; N] {
            for col in 0..N {
                let pivot = (col..N).max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs())).unwrap();
                a.swap(col, pivot);
                b.swap(col, pivot);
                let pivot_row = a[col];
                let pivot_b = b[col];
                for (row, (a_row, b_row)) in a.iter_mut().zip(b.iter_mut()).enumerate() {
                    if row != col && pivot_row[col] != 0.0 {
                        let f = a_row[col] / pivot_row[col];
                        for (x, p) in a_row.iter_mut().zip(pivot_row.iter()) {
                            *x -= f * p;
                        }
                        *b_row -= f * pivot_b;
                    }
                }
            }
            let mut w = [0.0; N];
            for i in 0..N {
                w[i] = if a[i][i] == 0.0 { 0.0 } else { b[i] / a[i][i] };
            }
            w
        }
    }
}
