#![no_main]

libfuzzer_sys::fuzz_target!(
    init: earmark_fuzz::init("scan_parquet"),
    |data: &[u8]| earmark_fuzz::scan_parquet(data)
);
