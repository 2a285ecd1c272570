#!/usr/bin/env python3
"""Random cases for the differential test of `upload -f` (python3, stdlib).

Each case is a directory that both the legacy oracle (legacy_upload.py) and
our `upload` binary can run:

  edeploy.conf   [SERVER] CONFIGDIR, HWDIR (sometimes absent), LOCKFILE
  request.json   {"hw": "hw.json", "failure": null or "<profile>"}
  hw.json        what the initrd sends (JSON, sometimes the Python literal
                 form, rarely invalid)
  config/        state, <profile>.specs/.configure and sometimes .cmdb
  hw/            HWDIR when it is set
  run/           where LOCKFILE lives (never compared)

Cases are built around the hardware they are sent with, so that most specs
can match, some only after backtracking, and the CMDB has entries that the
variables find again. Every outcome kind is drawn on purpose: matches in
each profile, no quota, nothing matches, CMDB exhausted, `$$` without entry,
failure reports.

About one value field in ten of hw.json is a JSON number, true, false or
null (as real initrds send for counts and sizes); specs name those lines by
variables (which bind the number), by text (which never equals it) or,
rarely, by a function (the legacy raises).

Usage: gen_cases.py --out DIR --count N --seed S [--first I] [--hard]
Prints the case directories, one a line. Case i (DIR/case-<i>) depends only
on (S, i), not on DIR except for the paths in its edeploy.conf: two runs
with different DIRs make the same cases. --hard makes cases that send the
legacy matcher into deep backtracking (milliseconds to minutes each).
       gen_cases.py --out DIR --summarize
Prints a histogram of the oracle results (expected/result.json) under DIR.
"""

import argparse
import json
import os
import random
import re

# The .configure files start with this line, so that the `var = ...` block
# can be cut out of a configure script: it ends where the marker begins.
MARKER = "# edeploy-difftest: the .configure file starts here\n"

NON_ASCII = ["\u00e9", "\u00fc", "\u2122", "\u00f1", "\U0001f600", "\u4e2d", "\u00a0"]

VENDORS = [
    "HP",
    "Dell Inc.",
    "QEMU",
    "Supermicro",
    "IBM",
    "LENOVO",
    "Hewlett-Packard",
    "Cisco Systems Inc",
    "innotek GmbH",
    "",
]
NAMES = [
    "ProLiant DL360 G7",
    "PowerEdge R620",
    "Standard PC (i440FX + PIIX, 1996)",
    "X9DRT-HF+",
    "edeploy_test_vm ()",
    "System x3550 M4 -[7914]-",
    "UCSB-B200-M3",
    "VirtualBox",
    "KVM",
    "  ",
    "---",
]
SERIAL_CHARS = "ABCDEFGHJKLMNPQRSTUVWXYZ0123456789" * 6 + "-./#_: '\"\\\t"
DISK_VENDORS = ["ATA", "HP", "QEMU", "SEAGATE", "Intel"]
DISK_MODELS = ["LOGICAL VOLUME", "SSDSC2BB240G4", "QEMU HARDDISK", "ST9300653SS", "INTEL SSD"]
DISK_SIZES = ["8", "20", "50", "100", "146", "300", "600", "1000", "2000"]
NIC_VENDORS = ["Intel Corporation", "Broadcom Corporation", "Red Hat, Inc", "Emulex"]
SUBNETS = ["192.168.122.", "10.0.0.", "10.1.2.", "172.16.5."]
NETWORKS = [
    "10.0.0.0/8",
    "192.168.122.0/24",
    "10.0.0.5/16",
    "172.16.0.0/12",
    "10.1.2.0/24",
    "192.168.0.0/16",
    "0.0.0.0/0",
    "10.1.2.128/25",
]
PROFILES = ["hp", "vm", "dell", "storage", "compute", "control", "ceph-osd", "swift_proxy", "x1", "default"]
COUNTS = [0, 1, 1, 2, 5, "*", "*", "3", "0", "1", -1, "03"]
CMDB_KEYS = ["ip", "hostname", "gateway", "netmask", "vlan", "rack", "domain"]


def odd(rng, text, prob=0.12):
    """Sometimes insert a non-ASCII character (the server drops them)."""
    if rng.random() < prob:
        pos = rng.randint(0, len(text))
        text = text[:pos] + rng.choice(NON_ASCII) + text[pos:]
    return text


def ascii_only(text):
    return text.encode("ascii", "ignore").decode("ascii")


def mac(rng):
    text = "52:54:00:%02x:%02x:%02x" % (rng.randrange(3), rng.randrange(256), rng.randrange(256))
    return text.upper() if rng.random() < 0.1 else text


class NumText(float):
    """A float that hw.json writes with a text of its own (2.50, 1E2, 1e400)."""

    def __new__(cls, value, text):
        obj = float.__new__(cls, value)
        obj.text = text
        return obj


class IntText(int):
    """An int that hw.json writes with a text of its own (-0)."""

    def __new__(cls, value, text):
        obj = int.__new__(cls, value)
        obj.text = text
        return obj


INF = float("inf")
# Python 2 reads the first three as int (no L in its repr), the others as long.
BIG_INTS = [2**63 - 1, -(2**63), 4294967296, 2**63, 2**64, 10**20, -(2**63) - 1, 2**64 - 1, 3 * 10**25]
ODD_FLOATS = [2.5, 1e20, -0.0, 3.0, 0.5, 1e-07, 1e16, 123456789.125, 0.1, 1e22, 2.0**64, 1.5e300, -2.5]
ODD_TEXTS = [
    (2.5, "2.50"),
    (2.5, "25e-1"),
    (100.0, "1E2"),
    (3.0, "3.0e0"),
    (0.0, "0e0"),
    (1e20, "1E+20"),
    (1e-07, "0.0000001"),
    (INF, "1e400"),
    (-INF, "-1e400"),
]
# Lines that name the machine (generate_filename_and_macs): the legacy
# raises on anything but a string there.
SYSNAME_KEYS = {("system", "vendor"), ("system", "name"), ("system", "serial"), ("network", "serial")}


