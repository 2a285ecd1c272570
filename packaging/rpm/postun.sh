# %postun of the edeploy RPM ($1: 0 on erase, 1 on upgrade). RPM has no
# purge, so the erase does what the Debian purge does: remove the lock file,
# the example profiles while untouched, the empty data directories, and keep
# anything the server or the admin wrote, saying so.
[ "$1" = 0 ] || exit 0

# cargo-generate-rpm (0.21) cannot package directory entries: the package's
# own directories are removed here once empty.
for d in /var/www/cgi-bin/edeploy /usr/share/edeploy/examples/hw /usr/share/edeploy/examples \
	/usr/share/edeploy /usr/share/doc/edeploy /usr/share/licenses/edeploy; do
	rmdir "$d" 2>/dev/null || :
done

DATA=/var/lib/edeploy
SEEDED=$DATA/config.seeded.md5sums
[ -d "$DATA" ] || exit 0

# The example profiles are one configuration (the state names the
# profiles, the CMDBs record the machines installed): they go only all
# together, while the config directory holds exactly them, untouched.
config_is_pristine() {
	[ -f "$SEEDED" ] || return 1
	while read -r sum name; do
		[ -f "$DATA/config/$name" ] || return 1
		actual=$(md5sum < "$DATA/config/$name")
		[ "${actual%% *}" = "$sum" ] || return 1
	done < "$SEEDED"
	for f in "$DATA"/config/*; do
		[ -e "$f" ] || continue
		cut -d ' ' -f 3- "$SEEDED" | grep -qxF "${f##*/}" || return 1
	done
}

rm -f "$DATA/edeploy.lock"
# The queue of waiting requests holds only the server's own transient files.
rm -rf "$DATA/edeploy.lock.queue"
if config_is_pristine; then
	while read -r _ name; do
		rm -f "$DATA/config/$name" "$DATA/config/.$name.spare" "$DATA/config/.$name.layout" \
			"$DATA/config/.$name.status" "$DATA/config/.$name".*.tmp
	done < "$SEEDED"
	rm -f "$DATA/config/.edeploy-commit"
fi
rm -f "$SEEDED"
for d in config hw logs health; do
	[ -d "$DATA/$d" ] || continue
	rmdir "$DATA/$d" 2>/dev/null ||
		echo "edeploy: keeping $DATA/$d: it holds data written by the server or the admin" >&2
done
rmdir "$DATA" 2>/dev/null ||
	echo "edeploy: keeping $DATA; remove it by hand when its data is no longer needed" >&2
exit 0
