# Runs the legacy hardware.generate.generate (Python 2.7) on a batch of
# models and prints the results as JSON, for tests/generate_oracle.rs.
#
# Usage: python2.7 generate_oracle.py MODELS.json
# Values are tagged: {"s": str}, {"u": unicode}, {"i": int}, {"n": null},
# {"l": [...]}, {"t": [...]}, {"d": [[key, value], ...]} (dict items in
# insertion order; output dicts have their items sorted by key).
# Each result: {"entries": [...]} or {"raise": <exception type>}.
import json
import sys

import hardware.generate as generate


def decode(v):
    (tag, x), = v.items()
    if tag == 's':
        return x.encode('utf-8')
    if tag == 'u':
        return x
    if tag == 'i':
        return x
    if tag == 'n':
        return None
    if tag == 'l':
        return [decode(e) for e in x]
    if tag == 't':
        return tuple(decode(e) for e in x)
    if tag == 'd':
        # A dict display, as in the CMDB file: its iteration order (which
        # decides where the legacy code stops) depends on how it is built.
        names = {}
        items = []
        for i, (k, e) in enumerate(x):
            names['k%d' % i] = decode(k)
            names['v%d' % i] = decode(e)
            items.append('k%d: v%d' % (i, i))
        return eval('{' + ', '.join(items) + '}', names)
    raise ValueError(tag)


def encode(v):
    if isinstance(v, bool) or v is None:
        return {'n': None} if v is None else {'b': v}
    if isinstance(v, str):
        return {'s': v.decode('utf-8')}
    if isinstance(v, unicode):
        return {'u': v}
    if isinstance(v, (int, long)):
        return {'i': v}
    if isinstance(v, list):
        return {'l': [encode(e) for e in v]}
    if isinstance(v, tuple):
        return {'t': [encode(e) for e in v]}
    if isinstance(v, dict):
        return {'d': [[encode(k), encode(e)] for k, e in sorted(v.items())]}
    raise ValueError(repr(v))


def main():
    with open(sys.argv[1]) as f:
        models = json.load(f)
    out = []
    for m in models:
        try:
            out.append({'entries': [encode(e) for e in generate.generate(decode(m))]})
        except Exception as e:
            out.append({'raise': type(e).__name__})
    json.dump(out, sys.stdout)


main()
