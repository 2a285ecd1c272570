#!/usr/bin/env bash
# The whole test suite: unit, differential (against the legacy Python 2
# implementation), CGI, Apache end-to-end and hostile-input tests, then the
# package tests (.deb, RPM) and the Ansible playbook's, last as it changes
# the machine's Apache most. Needs root; tests/setup.sh installs what it
# needs first (nothing when it is all there).
set -euo pipefail
cd "$(dirname "$0")/.."

tests/setup.sh
cargo fmt --check
cargo clippy --locked --all-targets -- -D warnings
cargo test --locked
bash tests/install_deb.sh
bash tests/install_rpm.sh
bash tests/ansible.sh
