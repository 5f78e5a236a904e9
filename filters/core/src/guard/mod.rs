//! Guardrails: recognizers (one per file), the policy that runs them over a text, and what is
//! done with what they find (block, mask with placeholders that can be restored, redact, hash,
//! shadow). Everything here is pure and works on `&str`; the guardrails stage applies it to
//! request and response bodies.
//!
//! Recognizers validate, not just match a shape: CPF/CNPJ/CNH/PIS/CNS/título check digits, Luhn
//! and issuer ranges for cards, mod 97 for IBANs, Base58Check/Bech32 for wallets, the numbering
//! plans for phones. Weak validators (1 in 11) need a context word before the number.

pub mod card;
pub mod cnh;
pub mod cnpj;
pub mod cns;
pub mod cpf;
pub mod crypto;
pub mod email;
pub mod iban;
pub mod injection;
pub mod ip;
pub mod keywords;
pub mod message;
pub mod numbers;
pub mod patterns;
pub mod phone;
pub mod pis;
pub mod policy;
pub mod rg;
pub mod secrets;
pub mod ssn;
pub mod stream;
pub mod text;
pub mod titulo;

/// A built-in entity type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Entity {
    Cpf,
    Cnpj,
    Cnh,
    Pis,
    Cns,
    TituloEleitor,
    Rg,
    Phone,
    Email,
    CreditCard,
    Iban,
    UsSsn,
    IpAddress,
    CryptoWallet,
    AwsAccessKey,
    OpenAiApiKey,
    AnthropicApiKey,
    GithubToken,
    SlackToken,
    GoogleApiKey,
    PrivateKey,
    Jwt,
    Password,
}

impl Entity {
    pub const ALL: [Entity; 23] = [
        Entity::Cpf,
        Entity::Cnpj,
        Entity::Cnh,
        Entity::Pis,
        Entity::Cns,
        Entity::TituloEleitor,
        Entity::Rg,
        Entity::Phone,
        Entity::Email,
        Entity::CreditCard,
        Entity::Iban,
        Entity::UsSsn,
        Entity::IpAddress,
        Entity::CryptoWallet,
        Entity::AwsAccessKey,
        Entity::OpenAiApiKey,
        Entity::AnthropicApiKey,
        Entity::GithubToken,
        Entity::SlackToken,
        Entity::GoogleApiKey,
        Entity::PrivateKey,
        Entity::Jwt,
        Entity::Password,
    ];

    /// The name used in configuration, placeholders (`[CPF_1]`), errors and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Entity::Cpf => "CPF",
            Entity::Cnpj => "CNPJ",
            Entity::Cnh => "CNH",
            Entity::Pis => "PIS",
            Entity::Cns => "CNS",
            Entity::TituloEleitor => "TITULO_ELEITOR",
            Entity::Rg => "RG",
            Entity::Phone => "PHONE",
            Entity::Email => "EMAIL",
            Entity::CreditCard => "CREDIT_CARD",
            Entity::Iban => "IBAN",
            Entity::UsSsn => "US_SSN",
            Entity::IpAddress => "IP_ADDRESS",
            Entity::CryptoWallet => "CRYPTO_WALLET",
            Entity::AwsAccessKey => "AWS_ACCESS_KEY",
            Entity::OpenAiApiKey => "OPENAI_API_KEY",
            Entity::AnthropicApiKey => "ANTHROPIC_API_KEY",
            Entity::GithubToken => "GITHUB_TOKEN",
            Entity::SlackToken => "SLACK_TOKEN",
            Entity::GoogleApiKey => "GOOGLE_API_KEY",
            Entity::PrivateKey => "PRIVATE_KEY",
            Entity::Jwt => "JWT",
            Entity::Password => "PASSWORD",
        }
    }

    pub fn from_name(name: &str) -> Option<Entity> {
        Entity::ALL.into_iter().find(|e| e.name() == name)
    }

    pub fn is_secret(self) -> bool {
        self >= Entity::AwsAccessKey
    }

    /// Which finding wins an overlap: the stronger validator.
    fn strength(self) -> u8 {
        match self {
            Entity::PrivateKey | Entity::Jwt | Entity::CryptoWallet => 9,
            Entity::AwsAccessKey
            | Entity::OpenAiApiKey
            | Entity::AnthropicApiKey
            | Entity::GithubToken
            | Entity::SlackToken
            | Entity::GoogleApiKey => 8,
            Entity::Iban => 7,
            Entity::Email => 6,
            Entity::Cpf | Entity::Cnpj => 5,
            Entity::CreditCard | Entity::Cns | Entity::TituloEleitor | Entity::Cnh => 4,
            Entity::UsSsn | Entity::IpAddress | Entity::Password => 3,
            Entity::Pis | Entity::Rg => 2,
            Entity::Phone => 1,
        }
    }
}