def float_form(rng, value):
    """value as a float, sometimes with another JSON text for it."""
    if rng.random() < 0.3 and value == int(value) and abs(value) < 1e15:
        return NumText(value, rng.choice(["%d.0", "%de0", "%d.00", "%dE0"]) % value)
    return float(value)


def nonstring(rng, val):
    """A JSON number, true, false or null standing for the string val."""
    num = float(val) if is_number(val) and val.lower().lstrip("-") not in ("inf", "nan", "infinity") else None
    integral = num is not None and num == int(num)
    roll = rng.random()
    if roll < 0.6:
        return int(num) if integral else rng.choice([0, 1, 2, 3, 8, 408, -1, 4000])
    if roll < 0.74:
        return float_form(rng, num) if num is not None else rng.choice(ODD_FLOATS)
    if roll < 0.8:
        return rng.choice(BIG_INTS + [1e20])
    if roll < 0.88:
        if integral and num in (0, 1) and rng.random() < 0.7:
            return bool(num)
        return rng.choice([True, False])
    if roll < 0.93:
        return None
    forms = [
        lambda: rng.choice(ODD_FLOATS),
        lambda: NumText(*rng.choice(ODD_TEXTS)),
        lambda: IntText(0, "-0"),
    ]
    return rng.choice(forms)()


def numberize(rng, items):
    """About one value field in ten becomes a JSON number (or bool, null).

    Real initrds send numbers for counts and sizes: those keys get them more
    often. Lines that name the machine stay strings (the legacy crashes on
    anything else) but in rare cases; a name field (the 2nd) rarely too.
    """
    for item in items:
        cls, key = item[0], item[2]
        if (cls, key) in SYSNAME_KEYS or not isinstance(item[3], str):
            continue
        if rng.random() < (0.25 if (cls, key) in NUMERIC else 0.04):
            item[3] = nonstring(rng, item[3])
    if rng.random() < 0.004:
        named = [i for i in items if (i[0], i[2]) in SYSNAME_KEYS]
        if named:
            rng.choice(named)[3] = rng.choice([2, 1.5, None, True, 2**64])
    if rng.random() < 0.01:
        others = [i for i in items if i[0] in ("disk", "cpu", "memory")]
        if others:
            rng.choice(others)[1] = rng.choice([0, 1, 2.0, None, True])
    return items


def gen_hw(rng):
    """A machine: system, cpu, memory, disks and NICs, as 4-field lists.

    The 4th field is a string, or for about one line in ten a number, a
    bool or None (see numberize).
    """
    items = []
    if rng.random() < 0.85:
        items.append(["system", "product", "vendor", odd(rng, rng.choice(VENDORS))])
    if rng.random() < 0.85:
        items.append(["system", "product", "name", odd(rng, rng.choice(NAMES))])
    if rng.random() < 0.7:
        serial = "".join(rng.choice(SERIAL_CHARS) for _ in range(rng.randint(0, 12)))
        items.append(["system", "product", "serial", odd(rng, serial)])
    if rng.random() < 0.3:
        items.append(["system", "ipmi", "channel", str(rng.randint(1, 2))])
    sockets = rng.randint(1, 2)
    items.append(["cpu", "physical", "number", str(sockets)])
    for sock in range(sockets):
        items.append(["cpu", "physical_%d" % sock, "cores", rng.choice(["2", "4", "8", "12"])])
        items.append(["cpu", "physical_%d" % sock, "product", "Intel(R) Xeon(R) CPU E5-2650 0 @ 2.00GHz"])
    if rng.random() < 0.25:
        logical = sockets * rng.choice([1, 2, 4])
        items.append(["cpu", "logical", "number", str(logical)])
        for n in range(min(logical, 4)):
            # Real initrds send these as numbers.
            loops = rng.choice([408, 4000, 4788, 3990, 4400])
            items.append(["cpu", "logical_%d" % n, "loops_per_sec", loops if rng.random() < 0.8 else str(loops)])
    items.append(["memory", "total", "size", str(rng.choice([4, 8, 16, 64]) * 1073741824)])

    prefix = rng.choice(["sd", "vd", "hd"])
    for n in range(rng.randint(1, 4)):
        name = prefix + "abcdefgh"[n]
        items.append(["disk", name, "size", rng.choice(DISK_SIZES)])
        if rng.random() < 0.7:
            items.append(["disk", name, "vendor", odd(rng, rng.choice(DISK_VENDORS), 0.05)])
        if rng.random() < 0.7:
            items.append(["disk", name, "model", odd(rng, rng.choice(DISK_MODELS), 0.05)])
        if rng.random() < 0.3:
            items.append(["disk", name, "rotational", rng.choice(["0", "1"])])
    if rng.random() < 0.3:
        items.append(["disk", "logical", "count", str(rng.randint(1, 4))])

    nic_prefix = rng.choice(["eth", "em", "eno"])
    for n in range(rng.randint(1, 4)):
        name = "%s%d" % (nic_prefix, n + (nic_prefix == "em"))
        items.append(["network", name, "serial", mac(rng)])
        if rng.random() < 0.7:
            items.append(["network", name, "ipv4", rng.choice(SUBNETS) + str(rng.randint(1, 254))])
            items.append(["network", name, "ipv4-netmask", "255.255.255.0"])
        items.append(["network", name, "link", rng.choice(["yes", "no"])])
        if rng.random() < 0.5:
            items.append(["network", name, "vendor", rng.choice(NIC_VENDORS)])
    if rng.random() < 0.05:
        items.append(list(rng.choice(items)))
    numberize(rng, items)
    if rng.random() < 0.3:
        rng.shuffle(items)
    return items


