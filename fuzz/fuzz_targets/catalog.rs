#![no_main]

libfuzzer_sys::fuzz_target!(
    init: earmark_fuzz::init("catalog"),
    |data: &[u8]| earmark_fuzz::catalog(data)
);