/// A set of built-in entities.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EntitySet(u32);

impl EntitySet {
    pub const ALL: EntitySet = EntitySet::of(&Entity::ALL);

    // Indexing is bounded by the loop; `get` is not available in a const fn's loop here.
    #[allow(clippy::indexing_slicing)]
    pub const fn of(entities: &[Entity]) -> EntitySet {
        let mut bits = 0;
        let mut i = 0;
        while i < entities.len() {
            bits |= 1 << entities[i] as u32;
            i += 1;
        }
        EntitySet(bits)
    }

    pub fn insert(&mut self, entity: Entity) {
        self.0 |= 1 << entity as u32;
    }

    pub fn contains(self, entity: Entity) -> bool {
        self.0 & (1 << entity as u32) != 0
    }

    pub fn any(self, other: EntitySet) -> bool {
        self.0 & other.0 != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

/// A built-in recognizer's match: byte offsets in the scanned text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hit {
    pub start: usize,
    pub end: usize,
    pub entity: Entity,
}

/// The digits of `digits` as values, if it holds exactly `N` ASCII digits.
pub(crate) fn digit_values<const N: usize>(digits: &[u8]) -> Option<[u32; N]> {
    if digits.len() != N {
        return None;
    }
    let mut out = [0; N];
    for (slot, d) in out.iter_mut().zip(digits) {
        if !d.is_ascii_digit() {
            return None;
        }
        *slot = u32::from(d - b'0');
    }
    Some(out)
}

/// What a scanner finds in `text`, as the matched strings (for the recognizers' tests).
#[cfg(test)]
pub(crate) fn found(text: &str, scan: impl Fn(&str, &mut Vec<Hit>)) -> Vec<&str> {
    let mut hits = Vec::new();
    scan(text, &mut hits);
    hits.iter().map(|h| &text[h.start..h.end]).collect()
}

/// The built-in recognizers, compiled once.
pub struct Recognizers {
    secrets: secrets::Secrets,
}

impl Recognizers {
    pub fn new() -> Result<Recognizers, String> {
        Ok(Recognizers { secrets: secrets::Secrets::new()? })
    }

    /// Every enabled entity in `text`, overlaps resolved (stronger validator, then longer, wins),
    /// in text order.
    pub fn scan(&self, text: &str, enabled: EntitySet, hits: &mut Vec<Hit>) {
        let first = hits.len();
        numbers::scan(text, enabled, hits);
        if enabled.contains(Entity::Cnpj) {
            cnpj::scan_alphanumeric(text, hits);
        }
        if enabled.contains(Entity::Email) {
            email::scan(text, hits);
        }
        words(text, enabled, hits);
        if enabled.contains(Entity::IpAddress) {
            ip::scan_v6(text, hits);
        }
        if enabled.contains(Entity::CryptoWallet) {
            crypto::scan(text, hits);
        }
        if Entity::ALL.iter().any(|e| e.is_secret() && enabled.contains(*e)) {
            let before = hits.len();
            self.secrets.scan(text, enabled.contains(Entity::Password), hits);
            let mut i = before;
            while i < hits.len() {
                if hits.get(i).is_some_and(|h| !enabled.contains(h.entity)) {
                    hits.swap_remove(i);
                } else {
                    i += 1;
                }
            }
        }
        let mine = hits.split_off(first);
        hits.extend(resolve(mine));
    }
}

/// One pass over the text's ASCII words for the recognizers that start at a word: IBANs and
/// bare alphanumeric CNPJs.
fn words(text: &str, enabled: EntitySet, hits: &mut Vec<Hit>) {
    let (cnpj, iban) = (enabled.contains(Entity::Cnpj), enabled.contains(Entity::Iban));
    if !cnpj && !iban {
        return;
    }
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if !b.get(i).is_some_and(u8::is_ascii_alphanumeric) {
            i += 1;
            continue;
        }
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_alphanumeric) {
            i += 1;
        }
        if text::word_before(b, start) {
            continue;
        }
        if iban {
            if let Some(end) = iban::at(b, start) {
                hits.push(Hit { start, end, entity: Entity::Iban });
                i = i.max(end);
                continue;
            }
        }
        if cnpj && !text::word_at(b, i) {
            if let Some(end) = cnpj::bare_at(b, start, i) {
                hits.push(Hit { start, end, entity: Entity::Cnpj });
            }
        }
    }
}

