//! The compiler's message for a wrong handle given to `ask!`.
//!
//! `device::Ask` carries a `#[diagnostic::on_unimplemented]` so that
//! `ask!([x], method())` on something it cannot ask (a `Line`, a number)
//! says which handles it takes, instead of a trait name users never see.
//! A `compile_fail` doctest only proves that such code fails to compile;
//! this test (trybuild) also checks the message text, in
//! `tests/ui/ask_wrong_handle.stderr` (trybuild normalises paths). After a
//! toolchain changes its wording, regenerate the file with
//! `TRYBUILD=overwrite cargo test -p stakplane-ui-tests` and
//! check the diff.

#[test]
fn ask_on_a_wrong_handle_names_the_handles_it_takes() {
    trybuild::TestCases::new().compile_fail("tests/ui/ask_wrong_handle.rs");
}
