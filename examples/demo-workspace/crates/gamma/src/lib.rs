//! gamma: doubles with alpha's help.

pub fn double(x: u64) -> u64 {
    alpha::add(x, x)
}

#[cfg(test)]
mod tests {
    #[test]
    fn doubles() {
        assert_eq!(super::double(21), 42);
    }
}
