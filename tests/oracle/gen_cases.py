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

Usage: gen_cases.py --out DIR --count N --seed S [--first I]
Prints the case directories, one a line. Case i (DIR/case-<i>) depends only
on (S, i), not on DIR except for the paths in its edeploy.conf: two runs
with different DIRs make the same cases.
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


def gen_hw(rng):
    """A machine: system, cpu, memory, disks and NICs, as 4-string lists."""
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
    if rng.random() < 0.3:
        rng.shuffle(items)
    return items


def is_number(text):
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


def value_field(rng, prof, item, target_ok):
    cls, _, key, val = item
    var = rng.choice(prof.value_vars.get(key, ["v_" + key.replace("-", "_")]))
    roll = rng.random()
    if roll < 0.22:
        return val
    if roll < 0.42:
        prof.binding[var] = val
        return "$" + var
    if roll < 0.52:
        prof.binding[var] = val
        prof.forced[var] = val
        return "$$" + var
    func = None
    if (cls, key) in NUMERIC and target_ok:
        func = num_func(rng, val)
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


def name_field(rng, prof, item):
    cls, name = item[0], item[1]
    roll = rng.random()
    if roll < 0.35 or cls not in prof.name_vars:
        return name
    var = rng.choice(prof.name_vars[cls])
    if roll < 0.85:
        prof.binding[var] = name
        return "$" + var
    if roll < 0.9:
        prof.binding[var] = name
        prof.forced[var] = name
        return "$$" + var
    if roll < 0.95:
        return "in(%s, %s)" % (name, rng.choice(["sda", "eth0", "vdb", "em1"]))
    return "$%s=regexp(^%s)" % (var, name[:2])


def gen_spec(rng, prof, items):
    item = rng.choice(items)
    if rng.random() < 0.08:
        # A value of another line of the same key: this spec may well match
        # nothing (or another line).
        others = [i[3] for i in items if i[0] == item[0] and i[2] == item[2] and i[3] != item[3]]
        if others:
            wrong = rng.choice(others)
        elif is_number(item[3]):
            wrong = str(int(float(item[3])) + 7)
        else:
            wrong = item[3] + "x"
        item = [item[0], item[1], item[2], wrong]
    cls, _, key, _ = item
    if rng.random() < 0.08:
        return tuple(item)
    keyed = rng.random() < 0.05
    f0 = "$c" if rng.random() < 0.03 and not keyed else cls
    f1 = name_field(rng, prof, item)
    # A variable key lets lines of other keys reach field 3: only when that
    # field cannot raise on them.
    f3 = value_field(rng, prof, item, f0 == cls and not keyed)
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
        names = {f.split("=")[0].lstrip("$") for f in spec if f.startswith("$")}
        if names - seen:
            count += 1
        seen |= names
    return count


def py_repr(value):
    """Python 2 literal text (ASCII data only) of lists, tuples and dicts."""
    return repr(value)


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
            if rng.random() < 0.1:
                entry[key] = "other"
    if rng.random() < 0.3:
        entry["used"] = 1
    return entry


def plain_cmdb(rng, prof, items):
    entries = []
    for _ in range(rng.randint(0, 5)):
        entries.append(cmdb_entry(rng, prof, rng.random() < 0.3))
    for var in prof.forced:
        # Entries for the `$$` variables: the true value, other values of
        # the same kind of line, or none.
        if rng.random() < 0.8:
            values = {prof.forced[var]} | {it[3] for it in items if rng.random() < 0.2}
            values |= {it[1] for it in items if rng.random() < 0.1}
            for value in sorted(values):
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
    roll = rng.random()
    if roll < 0.02:
        text = json.dumps(items)[: rng.randint(1, 30)]
    elif roll < 0.03:
        text = "[]"
    elif roll < 0.13:
        shaped = [tuple(i) for i in items] if rng.random() < 0.7 else items
        text = repr(shaped)
    else:
        text = json.dumps(items, ensure_ascii=rng.random() < 0.5, indent=rng.choice([None, None, 1, 4]))
    with open(path, "w", encoding="utf-8") as out:
        out.write(text + ("\n" if rng.random() < 0.7 else ""))


def gen_case(case_dir, rng):
    config = os.path.join(case_dir, "config")
    hwdir = os.path.join(case_dir, "hw")
    for path in (config, hwdir, os.path.join(case_dir, "run")):
        os.makedirs(path)

    raw_items = gen_hw(rng)
    items = [[ascii_only(f) for f in item] for item in raw_items]
    # Profiles written for another machine rarely match this one.
    stranger = [[ascii_only(f) for f in item] for item in gen_hw(rng)]

    names = rng.sample(PROFILES, rng.randint(1, 5))
    state = []
    for name in names:
        count = rng.choice(COUNTS)
        state.append((name, count))
        prof = Profile(rng)
        source = items if rng.random() < 0.75 else stranger
        specs = [gen_spec(rng, prof, source) for _ in range(rng.randint(1, 6))]
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
        "--summarize", action="store_true", help="print a histogram of the oracle results under --out instead"
    )
    args = parser.parse_args()
    out = os.path.abspath(args.out)
    if args.summarize:
        summarize(out)
        return
    for i in range(args.first, args.first + args.count):
        case_dir = os.path.join(out, "case-%05d" % i)
        gen_case(case_dir, random.Random("%s-%d" % (args.seed, i)))
        print(case_dir)


if __name__ == "__main__":
    main()
