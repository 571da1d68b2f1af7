//! The errors `#[courier::service]` gives for traits it cannot serve. Each
//! case in `ui/` has the compiler output it must produce next to it.

#[test]
fn service_macro_errors_are_readable() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("ui/*.rs");
}
