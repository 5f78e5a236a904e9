//! `tollgate`: the offline side of the filters, on the same core code.
//!
//! ```text
//! tollgate guard --config FILE        JSON lines in ({"text": …} or a chat request), one decision per line out
//! tollgate validate --filter NAME --config FILE
//! tollgate schema --filter NAME [--markdown]    the JSON Schema of NAME's configuration
//! tollgate schema --write                       regenerate schemas/ and the README tables
//! ```
//! Configuration files are YAML or JSON. A guardrails file is the guardrails section itself, or
//! an all-in-one configuration with a `guardrails` section.

// Built for wasm32 its binary would be `tollgate.wasm`, overwriting the all-in-one module of the
// same name in target/wasm32-wasip1/release: build the modules with `make build` (or `-p`).
#[cfg(target_arch = "wasm32")]
compile_error!(
    "tollgate-cli is a native tool; build the filter modules with `make build` or `cargo build -p <module>`"
);

use serde_json::{json, Value};
use std::io::{BufRead, Write};
use std::process::ExitCode;
use tollgate_core::guard::message;
use tollgate_core::guard::policy::{Finding, Policy};
use tollgate_core::guard::text::code_points;
use tollgate_core::route::ApiKind;

const USAGE: &str = "usage:
  tollgate guard --config FILE             read JSON lines on stdin: {\"text\": \"...\"} or an OpenAI chat request;
                                           write one JSON line each: {\"decision\", \"findings\", \"text\"}
  tollgate validate --filter NAME --config FILE
                                           NAME: token-counter | guardrails | provider-rewrite | quota | tollgate
  tollgate schema --filter NAME [--markdown]
                                           print the JSON Schema of NAME's configuration (or its README table)
  tollgate schema --write                  regenerate schemas/*.schema.json and the README tables (run from the repository)";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("guard") => flag(&args, "--config").and_then(|path| guard(&path)),
        Some("validate") => flag(&args, "--filter")
            .and_then(|filter| flag(&args, "--config").map(|path| (filter, path)))
            .and_then(|(filter, path)| validate(&filter, &path)),
        Some("schema") if args.iter().any(|a| a == "--write") => write_schemas(),
        Some("schema") => {
            flag(&args, "--filter").and_then(|filter| schema(&filter, args.iter().any(|a| a == "--markdown")))
        }
        _ => Err(USAGE.to_string()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("tollgate: {message}");
            ExitCode::FAILURE
        }
    }
}

fn flag(args: &[String], name: &str) -> Result<String, String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
        .ok_or_else(|| format!("missing {name}\n{USAGE}"))
}

/// The file as JSON bytes (YAML is converted; JSON is YAML).
fn read_config(path: &str) -> Result<Value, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    serde_yaml::from_str::<Value>(&text).map_err(|e| format!("{path}: {e}"))
}

fn guardrails_section(config: Value) -> (Value, &'static str) {
    match config {
        Value::Object(mut object) if object.contains_key("guardrails") => {
            (object.remove("guardrails").unwrap_or(Value::Null), "guardrails.")
        }
        other => (other, ""),
    }
}

fn to_bytes(value: &Value) -> Result<Vec<u8>, String> {
    serde_json::to_vec(value).map_err(|e| e.to_string())
}

fn schema(filter: &str, markdown: bool) -> Result<(), String> {
    let unknown = || format!("unknown filter '{filter}'\n{USAGE}");
    if markdown {
        print!("{}", tollgate_core::schema::markdown(filter).ok_or_else(unknown)?);
        return Ok(());
    }
    let schema = tollgate_core::schema::filter_schema(filter).ok_or_else(unknown)?;
    println!("{}", serde_json::to_string_pretty(&schema).map_err(|e| e.to_string())?);
    Ok(())
}

fn write_schemas() -> Result<(), String> {
    for (filter, _) in tollgate_core::schema::FILTERS {
        let files = tollgate_cli::generated(filter).ok_or_else(|| format!("{filter}: no schema"))?;
        for (path, text) in files {
            std::fs::write(&path, text).map_err(|e| format!("{path}: {e}"))?;
            println!("wrote {path}");
        }
    }
    Ok(())
}

fn validate(filter: &str, path: &str) -> Result<(), String> {
    let config = read_config(path)?;
    let env = |name: &str| std::env::var(name).ok();
    match filter {
        "guardrails" => {
            let (section, prefix) = guardrails_section(config);
            Policy::from_json(&to_bytes(&section)?, prefix).map(drop)
        }
        "token-counter" => tollgate_core::stage::token_counter::Config::parse(&to_bytes(&config)?, "")
            .map(drop)
            .map_err(|e| e.to_string()),
        "provider-rewrite" => tollgate_core::stage::provider_rewrite::parse(&to_bytes(&config)?, "", &env).map(drop),
        "quota" => tollgate_core::stage::quota::parse(&to_bytes(&config)?, "").map(drop),
        "tollgate" => tollgate_core::stage::compose::parse(&to_bytes(&config)?).map(drop).map_err(|e| e.0),
        other => Err(format!("unknown filter `{other}`\n{USAGE}")),
    }?;
    println!("{path}: valid {filter} configuration");
    Ok(())
}

fn guard(path: &str) -> Result<(), String> {
    let (section, prefix) = guardrails_section(read_config(path)?);
    let policy = Policy::from_json(&to_bytes(&section)?, prefix)?;
    let stdin = std::io::stdin();
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    for line in stdin.lock().lines() {
        let line = line.map_err(|e| format!("stdin: {e}"))?;
        if line.trim().is_empty() {
            continue;
        }
        let answer = match serde_json::from_str::<Value>(&line) {
            Ok(input) => evaluate(&policy, input),
            Err(e) => json!({ "error": format!("input is not JSON: {e}") }),
        };
        writeln!(out, "{answer}").map_err(|e| format!("stdout: {e}"))?;
    }
    out.flush().map_err(|e| format!("stdout: {e}"))
}

fn finding_json(text: &str, f: &Finding<'_>, base: usize) -> Value {
    json!({
        "entity": f.entity,
        "rule": f.rule,
        "action": f.action.name(),
        "start": base + code_points(text, f.start),
        "end": base + code_points(text, f.end),
    })
}

/// One input line: a `{"text"}` object, or a chat request whose checked texts are joined by
/// newlines: offsets count code points in the joined *input* texts, `text` is the joined masked
/// texts, and the masked request is in `request`.
fn evaluate(policy: &Policy, mut input: Value) -> Value {
    let mut masker = policy.masker();
    let mut findings_out = Vec::new();
    let mut decision = tollgate_core::guard::policy::Decision::Allow;
    if let Some(text) = input.get("text").and_then(Value::as_str) {
        let mut findings = Vec::new();
        policy.scan(text, &mut findings);
        decision = policy.decide(&findings);
        findings_out.extend(findings.iter().map(|f| finding_json(text, f, 0)));
        let masked = if decision == tollgate_core::guard::policy::Decision::Shadow {
            None
        } else {
            masker.apply(text, &findings)
        };
        return json!({
            "decision": decision.name(),
            "findings": findings_out,
            "text": masked.as_deref().unwrap_or(text),
        });
    }
    if input.get("messages").is_none() && input.get("input").is_none() {
        return json!({ "error": "expected {\"text\": ...} or a chat request with `messages`" });
    }
    let kind = if input.get("messages").is_some() { ApiKind::OpenAiChat } else { ApiKind::OpenAiEmbeddings };
    let mut joined = String::new();
    let mut base = 0;
    message::for_each_text(&mut input, kind, &policy.request, &mut |_, text| {
        let mut findings = Vec::new();
        policy.scan(text, &mut findings);
        let original_len = text.chars().count();
        decision = decision.max(policy.decide(&findings));
        findings_out.extend(findings.iter().map(|f| finding_json(text, f, base)));
        let shadow = policy.mode == tollgate_core::guard::policy::Mode::Shadow;
        if let Some(masked) = (!shadow).then(|| masker.apply(text, &findings)).flatten() {
            *text = masked;
        }
        if !joined.is_empty() {
            joined.push('\n');
        }
        joined.push_str(text);
        base += original_len + 1;
    });
    json!({ "decision": decision.name(), "findings": findings_out, "text": joined, "request": input })
}
