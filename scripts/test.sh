#!/bin/sh
# The whole test suite, as CI runs it.
#
# As root it first builds the real test hosts (scripts/testbed/setup.sh:
# network namespaces with their own sshd, users with passwords, sudo and
# doas rules, podman/docker/LXC/unshare containers and stubs for the tools
# with no engine here), which the tests in crates/mitogen/tests/hosts
# use. Not as root, those tests are skipped, and this script says so.
set -eu
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

skipped=""
echo "== test bed"
if [ "$(id -u)" = 0 ]; then
    ./scripts/testbed/setup.sh
else
    skipped="the real-host tests (crates/mitogen/tests/hosts: ssh, sudo, su, doas) were SKIPPED: not root"
    echo "!!! $skipped."
    echo "!!! They need network namespaces, users and sshd servers that only root can set up;"
    echo "!!! run ./scripts/test.sh as root (CI does) to run them."
    export MITOGEN_TESTBED=/nonexistent/not-root
fi

echo "== format"
cargo fmt --all -- --check
echo "== clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "== examples (tests run some; built here, not under the tests' clock)"
cargo build --workspace --examples
musl=x86_64-unknown-linux-musl
if [ ! -d "$(rustc --print sysroot)/lib/rustlib/$musl" ] && command -v rustup >/dev/null; then
    rustup target add "$musl" || true
fi
if [ -d "$(rustc --print sysroot)/lib/rustlib/$musl" ]; then
    cargo build --target "$musl" -p mitogen --example static_agent
else
    echo "(no Rust std for $musl: the static-agent test will say it is skipped)"
fi
echo "== tests"
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --no-fail-fast
else
    echo "(cargo-nextest not found: using cargo test)"
    cargo test --workspace --no-fail-fast
fi
echo "== doc tests"
cargo test --workspace --doc
echo "== docs (broken links fail)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --quiet
echo "== demo"
cargo run --release -p mitogen-cli -- run 'local[1-4]' -- uname -sr >/dev/null
cargo run --release -p mitogen --example tour >/dev/null
if [ -n "$skipped" ]; then
    echo "green, but $skipped"
else
    echo "all green"
fi
