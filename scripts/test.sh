#!/bin/sh
# The whole test suite, as CI runs it. Installs nothing today: the core
# runtime's tests need only cargo. (Real-host tests of later layers start
# their own namespaces/sshd from here, as root.)
set -eu
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

echo "== format"
cargo fmt --all -- --check
echo "== clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "== tests"
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --no-fail-fast
else
    echo "(cargo-nextest not found: using cargo test)"
    cargo test --workspace --no-fail-fast
fi
echo "== doc tests"
cargo test --workspace --doc
echo "== demo"
cargo run --release -p mitogen --example tour >/dev/null
echo "all green"
