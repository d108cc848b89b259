//! containerd-shim-kapsel-v2: the per-container shim (containerd runtime v2 contract).
//!
//! Not built yet: see issue 3. Until then this binary refuses to run, so that containerd
//! reports a clear error instead of hanging on a shim that does not speak the task API.

fn main() {
    eprintln!(
        "containerd-shim-kapsel-v2: the kapsel shim is not implemented yet; \
         use containerd's io.containerd.runc.v2 with `--runc-binary kapsel-runtime` meanwhile"
    );
    std::process::exit(1);
}
