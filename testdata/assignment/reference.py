#!/usr/bin/env python3
"""Reference implementation of the Strata assignment spec, version 1
(docs/assignment-spec.md), and generator of the conformance suite in this
directory.

    python3 testdata/assignment/reference.py          # regenerate every file
    python3 testdata/assignment/reference.py --check  # verify the committed files

The first form rewrites cases/*.json, invalid/*.json, murmur3.json and
consistency/{ids.txt,snapshot.json,golden.json}; its output is deterministic.
`--check` regenerates everything in memory and exits with status 1 if any
committed file differs, is missing, or is not produced by the generator.

Only the standard library and `mmh3` are used. The first half of this file is
the implementation (hashing, unit ids, snapshot validation, targeting,
evaluation); the second half holds the hand-designed inputs. Every expected
value in the suite is computed by the first half, never written by hand.
"""

import hashlib
import json
import os
import random
import re
import sys
import unicodedata
import uuid

import mmh3

SPEC_VERSION = 1
HERE = os.path.dirname(os.path.abspath(__file__))

# ---------------------------------------------------------------------------
# 1. Hashing
# ---------------------------------------------------------------------------

BUCKETS = 1000


def murmur3(data: bytes) -> int:
    """MurmurHash3_x86_32 with seed 0, unsigned."""
    return mmh3.hash(data, 0, signed=False)


def murmur3_x86_32(data: bytes, seed: int = 0) -> int:
    """Plain-Python MurmurHash3_x86_32, used to cross-check `mmh3` (and as
    documentation for implementers)."""
    m = 0xFFFFFFFF

    def rotl(x, r):
        return ((x << r) | (x >> (32 - r))) & m

    def mix(k):
        return rotl(k * 0xCC9E2D51 & m, 15) * 0x1B873593 & m

    h, n = seed, len(data) & ~3
    for i in range(0, n, 4):
        h = (rotl(h ^ mix(int.from_bytes(data[i:i + 4], "little")), 13) * 5 + 0xE6546B64) & m
    if len(data) > n:
        h ^= mix(int.from_bytes(data[n:], "little"))
    h ^= len(data)
    h = (h ^ (h >> 16)) * 0x85EBCA6B & m
    h = (h ^ (h >> 13)) * 0xC2B2AE35 & m
    return h ^ (h >> 16)


def unit_hash(unit: str, salt: str) -> int:
    return murmur3(unit.encode("utf-8") + b":" + salt.encode("utf-8"))


def bucket(unit: str, salt: str) -> int:
    return unit_hash(unit, salt) % BUCKETS


# ---------------------------------------------------------------------------
# 2. The unit id
# ---------------------------------------------------------------------------


def unit_id(value):
    """Unit id for a context attribute value, or None for "no unit"."""
    if type(value) is str:
        return value or None
    if type(value) is int and -(2 ** 63) <= value <= 2 ** 64 - 1:
        return str(value)
    return None  # missing, null, bool, float, array, object, out-of-range int


# ---------------------------------------------------------------------------
# 5. Snapshot validation
# ---------------------------------------------------------------------------

ERROR_KINDS = (
    "json", "duplicate_experiment", "duplicate_flag", "duplicate_layer",
    "unknown_layer", "invalid_range", "overlapping_ranges", "zero_total_weight",
    "invalid_field", "invalid_targeting",
)
STATUSES = ("running", "paused", "killed", "concluded")
U16, U32, U64 = 2 ** 16 - 1, 2 ** 32 - 1, 2 ** 64 - 1
_REQUIRED = object()


class SnapshotError(Exception):
    def __init__(self, kind, message):
        assert kind in ERROR_KINDS, kind
        super().__init__(f"{kind}: {message}")
        self.kind = kind


def is_str(v):
    return type(v) is str


def is_bool(v):
    return type(v) is bool


def uint(hi):
    return lambda v: type(v) is int and 0 <= v <= hi


def list_of(check):
    return lambda v: type(v) is list and all(check(x) for x in v)


def _get(obj, name, check, where, default=_REQUIRED, nullable=False):
    """Shape check of one field. `nullable` fields treat null as absent."""
    if name not in obj or (nullable and obj[name] is None):
        if default is _REQUIRED:
            raise SnapshotError("json", f"{where}: missing required field {name!r}")
        return default
    if not check(obj[name]):
        raise SnapshotError("json", f"{where}.{name}: wrong type or out of range")
    return obj[name]


def _obj(v, where):
    if type(v) is not dict:
        raise SnapshotError("json", f"{where}: expected an object")
    return v


def validate(raw):
    """Validate a parsed JSON snapshot; return the model used by evaluate().
    Raises SnapshotError(kind, message)."""
    # -- shape ----------------------------------------------------------------
    top = _obj(raw, "snapshot")
    _get(top, "version", uint(U64), "snapshot")
    raw_exps = _get(top, "experiments", lambda v: type(v) is list, "snapshot")
    raw_layers = _get(top, "layers", lambda v: type(v) is list, "snapshot", default=[])
    holdout = None
    if _get(top, "holdout", lambda v: True, "snapshot", default=None, nullable=True) is not None:
        h = _obj(top["holdout"], "holdout")
        holdout = (_get(h, "salt", is_str, "holdout"), _get(h, "permille", uint(U16), "holdout"))
    layers = []
    for i, lay in enumerate(raw_layers):
        w = f"layers[{i}]"
        lay = _obj(lay, w)
        layers.append((_get(lay, "key", is_str, w), _get(lay, "salt", is_str, w)))
    exps = []
    for i, e in enumerate(raw_exps):
        w = f"experiments[{i}]"
        e = _obj(e, w)
        variants = []
        for j, v in enumerate(_get(e, "variants", lambda v: type(v) is list, w)):
            vw = f"{w}.variants[{j}]"
            v = _obj(v, vw)
            variants.append((_get(v, "key", is_str, vw), _get(v, "weight", uint(U32), vw)))
        status = _get(e, "status", lambda s: s in STATUSES if is_str(s) else False, w)
        rng = _get(e, "range", lambda r: type(r) is list and len(r) == 2 and all(uint(U16)(x) for x in r),
                   w, default=None, nullable=True)
        exps.append({
            "key": _get(e, "key", is_str, w),
            "flag": _get(e, "flag", is_str, w),
            "salt": _get(e, "salt", is_str, w),
            "status": status,
            "variants": variants,
            "unit": _get(e, "unit", is_str, w, default="user_id"),
            "fallback_unit": _get(e, "fallback_unit", is_str, w, default=None, nullable=True),
            "sticky": _get(e, "sticky", is_bool, w, default=False),
            "include_bots": _get(e, "include_bots", is_bool, w, default=False),
            "surfaces": _get(e, "surfaces", list_of(is_str), w, default=[]),
            "respect_holdout": _get(e, "respect_holdout", is_bool, w, default=True),
            "targeting": e.get("targeting"),  # checked below as a rule
            "winner": _get(e, "winner", is_str, w, default=None, nullable=True),
            "layer": _get(e, "layer", is_str, w, default=None, nullable=True),
            "range": tuple(rng) if rng is not None else None,
            "ramp_permille": _get(e, "ramp_permille", uint(U16), w, default=1000),
        })

    # -- semantics ------------------------------------------------------------
    layer_salt = {}
    for key, salt in layers:
        if key in layer_salt:
            raise SnapshotError("duplicate_layer", f"layer {key!r} defined twice")
        layer_salt[key] = salt
    if holdout is not None and holdout[1] > 1000:
        raise SnapshotError("invalid_field", "holdout.permille above 1000")
    keys, flags = set(), set()
    for e in exps:
        k = e["key"]
        for f in ("key", "flag", "unit", "fallback_unit"):
            if e[f] == "":
                raise SnapshotError("invalid_field", f"experiment {k!r}: empty {f}")
        if e["fallback_unit"] == e["unit"]:
            raise SnapshotError("invalid_field", f"experiment {k!r}: fallback_unit is the unit")
        if k in keys:
            raise SnapshotError("duplicate_experiment", f"experiment {k!r} defined twice")
        if e["flag"] in flags:
            raise SnapshotError("duplicate_flag", f"flag {e['flag']!r} used twice")
        keys.add(k)
        flags.add(e["flag"])
        if e["layer"] is not None and e["layer"] not in layer_salt:
            raise SnapshotError("unknown_layer", f"experiment {k!r}: no layer {e['layer']!r}")
        if (e["layer"] is None) != (e["range"] is None):
            raise SnapshotError("invalid_range", f"experiment {k!r}: layer and range go together")
        if e["range"] is not None and not 0 <= e["range"][0] < e["range"][1] <= 1000:
            raise SnapshotError("invalid_range", f"experiment {k!r}: range {list(e['range'])}")
        if sum(w for _, w in e["variants"]) == 0:
            raise SnapshotError("zero_total_weight", f"experiment {k!r}: weights sum to 0")
        vkeys = [v for v, _ in e["variants"]]
        if len(set(vkeys)) != len(vkeys):
            raise SnapshotError("invalid_field", f"experiment {k!r}: duplicate variant key")
        if e["ramp_permille"] > 1000:
            raise SnapshotError("invalid_field", f"experiment {k!r}: ramp_permille above 1000")
        if e["winner"] is not None and (e["status"] != "concluded" or e["winner"] not in vkeys):
            raise SnapshotError("invalid_field", f"experiment {k!r}: bad winner")
        if e["targeting"] is not None:
            check_rule(e["targeting"], 1)
    for a in exps:
        for b in exps:
            if a is not b and a["layer"] is not None and a["layer"] == b["layer"] \
                    and a["status"] in ("running", "paused") and b["status"] in ("running", "paused") \
                    and a["range"][0] < b["range"][1] and b["range"][0] < a["range"][1]:
                raise SnapshotError("overlapping_ranges", f"{a['key']!r} and {b['key']!r}")
    return {"holdout": holdout, "layers": layer_salt, "experiments": exps}


# ---------------------------------------------------------------------------
# 4. Targeting
# ---------------------------------------------------------------------------

MAX_DEPTH = 32  # the top-level rule is level 1; a rule at level 33 is rejected
SCALAR = ("string", "number", "boolean")
OPS = {  # op -> (argument field, allowed JSON types of the value(s))
    "eq": ("value", SCALAR), "neq": ("value", SCALAR),
    "in": ("values", SCALAR), "not_in": ("values", SCALAR),
    "gt": ("value", ("string", "number")), "gte": ("value", ("string", "number")),
    "lt": ("value", ("string", "number")), "lte": ("value", ("string", "number")),
    "contains": ("value", SCALAR), "starts_with": ("value", ("string",)),
    "exists": (None, ()),
    "semver_gt": ("value", ("string",)), "semver_gte": ("value", ("string",)),
    "semver_lt": ("value", ("string",)), "semver_lte": ("value", ("string",)),
}


def jtype(v):
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, (int, float)):
        return "number"
    return {str: "string", list: "array", dict: "object"}[type(v)]


def check_rule(rule, depth):
    def bad(msg):
        raise SnapshotError("invalid_targeting", msg)

    if depth > MAX_DEPTH:
        bad("more than 32 levels of nesting")
    if type(rule) is not dict:
        bad("a rule must be an object")
    fields = set(rule)
    if fields in ({"all"}, {"any"}):
        children = next(iter(rule.values()))
        if type(children) is not list:
            bad("all/any takes a list")
        for child in children:
            check_rule(child, depth + 1)
        return
    if fields == {"not"}:
        check_rule(rule["not"], depth + 1)
        return
    op = rule.get("op")
    if not is_str(rule.get("attr")) or not is_str(op) or op not in OPS:
        bad(f"not a rule or condition: {sorted(fields)}")
    arg, types = OPS[op]
    if fields != {"attr", "op"} | ({arg} if arg else set()):
        bad(f"op {op!r} takes {arg or 'no value'}; got fields {sorted(fields)}")
    if arg == "values":
        vals = rule["values"]
        if type(vals) is not list or not vals:
            bad("values must be a non-empty list")
        if jtype(vals[0]) not in types or any(jtype(v) != jtype(vals[0]) for v in vals):
            bad("values must be scalars of one type")
    elif arg == "value":
        if jtype(rule["value"]) not in types:
            bad(f"op {op!r}: value of the wrong type")
        if op.startswith("semver_") and parse_version(rule["value"]) is None:
            bad(f"not a version: {rule['value']!r}")


_VERSION = re.compile(
    r"[vV]?([0-9]+)(?:\.([0-9]+)(?:\.([0-9]+))?)?"
    r"(?:-([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?"
    r"(?:\+[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?")


def parse_version(s):
    """(major, minor, patch, [pre-release identifiers]) or None."""
    m = _VERSION.fullmatch(s)
    if m is None:
        return None
    major, minor, patch, pre = m.groups()
    pre = pre.split(".") if pre else []
    numbers = [int(major), int(minor or 0), int(patch or 0)] + [int(p) for p in pre if p.isdigit()]
    if any(n >= 2**64 for n in numbers):  # numeric parts must fit in 64 bits
        return None
    return int(major), int(minor or 0), int(patch or 0), pre


def _cmp(x, y):
    return (x > y) - (x < y)


def compare_versions(a, b):
    c = _cmp(a[:3], b[:3])
    if c or a[3] == b[3]:
        return c
    if not a[3] or not b[3]:  # a release sorts after its pre-releases
        return 1 if not a[3] else -1
    for x, y in zip(a[3], b[3]):
        if x.isdigit() and y.isdigit():  # ASCII only, guaranteed by the regex
            c = _cmp(int(x), int(y))
        elif x.isdigit() or y.isdigit():
            c = -1 if x.isdigit() else 1  # numeric identifiers sort first
        else:
            c = _cmp(x.encode("ascii"), y.encode("ascii"))
        if c:
            return c
    return _cmp(len(a[3]), len(b[3]))