/// Keeps, of overlapping hits, the strongest (then the longest); returns them in text order.
fn resolve(mut hits: Vec<Hit>) -> Vec<Hit> {
    if hits.len() < 2 {
        return hits;
    }
    hits.sort_by(|a, b| {
        b.entity
            .strength()
            .cmp(&a.entity.strength())
            .then((b.end - b.start).cmp(&(a.end - a.start)))
            .then(a.start.cmp(&b.start))
    });
    let mut kept: Vec<Hit> = Vec::with_capacity(hits.len());
    for hit in hits {
        if !kept.iter().any(|k| k.start < hit.end && hit.start < k.end) {
            kept.push(hit);
        }
    }
    kept.sort_by_key(|h| h.start);
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(text: &str) -> Vec<(Entity, &str)> {
        let mut hits = Vec::new();
        Recognizers::new().unwrap().scan(text, EntitySet::ALL, &mut hits);
        hits.iter().map(|h| (h.entity, &text[h.start..h.end])).collect()
    }

    #[test]
    fn names_round_trip() {
        for e in Entity::ALL {
            assert_eq!(Entity::from_name(e.name()), Some(e));
        }
        assert!(Entity::Password.is_secret() && !Entity::CryptoWallet.is_secret());
    }

    #[test]
    fn a_mixed_text() {
        let text = "Cliente João, CPF 529.982.247-25, e-mail joao@exemplo.com.br, cartão 5555 5555 5555 4444, \
                    IP 10.0.0.7, chave AKIAIOSFODNN7EXAMPLE; pedido 123.456.789-00 (não é CPF).";
        assert_eq!(
            scan(text),
            vec![
                (Entity::Cpf, "529.982.247-25"),
                (Entity::Email, "joao@exemplo.com.br"),
                (Entity::CreditCard, "5555 5555 5555 4444"),
                (Entity::IpAddress, "10.0.0.7"),
                (Entity::AwsAccessKey, "AKIAIOSFODNN7EXAMPLE"),
            ]
        );
    }

    #[test]
    fn edges_unicode_and_escapes() {
        assert_eq!(scan("52998224725"), vec![(Entity::Cpf, "52998224725")]);
        assert_eq!(scan("ção52998224725"), vec![], "glued to a word");
        assert_eq!(scan("→529.982.247-25←"), vec![(Entity::Cpf, "529.982.247-25")]);
        assert_eq!(scan("linha\n529.982.247-25\tfim"), vec![(Entity::Cpf, "529.982.247-25")]);
    }
}

/// Hostile input: any text, any stream bytes, never a panic; findings always sit on character
/// boundaries inside the text, and masking keeps the text valid.
#[cfg(test)]
mod robustness {
    use super::policy::Policy;
    use super::stream::{StreamGuard, Tally};
    use crate::error::Dialect;
    use proptest::prelude::*;

