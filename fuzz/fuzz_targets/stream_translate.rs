//! Every stream translator (Anthropic → OpenAI, OpenAI → Anthropic, Gemini → OpenAI, Bedrock →
//! OpenAI, and the chains to Anthropic): any bytes at any cut, no panic, bounded output, and the
//! output is a well-formed SSE stream whose every data payload is JSON (or OpenAI's `[DONE]`).
#![no_main]
use libfuzzer_sys::fuzz_target;
use tollgate_core::convert::{anthropic, bedrock, gemini, openai, Chain, StreamTranslate};
use tollgate_core::sse::SseDecoder;

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
        let mut decoder = SseDecoder::new(1 << 24);
        decoder.push(&out).expect("our own SSE decodes");
        while let Some(event) = decoder.next_event() {
            if let Some(payload) = event.data.as_deref() {
                assert!(
                    payload == b"[DONE]" || serde_json::from_slice::<serde_json::Value>(payload).is_ok(),
                    "an event's data is JSON: {:?}",
                    String::from_utf8_lossy(payload)
                );
            }
        }
    }
});
