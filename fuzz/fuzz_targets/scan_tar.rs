#![no_main]

libfuzzer_sys::fuzz_target!(
    init: earmark_fuzz::init("scan_tar"),
    |data: &[u8]| earmark_fuzz::scan_tar(data)
);
