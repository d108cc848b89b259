//! The seccomp compiler on profiles built from raw bytes (`profile_from_bytes`): the same
//! checks as the `seccomp` target, on well-formed rules only, so that the fuzzer explores
//! combinations of actions, names, architectures, operators and 64-bit edge values instead of
//! JSON syntax.

#![no_main]

use kapsel_runtime_fuzz::{check_compiled, profile_from_bytes};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let profile = profile_from_bytes(data);
    if let Ok(filter) = kapsel_runtime::seccomp::compile(&profile) {
        if let Err(e) = check_compiled(&profile, &filter) {
            panic!("compiled seccomp program is wrong: {e}\nprofile: {profile:?}");
        }
    }
});
