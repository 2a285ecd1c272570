#!/usr/bin/env python2.7
# -*- coding: utf-8 -*-
"""Oracle for the differential test: the legacy upload.py flow, CLI mode.

Drives the legacy `hardware` library (0.18) as a black box, following
LEGACY-SEMANTICS.md section 1 steps 5 to 12, on many case directories in one
process (python2 start-up dominates otherwise).

Usage: legacy_upload.py CASEDIR...   or   legacy_upload.py - < list-of-dirs

A case directory holds edeploy.conf ([SERVER] CONFIGDIR, optional HWDIR,
LOCKFILE), request.json ({"hw": "<file>", "failure": null or "<profile>"})
and the files those point to. The request is run in place, then the case
gets expected/result.json and expected/files/<path> (a copy of every file
of the case after the request, except the inputs, the lock directory run/
and expected/ itself). One case failing in any way never stops the batch.
"""

from __future__ import print_function

import ConfigParser
import ast
import json
import os
import pprint
import shutil
import signal
import sys
import time
import traceback

from hardware import matcher
from hardware import state as hw_state

# Diagnostics only (the histogram of the harness check): did find_match need
# to backtrack? Observed by wrapping the public match_all, whose recursion
# goes through the module attribute.
_MATCH_ALL = matcher.match_all
_BACKTRACKED = [False]


def _observed_match_all(lines, specs, arr, arr2, debug=False, level=0):
    if level > 0:
        _BACKTRACKED[0] = True
    return _MATCH_ALL(lines, specs, arr, arr2, debug, level)


matcher.match_all = _observed_match_all

CASE_TIMEOUT = int(os.environ.get('EDEPLOY_ORACLE_TIMEOUT', '20'))

# Inputs of a case, never part of the compared result.
INPUT_NAMES = ('edeploy.conf', 'request.json', 'expected', 'run')


class Timeout(BaseException):
    """Not an Exception: no handler of the flow may take it for an error."""


def on_alarm(signum, frame):
    raise Timeout('case took more than %d s' % CASE_TIMEOUT)


def to_text(value):
    """Bytes from python2 APIs to something json.dumps always accepts."""
    if isinstance(value, str):
        return value.decode('utf-8', 'replace')
    return value


def ascii_only(elt):
    """Step 5: drop non-ASCII characters; non-strings are kept as they are."""
    if isinstance(elt, unicode):
        return elt.encode('ascii', 'ignore')
    if isinstance(elt, str):
        return elt.decode('utf-8', 'ignore').encode('ascii', 'ignore')
    return elt


def read_config(path):
    """Step 1, the keys the CLI flow uses."""
    parser = ConfigParser.ConfigParser()
    parser.read(path)

    def get(key, default):
        try:
            return parser.get('SERVER', key)
        except (ConfigParser.NoOptionError, ConfigParser.NoSectionError):
            return default

    def directory(value):
        return os.path.normpath(value) + '/'

    cfg_dir = directory(get('CONFIGDIR', None))
    hw_dir = directory(get('HWDIR', cfg_dir))
    lockfile = get('LOCKFILE', '/var/run/httpd/edeploy.lock')
    return cfg_dir, hw_dir, lockfile


def parse_hw(data):
    """Step 5: JSON list of 4-string lists.

    The initrds of old releases sent the Python literal form (hw.py); the
    agreed behaviour accepts it too, so a text that is not JSON is tried as
    a Python literal before being refused with the JSON error.
    """
    try:
        parsed = json.loads(data)
    except ValueError as excpt:
        try:
            parsed = ast.literal_eval(data)
        except Exception:
            raise InvalidHw('Invalid hardware file: %s' % str(excpt))
    return [tuple(ascii_only(elt) for elt in info) for info in parsed]


class InvalidHw(Exception):
    pass


