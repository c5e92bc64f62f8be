#![no_main]

libfuzzer_sys::fuzz_target!(
    init: earmark_fuzz::init("service"),
    |data: &[u8]| earmark_fuzz::service(data)
);
