"""``unrolled search STUDY`` (run or join a design-space search) and ``unrolled search report STUDY``.

Needs the ``search`` extra (Optuna; psycopg2 for PostgreSQL): ``pip install 'unrolled[search]'``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import UsageError, check
from .args import positive, positive_int, seed_int

DEFAULT_STORAGE = "runs/search/search.journal"


def _need_optuna():
    try:
        import optuna  # noqa: F401
    except ImportError:
        raise UsageError("unrolled search needs Optuna: pip install 'unrolled[search]'") from None


def cmd_search(a: argparse.Namespace) -> None:
    _need_optuna()
    from ..problem import Problem
    from ..search import study as S
    from ..search.space import Space
    from ..search.storage import open_storage

    if a.study == "report":
        return cmd_report(a)
    check(not a.studies, f"unexpected argument(s) {' '.join(a.studies)}; `unrolled search STUDY` runs one study")
    S.optuna.logging.set_verbosity(S.optuna.logging.WARNING)
    storage = open_storage(a.storage)
    given = dict(sampler=a.sampler, trials=a.trials, samples=a.budget_samples, lr=a.lr, batch=a.batch,
                 eval_every=a.eval_every, seed=a.seed, pruner=a.prune, population=a.population,
                 tournament=a.tournament)
    settings = None
    if a.problem:
        space = Space(a.layers or 16, tuple(a.neurons.split(",")), tuple(a.injections.split(",")))
        defaults = S.Settings()
        settings = S.settings_for(Problem.load(a.problem), space=space.record(),
                                  **{k: getattr(defaults, k) if v is None else v for k, v in given.items()})
    study = S.create_or_join(a.study, storage, settings, given)
    s = S.stored_settings(study)
    c = S.counts(study)
    print(f"study {a.study} in {a.storage}: {s.sampler}, {c['complete'] + c['pruned']}/{s.trials} candidates "
          f"done, {c['running']} running, {c['waiting']} queued; {s.samples:,} samples per candidate; "
          f"{a.workers} worker(s) here")
    S.launch(a.study, a.storage, a.workers, a.threads)
    c = S.counts(S.optuna.load_study(study_name=a.study, storage=open_storage(a.storage)))
    print(f"study {a.study}: {c['complete']} complete, {c['pruned']} pruned, {c['fail']} failed "
          f"(re-queued or given up), {c['running']} still running elsewhere")


def cmd_report(a: argparse.Namespace) -> None:
    from ..search import report as R

    check(a.studies, "unrolled search report STUDY [STUDY...]: name at least one study")
    out = Path(a.out or Path(DEFAULT_STORAGE).parent / "report" / "-".join(a.studies))
    R.write_report(a.studies, a.storage, out, top=a.top, retrain=a.retrain_samples, threads=a.threads)


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("search", help="architecture search over the LISTA design space (Optuna); "
                                      "`search report STUDY` tables and re-trains the average architecture")
    p.add_argument("study", help="study name (or 'report' followed by study names)")
    p.add_argument("studies", nargs="*", help="report: the studies whose top-k are pooled")
    p.add_argument("--storage", default=DEFAULT_STORAGE,
                   help="journal file (default %(default)s), postgresql://user@host/db or grpc://host:port")
    p.add_argument("--problem", help="problem file (.npz): creates the study (joining needs only the name)")
    p.add_argument("--sampler", choices=["random", "evolution", "reinforce", "tpe"], default=None)
    p.add_argument("--trials", type=positive_int, default=None, help="completed candidates to stop at (50)")
    p.add_argument("--budget-samples", type=positive_int, default=None, help="training samples per candidate")
    p.add_argument("--layers", type=positive_int, default=None, help="K (16)")
    p.add_argument("--neurons", default="soft,relu,leaky", help="neuron types searched per layer")
    p.add_argument("--injections", default="lwa", help="injection modes searched (lwa,naive,momentum)")
    p.add_argument("--batch", type=positive_int, default=None)
    p.add_argument("--lr", type=positive, default=None)
    p.add_argument("--eval-every", type=positive_int, default=None)
    p.add_argument("--seed", type=seed_int, default=None)
    p.add_argument("--prune", choices=["none", "halving", "hyperband"], default=None,
                   help="stop losing candidates early on their validation curve")
    p.add_argument("--population", type=positive_int, default=None, help="evolution: population (20)")
    p.add_argument("--tournament", type=positive_int, default=None, help="evolution: tournament size (5)")
    p.add_argument("--workers", type=positive_int, default=1, help="local worker processes")
    p.add_argument("--threads", type=positive_int, default=1, help="torch threads per worker")
    p.add_argument("--top", type=positive_int, default=50, help="report: the top-k averaged")
    p.add_argument("--retrain-samples", type=int, default=0,
                   help="report: re-train the average architecture, LISTA, LFISTA and Dense-LISTA "
                        "with this many samples each and test them (0: no re-training)")
    p.add_argument("--out", default=None, help="report: output directory")
    p.set_defaults(func=cmd_search)