def same(a, v):
    """Equal and of the same JSON type; numbers compare as doubles."""
    t = jtype(a)
    if t != jtype(v):
        return False
    return float(a) == float(v) if t == "number" else a == v


def order(a, v):
    """-1/0/1, or None on a type mismatch (numbers as doubles, strings by UTF-8 bytes)."""
    t = jtype(a)
    if t != jtype(v) or t not in ("number", "string"):
        return None
    if t == "number":
        return _cmp(float(a), float(v))
    return _cmp(a.encode("utf-8"), v.encode("utf-8"))


TRUE_WHEN = {"gt": (1,), "gte": (0, 1), "lt": (-1,), "lte": (-1, 0)}


def matches(rule, context):
    if "all" in rule:
        return all(matches(r, context) for r in rule["all"])
    if "any" in rule:
        return any(matches(r, context) for r in rule["any"])
    if "not" in rule:
        return not matches(rule["not"], context)
    a, op = context.get(rule["attr"]), rule["op"]
    if a is None:  # missing or null: false whatever the op
        return False
    v = rule.get("value")
    if op == "eq":
        return same(a, v)
    if op == "neq":
        return jtype(a) == jtype(v) and not same(a, v)
    if op == "in":
        return any(same(a, x) for x in rule["values"])
    if op == "not_in":
        return jtype(a) == jtype(rule["values"][0]) and not any(same(a, x) for x in rule["values"])
    if op in TRUE_WHEN:
        return order(a, v) in TRUE_WHEN[op]
    if op == "contains":
        if is_str(a):
            return is_str(v) and v in a
        return type(a) is list and any(same(x, v) for x in a)
    if op == "starts_with":
        return is_str(a) and a.startswith(v)
    if op == "exists":
        return True
    if op.startswith("semver_"):
        pa = parse_version(a) if is_str(a) else None
        return pa is not None and compare_versions(pa, parse_version(v)) in TRUE_WHEN[op[7:]]
    raise AssertionError(op)


# ---------------------------------------------------------------------------
# 3. Evaluation
# ---------------------------------------------------------------------------


def servable(e):
    """Step 1: a running experiment, or a concluded one with a winner."""
    return e["status"] == "running" or (e["status"] == "concluded" and e["winner"] is not None)


def experiment_unit(e, context):
    """Section 2: (attribute, unit id) of e's unit in `context`, its
    fallback unit's when the unit attribute gives none; the id is None when
    neither does."""
    attr = e["unit"]
    u = unit_id(context.get(attr))
    if u is None and e["fallback_unit"] is not None:
        attr = e["fallback_unit"]
        u = unit_id(context.get(attr))
    return attr, u


def evaluate(model, context, surface=None, sticky=None, new=None):
    """[(key, flag, variant, assigned, log_exposure, unit_attr)] in snapshot
    order; unit_attr is None unless the experiment has a fallback_unit.

    With `sticky` (a dict (unit_attr, unit_id, experiment) -> variant, section
    9), sticky experiments keep what it holds and `new` (a list) receives the
    entries to store, as (unit_attr, unit_id, experiment, variant)."""
    out = []
    for e in model["experiments"]:
        if not servable(e):
            continue
        concluded = e["status"] == "concluded"
        attr, u = experiment_unit(e, context)
        if u is None:
            continue
        shown_attr = attr if e["fallback_unit"] is not None else None
        if surface is not None and e["surfaces"] and surface not in e["surfaces"]:
            continue
        hold = model["holdout"]
        if hold is not None and e["respect_holdout"] and bucket(u, hold[0]) < hold[1]:
            continue
        if not concluded and not e["include_bots"] and is_bot(context):
            continue
        opted_out = context.get("opted_out") is True
        vkeys = [v for v, _ in e["variants"]]
        if sticky is not None and e["sticky"] and not concluded:
            kept, moved = sticky.get((attr, u, e["key"])), False
            if kept not in vkeys and e["fallback_unit"] not in (None, attr):
                f = unit_id(context.get(e["fallback_unit"]))
                kept, moved = sticky.get((e["fallback_unit"], f, e["key"])), True
            if kept in vkeys:
                if moved:
                    new.append((attr, u, e["key"], kept))
                variant = vkeys[0] if opted_out else kept
                out.append((e["key"], e["flag"], variant, kept, True, shown_attr))
                continue
        if e["targeting"] is not None and not matches(e["targeting"], context):
            continue
        if concluded:
            out.append((e["key"], e["flag"], e["winner"], e["winner"], False, shown_attr))
            continue
        if e["layer"] is not None:
            start, end = e["range"]
            if not start <= bucket(u, model["layers"][e["layer"]]) < end:
                continue
        if bucket(u, e["salt"] + ":ramp") >= e["ramp_permille"]:
            continue
        b, total, cum = bucket(u, e["salt"]), sum(w for _, w in e["variants"]), 0
        for vkey, w in e["variants"]:
            cum += w
            if b < 1000 * cum // total:
                assigned = vkey
                break
        variant = vkeys[0] if opted_out else assigned
        if sticky is not None and e["sticky"]:
            new.append((attr, u, e["key"], assigned))
        out.append((e["key"], e["flag"], variant, assigned, True, shown_attr))
    return out


def holdout_exposures(model, context, surface=None):
    """Section 11: [{"unit_attr", "unit_id", "variant"}] of the holdout
    exposures of `context` on `surface`."""
    hold = model["holdout"]
    if hold is None or is_bot(context):
        return []
    out = []
    for e in model["experiments"]:
        if not servable(e) or not e["respect_holdout"]:
            continue
        if surface is not None and e["surfaces"] and surface not in e["surfaces"]:
            continue
        attr, u = experiment_unit(e, context)
        if u is None or any(x["unit_attr"] == attr and x["unit_id"] == u for x in out):
            continue
        variant = "holdout" if bucket(u, hold[0]) < hold[1] else "rest"
        out.append({"unit_attr": attr, "unit_id": u, "variant": variant})
    return out


def result_json(results):
    out = {}
    for k, f, v, a, log, attr in results:
        out[k] = {"variant": v, "assigned": a, "flag": f, "log_exposure": log}
        if attr is not None:
            out[k]["unit_attr"] = attr
    return out


def sticky_json(entries):
    return [{"unit_attr": a, "unit_id": u, "experiment": k, "variant": v} for a, u, k, v in entries]


def canonical_line(unit, results):
    parts = [unit]
    for k, _, v, a, log, _ in sorted(results, key=lambda r: r[0].encode("utf-8")):
        parts.append(f"{k}={v}/{a}/{1 if log else 0}")
    return "\t".join(parts) + "\n"


# ===========================================================================
# Generator: hand-designed inputs; every expected value is computed above.
# ===========================================================================


def dumps(v, indent=0, width=110):
    """JSON, pretty where needed: values that fit on a line stay on one line.
    Non-ASCII is \\u-escaped so that no tool can normalise ids in the files."""
    flat = json.dumps(v, ensure_ascii=True)
    if len(flat) + indent <= width or not isinstance(v, (dict, list)) or not v:
        return flat
    pad = " " * (indent + 2)
    if isinstance(v, dict):
        items = [f"{pad}{json.dumps(k)}: {dumps(x, indent + 2, width)}" for k, x in v.items()]
        return "{\n" + ",\n".join(items) + "\n" + " " * indent + "}"
    items = [pad + dumps(x, indent + 2, width) for x in v]
    return "[\n" + ",\n".join(items) + "\n" + " " * indent + "]"


def roundtrip(v):
    return json.loads(json.dumps(v))


def NFC(s):
    return unicodedata.normalize("NFC", s)


def NFD(s):
    return unicodedata.normalize("NFD", s)


def V(*weights, names=None):
    names = names or (["control", "treatment"] if len(weights) == 2 else
                      ["control"] + [f"v{i}" for i in range(1, len(weights))])
    return [{"key": k, "weight": w} for k, w in zip(names, weights)]


def X(key, variants=None, **fields):
    """An experiment; flag and salt derive from the key unless given."""
    e = {"key": key, "flag": fields.pop("flag", key.replace("-", "_")),
         "salt": fields.pop("salt", f"{key}-2026"), "status": fields.pop("status", "running"),
         "variants": variants or V(50, 50)}
    e.update(fields)
    return e


def snapshot(experiments, layers=(), holdout=None, version=1):
    s = {"version": version}
    if holdout is not None:
        s["holdout"] = holdout
    if layers:
        s["layers"] = [{"key": k, "salt": salt} for k, salt in layers]
    s["experiments"] = experiments
    return s


def find(pred, n=1, tag="p"):
    """The first n ids `{tag}-{i}` satisfying pred (deterministic search)."""
    out, i = [], 0
    while len(out) < n:
        u = f"{tag}-{i}"
        if pred(u):
            out.append(u)
        i += 1
    return out


class Scenario:
    """Inputs of one cases/*.json file. By default every experiment must be
    served in some case and not served in another; `never`/`always` relax
    that, `checks` add scenario-specific assertions over the results."""

    def __init__(self, name, description, snap, never=(), always=()):
        self.name, self.description, self.snapshot = name, description, snap
        self.never, self.always, self.inputs, self.checks = set(never), set(always), [], []
        # Whether the cases carry their holdout exposures (section 11).
        self.holdout_exposures = False

    def add(self, context, surface=None, sticky=None):
        """One case; `sticky` (a list of kept entries, possibly empty)
        evaluates with a sticky lookup and records the new entries."""
        self.inputs.append((context, surface, sticky))

    def users(self, ids, surface=None, **attrs):
        for u in ids:
            self.add(dict({"user_id": u}, **attrs), surface)


SCENARIOS = []


def scenario(fn):
    SCENARIOS.append(fn)
    return fn


def served(cases, key):
    return [c for c in cases if key in c["expected"]]


def check_variants_seen(key, variants):
    def check(cases):
        seen = {c["expected"][key]["assigned"] for c in served(cases, key)}
        assert seen == set(variants), (key, seen, variants)
    return check


HASH_VARIANTS = [f"d{i}" for i in range(10)]


@scenario
def hashing_unit_ids():
    s = Scenario(
        "hashing-unit-ids",
        "Unit id rules and hashing inputs. One experiment with ten equal variants d0..d9, so the "
        "variant is bucket(unit, salt) div 100 and a wrong byte string almost always shows. Pins: "
        "ids are hashed as their exact UTF-8 bytes (no normalisation, trimming or case folding; NFC "
        "and NFD forms are different units; ':' and NUL inside ids are ordinary bytes); JSON "
        "integers within the signed or unsigned 64-bit range use their decimal text (42 and \"42\" "
        "are the same unit); empty strings, non-integer numbers (42.0, 1.5), integers outside the "
        "64-bit ranges, booleans, null, arrays, objects and a missing attribute identify no unit.",
        snapshot([X("hash-probe", V(*[1] * 10, names=HASH_VARIANTS), salt="hash-probe")]))
    ids = [" ", "  ", " x", "x ", "00", "a", "A", ":", "::", "a:b", "user:42", "user:42:eu",
           ":leading", "trailing:", "with space", "tab\there", "nul\u0000byte", "quote\"d",
           "back\\slash", "x" * 200, "\u00e9" * 70,
           "\u65e5\u672c\u8a9e", "\u7528\u6237:42", "\U0001F600", "\U0001F44D\U0001F3FD",
           "\U0001F468\u200D\U0001F469\u200D\U0001F467\u200D\U0001F466", "\U0001F1EB\U0001F1F7",
           "\u05e9\u05dc\u05d5\u05dd", "\u0645\u0631\u062d\u0628\u0627", "\u043f\u0440\u0438\u0432\u0435\u0442",
           "\u0928\u092e\u0938\u094d\u0924\u0947", "\u0e2a\u0e27\u0e31\u0e2a\u0e14\u0e35",
           "a\u0301\u0302\u0303\u0304", "\u0301", "Z\u0351\u036b\u0343\u036a\u0302\u036b\u033d",
           "\ufeffbom", "\u212b", "\u00c5", "A\u030a"]
    pairs = ["\u00e9", "caf\u00e9", "Zo\u00eb", "Jos\u00e9", "\u00c5ngstr\u00f6m", "ni\u00f1o", "\u1ec7",
             "Fran\u00e7ois", "M\u00fcller", "\u0161\u010d\u0159\u017e", "cr\u00e8me br\u00fbl\u00e9e",
             "\u00e0\u00e1\u00e2\u00e3\u00e4"]
    for w in pairs:
        ids += [NFC(w), NFD(w)]
    ids += [f"user-{i}" for i in range(40)]
    s.users(ids)
    for n in (0, 1, 42, -7, -1, 1000, 9007199254740993, 2 ** 63 - 1, 2 ** 63, 2 ** 64 - 1, -(2 ** 63)):
        s.add({"user_id": n})
        s.add({"user_id": str(n)})
    for bad in ("", 2 ** 64, -(2 ** 63) - 1, 42.0, 1.5, -0.5, 1e3, True, False, None, [], ["a"],
                {}, {"id": "a"}):
        s.add({"user_id": bad})
    s.add({})
    s.add({"device_id": "a", "User_Id": "a", "userId": "a"})

    def check(cases):
        by = {json.dumps(c["context"].get("user_id")): c["expected"] for c in cases}
        for n in (0, 42, -7, 2 ** 64 - 1, -(2 ** 63)):
            assert by[json.dumps(n)] == by[json.dumps(str(n))], n
        differ = sum(by[json.dumps(NFC(w))] != by[json.dumps(NFD(w))] for w in pairs)
        assert differ >= 8, differ
        assert len({by[json.dumps(x)]["hash-probe"]["variant"] for x in ("\u212b", "\u00c5", "A\u030a")}) > 1
    s.checks += [check, check_variants_seen("hash-probe", HASH_VARIANTS)]
    return s


