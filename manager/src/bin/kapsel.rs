//! kapsel: the Docker-like command line client of kapseld.

fn main() {
    std::process::exit(kapsel_manager::cli::main());
}
