# Runs the legacy matcher (hardware.matcher, Python 2.7) on a batch of cases
# and prints the results as JSON, for tests/spec_oracle.rs.
#
# Usage: python2.7 spec_oracle.py CASES.json
# Each case: {"kind": "all", "lines": [[4 str]...], "specs": [[4 str]...]}
#         or {"kind": "spec", "spec": [4 str], "lines": [...], "vars": {...}}
#         or {"kind": "sysname", "items": [...]}
# A case that raises gives {"raise": <exception type>, "where": <function
# of the innermost frame>}.
import json
import logging
import sys
import traceback

import hardware.matcher as matcher

logging.getLogger('hardware').addHandler(logging.NullHandler())
logging.getLogger('hardware.matcher').addHandler(logging.NullHandler())


def to_str(x):
    if isinstance(x, unicode):
        return x.encode('utf-8')
    if isinstance(x, list):
        return [to_str(e) for e in x]
    if isinstance(x, dict):
        return dict((to_str(k), to_str(v)) for k, v in x.items())
    return x


def run(case):
    kind = case['kind']
    if kind == 'all':
        lines = [tuple(l) for l in case['lines']]
        specs = [tuple(s) for s in case['specs']]
        var, forced = {}, {}
        ok = matcher.match_all(lines, specs, var, forced)
        return {'ok': bool(ok), 'vars': var, 'forced': forced}
    if kind == 'spec':
        lines = [tuple(l) for l in case['lines']]
        var = dict(case['vars'])
        line = matcher.match_spec(tuple(case['spec']), lines, var)
        return {'line': list(line) if line else None,
                'lines': [list(l) for l in lines], 'vars': var}
    if kind == 'sysname':
        items = [tuple(l) for l in case['items']]
        return {'result': matcher.generate_filename_and_macs(items)}
    raise ValueError(kind)


def main():
    with open(sys.argv[1]) as f:
        cases = to_str(json.load(f))
    out = []
    for case in cases:
        try:
            out.append(run(case))
        except Exception as e:
            where = traceback.extract_tb(sys.exc_info()[2])[-1][2]
            out.append({'raise': type(e).__name__, 'where': where})
    json.dump(out, sys.stdout)


main()