@scenario
def variant_weights():
    exps = [
        X("uneven-3", V(10, 30, 60)),                                    # b = 100, 400, 1000
        X("zero-middle", V(50, 0, 50, names=["control", "dead", "treatment"])),
        X("zero-first", V(0, 1)),                                        # everyone: treatment
        X("five-way", V(5, 10, 15, 20, 50)),
        X("sum-seven", V(1, 2, 4)),                                      # b = 142, 428, 1000
        X("u32-max", V(U32, U32, 1)),                                    # b = 499, 999, 1000
        X("single", V(7, names=["only"])),
        X("thirds", V(333, 333, 334)),
        X("tiny-first", V(1, 999999)),                                   # b = 0: control never
        X("two-to-one", V(2, 1)),                                        # b = 666
    ]
    s = Scenario(
        "variant-weights",
        "Step 7 (variant boundaries b_i = floor(1000 * cumulative / total), integer arithmetic). "
        "Uneven weights, a zero-weight variant (never assigned), a zero-weight first variant, 3 "
        "and 5 variants, totals of 7, 1000 and 2 * 4294967295 + 1 (u32 maximum weights: a weight-1 "
        "third variant still owns bucket 999), a weight-1 control in a total of 1000000 (boundary "
        "0: never assigned), and ids chosen on both sides of several boundaries.",
        snapshot(exps), always=[e["key"] for e in exps])
    s.users([f"w-{i}" for i in range(60)])
    salts = {e["key"]: e["salt"] for e in exps}
    for key, edges in (("sum-seven", (141, 142, 427, 428)), ("u32-max", (498, 499, 998, 999)),
                       ("two-to-one", (665, 666)), ("uneven-3", (99, 100, 399, 400)),
                       ("thirds", (332, 333, 665, 666)), ("tiny-first", (0,))):
        for b in edges:
            s.users(find(lambda u: bucket(u, salts[key]) == b, tag=f"{key}-b{b}"))
    s.checks += [
        check_variants_seen("uneven-3", ["control", "v1", "v2"]),
        check_variants_seen("zero-middle", ["control", "treatment"]),
        check_variants_seen("zero-first", ["treatment"]),
        check_variants_seen("five-way", ["control", "v1", "v2", "v3", "v4"]),
        check_variants_seen("sum-seven", ["control", "v1", "v2"]),
        check_variants_seen("u32-max", ["control", "v1", "v2"]),
        check_variants_seen("thirds", ["control", "v1", "v2"]),
        check_variants_seen("tiny-first", ["treatment"]),
        check_variants_seen("two-to-one", ["control", "treatment"]),
    ]
    return s


@scenario
def ramps():
    exps = [X("ramp-0", ramp_permille=0), X("ramp-1", ramp_permille=1),
            X("ramp-250", ramp_permille=250), X("ramp-999", ramp_permille=999),
            X("ramp-1000", ramp_permille=1000), X("ramp-absent"),
            X("ramp-shared-100", V(20, 30, 50), salt="shared-ramp", ramp_permille=100),
            X("ramp-shared-400", V(20, 30, 50), salt="shared-ramp", ramp_permille=400)]
    s = Scenario(
        "ramps",
        "Step 6: a unit is in when bucket(u, salt ++ \":ramp\") < ramp_permille; ramp 0 admits "
        "nobody, 1 admits ramp bucket 0 only, 1000 or absent admits everyone. Two experiments "
        "share a salt with ramps 100 and 400: every unit in the first is in the second with the "
        "same variant (ramp-up only adds units).",
        snapshot(exps), never=["ramp-0"], always=["ramp-1000", "ramp-absent"])
    s.users([f"r-{i}" for i in range(60)])
    for key, salt, edges in (("ramp-1", "ramp-1-2026", (0, 1)), ("ramp-250", "ramp-250-2026", (249, 250)),
                             ("ramp-999", "ramp-999-2026", (998, 999)),
                             ("shared", "shared-ramp", (99, 100, 399, 400))):
        for b in edges:
            s.users(find(lambda u: bucket(u, salt + ":ramp") == b, tag=f"{key}-r{b}"))
    s.users(find(lambda u: bucket(u, "shared-ramp:ramp") < 100, n=4, tag="shared-low"))

    def monotone(cases):
        small, large = served(cases, "ramp-shared-100"), served(cases, "ramp-shared-400")
        assert small and len(large) > len(small)
        for c in small:
            assert c["expected"]["ramp-shared-100"]["variant"] == c["expected"]["ramp-shared-400"]["variant"]
    s.checks.append(monotone)
    return s


@scenario
def layers():
    exps = [X("co-a", layer="checkout", range=[0, 300]),
            X("co-b", V(10, 20, 70), layer="checkout", range=[300, 650]),
            X("co-c", layer="checkout", range=[700, 1000], ramp_permille=500),
            X("se-x", V(1, 1, 1), layer="search", range=[100, 200]),
            X("no-layer")]
    s = Scenario(
        "layers",
        "Step 5: experiments of one layer own disjoint ranges of bucket(u, layer.salt), so a unit "
        "is in at most one of them; [650, 700) of the checkout layer is unallocated and its units "
        "get none. Boundaries (start inclusive, end exclusive) are probed with chosen ids. The "
        "search layer has one narrow experiment; the experiment without a layer ignores layers.",
        snapshot(exps, layers=[("checkout", "layer-checkout-v1"), ("search", "layer-search-v1")]),
        always=["no-layer"])
    s.users([f"l-{i}" for i in range(80)])
    for b in (0, 299, 300, 649, 650, 699, 700, 999):
        s.users(find(lambda u: bucket(u, "layer-checkout-v1") == b, tag=f"co-b{b}"))
    for b in (99, 100, 199, 200):
        s.users(find(lambda u: bucket(u, "layer-search-v1") == b, tag=f"se-b{b}"))

    def exclusive(cases):
        counts = [sum(k in c["expected"] for k in ("co-a", "co-b", "co-c")) for c in cases]
        assert max(counts) == 1 and 0 in counts
        gap = [c for c in cases if 650 <= bucket(c["context"]["user_id"], "layer-checkout-v1") < 700]
        assert gap and all(not ({"co-a", "co-b", "co-c"} & set(c["expected"])) for c in gap)
    s.checks.append(exclusive)
    return s


@scenario
def layer_released_ranges():
    exps = [X("live", layer="L", range=[0, 500]),
            X("old-killed", layer="L", range=[200, 700], status="killed"),
            X("shipped", layer="L", range=[0, 1000], status="concluded", winner="treatment"),
            X("abandoned", layer="L", range=[400, 600], status="concluded", winner=None),
            X("next-up", layer="L", range=[500, 800], status="paused"),
            X("tail", V(1, 3), layer="L", range=[800, 1000])]
    s = Scenario(
        "layer-released-ranges",
        "A valid snapshot in which killed and concluded experiments own ranges overlapping running "
        "ones (they release their range; only running/paused ranges must be disjoint; [0,500) and "
        "[500,800) touch without overlapping). The concluded rollout 'shipped' serves its winner to "
        "everyone, including units that are also in 'live'.",
        snapshot(exps, layers=[("L", "layer-L")]),
        never=["old-killed", "abandoned", "next-up"], always=["shipped"])
    s.users([f"rr-{i}" for i in range(40)])
    for b in (199, 200, 499, 500, 699, 700, 799, 800):
        s.users(find(lambda u: bucket(u, "layer-L") == b, tag=f"rr-b{b}"))
    return s


@scenario
def holdout():
    exps = [X("respects"), X("explicit-true", V(1, 1, 1), respect_holdout=True),
            X("ignores", respect_holdout=False),
            X("rollout", status="concluded", winner="treatment"),
            X("rollout-ignores", status="concluded", winner="control", respect_holdout=False),
            X("device-exp", unit="device_id")]
    s = Scenario(
        "holdout",
        "Step 2: the global holdout (permille 100) removes units with bucket(u, holdout.salt) < 100 "
        "from every experiment with respect_holdout true (the default), concluded rollouts "
        "included; respect_holdout false ignores it. The holdout bucket uses each experiment's own "
        "unit: for the device_id experiment it is the device id that is held out or not.",
        snapshot(exps, holdout={"salt": "global-holdout-2026", "permille": 100}))
    held = lambda u: bucket(u, "global-holdout-2026") < 100  # noqa: E731
    s.users(find(held, n=12, tag="held"))
    s.users(find(lambda u: not held(u), n=12, tag="free"))
    for b in (0, 99, 100, 999):
        s.users(find(lambda u: bucket(u, "global-holdout-2026") == b, tag=f"hb{b}"))
    hu, fu = find(held, n=4, tag="hu"), find(lambda u: not held(u), n=4, tag="fu")
    hd, fd = find(held, n=4, tag="hd"), find(lambda u: not held(u), n=4, tag="fd")
    for i in range(4):
        s.add({"user_id": hu[i], "device_id": fd[i]})
        s.add({"user_id": fu[i], "device_id": hd[i]})
        s.add({"device_id": fd[i]})
        s.add({"device_id": hd[i]})
    return s


@scenario
def holdout_everyone():
    exps = [X("respects"), X("ignores", V(1, 2), respect_holdout=False),
            X("rollout", status="concluded", winner="treatment"),
            X("rollout-ignores", status="concluded", winner="treatment", respect_holdout=False)]
    s = Scenario(
        "holdout-everyone",
        "A holdout with permille 1000 holds out every unit: only experiments with respect_holdout "
        "false serve anything, and concluded rollouts are held out like the rest.",
        snapshot(exps, holdout={"salt": "all-out", "permille": 1000}),
        never=["respects", "rollout"], always=["ignores", "rollout-ignores"])
    s.users([f"he-{i}" for i in range(12)] + ["\U0001F600", "42"])
    return s


@scenario
def surfaces():
    exps = [X("everywhere"), X("empty-list", surfaces=[]), X("checkout-only", surfaces=["checkout"]),
            X("checkout-search", V(1, 1, 1), surfaces=["checkout", "search"]),
            X("home-only", surfaces=["home"]),
            X("home-rollout", status="concluded", winner="treatment", surfaces=["home"])]
    s = Scenario(
        "surfaces",
        "Step 1: with a surface given, an experiment whose non-empty surfaces list lacks it is "
        "skipped (concluded rollouts too); an experiment with no or an empty surfaces list applies "
        "everywhere; a null surface evaluates every experiment. Surfaces compare as exact strings: "
        "'Checkout' is not 'checkout', and the empty string is a given (unknown) surface. "
        "(The snapshot's holdout is null, which means no holdout.)",
        dict(snapshot(exps), holdout=None), always=["everywhere", "empty-list"])
    for u in ("s-1", "s-2", "s-3", "s-4", "\u00e9t\u00e9"):
        for surface in (None, "checkout", "search", "home", "settings", "Checkout", ""):
            s.add({"user_id": u}, surface)
    return s


@scenario
def statuses():
    exps = [X("is-running", V(30, 70)), X("is-paused", status="paused"), X("is-killed", status="killed"),
            X("concluded-no-winner", status="concluded", winner=None),
            X("concluded-no-winner-field", status="concluded"),
            X("rollout", V(50, 50, 0, names=["control", "treatment", "never"]), status="concluded",
              winner="never", layer="L", range=[0, 10], ramp_permille=0),
            X("rollout-targeted", V(1, 1, 1), status="concluded", winner="v2",
              targeting={"attr": "country", "op": "in", "values": ["FR", "DE"]}),
            X("rollout-device", status="concluded", winner="control", unit="device_id")]
    s = Scenario(
        "statuses",
        "Servability: paused, killed and concluded without a winner (null or absent) serve nothing. "
        "A concluded experiment with a winner serves variant = assigned = winner with log_exposure "
        "false to every unit that passes unit id, surface, holdout and targeting; its layer range "
        "(here [0,10)), its ramp (here 0) and the winner's weight (here 0) no longer matter, and "
        "opted-out units get the winner too. Its unit attribute is still required.",
        snapshot(exps, layers=[("L", "layer-statuses")]),
        never=["is-paused", "is-killed", "concluded-no-winner", "concluded-no-winner-field"])
    for i in range(16):
        country = ("FR", "DE", "US", "fr", None)[i % 5]
        c = {"user_id": f"st-{i}"}
        if country is not None:
            c["country"] = country
        if i % 3 == 0:
            c["device_id"] = f"dev-{i}"
        if i % 4 == 1:
            c["opted_out"] = True
        s.add(c)
    s.add({"device_id": "dev-only", "country": "FR"})

    def check(cases):
        for c in served(cases, "rollout"):
            assert c["expected"]["rollout"] == {"variant": "never", "assigned": "never",
                                                "flag": "rollout", "log_exposure": False}
        assert any(c["context"].get("opted_out") is True and "rollout-targeted" in c["expected"]
                   for c in cases)
    s.checks.append(check)
    return s