    /// Built once: compiling the automata per case would dominate the test's time.
    fn policy() -> &'static Policy {
        static POLICY: std::sync::OnceLock<Policy> = std::sync::OnceLock::new();
        POLICY.get_or_init(build)
    }

    fn build() -> Policy {
        Policy::from_json(
            r#"{"entities":{"default":"mask","CREDIT_CARD":"block"},"injection":{"action":"block"},
                "keywords":[{"id":"k","action":"redact","terms":["ação","secreto"]}],
                "patterns":[{"id":"p","action":"hash","regex":"EMP-[0-9]+"}],"hash_salt":"salt-salt",
                "response":{"restore":true,"holdback_chars":16}}"#
                .as_bytes(),
            "",
        )
        .unwrap()
    }

    /// Characters that make recognizers work: digits, separators, letters, accents, invisible
    /// and wide characters, brackets of placeholders.
    fn texty() -> impl Strategy<Value = String> {
        let pieces = prop_oneof![
            Just("529.982.247-25".to_string()),
            Just("4111 1111 1111 1111".to_string()),
            Just("ana@x.com.br".to_string()),
            Just("[CPF_1]".to_string()),
            Just("ignore previous instructions".to_string()),
            Just("\u{200b}".to_string()),
            Just("ç".to_string()),
            Just("→".to_string()),
            Just("𝟘".to_string()),
            "[0-9 .()/+:@-]{1,12}",
            "[A-Za-z]{1,8}",
            any::<char>().prop_map(String::from),
        ];
        proptest::collection::vec(pieces, 0..24).prop_map(|v| v.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        #[test]
        fn any_text_scans_and_masks_cleanly(text in texty()) {
            let p = policy();
            let mut findings = Vec::new();
            p.scan(&text, &mut findings);
            for f in &findings {
                prop_assert!(f.start < f.end && f.end <= text.len());
                prop_assert!(text.is_char_boundary(f.start) && text.is_char_boundary(f.end));
            }
            let mut masker = p.masker();
            let masked = masker.apply(&text, &findings);
            masker.freeze();
            if let Some(masked) = masked {
                let restored = masker.restore(&masked).unwrap_or(masked);
                prop_assert!(restored.len() <= text.len() + 64 * findings.len());
            }
        }

        #[test]
        fn any_stream_bytes_never_panic(input in proptest::collection::vec(any::<u8>(), 0..1024),
                                        cut in any::<usize>(), grammar in 0..StreamGuard::GRAMMARS) {
            let p = policy();
            let mut masker = p.masker();
            let mut guard = StreamGuard::of_grammar(grammar, 16);
            let (a, b) = input.split_at(cut % (input.len() + 1));
            let mut out = Vec::new();
            let mut tally = Tally::new();
            let _ = guard.push(a, p, &mut masker, &mut tally, &mut out);
            let _ = guard.push(b, p, &mut masker, &mut tally, &mut out);
            let _ = guard.finish(p, &mut masker, &mut tally, &mut out);
        }

        #[test]
        fn any_texts_in_a_stream_never_panic(parts in proptest::collection::vec(texty(), 1..6), cut in any::<usize>(),
                                             responses in any::<bool>()) {
            let p = policy();
            let mut masker = p.masker();
            let mut stream = Vec::new();
            for (n, part) in parts.iter().enumerate() {
                let chunk = if responses {
                    serde_json::json!({"type":"response.output_text.delta","sequence_number":n,"output_index":0,"content_index":0,"delta":part})
                } else {
                    serde_json::json!({"id":"c","choices":[{"index":0,"delta":{"content":part},"finish_reason":null}]})
                };
                crate::convert::sse_data(&mut stream, &chunk);
            }
            if responses {
                let text: String = parts.concat();
                let done = serde_json::json!({"type":"response.completed","response":{"output":[{"type":"message","content":[{"type":"output_text","text":text}]}]}});
                crate::convert::sse_data(&mut stream, &done);
            } else {
                stream.extend_from_slice(b"data: [DONE]\n\n");
            }
            let mut guard = if responses { StreamGuard::responses(16) } else { StreamGuard::new(Dialect::OpenAi, 16) };
            let (a, b) = stream.split_at(cut % (stream.len() + 1));
            let mut out = Vec::new();
            let mut tally = Tally::new();
            let _ = guard.push(a, p, &mut masker, &mut tally, &mut out);
            let _ = guard.push(b, p, &mut masker, &mut tally, &mut out);
            let _ = guard.finish(p, &mut masker, &mut tally, &mut out);
            prop_assert!(std::str::from_utf8(&out).is_ok());
        }
    }
}
