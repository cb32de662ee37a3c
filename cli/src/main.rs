//! The `tempest` command line.
fn main() {}
