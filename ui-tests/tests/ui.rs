//! Every compile error a user of the macros can hit, with its message committed in
//! `ui/*.stderr`.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("ui/*.rs");
}
