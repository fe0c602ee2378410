#[test]
fn double_from_outside() {
    assert_eq!(gamma::double(5), 10);
}
