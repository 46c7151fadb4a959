#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| smoltalk_fuzz::uppercase_udp::run(data));
