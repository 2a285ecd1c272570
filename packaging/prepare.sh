#!/usr/bin/env bash
# What both packages take from target/ besides Cargo.toml's metadata, made
# in one place (the install sections of README.md, the package and Ansible
# tests call it): the binaries of the `dist` profile (release, stripped),
# the copyright file of the crates linked in (cargo-about, from the license
# files `cargo fetch` brings), and the man pages and shell completions
# generated from the command-line definitions (`edeploy gen-docs`), the
# pages compressed as Debian and Fedora install them.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --locked --profile dist
cargo fetch --locked
cargo about generate --frozen -c packaging/about.toml packaging/copyright.hbs -o target/copyright
rm -rf target/docs
target/dist/edeploy gen-docs target/docs >/dev/null
gzip -9n target/docs/man/*
