//! End-to-end tests of `mpsync`: see `tests/` and `benches/`.
