#!/usr/bin/env bash
# Runs the whole test suite on a fresh Debian machine with Rust: installs the
# Debian packages the tests need when they are missing, then checks
# formatting, lints and runs every test. `.ci/run` runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the tests use: openssl checks signatures, certificates and
# CRLs; softhsm2 is the PKCS#11 token holding CA keys; python3-venv hosts the
# linters.
# postgresql is the scale-out store, started for real below.
packages=(openssl softhsm2 python3-venv postgresql)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing Debian packages: ${missing[*]}"
  sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${missing[@]}"
fi

# Python tools in a venv: pkilint (RFC 5280 certificate linter) and aiocoap
# (an OSCORE implementation nobody here wrote, for the interop test).
[ -x .venv/bin/python ] || python3 -m venv .venv
if [ ! -x .venv/bin/lint_pkix_cert ]; then
  echo "installing pkilint in .venv"
  .venv/bin/pip install --quiet --disable-pip-version-check "pkilint==0.13.3"
fi
if ! .venv/bin/python -c 'import aiocoap.oscore' 2>/dev/null; then
  echo "installing aiocoap in .venv"
  .venv/bin/pip install --quiet --disable-pip-version-check "aiocoap[oscore]==0.4.17"
fi
export INKAN_PKILINT="$PWD/.venv/bin/lint_pkix_cert"
export INKAN_AIOCOAP_PYTHON="$PWD/.venv/bin/python"

echo "== cargo fmt"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== PostgreSQL (throwaway cluster on loopback)"
pg_env=$(scripts/pg-start.sh) || { echo "PostgreSQL did not start" >&2; exit 1; }
eval "$pg_env"
trap '$INKAN_PG_STOP >/dev/null 2>&1 || true' EXIT
echo "   $INKAN_TEST_POSTGRES"

echo "== cargo test"
cargo test --workspace --locked

# Fuzz smoke run: each libFuzzer target for a few seconds. cargo-fuzz needs
# the nightly toolchain; the step says so when it cannot run.
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  echo "== fuzz smoke (${INKAN_FUZZ_SECONDS:-15} s per target)"
  command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked --quiet
  for target in frame_decoder command_dispatcher coap_edhoc telemetry_cbor device_messages; do
    (cd fuzz && cargo fuzz run "$target" -O -- -max_total_time="${INKAN_FUZZ_SECONDS:-15}" 2>&1 | tail -1)
  done
else
  echo "== fuzz smoke NOT RUN: no nightly toolchain on this machine (rustup toolchain install nightly)"
fi
echo "== all tests passed"