def is_number(text):
    if not isinstance(text, str):
        return False
    try:
        float(text)
    except ValueError:
        return False
    return text.strip() == text and text != ""


def is_ipv4(text):
    parts = text.split(".")
    return len(parts) == 4 and all(p.isdigit() and int(p) < 256 for p in parts)


# The (class, key) pairs that gen_hw fills only with numbers, and only with
# IPv4 addresses. The legacy raises on gt()/network() of a value it cannot
# read, where we answer false: functions of those families are only put
# where no line that reaches them can hold anything else.
NUMERIC = {
    ("disk", "size"),
    ("disk", "rotational"),
    ("disk", "count"),
    ("cpu", "number"),
    ("cpu", "cores"),
    ("memory", "size"),
    ("system", "channel"),
    ("cpu", "loops_per_sec"),
}
IPV4 = {("network", "ipv4"), ("network", "ipv4-netmask")}


def fmt_num(rng, value):
    if rng.random() < 0.15:
        return "%.1f" % value
    return str(int(value))


def quote(rng, text):
    roll = rng.random()
    if roll < 0.1:
        return "'%s'" % text
    if roll < 0.15:
        return '"%s"' % text
    return text


def num_func(rng, value):
    """A function of a number; true or false about as often."""
    v = float(value)
    near = [v, v - 1, v + 1, v / 2, v * 2, 0]
    a, b = sorted([rng.choice(near), rng.choice(near)])
    op = rng.choice(["gt", "ge", "lt", "le"])
    sep = rng.choice([", ", ",", " , "])
    # No range(): hardware 0.18 lacks it (it never matches there) and we
    # deliberately provide it; src/spec.rs tests it.
    forms = [
        lambda: "%s(%s)" % (op, fmt_num(rng, rng.choice(near))),
        lambda: "%s(%s)" % (op, fmt_num(rng, rng.choice(near))),
        lambda: "in(%s%s%s)" % (quote(rng, value), sep, quote(rng, str(int(v) + 1))),
        lambda: "not(lt(%s))" % fmt_num(rng, rng.choice(near)),
        lambda: "and(gt(%s)%slt(%s))" % (fmt_num(rng, a), sep, fmt_num(rng, b)),
        lambda: "and(ge(%s)%sle(%s))" % (fmt_num(rng, a), sep, fmt_num(rng, b)),
        lambda: "or(lt(%s)%sgt(%s))" % (fmt_num(rng, a), sep, fmt_num(rng, b)),
        lambda: r"regexp(^\d+$)",
    ]
    if rng.random() < 0.03:
        # Two levels of nesting: the legacy splits the inner arguments on
        # every comma and crashes (TypeError); kept rare.
        return rng.choice(
            [
                "not(and(gt(%s)%slt(%s)))" % (fmt_num(rng, a), sep, fmt_num(rng, b)),
                "or(and(ge(%s), le(%s)), gt(%s))" % (fmt_num(rng, a), fmt_num(rng, b), fmt_num(rng, v * 4)),
                "not(not(lt(%s)))" % fmt_num(rng, b),
            ]
        )
    return rng.choice(forms)()


def ip_func(rng, value):
    net = rng.choice(NETWORKS)
    other = rng.choice(NETWORKS)
    forms = [
        lambda: "network(%s)" % net,
        lambda: "network(%s)" % net,
        lambda: "not(network(%s))" % net,
        lambda: "or(network(%s), network(%s))" % (net, other),
        lambda: "and(network(%s), not(in(%s)))" % (net, value),
        lambda: "in(%s, 10.0.0.1)" % value,
        lambda: r"regexp(^10\.)",
    ]
    return rng.choice(forms)()


def str_func(rng, value):
    head = value[: rng.randint(1, 3)] if value else "x"
    tail = value[-2:] if value else "y"
    safe_head = "".join(c if c.isalnum() else "." for c in head)
    safe_tail = "".join(c if c.isalnum() else "." for c in tail)
    other = rng.choice(["foo", "HP", "sda", "yes", "Intel Corporation", "no"])
    forms = [
        lambda: "regexp(^%s)" % safe_head,
        lambda: "regexp(%s$)" % safe_tail,
        lambda: "regexp(.*)",
        lambda: "regexp([0-9]+)",
        lambda: "regexp(^(sd|vd)[a-c]$)",
        lambda: r"regexp(\s)",
        lambda: "in(%s, %s)" % (quote(rng, value), quote(rng, other)),
        lambda: "in(%s)" % quote(rng, other),
        lambda: "not(in(%s))" % quote(rng, other),
        lambda: "not(regexp(^%s))" % safe_head,
        lambda: "or(regexp(^%s), regexp(^%s))" % (safe_head, other[:2]),
        lambda: "and(regexp(%s$), not(in(%s)))" % (safe_tail, other),
        lambda: "unknown(%s)" % value,
    ]
    if rng.random() < 0.03:
        # A nested call with a comma in its arguments: the legacy splits the
        # outer arguments on every comma and crashes (TypeError); kept rare.
        return "not(in(%s, %s))" % (quote(rng, other), quote(rng, "bar"))
    return rng.choice(forms)()


