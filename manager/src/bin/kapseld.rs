//! kapseld: the Kapsel daemon (images, containers, networks). Not built yet: see issues 4 and 5.

fn main() {
    eprintln!("kapseld: the daemon is not implemented yet (images: issue 4, containers: issue 5)");
    std::process::exit(1);
}
