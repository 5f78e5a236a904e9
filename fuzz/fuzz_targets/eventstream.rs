//! AWS event-stream decoder: any bytes (CRCs mostly wrong, lengths hostile): no panic. The same
//! bytes, and each decoded message's payload, are also read as an InvokeModel `chunk` payload
//! (`{"bytes": "<base64>"}`, the model's event inside): no panic, whatever they hold.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tollgate_core::eventstream::EventStreamDecoder;
use tollgate_core::usage::{UsageFormat, UsageTracker};

fuzz_target!(|data: &[u8]| {
    let mut invoke = UsageTracker::new(UsageFormat::BedrockInvoke);
    let _ = invoke.observe_invoke_chunk(data);
    let cut = data.first().map_or(0, |b| *b as usize) % (data.len() + 1);
    let mut decoder = EventStreamDecoder::new(64 * 1024);
    for part in [&data[..cut], &data[cut..]] {
        if decoder.push(part).is_err() {
            return;
        }
        while let Some(message) = decoder.next_message() {
            match message {
                Ok(m) => {
                    let _ = m.headers().count();
                    let _ = m.header_str(":event-type");
                    let _ = invoke.observe_invoke_chunk(m.payload);
                }
                Err(_) => return,
            }
        }
    }
    let _ = decoder.finish();
    let _ = invoke.usage();
});
