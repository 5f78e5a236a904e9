//! Every stream translator (Anthropic → OpenAI, OpenAI → Anthropic, Gemini → OpenAI, Bedrock →
//! OpenAI, and the chains to Anthropic): any bytes at any cut, no panic, bounded output.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tollgate_core::convert::{anthropic, bedrock, gemini, openai, Chain, StreamTranslate};

fuzz_target!(|data: &[u8]| {
    let translators: Vec<Box<dyn StreamTranslate>> = vec![
        Box::new(anthropic::StreamToOpenAi::new(4096, 0, true, "m")),
        Box::new(openai::StreamToAnthropic::new(4096, "m")),
        Box::new(gemini::StreamToOpenAi::new(4096, true, "m")),
        Box::new(bedrock::StreamToOpenAi::new(4096, true, "m")),
        Box::new(Chain::new(gemini::StreamToOpenAi::new(4096, true, "m"), openai::StreamToAnthropic::new(4096, "m"))),
        Box::new(Chain::new(bedrock::StreamToOpenAi::new(4096, true, "m"), openai::StreamToAnthropic::new(4096, "m"))),
    ];
    let cut = data.first().map_or(0, |b| *b as usize) % (data.len() + 1);
    for mut t in translators {
        let mut out = Vec::new();
        let _ = t.push(&data[..cut], &mut out);
        let _ = t.push(&data[cut..], &mut out);
        t.finish(&mut out);
        assert!(out.len() < 64 * (data.len() + 4096), "bounded output");
    }
});
