# Sourced by the install tests: strict mode, a private temporary directory
# removed on exit, and the helpers they share. ctest reads exit code 77 as
# a skip.
set -euo pipefail
tmp=$(mktemp -d "${TMPDIR:-/tmp}/mcp-install-test.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

fail() {
    echo "FAIL: $*" >&2
    exit 1
}

skip() {
    echo "SKIP: $*" >&2
    exit 77
}

# install_to BUILD_DIR PREFIX [DESTDIR]: cmake --install, its output shown
# when it fails.
install_to() {
    if ! DESTDIR=${3:-} cmake --install "$1" --prefix "$2" >"$tmp/install.log" 2>&1; then
        cat "$tmp/install.log" >&2
        fail "cmake --install --prefix $2 ${3:+(DESTDIR $3) }failed"
    fi
}

# has_line FILE LINE: FILE holds LINE, whole.
has_line() {
    grep -qxF -- "$2" "$1" || fail "$1: no line '$2'"
}