class Profile:
    """Variable names of one profile: shared between its specs on purpose."""

    def __init__(self, rng):
        self.name_vars = {
            "disk": rng.sample(["disk", "disk1", "d"], rng.randint(1, 2)),
            "network": rng.sample(["eth", "eth1", "nic"], rng.randint(1, 2)),
            "cpu": ["cpu"],
            "memory": ["mem"],
            "system": ["sys"],
        }
        self.value_vars = {
            "size": ["size", "size1"],
            "serial": ["mac", "serial", "tag"],
            "ipv4": ["ip"],
            "vendor": ["vendor"],
            "model": ["model"],
            "link": ["link"],
            "name": ["name"],
        }
        # var -> value expected when the spec binds it to its target line.
        self.binding = {}
        # `$$` variables: name -> candidate values.
        self.forced = {}


def py2_str(value):
    """What str() gives in Python 2 for a value of a hardware line."""
    if isinstance(value, float):
        return repr(float(value))
    return str(value)


def equal_variant(rng, value):
    """value, or another Python value equal to it (2, 2.0, True)."""
    if isinstance(value, str) or value is None:
        return value
    options = [value, float(value)]
    if abs(value) != INF and value == int(value):
        options.append(int(value))
        if value in (0, 1):
            options.append(bool(value))
    return rng.choice(options)


def other_form(rng, value):
    """For a number: an equal one, or its text that equals nothing."""
    if isinstance(value, str):
        return value
    return equal_variant(rng, value) if rng.random() < 0.6 else py2_str(value)


# Of the specs that could hold a function where a line with a number (bool,
# None) can reach it, the share that keeps it: the legacy crashes on those
# (AttributeError: no strip() on an int), so they stay rare.
RISKY_FUNC = 0.08


def value_field(rng, prof, item, target_ok, func_ok):
    cls, _, key, val = item
    var = rng.choice(prof.value_vars.get(key, ["v_" + key.replace("-", "_")]))
    text = val if isinstance(val, str) else py2_str(val)
    roll = rng.random()
    if roll < 0.22:
        if not isinstance(val, str) and rng.random() < 0.1:
            # A number in the spec (the caller keeps the other fields plain):
            # the legacy finds an equal line, or raises on the number.
            return equal_variant(rng, val)
        # For a number, a text that never equals it.
        return text
    if roll < 0.42:
        prof.binding[var] = val
        return "$" + var
    if roll < 0.52:
        prof.binding[var] = val
        prof.forced[var] = val
        return "$$" + var
    if not isinstance(val, str) and not func_ok:
        # A function here would raise on the target line itself: bind it.
        prof.binding[var] = val
        if roll < 0.6:
            prof.forced[var] = val
            return "$$" + var
        return "$" + var
    func = None
    if not func_ok:
        pass
    elif not isinstance(val, str):
        finite = is_number(text) and abs(float(text)) != INF
        func = num_func(rng, text) if finite else str_func(rng, text)
    elif (cls, key) in NUMERIC and target_ok:
        func = num_func(rng, val) if is_number(val) and abs(float(val)) != INF else None
    elif (cls, key) in IPV4 and target_ok:
        func = ip_func(rng, val)
    elif (cls, key) not in NUMERIC and (cls, key) not in IPV4:
        func = str_func(rng, val)
    if func is None:
        return val
    if roll < 0.62:
        prof.binding[var] = val
        if rng.random() < 0.15:
            prof.forced[var] = val
            return "$$%s=%s" % (var, func)
        return "$%s=%s" % (var, func)
    return func


def name_field(rng, prof, item, func_ok):
    cls, name = item[0], item[1]
    roll = rng.random()
    if not isinstance(name, str):
        # A name that is a number: plain text never equals it.
        func_ok = False
        if roll < 0.35:
            return py2_str(name)
    if roll < 0.35 or cls not in prof.name_vars:
        return name
    var = rng.choice(prof.name_vars[cls])
    if roll < 0.85 or (roll >= 0.9 and not func_ok):
        prof.binding[var] = name
        return "$" + var
    if roll < 0.9:
        prof.binding[var] = name
        prof.forced[var] = name
        return "$$" + var
    if roll < 0.95:
        return "in(%s, %s)" % (name, rng.choice(["sda", "eth0", "vdb", "em1"]))
    return "$%s=regexp(^%s)" % (var, name[:2])


def reaches_nonstring(hw, cls, key, field):
    """Does a line of hw that holds cls (None: any) and key (None: any) have
    anything but a string in field?"""
    return any(
        not isinstance(i[field], str) for i in hw if (cls is None or i[0] == cls) and (key is None or i[2] == key)
    )


def gen_spec(rng, prof, items, hw):
    """A spec for one of items (hw, the machine it is matched against, or
    another one). A function is only evaluated on the lines that the other
    fields let through: the legacy raises when one of them is not a string,
    so such places get one only with RISKY_FUNC."""
    numbers = [i for i in items if not isinstance(i[3], str)]
    item = rng.choice(numbers if numbers and rng.random() < 0.15 else items)
    if rng.random() < 0.08:
        # A value of another line of the same key: this spec may well match
        # nothing (or another line).
        others = [i[3] for i in items if i[0] == item[0] and i[2] == item[2] and i[3] != item[3]]
        if others:
            wrong = rng.choice(others)
        elif is_number(item[3]):
            wrong = str(int(float(item[3])) + 7)
        elif isinstance(item[3], str):
            wrong = item[3] + "x"
        else:
            # The text of a number never equals it.
            wrong = py2_str(item[3]) if is_number(py2_str(item[3])) else "7"
        item = [item[0], item[1], item[2], wrong]
    cls, _, key, _ = item
    if rng.random() < 0.08:
        # The line itself; for a number, mostly its text (equals nothing).
        return tuple(f if isinstance(f, str) or rng.random() < 0.3 else py2_str(f) for f in item)
    keyed = rng.random() < 0.05
    f0 = "$c" if rng.random() < 0.03 and not keyed else cls
    risky = reaches_nonstring(hw, cls if f0 == cls else None, key, 3)
    name_risky = reaches_nonstring(hw, cls if f0 == cls else None, None, 1)
    f1 = name_field(rng, prof, item, not name_risky or rng.random() < RISKY_FUNC)
    # A variable key lets lines of other keys reach field 3: only when that
    # field cannot raise on them.
    f3 = value_field(rng, prof, item, f0 == cls and not keyed, not risky or rng.random() < RISKY_FUNC)
    if not isinstance(f3, str):
        # Found by the exact comparison only, or the legacy raises.
        return (cls, item[1], key, f3)
    f2 = "$k" if keyed and "(" not in f3 else key
    return (f0, f1, f2, f3)


