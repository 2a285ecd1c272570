# One legacy provisioning request, for benches/cmdb.rs: what upload.py does
# around the CMDB with the legacy library (hardware 0.18) -- load the state
# (which takes the lock itself), find_match (specs, CMDB selection and
# update), save, unlock.
#
# usage: PYENV_VERSION=2.7.18 python2.7 oracle_request.py CONFIGDIR/ HW.json LOCKFILE
import json
import sys

from hardware import state


def ascii_items(path):
    with open(path) as f:
        lines = json.load(f)
    return [tuple(field.encode('ascii', 'ignore') for field in line)
            for line in lines]


def main(cfg_dir, hw_file, lock_file):
    items = ascii_items(hw_file)
    st = state.State(lockname=lock_file)
    st.load(cfg_dir)
    try:
        name, var = st.find_match(items)
        st.save()
    finally:
        st.unlock()
    sys.stdout.write('%s %s\n' % (name, var.get('hostname')))


if __name__ == '__main__':
    main(*sys.argv[1:])
