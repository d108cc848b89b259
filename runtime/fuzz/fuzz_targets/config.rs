//! config.json bytes → `Spec` → validation, as `create` loads a bundle; then what the runtime
//! derives from a valid spec without touching the kernel (seccomp program, capability masks,
//! rlimits, mount options, identity steps against the recording kernel). Never panics, and a
//! valid spec survives the round trip through `state.json`, where later commands read it back.

#![no_main]

use kapsel_runtime::init::{caps, identity, mounts::MountOptions};
use kapsel_runtime::spec::Spec;
use kapsel_runtime::syscall::fake::Recorder;
use libfuzzer_sys::{fuzz_target, Corpus};

fuzz_target!(|data: &[u8]| -> Corpus {
    let Ok(spec) = serde_json::from_slice::<Spec>(data) else {
        return Corpus::Reject;
    };
    if spec.validate().is_err() {
        return Corpus::Keep;
    }

    let saved = serde_json::to_vec(&spec).expect("a parsed spec serializes");
    let back: Spec = serde_json::from_slice(&saved).expect("a saved spec parses");
    assert_eq!(back, spec, "config changed on its way through state.json");

    if let Ok(Some(filter)) = kapsel_runtime::seccomp::for_spec(&spec) {
        let profile = spec
            .linux
            .as_ref()
            .and_then(|l| l.seccomp.as_ref())
            .unwrap();
        if let Err(e) = kapsel_runtime_fuzz::check_compiled(profile, &filter) {
            panic!("compiled seccomp program is wrong: {e}");
        }
    }
    for m in &spec.mounts {
        let _ = MountOptions::parse(&m.options);
    }
    let k = Recorder::new();
    let p = spec.process();
    let _ = caps::resolve(&k, p.capabilities.as_ref(), caps::last_cap());
    let _ = identity::set_rlimits(&k, p);
    let _ = identity::set_oom_score_adj(&k, p);
    let _ = identity::set_io_priority(&k, p);
    let _ = identity::set_scheduler(&k, p);
    let _ = identity::set_personality(&k, &spec);
    let _ = identity::set_user(&k, p, true);
    let _ = spec.rootfs(std::path::Path::new("/bundle"));
    Corpus::Keep
});
