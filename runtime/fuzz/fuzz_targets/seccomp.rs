//! `linux.seccomp` JSON → BPF: never panics; a profile that compiles gives a program the kernel
//! would load and that answers like the profile (see the crate's `check_compiled`).

#![no_main]

use kapsel_runtime::spec::Seccomp;
use kapsel_runtime_fuzz::check_compiled;
use libfuzzer_sys::{fuzz_target, Corpus};

fuzz_target!(|data: &[u8]| -> Corpus {
    let Ok(profile) = serde_json::from_slice::<Seccomp>(data) else {
        return Corpus::Reject;
    };
    if let Ok(filter) = kapsel_runtime::seccomp::compile(&profile) {
        if let Err(e) = check_compiled(&profile, &filter) {
            panic!("compiled seccomp program is wrong: {e}");
        }
    }
    Corpus::Keep
});