@scenario
def opt_out():
    exps = [X("three-way", V(34, 33, 33)),
            X("treatment-first", V(50, 50, names=["treatment", "control"])),
            X("layered", V(1, 1), layer="L", range=[0, 500], ramp_permille=600)]
    s = Scenario(
        "opt-out",
        "Step 8: when the context has opted_out equal to JSON true, variant is the first variant "
        "listed (whatever its name), assigned is kept and log_exposure stays true; the unit must "
        "still pass the layer and ramp. Any other opted_out value (\"true\", 1, false, null, "
        "[true], {}) does not opt out.",
        snapshot(exps, layers=[("L", "layer-opt")]))
    for i in range(24):
        for flag in (True, "true", 1, False, None, [True], {}) if i < 6 else (True,):
            s.add({"user_id": f"oo-{i}", "opted_out": flag})
        s.add({"user_id": f"oo-{i}"})
    s.add({"opted_out": True})
    s.add({"device_id": "oo-0", "opted_out": True})

    def check(cases):
        out = [c for c in cases if c["context"].get("opted_out") is True]
        assert any(c["expected"]["three-way"]["assigned"] != "control" for c in out)
        for c in out:
            for k, r in c["expected"].items():
                assert r["variant"] == {"three-way": "control", "treatment-first": "treatment",
                                        "layered": "control"}[k] and r["log_exposure"]
    s.checks.append(check)
    return s


@scenario
def unit_attributes():
    exps = [X("by-user", V(1, 1, 1, 1), salt="shared-unit-salt"),
            X("by-user-explicit", V(1, 1, 1, 1), salt="shared-unit-salt", unit="user_id"),
            X("by-device", V(1, 1, 1, 1), salt="shared-unit-salt", unit="device_id"),
            X("by-account", V(1, 1, 1), unit="account_id"),
            X("by-org", unit="org")]
    s = Scenario(
        "unit-attributes",
        "Section 2 per experiment: each experiment reads its unit id from the attribute named by "
        "`unit` (default user_id); a context lacking it, or holding null, \"\", a boolean or a "
        "non-integer, skips just that experiment. The attribute name is not hashed: experiments "
        "sharing a salt give a user_id and an equal device_id the same bucket. Integer account ids "
        "hash as their decimal text.",
        snapshot(exps))
    vals = ["abc", "dev-1", "u\u00e9", 7, "7", None, "", True, 2.5, "\U0001F98A"]
    for i, (a, b, c, d) in enumerate(zip(vals, vals[3:] + vals[:3], vals[6:] + vals[:6], vals[1:] + vals[:1])):
        s.add({"user_id": a, "device_id": b, "account_id": c, "org": d})
        s.add({"device_id": a, "account_id": b})
        s.add({"user_id": d, "org": c})
    s.add({"user_id": "same", "device_id": "same", "account_id": "same"})
    s.add({"user_id": "same2", "device_id": "same2"})
    s.add({"account_id": 12345})
    s.add({"account_id": "12345"})
    s.add({"account_id": -12345, "user_id": "x"})
    s.add({})

    def check(cases):
        for c in cases:
            ctx, e = c["context"], c["expected"]
            if ctx.get("user_id") == ctx.get("device_id") and "by-user" in e:
                assert e["by-user"]["assigned"] == e["by-device"]["assigned"]
            if "by-user" in e:
                assert e["by-user"]["assigned"] == e["by-user-explicit"]["assigned"]
        accounts = {json.dumps(c["context"].get("account_id")): c["expected"].get("by-account") for c in cases}
        assert accounts["12345"] == accounts['"12345"']
    s.checks.append(check)
    return s


def rule_scenario(name, description, rules, contexts, never=(), always=()):
    """One experiment per rule (key = rule name), every context evaluated
    against all of them; each rule must come out true and false somewhere."""
    exps = [X(k, targeting=r) for k, r in rules]
    s = Scenario(name, description, snapshot(exps), never=never, always=always)
    for i, c in enumerate(contexts):
        s.add(dict({"user_id": f"t-{i}"}, **c))
    return s


def C(attr, op, value=None, values=None):
    r = {"attr": attr, "op": op}
    if value is not None:
        r["value"] = value
    if values is not None:
        r["values"] = values
    return r


@scenario
def targeting_equality():
    rules = [
        ("eq-string", C("country", "eq", "FR")), ("eq-empty-string", C("country", "eq", "")),
        ("eq-int", C("age", "eq", 30)), ("eq-float", C("age", "eq", 30.0)),
        ("eq-fraction", C("score", "eq", 0.1)),
        ("eq-true", C("beta", "eq", True)), ("eq-false", C("beta", "eq", False)),
        ("eq-numeric-string", C("age", "eq", "30")),
        ("neq-string", C("country", "neq", "FR")), ("neq-int", C("age", "neq", 30)),
        ("neq-bool", C("beta", "neq", True)),
        ("in-strings", C("country", "in", values=["FR", "DE", "\u00c9"])),
        ("in-numbers", C("age", "in", values=[18, 30, 65.5])),
        ("in-bools", C("beta", "in", values=[False])),
        ("not-in-strings", C("country", "not_in", values=["FR", "DE"])),
        ("not-in-numbers", C("age", "not_in", values=[30, 31])),
        ("eq-2pow53", C("big", "eq", 9007199254740992)),
    ]
    contexts = [
        {"country": "FR", "age": 30, "beta": True, "score": 0.1, "big": 9007199254740993},
        {"country": "DE", "age": 30.0, "beta": False, "score": 0.10000000000000002},
        {"country": "US", "age": 31, "beta": "true", "score": 1, "big": 9007199254740992},
        {"country": "fr", "age": "30", "beta": 1, "big": 9007199254740994},
        {"country": "", "age": 65.5, "beta": 0, "big": 9007199254740992.0},
        {"country": None, "age": None, "beta": None, "score": None, "big": None},
        {},
        {"country": 30, "age": True, "beta": "yes", "score": "0.1"},
        {"country": ["FR"], "age": [30], "beta": [True], "big": "9007199254740992"},
        {"country": {"code": "FR"}, "age": {"v": 30}},
        {"country": "\u00c9", "age": 18, "beta": False},
        {"country": "E\u0301", "age": 17.999, "beta": True},
        {"country": "FR ", "age": -30, "beta": False, "score": 0.3},
        {"country": "GB", "age": 29.999999999999996, "beta": True},
        {"country": "DE", "age": 18.0, "score": 0.1},
        {"country": "ES", "age": 0, "beta": False},
    ]
    return rule_scenario(
        "targeting-equality",
        "eq, neq, in, not_in. Values compare by JSON type: \"30\" never equals 30, 1 never equals "
        "true; numbers compare as IEEE-754 doubles (30 equals 30.0, 18 is in [18, 30, 65.5], and "
        "2^53 + 1 and 2^53 are the same double); strings compare exactly (no normalisation, "
        "no case folding, no trimming). A missing or null attribute makes every condition false, "
        "neq and not_in included; a type mismatch (including arrays and objects) is false.",
        rules, contexts)


@scenario
def targeting_ordering():
    rules = [
        ("gt-30", C("age", "gt", 30)), ("gte-30", C("age", "gte", 30)),
        ("lt-30", C("age", "lt", 30)), ("lte-30", C("age", "lte", 30.0)),
        ("gt-negative", C("temp", "gt", -10.5)), ("lt-fraction", C("temp", "lt", 0.25)),
        ("gt-string", C("name", "gt", "m")), ("gte-string", C("name", "gte", "mango")),
        ("lt-string", C("name", "lt", "Zoe")), ("lte-string", C("name", "lte", "apple")),
        ("lt-utf8", C("name", "lt", "\u00e9")), ("gt-utf8-astral", C("name", "gt", "\uff5a")),
    ]
    contexts = [
        {"age": 29, "temp": -11, "name": "apple"}, {"age": 30, "temp": -10.5, "name": "m"},
        {"age": 30.0, "temp": -10, "name": "mango"}, {"age": 30.5, "temp": 0.25, "name": "mangoes"},
        {"age": 31, "temp": 0.2499, "name": "Zebra"}, {"age": "31", "temp": "5", "name": "zoo"},
        {"age": True, "temp": False, "name": 5}, {"age": None, "temp": None, "name": None}, {},
        {"age": -5, "temp": 1e3, "name": "Zoe"}, {"age": 1e3, "temp": -1e3, "name": "\u00e9lan"},
        {"age": [31], "temp": [0], "name": ["zoo"]}, {"age": 0, "temp": 0, "name": ""},
        {"age": 29.999999, "name": "e\u0301lan"}, {"name": "\U0001F600"}, {"name": "\uff5a"},
        {"name": "\u00e9"}, {"name": "appl"}, {"name": "Apple"}, {"name": "mang"},
    ]
    return rule_scenario(
        "targeting-ordering",
        "gt, gte, lt, lte on numbers (as doubles; 30 and 30.0 are equal) and on strings by their "
        "UTF-8 bytes: 'Z' < 'a', 'z' < U+00E9 (C3 A9), 'e' + U+0301 < U+00E9, and U+FF5A (EF BD 9A) < "
        "U+1F600 (F0 9F 98 80), the reverse of their UTF-16 order. Strings never compare with "
        "numbers, booleans, arrays, null or missing attributes.",
        rules, contexts)


@scenario
def targeting_contains():
    rules = [
        ("contains-substring", C("email", "contains", "@example.")),
        ("contains-empty", C("email", "contains", "")),
        ("contains-case", C("email", "contains", "Admin")),
        ("contains-array-string", C("tags", "contains", "beta")),
        ("contains-array-number", C("tags", "contains", 30)),
        ("contains-array-bool", C("tags", "contains", True)),
        ("contains-string-number", C("email", "contains", 7)),
        ("starts-with", C("email", "starts_with", "admin")),
        ("starts-with-empty", C("email", "starts_with", "")),
        ("starts-with-unicode", C("email", "starts_with", "\u00e9")),
    ]
    contexts = [
        {"email": "admin@example.com", "tags": ["beta", "vip"]},
        {"email": "Admin@example.org", "tags": ["Beta"]},
        {"email": "user7@test.io", "tags": [30.0, False]},
        {"email": "", "tags": []},
        {"email": "superadmin@example", "tags": "beta-tester"},
        {"email": 7, "tags": [["beta"], {"beta": True}, None]},
        {"email": ["admin@example.com"], "tags": [1, True, "30"]},
        {"email": None, "tags": None}, {},
        {"email": "\u00e9lodie@example.fr", "tags": [30]},
        {"email": "e\u0301lodie@example.fr", "tags": ["beta", 30, True]},
        {"email": "adm", "tags": "30"},
        {"email": ["user7@test.io", 7.0], "tags": ["beta", "30"]},
        {"email": {"address": "admin@example.com"}, "tags": {"beta": 1}},
    ]
    return rule_scenario(
        "targeting-contains",
        "contains: a string attribute contains a string value as a substring (the empty string is "
        "in every string; case-sensitive), an array attribute has an element equal to the value "
        "(same type; 30 equals 30.0; nested arrays and objects never equal), anything else is "
        "false (a string attribute never contains a number). starts_with: string attributes only.",
        rules, contexts)


@scenario
def targeting_missing_null():
    rules = [
        ("exists", C("x", "exists")), ("not-exists", {"not": C("x", "exists")}),
        ("eq", C("x", "eq", "a")), ("not-eq", {"not": C("x", "eq", "a")}),
        ("neq", C("x", "neq", "a")), ("not-neq", {"not": C("x", "neq", "a")}),
        ("not-in", C("x", "not_in", values=["a"])), ("not-not-in", {"not": C("x", "not_in", values=["a"])}),
        ("gt", C("x", "gt", 1)), ("not-gt", {"not": C("x", "gt", 1)}),
        ("contains", C("x", "contains", "a")), ("starts-with", C("x", "starts_with", "a")),
        ("semver", C("x", "semver_gte", "0.0.0")), ("not-semver", {"not": C("x", "semver_gte", "0.0.0")}),
        ("exists-other-attr", C("y", "exists")),
    ]
    contexts = [{}, {"x": None}, {"x": "a"}, {"x": "b"}, {"x": "abc"}, {"x": 5}, {"x": 0},
                {"x": False}, {"x": []}, {"x": {}}, {"x": ""}, {"x": "1.0.0"}, {"x": ["a"]},
                {"y": None}, {"y": False, "x": None}, {"y": 0}]
    return rule_scenario(
        "targeting-missing-null",
        "A condition on a missing or null attribute is false whatever the op, including exists, "
        "neq and not_in; only not turns it true. exists is true for every non-null value (false, "
        "0, \"\", [], {}).",
        rules, contexts)


