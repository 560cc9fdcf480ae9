"""``unrolled pretrained list | show NAME | eval NAME``: the models shipped in the package."""

from __future__ import annotations

import argparse
import json

from .. import pretrained as zoo
from .args import Parser, positive_int

TOLERANCE_DB = 0.05  # `eval NAME` must reproduce the recorded test NMSE this closely


def cmd_list(a: argparse.Namespace) -> None:
    for name, e in zoo.entries().items():
        if e.get("weights"):
            print(f"{name:<32} {e['model']:<10} test NMSE {e['test_nmse_db']:.2f} dB (K={e['model_config']['K']}, "
                  f"{e['training']['budget']:,} samples, commit {e['commit']})")
        else:
            print(f"{name:<32} {e['model']:<10} not trained yet")


def cmd_show(a: argparse.Namespace) -> None:
    print(json.dumps(zoo.entry(a.name), indent=2, sort_keys=True))


def cmd_eval(a: argparse.Namespace) -> None:
    want, got = zoo.check_entry(a.name, a.test_size)
    e = zoo.entry(a.name)
    size = a.test_size or e["problem"].get("test_size", 10000)
    ok = abs(got - want) <= TOLERANCE_DB
    print(f"{a.name}: test NMSE {got:.3f} dB on {size:,} test vectors; recorded {want:.3f} dB; "
          f"{'reproduced' if ok else 'NOT REPRODUCED'} (|difference| {abs(got - want):.4f} dB, "
          f"tolerance {TOLERANCE_DB} dB)")
    if not ok:
        raise SystemExit(1)


def add_commands(sub: argparse._SubParsersAction) -> None:
    pp = sub.add_parser("pretrained", help="the pretrained models shipped in the package: list, show, eval")
    psub = pp.add_subparsers(dest="action", required=True, parser_class=Parser)
    psub.add_parser("list", help="every entry, trained or not, with its test NMSE").set_defaults(func=cmd_list)
    ps = psub.add_parser("show", help="an entry's problem spec, training config, commit and test NMSE")
    ps.add_argument("name")
    ps.set_defaults(func=cmd_show)
    pe = psub.add_parser("eval", help="re-measure an entry's test NMSE (to 0.05 dB of the recorded one)")
    pe.add_argument("name")
    pe.add_argument("--test-size", type=positive_int, default=None,
                    help="only the first N test vectors (an entry records its NMSE on the first 1000)")
    pe.set_defaults(func=cmd_eval)
