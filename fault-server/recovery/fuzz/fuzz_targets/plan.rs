//! Fuzz target: hostile recovery pages, regions, region layouts, pc and
//! rollback depth (input layout: `recovery::plan::fuzz_plan`). Checked: no
//! panic, a refused page plans nothing, and every planned release names an
//! object of the right kind inside a region, by that region's layout.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| recovery::plan::fuzz_plan(data));
