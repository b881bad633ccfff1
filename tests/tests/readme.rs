//! The README's quick start is `examples/src/bin/quickstart.rs`, verbatim: CI compiles (and
//! the demo check runs) the file, and this test keeps the README's copy equal to it.

#[test]
fn the_quick_start_in_the_readme_is_the_example_file() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let example = std::fs::read_to_string(root.join("examples/src/bin/quickstart.rs")).unwrap();
    let start = readme
        .find("```rust,ignore\n//! The README's quick start")
        .expect("the README has the quick start block")
        + "```rust,ignore\n".len();
    let end = start + readme[start..].find("```\n").expect("the block ends");
    assert_eq!(
        &readme[start..end],
        example,
        "README.md's quick start differs from examples/src/bin/quickstart.rs: copy the file into it"
    );
}