def run_request(case, result):
    cfg_dir, hw_dir, lockfile = read_config(os.path.join(case, 'edeploy.conf'))
    with open(os.path.join(case, 'request.json')) as req_file:
        request = json.load(req_file)
    failure = request.get('failure')
    if failure is not None:
        failure = failure.encode('ascii')
    with open(os.path.join(case, request['hw']), 'rb') as hw_file:
        data = hw_file.read()

    try:
        hw_items = parse_hw(data)
    except InvalidHw as excpt:
        result['outcome'] = 'error'
        result['exc_type'] = 'InvalidHw'
        result['message'] = str(excpt)
        return

    # Step 6: State.load takes the lock itself (0.18: a lock file created
    # on load and removed by unlock).
    state_obj = hw_state.State(lockname=lockfile)
    try:
        state_obj.load(cfg_dir)
    except Exception:
        # Whether or not load got the lock, leave none behind.
        try:
            state_obj.unlock()
        except Exception:
            pass
        raise
    try:
        # Step 7.
        sysname = matcher.generate_filename_and_macs(hw_items)['sysname']
        result['sysname'] = sysname
        with open(os.path.join(hw_dir, sysname + '.hw'), 'w') as out:
            pprint.pprint(hw_items, stream=out)

        # Step 9.
        if failure is not None:
            if state_obj.failed_profile(failure):
                state_obj.save()
                result['outcome'] = 'failure-recorded'
            else:
                # '*' or unknown profile: the legacy goes on and may consume
                # quota; our contract is to answer nothing and write nothing
                # more, which is what the expected files already are.
                result['outcome'] = 'failure-ignored'
            return

        # Steps 10 and 11.
        try:
            name, var = state_obj.find_match(hw_items)
        except Exception as excpt:
            result['outcome'] = 'error'
            result['exc_type'] = type(excpt).__name__
            result['message'] = str(excpt)
            result['traceback'] = traceback.format_exc()
            return
        var['edeploy-profile'] = name
        result['outcome'] = 'match'
        result['profile'] = name
        result['var'] = pprint.pformat(var) + '\n'
        state_obj.save()
    finally:
        # Step 12.
        state_obj.unlock()


def result_files(case):
    """Relative paths of the files of the case that a request may change."""
    paths = []
    for root, dirs, files in os.walk(case):
        rel_root = os.path.relpath(root, case)
        if rel_root == '.':
            dirs[:] = [d for d in dirs if d not in INPUT_NAMES]
        dirs.sort()
        for name in sorted(files):
            if rel_root == '.' and name in INPUT_NAMES:
                continue
            paths.append(os.path.normpath(os.path.join(rel_root, name)))
    return paths


def read_all(case):
    contents = {}
    for rel in result_files(case):
        with open(os.path.join(case, rel), 'rb') as src:
            contents[rel] = src.read()
    return contents


def snapshot(case, dest):
    """Copy every result file of the case (not its inputs) under dest."""
    for rel in result_files(case):
        target = os.path.join(dest, rel)
        if not os.path.isdir(os.path.dirname(target)):
            os.makedirs(os.path.dirname(target))
        shutil.copyfile(os.path.join(case, rel), target)


def run_case(case):
    result = {'outcome': None, 'profile': None, 'var': None, 'message': None,
              'exc_type': None, 'sysname': None, 'traceback': None}
    _BACKTRACKED[0] = False
    before = read_all(case)
    start = time.time()
    signal.alarm(CASE_TIMEOUT)
    try:
        run_request(case, result)
    except Timeout as excpt:
        result['outcome'] = 'timeout'
        result['message'] = str(excpt)
    except Exception as excpt:
        # Legacy step 12: any exception becomes an error answer.
        result['outcome'] = 'error'
        result['exc_type'] = type(excpt).__name__
        result['message'] = str(excpt)
        result['traceback'] = traceback.format_exc()
    finally:
        signal.alarm(0)
    result['backtracked'] = _BACKTRACKED[0]
    result['seconds'] = round(time.time() - start, 3)
    after = read_all(case)
    # Diagnostics: what the request wrote (an unchanged rewrite is not seen).
    result['changed'] = sorted(rel for rel in after if before.get(rel) != after[rel])
    result['removed'] = sorted(rel for rel in before if rel not in after)

    expected = os.path.join(case, 'expected')
    if os.path.isdir(expected):
        shutil.rmtree(expected)
    os.makedirs(os.path.join(expected, 'files'))
    snapshot(case, os.path.join(expected, 'files'))
    clean = dict((key, to_text(value)) for key, value in result.items())
    with open(os.path.join(expected, 'result.json'), 'w') as out:
        json.dump(clean, out, indent=1, sort_keys=True)
        out.write('\n')
    return result['outcome']


def main(argv):
    signal.signal(signal.SIGALRM, on_alarm)
    if argv == ['-']:
        cases = [line.strip() for line in sys.stdin if line.strip()]
    else:
        cases = argv
    if not cases:
        sys.stderr.write(__doc__)
        return 2
    counts = {}
    for case in cases:
        try:
            outcome = run_case(case)
        except Exception:
            # Even writing the result failed: say so and go on.
            outcome = 'driver-error'
            sys.stderr.write('%s: %s' % (case, traceback.format_exc()))
        counts[outcome] = counts.get(outcome, 0) + 1
    for outcome in sorted(counts):
        sys.stderr.write('%s: %d\n' % (outcome, counts[outcome]))
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
