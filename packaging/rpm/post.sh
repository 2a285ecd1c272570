# %post of the edeploy RPM ($1: 1 on install, 2 on upgrade): data
# directories, lock file, first-install example profiles; the same as the
# Debian postinst, with httpd's user `apache` (created by httpd-filesystem).
DATA=/var/lib/edeploy
EXAMPLES=/usr/share/edeploy/examples
SEEDED=$DATA/config.seeded.md5sums
WEB=apache

# Directories the package created are the web server's; an existing one is
# left as the admin made it.
[ -d "$DATA" ] || install -d -m 0755 "$DATA" || exit 1
for d in config hw logs health; do
	[ -d "$DATA/$d" ] || install -d -m 0750 -o "$WEB" -g "$WEB" "$DATA/$d" || exit 1
done
# The CGI cannot create them in the root-owned $DATA: the lock file, and
# the queue where requests wait for it (group commit).
[ -e "$DATA/edeploy.lock" ] ||
	install -m 0644 -o "$WEB" -g "$WEB" /dev/null "$DATA/edeploy.lock" || exit 1
[ -d "$DATA/edeploy.lock.queue" ] ||
	install -d -m 0700 -o "$WEB" -g "$WEB" "$DATA/edeploy.lock.queue" || exit 1

# On the first install, when the config directory holds no profile (hidden
# files are the server's bookkeeping), copy the example profiles so that the
# server answers out of the box; their checksums let the erase remove them
# while they are untouched.
if [ "$1" = 1 ] && [ -z "$(ls "$DATA/config")" ]; then
	sums=""
	for f in "$EXAMPLES"/*.specs "$EXAMPLES"/*.configure "$EXAMPLES"/*.cmdb "$EXAMPLES"/state; do
		[ -f "$f" ] || continue
		name=${f##*/}
		install -m 0644 -o "$WEB" -g "$WEB" "$f" "$DATA/config/$name" || exit 1
		sums="$sums$(cd "$DATA/config" && md5sum "$name")
"
	done
	if [ -n "$sums" ]; then
		printf '%s' "$sums" > "$SEEDED" || exit 1
		echo "edeploy: example profiles copied to $DATA/config"
	fi
fi
exit 0
