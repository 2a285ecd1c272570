#!/usr/bin/env bash
# The whole test suite: unit, differential (against the legacy Python 2
# implementation), CGI, Apache end-to-end and hostile-input tests, then the
# Debian package install test. Needs root; tests/setup.sh installs what it
# needs first (nothing when it is all there).
set -euo pipefail
cd "$(dirname "$0")/.."

tests/setup.sh
cargo fmt --check
cargo clippy --locked --all-targets -- -D warnings
cargo test --locked
bash tests/install_deb.sh
