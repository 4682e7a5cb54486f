"""Config builders for the integration tests: a small block-style YAML writer and the
standard test config (SPEC section 2) with its rules. Part of harness.py, which
re-exports every name here.
"""

import json
import re

from harness_env import AGENT, TOKEN_SHA256, VALGRIND, free_port


_PLAIN_KEY = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


def _yaml_scalar(v):
    if v is None:
        return "null"
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, (int, float)):
        return repr(v)
    # A JSON string is a valid YAML double-quoted scalar; always quoting keeps "no",
    # "0x10", "10:20" and friends from being read as something else.
    return json.dumps(str(v), ensure_ascii=True)


def _yaml_key(k):
    k = str(k)
    return k if _PLAIN_KEY.match(k) and k.lower() not in ("y", "n", "yes", "no", "on",
                                                          "off", "true", "false", "null") \
        else json.dumps(k)


def to_yaml(obj, indent=0):
    """Block-style YAML for dicts, lists and scalars (strings always quoted)."""
    pad = " " * indent
    out = []
    if isinstance(obj, dict):
        if not obj:
            return pad + "{}\n"
        for k, v in obj.items():
            if isinstance(v, (dict, list)) and v:
                out.append("%s%s:\n%s" % (pad, _yaml_key(k), to_yaml(v, indent + 2)))
            elif isinstance(v, dict):
                out.append("%s%s: {}\n" % (pad, _yaml_key(k)))
            elif isinstance(v, list):
                out.append("%s%s: []\n" % (pad, _yaml_key(k)))
            else:
                out.append("%s%s: %s\n" % (pad, _yaml_key(k), _yaml_scalar(v)))
        return "".join(out)
    if isinstance(obj, list):
        if not obj:
            return pad + "[]\n"
        for v in obj:
            if isinstance(v, (dict, list)) and v:
                inner = to_yaml(v, indent + 2)
                out.append("%s- %s" % (pad, inner[indent + 2:]))
            else:
                out.append("%s- %s\n" % (pad, _yaml_scalar(v) if not isinstance(v, (dict, list))
                                         else ("{}" if isinstance(v, dict) else "[]")))
        return "".join(out)
    return pad + _yaml_scalar(obj) + "\n"


def base_config(rules, **over):
    """The standard test config (SPEC section 2) on free ports; keyword args replace
    top-level keys, a value of None removes the key."""
    cfg = {
        "version": 1,
        "listen": {
            "http": "127.0.0.1:%d" % free_port(),
            "socks5": "127.0.0.1:%d" % free_port(),
            "control": "run/control.sock",
        },
        "state_dir": "state",
        "agents": [{"name": AGENT, "token_sha256": TOKEN_SHA256}],
        "rules": rules,
        "default": "deny",
        "resolve": {"api.example.test": "127.0.0.1"},
        "network": {"deny_private": True, "allow_cidrs": ["127.0.0.1/32"]},
        "audit": {"path": "audit.jsonl"},
    }
    if VALGRIND:
        # Under valgrind a first TPM unseal (session set-up included) can take longer than
        # the 5 s default token deadline and fail a healthy request; tests of the deadline
        # set their own.
        cfg["limits"] = {"unseal_timeout": "30s"}
    for k, v in over.items():
        if v is None:
            cfg.pop(k, None)
        else:
            cfg[k] = v
    return cfg


def rule(name, host="api.example.test", ports=None, action="allow", **kw):
    r = {"name": name, "host": host}
    if ports is not None:
        r["ports"] = list(ports)
    r.update(kw)
    r["action"] = action
    return r