@scenario
def targeting_semver():
    rules = [
        ("gte-2.1", C("app_version", "semver_gte", "2.1")),
        ("gt-v1.2.3", C("app_version", "semver_gt", "v1.2.3")),
        ("lt-1.0.0", C("app_version", "semver_lt", "1.0.0")),
        ("lte-beta.11", C("app_version", "semver_lte", "1.0.0-beta.11")),
        ("gt-alpha", C("app_version", "semver_gt", "1.0.0-alpha")),
        ("gte-build", C("app_version", "semver_gte", "1.0.0+build.9")),
        ("gt-build", C("app_version", "semver_gt", "1.0.0+zzz")),
        ("lt-V3", C("app_version", "semver_lt", "V3")),
        ("gt-rc.1", C("app_version", "semver_gt", "1.0.0-rc.1")),
        ("lte-2", C("app_version", "semver_lte", "2")),
        ("gt-pre-hyphen", C("app_version", "semver_gt", "1.0.0-x-y.1")),
    ]
    versions = ["1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-alpha.beta", "1.0.0-beta", "1.0.0-beta.2",
                "1.0.0-beta.11", "1.0.0-rc.1", "1.0.0-rc.1+build.1", "1.0.0", "1.0.0+build.1",
                "v1.0.0", "V1.2.3", "1.2.3", "1.2.4", "1.2", "1", "2", "2.0.9", "2.1", "2.1.0",
                "v2.1", "2.1.0-rc.1", "2.1.1-0", "2.10.0", "2.9.99", "3.0.0-0", "3", "10.0.0",
                "1.0.0-x-y.1", "1.0.0-x-y.2", "1.0.0-x-y", "1.0.0-x-z", "1.0.0-1", "1.0.0-A",
                "1.0.0-a", "1.0.0-alpha.10", "1.0.0-alpha.9",
                "1.2.3.4", "abc", "", "1..0", "v", "-1.0.0", " 1.2.3", "1.2.3 ", "1.0.0-",
                "1.0.0+", "1.0.0-alpha..1", "1.0.0-\u03b1", "\uff11.\uff12.\uff13", "1.2.3-beta_1",
                "vv1.0.0", "1.0.0+build+2", "v 1.0.0"]
    contexts = [{"app_version": v} for v in versions] + [
        {"app_version": 2}, {"app_version": 2.1}, {"app_version": None}, {}, {"app_version": ["2.1.0"]}]
    return rule_scenario(
        "targeting-semver",
        "semver_gt/gte/lt/lte: optional v/V prefix, short forms (\"2.1\" is 2.1.0, \"2\" is "
        "2.0.0), pre-releases before their release, identifiers compared numerically when all "
        "digits (beta.2 < beta.11), by ASCII otherwise (A < a), numeric before alphanumeric, "
        "shorter prefix first; build metadata ignored (1.0.0 equals 1.0.0+zzz). Attributes that "
        "are not strings or do not parse (four parts, empty or stray parts, non-ASCII digits, "
        "whitespace, '_', empty pre-release or build) make the condition false.",
        rules, contexts)


@scenario
def targeting_logic():
    fr = C("country", "eq", "FR")
    pro = C("plan", "in", values=["pro", "enterprise"])
    adult = C("age", "gte", 18)
    rules = [
        ("all-two", {"all": [fr, pro]}), ("any-two", {"any": [fr, pro]}),
        ("not-any", {"not": {"any": [fr, pro]}}), ("all-empty", {"all": []}),
        ("any-empty", {"any": []}), ("not-all-empty", {"not": {"all": []}}),
        ("not-not", {"not": {"not": fr}}), ("all-single", {"all": [adult]}),
        ("nested", {"all": [{"any": [fr, {"all": [pro, {"not": adult}]}]},
                            {"not": {"any": [C("banned", "eq", True), {"not": C("country", "exists")}]}}]}),
        ("not-missing", {"not": C("nickname", "exists")}),
        ("any-of-nots", {"any": [{"not": fr}, {"not": pro}]}),
    ]
    contexts = []
    for country in ("FR", "DE", None, "absent"):
        for plan in ("pro", "free", "absent"):
            for age in (30, 12):
                c = {"age": age}
                if country != "absent":
                    c["country"] = country
                if plan != "absent":
                    c["plan"] = plan
                contexts.append(c)
    contexts += [{"country": "FR", "plan": "pro", "age": 16, "banned": True},
                 {"country": "FR", "plan": "enterprise", "nickname": "zed"},
                 {"country": "DE", "plan": "pro", "age": 5, "banned": False, "nickname": None}]
    return rule_scenario(
        "targeting-logic",
        "all / any / not and their nesting: an empty all is true, an empty any is false, not "
        "inverts (including a condition made false by a missing or null attribute).",
        rules, contexts, never=["any-empty", "not-all-empty"], always=["all-empty"])


def nest_not(rule, n):
    for _ in range(n):
        rule = {"not": rule}
    return rule


def nest_all_any(rule, n):
    for i in range(n):
        rule = {("all", "any")[i % 2]: [rule]}
    return rule


@scenario
def targeting_depth_limit():
    rules = [("not-31", nest_not(C("tier", "eq", "gold"), 31)),
             ("not-30", nest_not(C("tier", "eq", "gold"), 30)),
             ("all-any-31", nest_all_any(C("tier", "exists"), 31)),
             ("mixed-32", {"all": [C("tier", "exists"), nest_not(nest_all_any(C("tier", "neq", "gold"), 10), 20)]})]
    contexts = [{"tier": "gold"}, {"tier": "silver"}, {"tier": None}, {}, {"tier": 1}]
    return rule_scenario(
        "targeting-depth-limit",
        "The nesting limit: the top-level rule is level 1 and each all/any/not adds a level, so a "
        "condition under 31 operators sits at level 32 and is accepted (33 levels is rejected, see "
        "invalid/targeting-depth-33.json). 31 nested nots invert; 30 do not.",
        rules, contexts)


@scenario
def defaults_and_unknown_fields():
    plain = X("plain", V(20, 80), salt="defaults-salt")
    explicit = X("explicit-defaults", V(20, 80), salt="defaults-salt", unit="user_id", surfaces=[],
                 respect_holdout=True, ramp_permille=1000, targeting=None, winner=None,
                 layer=None, range=None)
    odd = X("odd-strings-\u00e9", V(1, 1, names=["cr\u00e8me", "\U0001F680"]), flag="flag with spaces",
            salt="sel-\u00e9-\U0001F9C2")
    empty_salt = X("empty-salt", salt="")
    extra = X("extra-fields", V(1, 1), description="unknown fields are ignored", owner={"team": "growth"})
    extra["variants"][0]["payload"] = {"color": "red"}
    snap = snapshot([plain, explicit, odd, empty_salt, extra], layers=[("unused", "u")],
                    holdout={"salt": "nobody", "permille": 0, "note": "ignored"}, version=2 ** 64 - 1)
    snap["layers"][0]["title"] = "ignored too"
    snap["generated_at"] = "2026-11-24T13:00:00Z"
    snap["schema"] = {"future": [1, 2, 3]}
    s = Scenario(
        "defaults-and-unknown-fields",
        "Defaults and tolerance: unknown fields at every level outside targeting rules are ignored; "
        "null targeting/winner/layer/range equal absent ones; explicit defaults (unit user_id, "
        "surfaces [], respect_holdout true, ramp_permille 1000) equal absent ones; a holdout with "
        "permille 0 holds out nobody; an unused layer is fine; version may be any u64; an empty "
        "experiment salt and non-ASCII keys, flags, variant keys and salts are allowed (salts are "
        "hashed as UTF-8).",
        snap, always=[e["key"] for e in snap["experiments"]])
    s.users([f"df-{i}" for i in range(16)] + ["\u00e9", "e\u0301", "42", 42], surface="anything")

    def check(cases):
        for c in cases:
            p, e = c["expected"]["plain"], c["expected"]["explicit-defaults"]
            assert p["variant"] == e["variant"] and p["assigned"] == e["assigned"]
    s.checks += [check, check_variants_seen("odd-strings-\u00e9", ["cr\u00e8me", "\U0001F680"])]
    return s


@scenario
def realistic_mixed():
    snap = snapshot(
        [X("hero-banner", V(50, 50), layer="home", range=[0, 400], surfaces=["home"]),
         X("feed-ranking", V(20, 30, 50, names=["control", "recency", "ml"]), layer="home",
           range=[400, 1000], ramp_permille=600, surfaces=["home", "search"]),
         X("pay-button", V(70, 30), layer="checkout", range=[0, 500], surfaces=["checkout"],
           targeting={"all": [C("country", "in", values=["FR", "DE", "ES"]),
                              C("app_version", "semver_gte", "4.2")]}),
         X("free-shipping", V(1, 1, 2), layer="checkout", range=[500, 900], ramp_permille=250,
           targeting={"not": C("plan", "eq", "enterprise")}),
         X("dark-mode", V(1, 1), status="concluded", winner="treatment", surfaces=["home", "settings"]),
         X("device-onboarding", V(50, 25, 25), unit="device_id", respect_holdout=False,
           targeting={"any": [C("platform", "eq", "ios"), C("platform", "eq", "android")]}),
         X("account-pricing", V(45, 45, 10), unit="account_id", status="paused"),
         X("perf-budget", V(1, 1), respect_holdout=False)],
        layers=[("home", "layer-home-2026"), ("checkout", "layer-checkout-2026")],
        holdout={"salt": "holdout-2026-q4", "permille": 80})
    s = Scenario(
        "realistic-mixed",
        "Everything together, as a production snapshot: holdout, two layers, surfaces, targeting "
        "with semver, a concluded rollout, a device-level experiment ignoring the holdout, a "
        "paused account experiment and opted-out users, evaluated on several surfaces.",
        snap, never=["account-pricing"])
    rng = random.Random(7)
    for i in range(40):
        c = {"user_id": f"rm-{i}", "country": rng.choice(["FR", "DE", "ES", "US"]),
             "app_version": rng.choice(["4.2.0", "4.1.9", "4.2.0-beta.1", "v5.0", "4.10"]),
             "plan": rng.choice(["free", "pro", "enterprise"]),
             "account_id": rng.randrange(1, 10 ** 6)}
        if i % 3:
            c["device_id"] = f"dev-{rng.getrandbits(32):08x}"
            c["platform"] = rng.choice(["ios", "android", "web"])
        if i % 7 == 3:
            c["opted_out"] = True
        s.add(c, [None, "home", "checkout", "search", "settings"][i % 5])
    s.add({"device_id": "dev-no-user", "platform": "ios"})
    s.add({"device_id": "dev-no-user-2", "platform": "android", "opted_out": True}, "home")
    return s


@scenario
def fallback_units():
    exps = [X("signup-flow", fallback_unit="device_id"),
            X("by-device", unit="device_id"),
            X("layered-fallback", V(1, 1, 1), fallback_unit="anon_id", layer="L", range=[0, 700]),
            X("fallback-rollout", status="concluded", winner="treatment", fallback_unit="device_id",
              targeting={"attr": "country", "op": "eq", "value": "FR"})]
    s = Scenario(
        "fallback-units",
        "Section 9: an experiment with a fallback_unit identifies the unit by its unit attribute "
        "when the context has a usable id there, and otherwise by the fallback attribute; a value "
        "that identifies no unit (empty string, 1.5, null) counts as absent. The unit so found "
        "is what the holdout, the layer, the ramp and the variant hash, and its attribute is "
        "reported as unit_attr (only for experiments with a fallback_unit, so other cases keep "
        "their shape). With both ids present the unit id wins: the device id changes nothing.",
        snapshot(exps, layers=[("L", "layer-fallback")],
                 holdout={"salt": "holdout-fallback", "permille": 100}))
    users = [f"fu-{i}" for i in range(14)]
    devices = [f"fd-{i}" for i in range(14)]
    for i in range(14):
        country = "FR" if i % 2 else "US"
        s.add({"user_id": users[i], "country": country})
        s.add({"device_id": devices[i], "country": country})
        s.add({"user_id": users[i], "device_id": devices[i], "country": country})
        s.add({"anon_id": devices[i]})
    for bad in ("", 1.5, None, True):
        s.add({"user_id": bad, "device_id": "fd-0", "anon_id": "fd-0"})
    s.add({"user_id": 42, "device_id": "fd-1"})
    s.add({})

    def check(cases):
        by = {json.dumps(c["context"], sort_keys=True): c["expected"] for c in cases}
        for i in range(14):
            country = "FR" if i % 2 else "US"
            alone = by[json.dumps({"country": country, "user_id": users[i]}, sort_keys=True)]
            both = by[json.dumps({"country": country, "device_id": devices[i], "user_id": users[i]},
                                 sort_keys=True)]
            assert {k: v for k, v in both.items() if k != "by-device"} == alone
            for r in both.values():
                assert r.get("unit_attr", "user_id") == "user_id"
            dev = by[json.dumps({"country": country, "device_id": devices[i]}, sort_keys=True)]
            if "signup-flow" in dev:
                assert dev["signup-flow"]["unit_attr"] == "device_id"
        assert any("layered-fallback" in c["expected"]
                   and c["expected"]["layered-fallback"]["unit_attr"] == "anon_id" for c in cases)
    s.checks.append(check)
    return s


