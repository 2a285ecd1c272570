# The counting and reporting of the shell tests (install_deb.sh,
# install_rpm.sh, ansible.sh), sourced by each: `ok`, `not_ok`, `skip`,
# `check NAME COMMAND...`, and `finish`, which ends the run with the line
# `N passed, N failed, N skipped` and exits non-zero on any failure.
passed=0
failed=0
skipped=0
ok() { passed=$((passed + 1)); echo "ok - $1"; }
not_ok() { failed=$((failed + 1)); echo "not ok - $1"; }
skip() { skipped=$((skipped + 1)); echo "skip - $1"; }
check() {
	local name=$1
	shift
	if "$@"; then ok "$name"; else not_ok "$name"; fi
}
finish() {
	echo "$passed passed, $failed failed, $skipped skipped"
	[ "$failed" -eq 0 ]
	exit
}
fatal() {
	not_ok "$1"
	finish
}
