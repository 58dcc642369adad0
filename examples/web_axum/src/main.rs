//! Placeholder (issue 4).
fn main() {}
