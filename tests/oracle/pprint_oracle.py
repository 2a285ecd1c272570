"""Oracle for tests/literal_pprint.rs: Python 2.7's own repr, pprint and eval.

Default mode reads one JSON case per line on stdin: [value, indent,
allowance], the value in a tagged encoding (see `dec`). For each case writes
three length-prefixed blocks ("<len>\n<bytes>"): pprint.saferepr(value),
builtin repr(value) (or "-" when the value holds a dict, whose builtin repr
follows hash order), and PrettyPrinter()._format(value, indent, allowance) +
"|" + pprint.pformat.

Mode "eval" reads one hex-encoded source text per line and writes one JSON
line per source: ["ok", <tagged value>] or ["err", "<exception>"].
"""
import json
import pprint
import struct
import sys
from cStringIO import StringIO


def dec(x):
    t = x[0]
    if t == 'n':
        return None
    if t == 'b':
        return bool(x[1])
    if t == 'i':
        v = int(x[1])
        assert type(v) is int
        return v
    if t == 'L':
        return long(x[1])
    if t == 'f':
        return struct.unpack('>d', str(x[1]).decode('hex'))[0]
    if t == 's':
        return str(x[1]).decode('hex')
    if t == 'u':
        return str(x[1]).decode('hex').decode('utf-8')
    if t == 'l':
        return [dec(e) for e in x[1]]
    if t == 't':
        return tuple(dec(e) for e in x[1])
    if t == 'd':
        d = {}
        for k, v in x[1]:
            d[dec(k)] = dec(v)
        return d
    raise ValueError(t)


def enc(v):
    if v is None:
        return ['n']
    if isinstance(v, bool):
        return ['b', int(v)]
    if isinstance(v, int):
        return ['i', str(v)]
    if isinstance(v, long):
        return ['L', str(v)]
    if isinstance(v, float):
        return ['f', struct.pack('>d', v).encode('hex')]
    if isinstance(v, str):
        return ['s', v.encode('hex')]
    if isinstance(v, unicode):
        return ['u', v.encode('utf-8').encode('hex')]
    if isinstance(v, list):
        return ['l', [enc(e) for e in v]]
    if isinstance(v, tuple):
        return ['t', [enc(e) for e in v]]
    if isinstance(v, dict):
        return ['d', [[enc(k), enc(e)] for k, e in v.items()]]
    raise TypeError(type(v).__name__)


# eval() with nothing but the names a literal may use.
NAMES = {'__builtins__': {}, 'True': True, 'False': False, 'None': None}


def evaluate():
    for line in sys.stdin:
        src = line.strip().decode('hex')
        try:
            answer = ['ok', enc(eval(src, NAMES, {}))]
        except Exception as e:
            answer = ['err', repr(e)]
        sys.stdout.write(json.dumps(answer) + '\n')
    sys.stdout.flush()


def has_dict(v):
    if isinstance(v, dict):
        return True
    if isinstance(v, (list, tuple)):
        return any(has_dict(e) for e in v)
    return False


def block(out, s):
    out.write('%d\n' % len(s))
    out.write(s)


def main():
    out = sys.stdout
    for line in sys.stdin:
        value, indent, allowance = json.loads(line)
        v = dec(value)
        block(out, pprint.saferepr(v))
        block(out, '-' if has_dict(v) else repr(v))
        s = StringIO()
        pprint.PrettyPrinter()._format(v, s, indent, allowance, {}, 0)
        s.write('|')
        pprint.PrettyPrinter(stream=s).pprint(v)
        block(out, s.getvalue())
    out.flush()


if sys.argv[1:] == ['eval']:
    evaluate()
else:
    main()