def binding_specs(specs):
    """How many specs bind a variable not bound before them.

    Each such spec is a backtracking point of the legacy search, which on a
    failing profile retries them down to 50 levels: about C(50 + k, k)
    attempts for k points. Cases stay cheap by keeping k at 1 or 2.
    """
    seen = set()
    count = 0
    for spec in specs:
        names = {f.split("=")[0].lstrip("$") for f in spec if isinstance(f, str) and f.startswith("$")}
        if names - seen:
            count += 1
        seen |= names
    return count


def py_repr(value, rng=None):
    """Python 2 literal text (ASCII data only) of lists, tuples and dicts.

    As repr() but for infinities (1e400). With rng (the literal form of
    hw.json), numbers sometimes keep their own text and longs get their L.
    """
    if isinstance(value, list):
        return "[" + ", ".join(py_repr(v, rng) for v in value) + "]"
    if isinstance(value, tuple):
        inner = ", ".join(py_repr(v, rng) for v in value)
        return "(" + inner + ("," if len(value) == 1 else "") + ")"
    if isinstance(value, dict):
        return "{" + ", ".join("%s: %s" % (py_repr(k, rng), py_repr(v, rng)) for k, v in value.items()) + "}"
    if rng is not None and hasattr(value, "text") and rng.random() < 0.5:
        return value.text
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return repr(value)
    if isinstance(value, int):
        text = repr(int(value))
        if rng is not None and not -(2**63) <= value < 2**63 and rng.random() < 0.5:
            text += "L"
        return text
    if isinstance(value, float):
        if abs(value) == INF:
            return "1e400" if value > 0 else "-1e400"
        return repr(float(value))
    return repr(value)


def hw_json(items, **kwargs):
    """json.dumps of the hardware lines, numbers with a text of their own
    written with it."""
    texts = []

    def hide(value):
        if hasattr(value, "text"):
            texts.append(value.text)
            return "@@NUM%d@@" % (len(texts) - 1)
        return value

    text = json.dumps([[hide(f) for f in item] for item in items], **kwargs)
    for n, num in enumerate(texts):
        text = text.replace('"@@NUM%d@@"' % n, num, 1)
    return text


def write_specs(rng, path, specs):
    roll = rng.random()
    if roll < 0.5:
        text = "[\n" + "".join("    %s,\n" % py_repr(s) for s in specs) + "]\n"
    elif roll < 0.8:
        text = py_repr(specs) + "\n"
    elif roll < 0.9:
        text = "# specs\n[\n" + "".join("    %s,  # spec %d\n" % (py_repr(s), i) for i, s in enumerate(specs)) + "]\n"
    else:
        text = py_repr([list(s) for s in specs]) + "\n"
    with open(path, "w", encoding="utf-8") as out:
        out.write(text)


def odd_value(rng):
    return rng.choice([100, 0, -3, 1.5, True, None, ["a", "b"], ("x", 1), {"k": "v"}, "", "x y", "it's"])


def cmdb_entry(rng, prof, reuse):
    entry = {}
    for key in rng.sample(CMDB_KEYS, rng.randint(1, 3)):
        if key == "ip":
            entry[key] = "10.9.%d.%d" % (rng.randint(0, 3), rng.randint(1, 254))
        elif key == "vlan":
            entry[key] = rng.choice([100, "200", 300])
        else:
            entry[key] = "%s%d" % (key, rng.randint(1, 99))
    if rng.random() < 0.2:
        entry["extra"] = odd_value(rng)
    if reuse and prof.binding:
        keys = list(prof.binding)
        for key in rng.sample(keys, rng.randint(1, len(keys))):
            entry[key] = prof.binding[key]
            roll = rng.random()
            if roll < 0.1:
                entry[key] = "other"
            elif roll < 0.4:
                # For a number: 2.0 or True finds 2 again, '2' does not.
                entry[key] = other_form(rng, entry[key])
    if rng.random() < 0.3:
        entry["used"] = 1
    return entry


def distinct(values):
    """The values once each, sorted; 2, 2.0 and True are three values here
    (the first entry that holds one of them wins in the legacy)."""
    seen = {}
    for value in values:
        seen.setdefault((type(value).__name__, py_repr(value)), value)
    return [seen[k] for k in sorted(seen, key=lambda k: (k[0] != "str", k))]


def plain_cmdb(rng, prof, items):
    entries = []
    for _ in range(rng.randint(0, 5)):
        entries.append(cmdb_entry(rng, prof, rng.random() < 0.3))
    for var in prof.forced:
        # Entries for the `$$` variables: the true value, other values of
        # the same kind of line, or none.
        if rng.random() < 0.8:
            values = [prof.forced[var]] + [it[3] for it in items if rng.random() < 0.2]
            values += [it[1] for it in items if rng.random() < 0.1]
            values += [other_form(rng, v) for v in values if not isinstance(v, str) and rng.random() < 0.5]
            for value in distinct(values):
                entry = cmdb_entry(rng, prof, False)
                entry[var] = value
                entries.insert(rng.randint(0, len(entries)), entry)
    if rng.random() < 0.15:
        for entry in entries:
            entry["used"] = 1
    return entries


