#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    smoltalk_fuzz::proxy_connection::run(data);
});
