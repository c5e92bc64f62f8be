#![no_main]

libfuzzer_sys::fuzz_target!(
    init: earmark_fuzz::init("fpfile"),
    |data: &[u8]| earmark_fuzz::fpfile(data)
);