@scenario
def sticky_assignments():
    exps = [X("checkout-sticky", sticky=True, fallback_unit="device_id", ramp_permille=500,
              targeting={"attr": "country", "op": "in", "values": ["FR", "DE"]}),
            X("pricing-sticky", V(1, 1, 1), sticky=True),
            X("plain", fallback_unit="device_id"),
            X("sticky-rollout", sticky=True, status="concluded", winner="treatment"),
            X("sticky-paused", sticky=True, status="paused")]
    s = Scenario(
        "sticky-assignments",
        "Section 9: cases with a 'sticky' list evaluate with those kept assignments as the "
        "lookup and expect the entries to store in 'expected_sticky'; cases without one "
        "evaluate sticky experiments as ordinary ones. A running sticky experiment serves a kept "
        "variant before the layer range, targeting and ramp (a unit kept in treatment stays there "
        "after the country or the ramp changes), after the unit id and the holdout; opted-out "
        "units get the first variant, assigned stays the kept one. A kept variant that is no "
        "longer a variant is ignored and the unit is assigned afresh. A variant kept under the "
        "fallback id (the device, before sign-in) is served to the unit id and returned as a new "
        "entry for it. A fresh bucket assignment of a sticky experiment is returned as a new "
        "entry; a kept one is not. Concluded, paused and non-sticky experiments ignore the lookup.",
        snapshot(exps, holdout={"salt": "holdout-sticky", "permille": 100}),
        never=["sticky-paused"])
    held = lambda u: bucket(u, "holdout-sticky") < 100  # noqa: E731
    free = find(lambda u: not held(u), n=16, tag="sk")
    heldout = find(held, n=2, tag="skh")
    entry = lambda attr, u, k, v: {"unit_attr": attr, "unit_id": u, "experiment": k, "variant": v}  # noqa: E731
    for i, u in enumerate(free[:8]):
        country = ("FR", "DE", "US", "FR")[i % 4]
        s.add({"user_id": u, "country": country})
        s.add({"user_id": u, "country": country}, sticky=[])
    # Kept in treatment: served although targeting or ramp would now say otherwise.
    for u in free[8:12]:
        kept = [entry("user_id", u, "checkout-sticky", "treatment"),
                entry("user_id", u, "pricing-sticky", "v2"), entry("user_id", u, "plain", "treatment"),
                entry("user_id", u, "sticky-rollout", "control"),
                entry("user_id", u, "sticky-paused", "treatment")]
        s.add({"user_id": u, "country": "US"}, sticky=kept)
        s.add({"user_id": u, "country": "US", "opted_out": True}, sticky=kept)
    # A kept variant that no longer exists.
    s.add({"user_id": free[12], "country": "FR"},
          sticky=[entry("user_id", free[12], "checkout-sticky", "retired"),
                  entry("user_id", free[12], "pricing-sticky", "v9")])
    # Sign-in: kept under the device id, evaluated with both ids, then the device alone.
    dev = "device-before-signin"
    for ctx in ({"user_id": free[13], "device_id": dev, "country": "US"},
                {"device_id": dev, "country": "US"}):
        s.add(ctx, sticky=[entry("device_id", dev, "checkout-sticky", "treatment")])
    # The user id entry wins over the device's.
    s.add({"user_id": free[14], "device_id": dev, "country": "US"},
          sticky=[entry("device_id", dev, "checkout-sticky", "treatment"),
                  entry("user_id", free[14], "checkout-sticky", "control")])
    # Integer ids are kept by their decimal text; held-out units get nothing.
    s.add({"user_id": 42, "country": "US"}, sticky=[entry("user_id", "42", "pricing-sticky", "v1")])
    for u in heldout:
        s.add({"user_id": u, "country": "FR"}, sticky=[entry("user_id", u, "checkout-sticky", "treatment"),
                                                      entry("user_id", u, "pricing-sticky", "v1")])

    def check(cases):
        kept_cases = [c for c in cases if c.get("sticky") and c["context"].get("country") == "US"
                      and c["context"].get("user_id") in free[8:12]]
        assert kept_cases and all(c["expected"]["checkout-sticky"]["assigned"] == "treatment"
                                  and c["expected"]["sticky-rollout"]["variant"] == "treatment"
                                  and c["expected_sticky"] == [] for c in kept_cases)
        signin = [c for c in cases if c["context"].get("device_id") == dev and "user_id" in c["context"]
                  and c["context"]["user_id"] == free[13]]
        moved = [x for x in signin[0]["expected_sticky"] if x["experiment"] == "checkout-sticky"]
        assert moved == [entry("user_id", free[13], "checkout-sticky", "treatment")], moved
        fresh = [c for c in cases if c.get("sticky") == [] and "checkout-sticky" in c["expected"]]
        assert fresh and all(any(x["experiment"] == "checkout-sticky" for x in c["expected_sticky"])
                             for c in fresh)
        for c in cases:
            if c["context"].get("user_id") in heldout:
                assert not ({"checkout-sticky", "pricing-sticky"} & set(c["expected"]))
    s.checks.append(check)
    return s


# Section 10 delegates bot recognition to a maintained list (the isbot
# pattern list), which this reference does not reimplement: the suite uses
# user agents that every version of the list classifies alike, and asks for
# no other.
BOT_FIXTURES = {
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)": True,
    "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)": True,
    "curl/8.5.0": True,
    "python-requests/2.31.0": True,
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.0.0 Safari/537.36": False,
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.5 Mobile/15E148 Safari/604.1": False,
    "Mozilla/5.0 (X11; Linux x86_64; rv:127.0) Gecko/20100101 Firefox/127.0": False,
    "": False,
}


def is_bot(context):
    ua = context.get("user_agent")
    if type(ua) is not str:
        return False
    return BOT_FIXTURES[ua]


@scenario
def known_bots():
    exps = [X("excludes-bots"), X("includes-bots", include_bots=True),
            X("bots-rollout", status="concluded", winner="treatment"),
            X("ignores-holdout", V(1, 1, 1), respect_holdout=False)]
    s = Scenario(
        "known-bots",
        "Section 10: a live experiment does not assign a context whose user_agent (a string) is a "
        "known bot's, unless it sets include_bots; a concluded rollout serves its winner to bots "
        "too (it logs no exposure anyway). A user_agent that is not a string, or empty, is not a "
        "bot. Bot recognition is the maintained list's; these user agents are classified alike by "
        "every version of it.",
        snapshot(exps, holdout={"salt": "holdout-bots", "permille": 100}),
        always=[])
    agents = list(BOT_FIXTURES) + [42, None]
    for i in range(10):
        for j, ua in enumerate(agents):
            if (i + j) % 2 == 0:
                s.add({"user_id": f"bot-{i}", "user_agent": ua})
        s.add({"user_id": f"bot-{i}"})

    def check(cases):
        for c in cases:
            bot = is_bot(c["context"])
            assert not (bot and "excludes-bots" in c["expected"]), c
            assert not (bot and "ignores-holdout" in c["expected"]), c
        assert any(is_bot(c["context"]) and "includes-bots" in c["expected"] for c in cases)
        assert any(is_bot(c["context"]) and "bots-rollout" in c["expected"] for c in cases)
    s.checks.append(check)
    return s


@scenario
def holdout_exposures_scenario():
    exps = [X("respects", surfaces=["checkout"]), X("device-exp", unit="device_id"),
            X("ignores", respect_holdout=False),
            X("rollout", status="concluded", winner="treatment", surfaces=["checkout"]),
            X("paused-exp", status="paused"),
            X("signup", unit="user_id", fallback_unit="device_id", surfaces=["signup"]),
            X("accounts-ignore", unit="account_id", respect_holdout=False)]
    salt = "holdout-exposures-2026"
    s = Scenario(
        "holdout-exposures",
        "Section 11: with a holdout, each distinct (unit attribute, unit id) that a servable "
        "experiment on the surface respecting the holdout identifies (its unit, else its "
        "fallback unit) yields one holdout exposure, variant holdout or rest by the holdout "
        "bucket, in snapshot order; experiments that ignore the holdout, paused ones and other "
        "surfaces' add none; a known bot yields none.",
        snapshot(exps, holdout={"salt": salt, "permille": 100}),
        never=["paused-exp"])
    s.holdout_exposures = True
    held = lambda u: bucket(u, salt) < 100  # noqa: E731
    hu, fu = find(held, n=3, tag="hu"), find(lambda u: not held(u), n=3, tag="fu")
    hd, fd = find(held, n=3, tag="hd"), find(lambda u: not held(u), n=3, tag="fd")
    for i in range(3):
        for surface in (None, "checkout", "signup", "elsewhere"):
            s.add({"user_id": hu[i], "device_id": fd[i]}, surface)
            s.add({"user_id": fu[i], "device_id": hd[i]}, surface)
            s.add({"device_id": hd[i]}, surface)
        s.add({"device_id": fd[i]}, "signup")
        s.add({"account_id": f"acct-{i}"})
        s.add({"user_id": hu[i], "user_agent": next(iter(BOT_FIXTURES))})
    s.add({"user_id": 42, "device_id": -7})
    s.add({})

    def check(cases):
        exposures = [c["expected_holdout"] for c in cases]
        assert any(len(x) == 2 for x in exposures)
        assert {v["variant"] for x in exposures for v in x} == {"holdout", "rest"}
        assert any(x == [] and c["context"].get("account_id") for c, x in zip(cases, exposures))
        assert all(x == [] for c, x in zip(cases, exposures) if is_bot(c["context"]))
        assert any(v["unit_attr"] == "device_id" and c["surface"] == "signup"
                   and "user_id" not in c["context"] for c, x in zip(cases, exposures) for v in x)
    s.checks.append(check)
    return s


# -- invalid snapshots --------------------------------------------------------


def base_snapshot():
    return {
        "version": 3,
        "holdout": {"salt": "holdout", "permille": 50},
        "layers": [{"key": "checkout", "salt": "layer-checkout"}, {"key": "search", "salt": "layer-search"}],
        "experiments": [
            X("button-color", layer="checkout", range=[0, 500], ramp_permille=500),
            X("free-shipping", V(1, 1, 1), status="paused", layer="checkout", range=[500, 1000],
              targeting={"attr": "country", "op": "in", "values": ["FR", "DE"]}),
            X("search-ranking", V(10, 20, 70), layer="search", range=[0, 1000]),
            X("new-nav", status="concluded", winner="treatment"),
        ],
    }


def exp_field(i, **fields):
    def mutate(s):
        for k, v in fields.items():
            if v is DELETE:
                del s["experiments"][i][k]
            else:
                s["experiments"][i][k] = v
    return mutate


DELETE = object()


def rule(r, i=0):
    return exp_field(i, targeting=r)


