#[test]
fn add_from_outside() {
    assert_eq!(alpha::add(40, 2), 42);
}