def range_string(rng):
    forms = [
        lambda: "10.0.0.%d-%d" % (lambda a: (a, a + rng.randint(0, 4)))(rng.randint(1, 250)),
        lambda: "192.168.%d-%d.%d-%d" % (1, rng.randint(1, 2), 10, rng.randint(10, 12)),
        lambda: "host%d-%d" % (lambda a: (a, a + rng.randint(0, 3)))(rng.randint(1, 20)),
        lambda: "host001-00%d" % rng.randint(1, 4),
        lambda: "node1-%d:10-%d" % (rng.randint(1, 2), rng.randint(10, 11)),
        lambda: "rack%d-%d.example" % (rng.randint(3, 5), rng.randint(1, 3)),
        lambda: "010-00%d" % rng.randint(7, 9),
        lambda: "10.0.%d.1-2" % rng.randint(0, 3),
    ]
    return rng.choice(forms)()


def generate_model(rng, prof, items):
    model = {}
    for key in rng.sample(CMDB_KEYS, rng.randint(1, 3)):
        roll = rng.random()
        if roll < 0.55:
            model[key] = range_string(rng)
        elif roll < 0.75:
            # An empty list makes an empty CMDB: the legacy then matches
            # without any entry and leaves the file alone.
            model[key] = ["%s-%d" % (key, i) for i in range(rng.choice([0, 1, 2, 3, 3, 4, 4]))]
        else:
            model[key] = rng.choice(["gw", "D7-H.1.0.0", "", "a-b"])
    if rng.random() < 0.03:
        # Values that repeat: costly in the legacy (each builds a sequence of
        # millions before the shortest one ends the zip), hence rare.
        model[rng.choice(["extra", "used"])] = rng.choice([("t1", "t2"), 7, 1, 1.5, None, {"a": 1}])
    for var in prof.forced:
        if rng.random() < 0.8:
            values = [prof.forced[var]] + [it[3] for it in items if rng.random() < 0.2]
            values += [other_form(rng, v) for v in values if not isinstance(v, str) and rng.random() < 0.3]
            rng.shuffle(values)
            model[var] = values
    # All-repeating values make a generator of 16 million entries (a minute
    # in the legacy): give the model something finite to run out of.
    plain = all(isinstance(v, str) for v in model.values())
    finite = any(isinstance(v, list) or (isinstance(v, str) and re.search(r"\d-\d", v)) for v in model.values())
    if not plain and not finite:
        model["ip"] = "10.1.0.1-3"
    return model


def write_cmdb(rng, path, prof, items):
    roll = rng.random()
    if roll < 0.5:
        entries = plain_cmdb(rng, prof, items)
        if rng.random() < 0.5:
            text = "[\n" + ",\n".join(" " + py_repr(e) for e in entries) + "\n]\n"
        else:
            text = py_repr(entries) + "\n"
    else:
        model = generate_model(rng, prof, items)
        lead = rng.choice(["", "", "", "\n", "  ", "# generated\n"])
        text = "%sgenerate(%s)\n" % (lead, py_repr(model))
    with open(path, "w", encoding="ascii") as out:
        out.write(text)


def write_state(rng, path, state):
    roll = rng.random()
    if roll < 0.5:
        text = py_repr(state) + "\n"
    elif roll < 0.8:
        text = "[\n" + "".join("    %s,\n" % py_repr(e) for e in state) + "]\n"
    elif roll < 0.9:
        text = "# profiles\n" + py_repr(state) + "\n"
    else:
        text = py_repr([list(e) for e in state]) + "\n"
    with open(path, "w", encoding="ascii") as out:
        out.write(text)


def write_hw(rng, path, items):
    """hw.json: JSON, or the Python literal form that old initrds sent (as
    the legacy writes the .hw files: numbers too, longs with or without L,
    a float as 2.50 or 1e400)."""
    roll = rng.random()
    if roll < 0.02:
        text = hw_json(items)[: rng.randint(1, 30)]
    elif roll < 0.03:
        text = "[]"
    elif roll < 0.13:
        shaped = [tuple(i) for i in items] if rng.random() < 0.7 else items
        text = py_repr(shaped, rng)
    else:
        text = hw_json(items, ensure_ascii=rng.random() < 0.5, indent=rng.choice([None, None, 1, 4]))
    with open(path, "w", encoding="utf-8") as out:
        out.write(text + ("\n" if rng.random() < 0.7 else ""))


