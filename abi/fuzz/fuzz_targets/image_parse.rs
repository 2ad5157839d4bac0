//! Fuzz target: hostile boot images. `abi::image::fuzz_parse` parses the
//! bytes and reads every task, object and capability they claim; any
//! panic is a crash.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| abi::image::fuzz_parse(data));