INVALID = [
    # name, error kind, description, mutation of base_snapshot() or a whole value
    ("json-top-level-array", "json", "The snapshot is a JSON array, not an object.", lambda s: [s]),
    ("json-missing-version", "json", "Required field version is missing.", lambda s: s.pop("version")),
    ("json-version-negative", "json", "version is a u64; -1 does not fit.", lambda s: s.update(version=-1)),
    ("json-version-too-large", "json", "version 2^64 does not fit a u64.", lambda s: s.update(version=2 ** 64)),
    ("json-version-string", "json", "version as a string.", lambda s: s.update(version="3")),
    ("json-experiments-object", "json", "experiments must be a list.",
     lambda s: s.update(experiments={"button-color": s["experiments"][0]})),
    ("json-missing-experiments", "json", "Required field experiments is missing.", lambda s: s.pop("experiments")),
    ("json-status-bogus", "json", "status must be running, paused, killed or concluded.",
     exp_field(0, status="bogus")),
    ("json-status-uppercase", "json", "status values are case-sensitive: \"Running\" is not a status.",
     exp_field(2, status="Running")),
    ("json-missing-salt", "json", "Required experiment field salt is missing.", exp_field(0, salt=DELETE)),
    ("json-missing-status", "json", "Required experiment field status is missing.", exp_field(2, status=DELETE)),
    ("json-missing-variants", "json", "Required experiment field variants is missing.",
     exp_field(2, variants=DELETE)),
    ("json-key-number", "json", "An experiment key must be a string.", exp_field(2, key=42)),
    ("json-weight-negative", "json", "Variant weight -1: weights are u32.",
     lambda s: s["experiments"][0]["variants"][1].update(weight=-1)),
    ("json-weight-too-large", "json", "Variant weight 2^32 does not fit a u32.",
     lambda s: s["experiments"][0]["variants"][1].update(weight=2 ** 32)),
    ("json-weight-float", "json", "Variant weight 1.0 is not an integer.",
     lambda s: s["experiments"][0]["variants"][1].update(weight=1.0)),
    ("json-weight-missing", "json", "Required variant field weight is missing.",
     lambda s: s["experiments"][0]["variants"][1].pop("weight")),
    ("json-variant-key-missing", "json", "Required variant field key is missing.",
     lambda s: s["experiments"][2]["variants"][1].pop("key")),
    ("json-ramp-string", "json", "ramp_permille as the string \"500\".", exp_field(0, ramp_permille="500")),
    ("json-ramp-too-large-for-u16", "json", "ramp_permille 65536 does not fit a u16 (65535 would be "
     "invalid_field, see invalid-field-ramp-65535.json).", exp_field(0, ramp_permille=65536)),
    ("json-range-too-large-for-u16", "json", "A range bound of 70000 does not fit a u16.",
     exp_field(2, range=[0, 70000])),
    ("json-range-three-elements", "json", "A range is a pair [start, end).", exp_field(2, range=[0, 500, 1000])),
    ("json-range-object", "json", "A range is a pair, not an object.",
     exp_field(2, range={"start": 0, "end": 1000})),
    ("json-surfaces-not-strings", "json", "surfaces must be a list of strings.", exp_field(0, surfaces=[1])),
    ("json-respect-holdout-string", "json", "respect_holdout must be a boolean.",
     exp_field(0, respect_holdout="false")),
    ("json-unit-number", "json", "unit must be a string.", exp_field(0, unit=1)),
    ("json-winner-number", "json", "winner must be a string or null.", exp_field(3, winner=1)),
    ("json-holdout-missing-permille", "json", "Required holdout field permille is missing.",
     lambda s: s["holdout"].pop("permille")),
    ("json-holdout-permille-negative", "json", "holdout.permille is a u16; -1 does not fit.",
     lambda s: s["holdout"].update(permille=-1)),
    ("json-layer-missing-salt", "json", "Required layer field salt is missing.",
     lambda s: s["layers"][1].pop("salt")),
    ("json-layers-object", "json", "layers must be a list.",
     lambda s: s.update(layers={"checkout": "layer-checkout", "search": "layer-search"})),
    ("duplicate-experiment", "duplicate_experiment", "Two experiments share the key button-color "
     "(flags and salts differ).", exp_field(2, key="button-color")),
    ("duplicate-flag", "duplicate_flag", "Two experiments share the flag button_color (keys differ).",
     exp_field(2, flag="button_color")),
    ("duplicate-layer", "duplicate_layer", "Two layers share the key search (salts differ).",
     lambda s: s["layers"].append({"key": "search", "salt": "other"})),
    ("unknown-layer", "unknown_layer", "An experiment names layer 'pricing', which is not defined.",
     exp_field(2, layer="pricing")),
    ("unknown-layer-case", "unknown_layer", "Layer names are case-sensitive: 'Search' is not 'search'.",
     exp_field(2, layer="Search")),
    ("invalid-range-layer-without-range", "invalid_range", "An experiment has a layer but no range.",
     exp_field(2, range=DELETE)),
    ("invalid-range-range-without-layer", "invalid_range", "An experiment has a range but no layer.",
     exp_field(2, layer=DELETE)),
    ("invalid-range-empty", "invalid_range", "Range [300, 300) is empty.", exp_field(2, range=[300, 300])),
    ("invalid-range-reversed", "invalid_range", "Range [600, 400) is reversed.", exp_field(2, range=[600, 400])),
    ("invalid-range-end-1001", "invalid_range", "Range end 1001 is beyond 1000.", exp_field(2, range=[900, 1001])),
    ("invalid-range-killed", "invalid_range", "Ranges are validated for every status: a killed "
     "experiment with range [0, 1001).", lambda s: s["experiments"].append(
         X("old", layer="search", range=[0, 1001], status="killed"))),
    ("overlap-running-running", "overlapping_ranges", "Two running experiments of layer checkout own "
     "[0, 500) and [499, 700).", lambda s: s["experiments"].append(X("late", layer="checkout", range=[499, 700]))),
    ("overlap-running-paused", "overlapping_ranges", "A paused experiment's range [400, 1000) overlaps "
     "a running one's [0, 500).", exp_field(1, range=[400, 1000])),
    ("overlap-paused-paused", "overlapping_ranges", "Two paused experiments of layer search overlap; "
     "paused experiments keep their range.", lambda s: (
         s["experiments"][2].update(range=[0, 100]),
         s["experiments"].append(X("p1", layer="search", range=[100, 600], status="paused")),
         s["experiments"].append(X("p2", layer="search", range=[550, 1000], status="paused")))),
    ("overlap-contained", "overlapping_ranges", "A running range [100, 200) inside another running "
     "experiment's [0, 500).", lambda s: s["experiments"].append(X("inner", layer="checkout", range=[100, 200]))),
    ("zero-total-weight", "zero_total_weight", "All variant weights are 0.", exp_field(2, variants=V(0, 0, 0))),
    ("zero-total-weight-no-variants", "zero_total_weight", "An empty variants list.", exp_field(2, variants=[])),
    ("invalid-field-empty-key", "invalid_field", "An experiment key is the empty string.", exp_field(2, key="")),
    ("invalid-field-empty-flag", "invalid_field", "An experiment flag is the empty string.", exp_field(2, flag="")),
    ("invalid-field-empty-unit", "invalid_field", "An experiment unit is the empty string.", exp_field(2, unit="")),
    ("invalid-field-empty-fallback-unit", "invalid_field", "An experiment fallback_unit is the empty string.",
     exp_field(2, fallback_unit="")),
    ("invalid-field-fallback-is-unit", "invalid_field", "An experiment's fallback_unit is its unit attribute.",
     exp_field(2, unit="device_id", fallback_unit="device_id")),
    ("json-sticky-not-bool", "json", "sticky is the string \"true\", not a boolean.", exp_field(0, sticky="true")),
    ("invalid-field-ramp-1001", "invalid_field", "ramp_permille 1001 is above 1000.",
     exp_field(0, ramp_permille=1001)),
    ("invalid-field-ramp-65535", "invalid_field", "ramp_permille 65535 fits a u16 but is above 1000.",
     exp_field(0, ramp_permille=65535)),
    ("invalid-field-holdout-1001", "invalid_field", "holdout.permille 1001 is above 1000.",
     lambda s: s["holdout"].update(permille=1001)),
    ("invalid-field-duplicate-variant", "invalid_field", "Two variants share the key control.",
     exp_field(2, variants=V(10, 20, 70, names=["control", "v1", "control"]))),
    ("invalid-field-winner-running", "invalid_field", "winner set on a running experiment.",
     exp_field(2, winner="control")),
    ("invalid-field-winner-paused", "invalid_field", "winner set on a paused experiment.",
     exp_field(1, winner="control")),
    ("invalid-field-winner-killed", "invalid_field", "winner set on a killed experiment.",
     exp_field(2, status="killed", winner="v1")),
    ("invalid-field-winner-unknown", "invalid_field", "winner names no variant of the experiment.",
     exp_field(3, winner="Treatment")),
    ("targeting-unknown-op", "invalid_targeting", "Unknown op 'equals'.", rule(C("country", "equals", "FR"))),
    ("targeting-unknown-field", "invalid_targeting", "A condition with an unknown field 'negate'.",
     rule({"attr": "country", "op": "eq", "value": "FR", "negate": True})),
    ("targeting-unknown-combinator", "invalid_targeting", "A rule object that is none of all/any/not/"
     "condition: {\"none\": [...]}.", rule({"none": [C("country", "eq", "FR")]})),
    ("targeting-two-combinators", "invalid_targeting", "A rule with both all and any.",
     rule({"all": [C("country", "eq", "FR")], "any": []})),
    ("targeting-in-with-value", "invalid_targeting", "in takes values, not value.",
     rule(C("country", "in", "FR"))),
    ("targeting-eq-with-values", "invalid_targeting", "eq takes value, not values.",
     rule(C("country", "eq", values=["FR"]))),
    ("targeting-eq-with-both", "invalid_targeting", "eq with both value and values.",
     rule({"attr": "country", "op": "eq", "value": "FR", "values": ["FR"]})),
    ("targeting-eq-missing-value", "invalid_targeting", "eq without a value.", rule(C("country", "eq"))),
    ("targeting-eq-null-value", "invalid_targeting", "eq with value null.",
     rule({"attr": "country", "op": "eq", "value": None})),
    ("targeting-eq-array-value", "invalid_targeting", "eq with an array value.",
     rule(C("country", "eq", ["FR"]))),
    ("targeting-empty-values", "invalid_targeting", "in with an empty values list.", rule(C("country", "in", values=[]))),
    ("targeting-mixed-values", "invalid_targeting", "not_in with values of mixed types.",
     rule(C("age", "not_in", values=[30, "30"]))),
    ("targeting-mixed-values-bool", "invalid_targeting", "in with values mixing a boolean and a number.",
     rule(C("beta", "in", values=[True, 1]))),
    ("targeting-null-in-values", "invalid_targeting", "in with a null element.",
     rule(C("country", "in", values=["FR", None]))),
    ("targeting-bad-semver", "invalid_targeting", "semver_gte with a value that is not a version.",
     rule(C("app_version", "semver_gte", "latest"))),
    ("targeting-bad-semver-four-parts", "invalid_targeting", "semver_lt with \"1.2.3.4\".",
     rule(C("app_version", "semver_lt", "1.2.3.4"))),
    ("targeting-semver-number", "invalid_targeting", "semver_gt with a number value.",
     rule(C("app_version", "semver_gt", 2))),
    ("targeting-gt-boolean", "invalid_targeting", "gt with a boolean value.", rule(C("beta", "gt", True))),
    ("targeting-starts-with-number", "invalid_targeting", "starts_with with a number value.",
     rule(C("zip", "starts_with", 75))),
    ("targeting-exists-with-value", "invalid_targeting", "exists takes nothing; a value is an "
     "unknown field for it.", rule({"attr": "country", "op": "exists", "value": True})),
    ("targeting-missing-attr", "invalid_targeting", "A condition without attr.",
     rule({"op": "eq", "value": "FR"})),
    ("targeting-attr-number", "invalid_targeting", "A condition whose attr is not a string.",
     rule({"attr": 7, "op": "eq", "value": "FR"})),
    ("targeting-non-object-rule", "invalid_targeting", "The rule is a string.", rule("country == FR")),
    ("targeting-non-object-child", "invalid_targeting", "A child of all is an array.",
     rule({"all": [C("country", "eq", "FR"), ["plan", "eq", "pro"]]})),
    ("targeting-all-not-list", "invalid_targeting", "all takes a list, not a single rule.",
     rule({"all": C("country", "eq", "FR")})),
    ("targeting-not-list", "invalid_targeting", "not takes one rule, not a list.",
     rule({"not": [C("country", "eq", "FR")]})),
    ("targeting-empty-object", "invalid_targeting", "The rule is an empty object.", rule({})),
    ("targeting-depth-33", "invalid_targeting", "33 levels of nesting: a condition under 32 nots "
     "(32 levels, see cases/18-targeting-depth-limit.json, is accepted).", rule(nest_not(C("tier", "eq", "gold"), 32))),
    ("targeting-depth-45", "invalid_targeting", "45 levels of alternating all/any (still well "
     "within the 128 levels of JSON nesting that parsers accept).",
     rule(nest_all_any(C("tier", "exists"), 44))),
    ("targeting-on-killed", "invalid_targeting", "Targeting is validated whatever the status: a "
     "killed experiment with an unknown op.",
     lambda s: s["experiments"].append(X("old", status="killed", targeting=C("country", "like", "F%")))),
]


# -- murmur3 known answers ------------------------------------------------------


def murmur3_vectors():
    units = ["", "a", "ab", "abc", "abcd", "abcde", "user-42", "42", "-7", "18446744073709551615",
             ":", "user:42", "a:b:c", " ", "\u00e9", "e\u0301", "\u65e5\u672c", "\U0001F600",
             "\U0001F468\u200D\U0001F469\u200D\U0001F467", "\U0001F44D\U0001F3FF", "\u05e9\u05dc\u05d5\u05dd",
             "x" * 100, "\u00fc" * 60, "\U0001F980" * 30]
    salts = ["", "s", "exp-salt", "exp-salt:ramp", "sel-\u00e9-\U0001F9C2"]
    out = []
    for i, u in enumerate(units):
        for salt in (salts[i % 5], salts[(i + 2) % 5], salts[(i + 3) % 5]):
            out.append({"unit": u, "salt": salt, "hash": unit_hash(u, salt), "bucket": bucket(u, salt)})
    assert {(len((e["unit"] + ":" + e["salt"]).encode())) % 4 for e in out} == {0, 1, 2, 3}
    return out


# -- consistency corpus ----------------------------------------------------------

CORPUS_SIZE = 120000
CORPUS_SEED = 20261124
FORBIDDEN = set("\n\r\t\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029\ufeff")
ACCENTED = "\u00e0\u00e1\u00e2\u00e3\u00e4\u00e5\u00e7\u00e8\u00e9\u00ea\u00eb\u00ec\u00ed\u00ee\u00ef\u00f1" \
           "\u00f2\u00f3\u00f4\u00f5\u00f6\u00f9\u00fa\u00fb\u00fc\u00fd\u00ff\u0101\u0103\u0105\u0107\u010d" \
           "\u010f\u0113\u0119\u011b\u011f\u012b\u0142\u0144\u0148\u014d\u0151\u0153\u0159\u015b\u015f\u0161" \
           "\u0163\u0165\u016b\u016f\u0171\u017a\u017c\u017e\u00c5\u00c9\u00d6\u00dc\u1ec7\u1eaf\u01d6"
EMOJI = ["\U0001F600", "\U0001F602", "\U0001F972", "\U0001F680", "\U0001F389", "\U0001F525", "\U0001F4AF",
         "\U0001F355", "\U0001F40D", "\U0001F980", "\U0001F30D", "\u2b50", "\u2764\ufe0f", "\u2705",
         "\U0001F44D", "\U0001F44D\U0001F3FB", "\U0001F44D\U0001F3FD", "\U0001F44D\U0001F3FF",
         "\U0001F44B\U0001F3FC", "\U0001F9D1\u200D\U0001F4BB", "\U0001F469\u200D\U0001F52C",
         "\U0001F468\u200D\U0001F469\u200D\U0001F467\u200D\U0001F466",
         "\U0001F469\u200D\u2764\ufe0f\u200D\U0001F468", "\U0001F3F3\ufe0f\u200D\U0001F308",
         "\U0001F3F4\u200D\u2620\ufe0f", "\U0001F1EB\U0001F1F7", "\U0001F1EF\U0001F1F5",
         "\U0001F1E7\U0001F1F7", "\U0001F1EE\U0001F1F3", "1\ufe0f\u20e3", "#\ufe0f\u20e3",
         "\U0001F937\U0001F3FE\u200D\u2640\ufe0f", "\U0001F9D4\U0001F3FB\u200D\u2642\ufe0f",
         "\U0001F636\u200D\U0001F32B\ufe0f", "\U0001FAE0", "\U0001FA90"]
NAMES = ["anna", "ben", "chloe", "david", "emma", "felix", "grace", "hugo", "ines", "jonas", "kim",
         "lea", "marc", "nora", "oscar", "paula", "quentin", "rosa", "sam", "tom", "uma", "victor"]
DOMAINS = ["example.com", "example.org", "mail.test", "corp.example", "strata.dev"]


def _chars(rng, lo, hi, n):
    return "".join(chr(rng.randrange(lo, hi + 1)) for _ in range(n))


