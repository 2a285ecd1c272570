#!/usr/bin/env bash
# The whole test suite: unit, differential (against the legacy Python 2
# implementation), CGI, Apache end-to-end and hostile-input tests, then the
# Debian package install test. Needs root, apache2 and the oracle (see .ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo fmt --check
cargo clippy --locked --all-targets -- -D warnings
cargo test --locked
bash tests/install_deb.sh