def gen_case(case_dir, rng):
    config = os.path.join(case_dir, "config")
    hwdir = os.path.join(case_dir, "hw")
    for path in (config, hwdir, os.path.join(case_dir, "run")):
        os.makedirs(path)

    raw_items = gen_hw(rng)
    items = [[ascii_only(f) if isinstance(f, str) else f for f in item] for item in raw_items]
    # Profiles written for another machine rarely match this one.
    stranger = [[ascii_only(f) if isinstance(f, str) else f for f in item] for item in gen_hw(rng)]

    names = rng.sample(PROFILES, rng.randint(1, 5))
    state = []
    for name in names:
        count = rng.choice(COUNTS)
        state.append((name, count))
        prof = Profile(rng)
        source = items if rng.random() < 0.75 else stranger
        specs = [gen_spec(rng, prof, source, items) for _ in range(rng.randint(1, 6))]
        limit = 2 if rng.random() < 0.35 else 1
        while len(specs) > 1 and binding_specs(specs) > limit:
            specs.pop(rng.randrange(len(specs)))
        if rng.random() < 0.92:
            write_specs(rng, os.path.join(config, name + ".specs"), specs)
        with open(os.path.join(config, name + ".configure"), "w") as out:
            out.write(MARKER + "run('echo %s')\n" % name)
        if rng.random() < 0.4:
            write_cmdb(rng, os.path.join(config, name + ".cmdb"), prof, items)
    write_state(rng, os.path.join(config, "state"), state)

    write_hw(rng, os.path.join(case_dir, "hw.json"), raw_items)

    failure = None
    if rng.random() < 0.12:
        numeric = [n for n, c in state if c != "*"]
        roll = rng.random()
        if numeric and roll < 0.6:
            failure = rng.choice(numeric)
        elif roll < 0.8:
            failure = rng.choice([n for n, _ in state])
        else:
            failure = "unknown-profile"
    with open(os.path.join(case_dir, "request.json"), "w") as out:
        json.dump({"hw": "hw.json", "failure": failure}, out)
        out.write("\n")

    cfg = rng.choice([config, config + "/", os.path.join(case_dir, ".", "config"), case_dir + "//config/"])
    lines = ["[SERVER]", "CONFIGDIR = " + cfg]
    if rng.random() < 0.7:
        lines.append("HWDIR = " + hwdir + rng.choice(["", "/"]))
    lines.append("LOCKFILE = " + os.path.join(case_dir, "run", "edeploy.lock"))
    if rng.random() < 0.2:
        lines.append("USEPXEMNGR = False")
    with open(os.path.join(case_dir, "edeploy.conf"), "w") as out:
        out.write("\n".join(lines) + "\n")


