//! Native throughput of the guardrails' default detector set (every built-in entity + the
//! injection heuristics, as in examples/guardrails/lgpd-mask.yaml), single thread:
//!
//!   cargo run --release -p tollgate-core --example guard_throughput
//!
//! Two texts: prose as prompts are written (English, Portuguese, code, JSON; no personal
//! data), and the PII evaluation corpus (every sentence holds PII or a decoy: the worst case).
//! Prints MB/s for each; the issue's target is ≥ 100 MB/s.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::time::Instant;
use tollgate_core::guard::policy::Policy;

const PROSE: &str = "The gateway reads each request once and never buffers a stream. Explain, step by step, \
how a reverse proxy balances load across upstream hosts, and why retries need budgets. \
O gateway lê cada requisição uma vez e nunca guarda o fluxo inteiro; explique como funciona a \
autenticação por chave de API e quais são os limites de uso por equipe. \
fn main() { let v: Vec<u32> = (0..10).map(|x| x * 2).collect(); println!(\"{:?}\", v); } \
{\"model\": \"gpt-4o\", \"temperature\": 0.2, \"max_tokens\": 512, \"items\": [1, 2, 3]} \
Version 1.2.3 released on 2024-05-12 at 10:30; see section 4.1 and table 7 for details. ";

fn measure(policy: &Policy, texts: &[String]) -> f64 {
    let bytes: usize = texts.iter().map(String::len).sum();
    let mut findings = Vec::new();
    let mut found = 0;
    // Warm-up, then at least 0.5 s of work.
    for text in texts.iter().take(100) {
        policy.scan(text, &mut findings);
        findings.clear();
    }
    let started = Instant::now();
    let mut rounds = 0;
    while started.elapsed().as_secs_f64() < 0.5 || rounds == 0 {
        for text in texts {
            policy.scan(text, &mut findings);
            found += findings.len();
            findings.clear();
        }
        rounds += 1;
    }
    let seconds = started.elapsed().as_secs_f64();
    std::hint::black_box(found);
    (bytes * rounds) as f64 / seconds / 1e6
}

fn main() {
    let policy = Policy::from_json(br#"{"entities":{"default":"mask"},"injection":{"action":"block"}}"#, "").unwrap();
    // Prompts of about 1 KB.
    let prose: Vec<String> = (0..256).map(|i| format!("{i} {}", PROSE.repeat(2))).collect();
    let corpus_path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/guardrails/pii-eval.jsonl");
    let corpus: Vec<String> = std::fs::read_to_string(corpus_path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["text"].as_str().unwrap().to_string())
        .collect();
    if std::env::var("GUARD_PARTS").is_ok() {
        for (name, json) in [
            ("entities", r#"{"entities":{"default":"mask"}}"#),
            ("injection", r#"{"injection":{"action":"block"}}"#),
            ("cpf", r#"{"entities":{"CPF":"mask"}}"#),
            ("email", r#"{"entities":{"EMAIL":"mask"}}"#),
            ("cnpj", r#"{"entities":{"CNPJ":"mask"}}"#),
            ("iban", r#"{"entities":{"IBAN":"mask"}}"#),
            ("crypto", r#"{"entities":{"CRYPTO_WALLET":"mask"}}"#),
            ("ip", r#"{"entities":{"IP_ADDRESS":"mask"}}"#),
            ("secrets", r#"{"entities":{"AWS_ACCESS_KEY":"mask","PASSWORD":"mask"}}"#),
        ] {
            let p = Policy::from_json(json.as_bytes(), "").unwrap();
            println!("{name}: {:.1} MB/s", measure(&p, &prose));
        }
    }
    // Medians of five runs: the machine is shared and noisy.
    let median = |policy: &Policy, texts: &[String]| {
        let mut runs: Vec<f64> = (0..5).map(|_| measure(policy, texts)).collect();
        runs.sort_by(f64::total_cmp);
        runs[2]
    };
    let entities = Policy::from_json(br#"{"entities":{"default":"mask"}}"#, "").unwrap();
    let prose_mbs = median(&policy, &prose);
    let entities_mbs = median(&entities, &prose);
    let corpus_mbs = median(&policy, &corpus);
    println!(
        "{{\"prose_mb_per_s\": {prose_mbs:.1}, \"prose_entities_only_mb_per_s\": {entities_mbs:.1}, \"pii_corpus_mb_per_s\": {corpus_mbs:.1}}}"
    );
}