def _id_generators():
    def uuid4(r):
        return [str(uuid.UUID(int=r.getrandbits(128), version=4))]

    def numeric(r):
        return [str(r.randrange(10 ** r.randrange(1, 20)))]

    def email(r):
        return [f"{r.choice(NAMES)}.{r.choice(NAMES)}{r.randrange(10000)}@{r.choice(DOMAINS)}"]

    def colon(r):
        p = r.choice(["user", "acct", "dev", "org", "tenant:eu:user", "u", ""])
        return [f"{p}:{r.randrange(10 ** 7)}" + (":" * r.randrange(2))]

    def test_prefix(r):
        return [f"test-{r.getrandbits(40):x}"]

    def token(r):
        alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.+/=~"
        return ["".join(r.choice(alphabet) for _ in range(r.randrange(1, 41)))]

    def long_ascii(r):
        return ["L" + "".join(r.choice("abcdef0123456789:-") for _ in range(r.randrange(100, 300)))]

    def spaced(r):
        s = f"{r.choice(NAMES).title()} {r.choice(NAMES).title()} {r.randrange(1000)}"
        return [r.choice(["", " ", "  "]) + s + r.choice(["", " "])]

    def latin(r):
        w = "".join(r.choice(ACCENTED) if r.random() < 0.4 else r.choice("abcdefghijklmnoprstuvz")
                    for _ in range(r.randrange(2, 12)))
        w = NFC(w + (str(r.randrange(100)) if r.random() < 0.5 else ""))
        return [w, NFD(w)] if NFD(w) != w else [w]

    def cjk(r):
        parts = [_chars(r, 0x4E00, 0x9FA5, r.randrange(1, 6))]
        if r.random() < 0.3:
            parts.append(_chars(r, 0x3041, 0x3096, r.randrange(1, 4)))
        if r.random() < 0.3:
            parts.append(_chars(r, 0x30A1, 0x30FA, r.randrange(1, 4)))
        if r.random() < 0.3:
            parts.append(_chars(r, 0xAC00, 0xD7A3, r.randrange(1, 4)))
        if r.random() < 0.3:
            parts.append(str(r.randrange(1000)))
        return ["".join(parts)]

    def emoji(r):
        s = "".join(r.choice(EMOJI) for _ in range(r.randrange(1, 5)))
        return [r.choice(["", "", "u-", "user:", "\u00e9-"]) + s + r.choice(["", str(r.randrange(100))])]

    def combining(r):
        return ["".join(r.choice("aeiouxyzAEIOUn") + _chars(r, 0x0300, 0x036F, r.randrange(1, 4))
                        for _ in range(r.randrange(1, 6)))]

    def hebrew(r):
        s = _chars(r, 0x05D0, 0x05EA, r.randrange(2, 9))
        if r.random() < 0.2:
            s = s[0] + _chars(r, 0x05B0, 0x05BC, 1) + s[1:]
        return [s + (str(r.randrange(1000)) if r.random() < 0.4 else "")]

    def arabic(r):
        s = _chars(r, 0x0627, 0x063A, r.randrange(2, 9))
        if r.random() < 0.3:
            s += _chars(r, 0x064B, 0x0652, 1)
        return [r.choice(["", "user-"]) + s + (_chars(r, 0x0660, 0x0669, 3) if r.random() < 0.3 else "")]

    def cyrillic(r):
        return [_chars(r, 0x0430, 0x044F, r.randrange(3, 10)).capitalize() + r.choice(["", "\u0451", str(r.randrange(99))])]

    def devanagari(r):
        syl = []
        for _ in range(r.randrange(1, 5)):
            c = chr(r.randrange(0x0915, 0x093A))
            if r.random() < 0.5:
                c += chr(r.randrange(0x093E, 0x094D))
            elif r.random() < 0.2:
                c += "\u094D" + chr(r.randrange(0x0915, 0x093A))
            syl.append(c)
        return ["".join(syl)]

    def thai(r):
        out = []
        for _ in range(r.randrange(2, 7)):
            c = chr(r.randrange(0x0E01, 0x0E2F))
            if r.random() < 0.4:
                c += chr(r.randrange(0x0E31, 0x0E3A))
            if r.random() < 0.3:
                c += chr(r.randrange(0x0E48, 0x0E4C))
            out.append(c)
        return ["".join(out)]

    def greek(r):
        return [_chars(r, 0x03B1, 0x03C9, r.randrange(3, 9))]

    def mixed(r):
        g = r.choice([cjk, emoji, hebrew, cyrillic, thai, devanagari, latin])
        return [f"{r.choice(['user', 'dev', 'acct'])}:{g(r)[0]}:{r.randrange(10 ** 5)}"]

    def long_unicode(r):
        g = r.choice([cjk, emoji, thai, latin, combining])
        s = ""
        while len(s.encode()) < 100:
            s += g(r)[0]
        return [s]

    return [(12, uuid4), (7, numeric), (7, email), (9, colon), (3, test_prefix), (5, token),
            (2, long_ascii), (2, spaced), (10, latin), (6, cjk), (7, emoji), (4, combining), (3, hebrew),
            (3, arabic), (4, cyrillic), (3, devanagari), (3, thai), (2, greek), (4, mixed), (2, long_unicode)]


def corpus():
    rng = random.Random(CORPUS_SEED)
    gens = _id_generators()
    total = sum(w for w, _ in gens)
    seen, out = set(), []
    while len(out) < CORPUS_SIZE:
        x = rng.random() * total
        for w, gen in gens:
            x -= w
            if x < 0:
                break
        for s in gen(rng):
            if s and s not in seen and not FORBIDDEN & set(s) and len(out) < CORPUS_SIZE:
                assert all(ord(ch) >= 0x20 and not 0x7F <= ord(ch) < 0xA0 for ch in s), repr(s)
                seen.add(s)
                out.append(s)
    return out


def consistency_snapshot():
    return snapshot(
        [X("new-nav", V(50, 50), status="concluded", winner="treatment"),
         X("home-hero", V(50, 50), layer="home", range=[0, 400], surfaces=["home"]),
         X("checkout-shipping", V(10, 10, 80, names=["control", "free", "flat"]), layer="checkout",
           range=[500, 950], targeting={"not": C("user_id", "starts_with", "test-")}),
         X("pricing-page", V(45, 45, 10, names=["control", "low", "high"]), respect_holdout=False,
           ramp_permille=500),
         X("checkout-button", V(70, 30), layer="checkout", range=[0, 500], ramp_permille=900),
         X("old-promo", V(50, 50), status="killed"),
         X("home-feed", V(20, 30, 50, names=["control", "recency", "ml"]), layer="home",
           range=[400, 700], ramp_permille=600),
         X("NPS-survey", V(1, 1, names=["off", "on"]), ramp_permille=300),
         X("checkout-wallet", V(1, 1, 1, 1), layer="checkout", range=[950, 1000], status="paused"),
         X("home-search", V(1, 1, 1, 7, names=["control", "a", "b", "c"]), layer="home", range=[700, 1000],
           ramp_permille=250)],
        layers=[("home", "layer-home-v1"), ("checkout", "layer-checkout-v1")],
        holdout={"salt": "global-holdout-v1", "permille": 50}, version=1)


# -- writing ---------------------------------------------------------------------


def build_case_file(s):
    snap = roundtrip(s.snapshot)
    model = validate(snap)
    cases, seen = [], set()
    for context, surface, sticky in s.inputs:
        context = roundtrip(context)
        ident = json.dumps([context, surface, sticky], sort_keys=True)
        assert ident not in seen, (s.name, ident)
        seen.add(ident)
        case = {"context": context, "surface": surface}
        if sticky is None:
            case["expected"] = result_json(evaluate(model, context, surface))
        else:
            kept = {(x["unit_attr"], x["unit_id"], x["experiment"]): x["variant"] for x in sticky}
            new = []
            case["sticky"] = sticky
            case["expected"] = result_json(evaluate(model, context, surface, kept, new))
            case["expected_sticky"] = sticky_json(new)
        if s.holdout_exposures:
            case["expected_holdout"] = holdout_exposures(model, context, surface)
        cases.append(case)
    for e in snap["experiments"]:
        n = len(served(cases, e["key"]))
        if e["key"] in s.never:
            assert n == 0, (s.name, e["key"])
        elif e["key"] in s.always:
            assert n == len(cases), (s.name, e["key"])
        else:
            assert 0 < n < len(cases), (s.name, e["key"], n)
    for check in s.checks:
        check(cases)
    doc = {"name": s.name, "description": s.description, "snapshot": snap, "cases": cases}
    return dumps(doc) + "\n", len(cases)


def generate():
    """{relative path: bytes} for every generated file, plus a summary."""
    files, summary = {}, {}
    n_cases = 0
    for i, fn in enumerate(SCENARIOS, 1):
        s = fn()
        text, n = build_case_file(s)
        n_cases += n
        files[f"cases/{i:02d}-{s.name}.json"] = text.encode()
    summary["scenarios"], summary["cases"] = len(SCENARIOS), n_cases
    assert validate(base_snapshot())
    names = set()
    for name, kind, description, mutate in INVALID:
        assert name not in names
        names.add(name)
        snap = base_snapshot()
        replaced = mutate(snap)
        if isinstance(replaced, list):
            snap = replaced
        snap = roundtrip(snap)
        try:
            validate(snap)
            raise AssertionError(f"{name}: accepted")
        except SnapshotError as err:
            assert err.kind == kind, (name, str(err))
        files[f"invalid/{name}.json"] = (dumps({"description": description, "snapshot": snap,
                                                "error": kind}) + "\n").encode()
    summary["invalid"] = len(INVALID)
    vectors = murmur3_vectors()
    for v in vectors:
        data = (v["unit"] + ":" + v["salt"]).encode()
        assert murmur3_x86_32(data) == v["hash"]
    files["murmur3.json"] = ("[\n" + ",\n".join("  " + json.dumps(v) for v in vectors) + "\n]\n").encode()
    summary["murmur3"] = len(vectors)

    ids = corpus()
    assert len(set(ids)) == CORPUS_SIZE and sum(not s.isascii() for s in ids) >= 0.4 * CORPUS_SIZE
    snap = consistency_snapshot()
    model = validate(roundtrip(snap))
    lines = [canonical_line(u, evaluate(model, {"user_id": u})) for u in ids]
    canonical = "".join(lines).encode("utf-8")
    files["consistency/ids.txt"] = ids_txt = "".join(u + "\n" for u in ids).encode("utf-8")
    files["consistency/snapshot.json"] = (dumps(snap) + "\n").encode()
    golden = {"spec_version": SPEC_VERSION, "ids": "ids.txt", "snapshot": "snapshot.json",
              "count": CORPUS_SIZE, "sha256": hashlib.sha256(canonical).hexdigest(),
              "samples": [line[:-1] for line in lines[:20]],
              "ids_sha256": hashlib.sha256(ids_txt).hexdigest()}
    files["consistency/golden.json"] = (dumps(golden) + "\n").encode()
    summary["non_ascii_ids"] = sum(not s.isascii() for s in ids)
    summary["sha256"] = golden["sha256"]
    return files, summary


def self_test():
    known = [(b"", 0, 0x00000000), (b"", 1, 0x514E28B7), (bytes([0x21, 0x43, 0x65, 0x87]), 0, 0xF55B516B),
             (b"The quick brown fox jumps over the lazy dog", 0, 0x2E4FF723)]
    for data, seed, want in known:
        assert murmur3_x86_32(data, seed) == want == mmh3.hash(data, seed, signed=False)
    for n in range(64):
        data = bytes(range(n))
        assert murmur3_x86_32(data) == murmur3(data)


GENERATED_DIRS = ("cases", "invalid", "consistency")


def assign(argv):
    """`reference.py assign --config SNAPSHOT.json --units FILE [--surface S]`:
    the output of `strata assign --units`, for cross-checks and as the
    benchmark peer of bench/assign-throughput.sh."""
    args = dict(zip(argv[0::2], argv[1::2]))
    with open(args["--config"], encoding="utf-8") as f:
        model = validate(json.load(f))
    surface = args.get("--surface")
    out = sys.stdout
    with open(args["--units"], encoding="utf-8", newline="\n") as f:
        for line in f:
            unit = line[:-1] if line.endswith("\n") else line
            unit = unit[:-1] if unit.endswith("\r") else unit
            results = evaluate(model, {"user_id": unit}, surface)
            out.write(json.dumps({"unit": unit, "assignments": result_json(results)},
                                 ensure_ascii=False, separators=(",", ":")) + "\n")
    return 0


def main(argv):
    if argv[1:2] == ["assign"]:
        return assign(argv[2:])
    check = "--check" in argv[1:]
    self_test()
    files, summary = generate()
    on_disk = {os.path.relpath(os.path.join(d, f), HERE).replace(os.sep, "/")
               for sub in GENERATED_DIRS for d, _, fs in os.walk(os.path.join(HERE, sub)) for f in fs}
    stray = sorted(on_disk - set(files))
    if check:
        bad = []
        for rel, data in sorted(files.items()):
            path = os.path.join(HERE, rel)
            if not os.path.exists(path):
                bad.append(f"missing: {rel}")
            else:
                with open(path, "rb") as f:
                    if f.read() != data:
                        bad.append(f"differs: {rel}")
        bad += [f"not generated: {rel}" for rel in stray]
        for line in bad:
            print(line, file=sys.stderr)
        print(("FAIL" if bad else "OK") + f" {json.dumps(summary)}")
        return 1 if bad else 0
    for rel in stray:
        os.remove(os.path.join(HERE, rel))
    for rel, data in files.items():
        path = os.path.join(HERE, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
    print(f"wrote {len(files)} files {json.dumps(summary)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
