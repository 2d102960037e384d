#!/usr/bin/env bash
# The man pages render with man(1) without a warning, and document what the
# programs have: every flag and command their --help shows, every
# environment variable and signal their sources read.
# usage: man_pages.sh MAN_DIR SOURCE_DIR MCPD MCPLOCAL MCPCTL
. "$(dirname "$0")/lib.sh"
mandir=$1 src=$2 mcpd=$3 mcplocal=$4 mcpctl=$5
IFS=$'\n' # the lists below are one name a line; "token create" is one name

command -v man >/dev/null || fail "man not found: run scripts/install-deps (Debian package man-db)"
for page in mcpd.8 mcplocal.1 mcpctl.1; do
    LC_ALL=C.UTF-8 MANWIDTH=80 man --warnings=w -l "$mandir/$page" >"$tmp/$page.txt" \
        2>"$tmp/$page.err" || fail "man -l $page failed: $(cat "$tmp/$page.err")"
    [ ! -s "$tmp/$page.err" ] || fail "man -l $page warns: $(cat "$tmp/$page.err")"
    grep -q '^NAME' "$tmp/$page.txt" || fail "man -l $page: no NAME section in what it rendered"
done

# documented PAGE WHAT NAME...: each NAME is set in bold, *NAME...*, in the
# page's source.
documented() {
    local page=$1 what=$2 name
    shift 2
    [ $# -gt 0 ] || fail "no $what found to check against $page"
    for name in "$@"; do
        grep -qF -- "*$name" "$src/docs/man/$page.scd" ||
            fail "$page does not document the $what '$name'"
    done
}

# The flags in a help text: words starting with - or -- after a space,
# bracket, bar or comma.
flags() {
    grep -oE '(^|[][ (|,])--?[a-z][a-z-]*' | sed -E 's/^[][ (|,]//' | sort -u
}

# Quoted environment variable names and signal names in source files.
env_vars() {
    grep -ohE "\"$1_[A-Z_]+\"" "${@:2}" | tr -d '"' | sort -u
}
signals() {
    grep -ohE '\bSIG[A-Z]+\b' "$@" | sort -u
}

# mcpd: the server's flags, the token commands and theirs.
help=$("$mcpd" --help && "$mcpd" token --help 2>&1) || fail "mcpd --help or mcpd token --help failed"
documented mcpd.8 flag $(flags <<<"$help")
documented mcpd.8 command $(grep -oE 'mcpd token [a-z]+' <<<"$help" | sed 's/^mcpd //' | sort -u)
documented mcpd.8 variable $(env_vars MCPD "$src/server/config.c")
documented mcpd.8 signal $(signals "$src/server/main.c")

# mcplocal.
documented mcplocal.1 flag $(flags < <("$mcplocal" --help))
documented mcplocal.1 variable $(env_vars MCPLOCAL "$src/registrar/main.c")
documented mcplocal.1 signal $(signals "$src/registrar/main.c")

# mcpctl: the commands its help lists, and the flags of each.
help=$("$mcpctl" --help)
commands=$(sed -n '/^Commands:/,/^$/p' <<<"$help" | grep -oE '^  [a-z-]+( [a-z]+)?' |
    sed -E 's/^  //; s/ (NAME|URL|COMMAND)$//')
[ -n "$commands" ] || fail "no commands found in mcpctl --help"
while read -r cmd; do
    documented mcpctl.1 command "$cmd"
    help+=$'\n'$("$mcpctl" help "${cmd%% *}")
done <<<"$commands"
documented mcpctl.1 flag $(flags <<<"$help")
documented mcpctl.1 variable $(env_vars MCPCTL "$src/cli/credentials.h")
echo "man pages: render cleanly and document every flag, command, variable and signal"
