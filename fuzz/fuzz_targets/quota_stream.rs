//! Stream cut-off's output meter: any bytes, cut at a fuzzer-chosen point, for every API it
//! reads: no panic, an event's end never lies past the chunk that completed it (it can lie
//! before it: an event ending in CR is only known to be complete with the next byte), the same
//! events and output whole or split.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tollgate_core::quota::stream::OutputMeter;
use tollgate_core::route::ApiKind;

fuzz_target!(|data: &[u8]| {
    let cut = data.first().map_or(0, |b| *b as usize) % (data.len() + 1);
    for kind in [ApiKind::OpenAiChat, ApiKind::AnthropicMessages, ApiKind::GeminiGenerate { stream: true }] {
        let run = |parts: &[&[u8]]| {
            let mut meter = OutputMeter::for_api(kind).unwrap();
            let mut outputs = Vec::new();
            for part in parts {
                if meter.push(part).is_err() {
                    return None;
                }
                while let Some(m) = meter.next_event() {
                    assert!(m.end_in_chunk <= part.len());
                    outputs.push(m.output_tokens);
                }
            }
            Some(outputs)
        };
        if let (Some(whole), Some(split)) = (run(&[data]), run(&[&data[..cut], &data[cut..]])) {
            assert_eq!(whole, split);
        }
    }
});
