#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| smoltalk_fuzz::request_head::run(data));
