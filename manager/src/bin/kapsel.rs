//! kapsel: the Docker-like command line client of kapseld. Not built yet: see issues 4 and 5.

fn main() {
    eprintln!("kapsel: the CLI is not implemented yet (images: issue 4, containers: issue 5)");
    std::process::exit(1);
}