def disk_names(count):
    """sda..sdz, then sdaa, sdab...: as the kernel names them."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    names = []
    for n in range(count):
        names.append("sd" + (letters[n // 26 - 1] if n >= 26 else "") + letters[n % 26])
    return names


def hard_specs(rng, disks):
    """Specs that make the legacy backtrack deep: few binding points (specs
    that bind a new variable, see binding_specs) over many similar lines.

    The search of a failing profile costs about C(50 + k, k) calls of
    match_all for k binding points before the spec that fails (each call
    matches every spec against every line): k = 2 takes under a second, 3
    one to ten seconds, 4 tens of seconds, 5 can outlast any timeout (but
    rarely fails that late). Shared variables and
    checks on the disks bound (a model, a second size line that few disks
    have) make constraints that fail late without adding points.
    """
    k = rng.choices([1, 2, 3, 4, 5], [1, 2, 4, 5, 1])[0]
    checks = rng.randint(max(5, k), 12) - k
    sizes = sorted({v for d in disks for key, v in d[1:] if key == "size"}, key=str)
    models = sorted({v for d in disks for key, v in d[1:] if key == "model"}, key=str)
    names, size_vars, model_vars = [], [], []
    taken = set()  # (disk variable, key) whose line a spec takes

    def bind():
        form = rng.random()
        name = "$d%d" % (len(names) + 1)
        if form < 0.65 or not names:
            if size_vars and rng.random() < 0.7:
                value = rng.choice(size_vars)
            elif rng.random() < 0.8:
                value = "$s%d" % (len(size_vars) + 1)
                size_vars.append(value)
            else:
                value = rng.choice(sizes)
            key = "size"
        elif form < 0.9:
            if model_vars and rng.random() < 0.6:
                value = rng.choice(model_vars)
            else:
                value = "$m%d" % (len(model_vars) + 1)
                model_vars.append(value)
            key = "model"
        else:
            # A new value variable on a disk already bound.
            name = rng.choice(names)
            value = "$m%d" % (len(model_vars) + 1)
            model_vars.append(value)
            key = "model"
        if name not in names:
            names.append(name)
        taken.add((name, key))
        return ("disk", name, key, value)

    def check():
        """A spec on the disks bound that binds nothing: most assignments
        pass it, some do not."""
        for _ in range(20):
            name = rng.choice(names)
            form = rng.random()
            if form < 0.3 and model_vars:
                key, value = "model", rng.choice(model_vars)
            elif form < 0.55:
                key, value = "model", rng.choice(models or ["none"])
            elif form < 0.8:
                key, value = "vendor", rng.choice(DISK_VENDORS[:3])
            else:
                key, value = "rotational", rng.choice(["0", "1"])
            if (name, key) not in taken:
                taken.add((name, key))
                return ("disk", name, key, value)
        return None

    specs = []
    for n in range(k):
        specs.append(bind())
        # Checks between binding points prune the search early: few.
        while checks and rng.random() < 0.15:
            checks -= 1
            spec = check()
            if spec:
                specs.append(spec)
    for _ in range(checks):
        spec = check()
        if spec:
            specs.append(spec)
    roll = rng.random()
    if roll < 0.25:
        # A second size line of a disk: no disk has one, the whole search
        # runs before the profile fails.
        specs.append(("disk", rng.choice(names), "size", rng.choice(size_vars or sizes)))
    elif roll < 0.35:
        specs.append(("disk", rng.choice(names), "vendor", "nobody"))
    return specs


def gen_hard_case(case_dir, rng):
    """--hard: a machine with many similar disks and a profile whose specs
    make the legacy search backtrack deep (hard_specs); the rest simple."""
    config = os.path.join(case_dir, "config")
    hwdir = os.path.join(case_dir, "hw")
    for path in (config, hwdir, os.path.join(case_dir, "run")):
        os.makedirs(path)

    items = [
        ["system", "product", "vendor", rng.choice(VENDORS[:-1])],
        ["system", "product", "name", rng.choice(NAMES[:-2])],
        ["system", "product", "serial", "".join(rng.choice("ABCDEFGH0123456789") for _ in range(8))],
        ["cpu", "physical", "number", rng.choice(["1", "2", 2])],
        ["memory", "total", "size", "17179869184"],
    ]
    sizes = rng.sample(DISK_SIZES, rng.randint(2, 4))
    models = rng.sample(DISK_MODELS, rng.randint(1, 3))
    disks = []
    for name in disk_names(rng.randint(10, 40)):
        lines = [name, ("size", rng.choice(sizes))]
        if rng.random() < 0.8:
            lines.append(("model", rng.choice(models)))
        if rng.random() < 0.5:
            lines.append(("vendor", rng.choice(DISK_VENDORS[:3])))
        if rng.random() < 0.3:
            lines.append(("rotational", rng.choice(["0", "1"])))
        if rng.random() < 0.05:
            # A second size line: the one disk that passes such a check.
            lines.append(("size", rng.choice(sizes)))
        disks.append(lines)
        items.extend(["disk", name, key, value] for key, value in lines[1:])
    for n in range(rng.randint(1, 2)):
        items.append(["network", "eth%d" % n, "serial", mac(rng)])
        items.append(["network", "eth%d" % n, "link", "yes"])
    for item in items:
        if item[0] == "disk" and item[2] == "size" and rng.random() < 0.05:
            # A number now and then: '$s1' holds 100 and "100" apart.
            item[3] = int(item[3])
    if rng.random() < 0.3:
        rng.shuffle(items)

    specs = hard_specs(rng, disks)
    state = [("hard", rng.choice(["*", 1, 3]))]
    write_specs(rng, os.path.join(config, "hard.specs"), specs)
    if rng.random() < 0.4:
        # A fallback that matches when the hard profile does not.
        state.append(("fallback", "*"))
        write_specs(rng, os.path.join(config, "fallback.specs"), [("disk", "$disk", "size", "$size")])
    for name, _ in state:
        with open(os.path.join(config, name + ".configure"), "w") as out:
            out.write(MARKER + "run('echo %s')\n" % name)
    if rng.random() < 0.3:
        entries = [{"hostname": "node%d" % n, "ip": "10.9.0.%d" % n} for n in range(1, rng.randint(2, 4))]
        with open(os.path.join(config, "hard.cmdb"), "w", encoding="ascii") as out:
            out.write(py_repr(entries) + "\n")
    write_state(rng, os.path.join(config, "state"), state)
    with open(os.path.join(case_dir, "hw.json"), "w") as out:
        out.write(hw_json(items, indent=rng.choice([None, 1])) + "\n")
    with open(os.path.join(case_dir, "request.json"), "w") as out:
        json.dump({"hw": "hw.json", "failure": None}, out)
        out.write("\n")
    lines = ["[SERVER]", "CONFIGDIR = " + config, "HWDIR = " + hwdir]
    lines.append("LOCKFILE = " + os.path.join(case_dir, "run", "edeploy.lock"))
    with open(os.path.join(case_dir, "edeploy.conf"), "w") as out:
        out.write("\n".join(lines) + "\n")


def outcome_kind(result):
    """The outcome of an oracle run, without the names and paths in it."""
    outcome = result["outcome"]
    if outcome != "error":
        return outcome
    message = result["message"] or ""
    for known in (
        "Unable to match requirements",
        "No more role available",
        "No more entry in the CMDB",
        "No entry matched in the CMDB",
        "Invalid hardware file",
    ):
        if message.startswith(known):
            return "error: " + known
    return "error: %s: %s" % (result["exc_type"], message[:60])


def summarize(out):
    """Histogram of the oracle results of the cases under out."""
    counts = {}

    def count(key):
        counts[key] = counts.get(key, 0) + 1

    cases = sorted(d for d in os.listdir(out) if d.startswith("case-"))
    for case in cases:
        path = os.path.join(out, case, "expected", "result.json")
        if not os.path.exists(path):
            count("no result")
            continue
        with open(path) as src:
            result = json.load(src)
        count("outcome  " + outcome_kind(result))
        if result.get("backtracked"):
            count("search   backtracked (%s)" % result["outcome"])
        for rel in result.get("changed", []):
            kind = rel.rsplit(".", 1)[-1] if "." in os.path.basename(rel) else os.path.basename(rel)
            count("wrote    %s (%s)" % (kind, result["outcome"]))
        if result["outcome"] == "match":
            with open(os.path.join(out, case, "expected", "files", "config", "state")) as src:
                text = src.read()
            names = re.findall(r"[\[(]\s*'([^']*)'", text)
            rank = names.index(result["profile"]) + 1 if result["profile"] in names else 0
            count("match    profile #%d of the state" % rank)
            if "'used': 1" in result["var"]:
                count("match    with a CMDB entry")
        if result["seconds"] > 1:
            count("slow     > 1 s")
    for key in sorted(counts):
        print("%6d  %s" % (counts[key], key))
    print("%6d  cases" % len(cases))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--first", type=int, default=0, help="number of the first case (to regenerate one)")
    parser.add_argument("--seed", default="1")
    parser.add_argument(
        "--hard", action="store_true", help="cases that make the legacy matcher backtrack deep (slow)"
    )
    parser.add_argument(
        "--summarize", action="store_true", help="print a histogram of the oracle results under --out instead"
    )
    args = parser.parse_args()
    out = os.path.abspath(args.out)
    if args.summarize:
        summarize(out)
        return
    for i in range(args.first, args.first + args.count):
        case_dir = os.path.join(out, "case-%05d" % i)
        if args.hard:
            gen_hard_case(case_dir, random.Random("hard-%s-%d" % (args.seed, i)))
        else:
            gen_case(case_dir, random.Random("%s-%d" % (args.seed, i)))
        print(case_dir)


if __name__ == "__main__":
    main()
