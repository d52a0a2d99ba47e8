//! The `singleton` command-line tool. See `singleton --help` and the README.

mod cli;

fn main() {
    std::process::exit(cli::main());
}
