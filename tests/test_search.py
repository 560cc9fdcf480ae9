"""Architecture search (unrolled/search): the space, the samplers, real worker processes on one
journal, a worker killed with SIGKILL mid-trial, a resumed study, and a PostgreSQL server."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

optuna = pytest.importorskip("optuna")

import unrolled as ur  # noqa: E402
from unrolled.errors import UsageError  # noqa: E402
from unrolled.models.design_space import LwaConfig, check_gates, load_arch  # noqa: E402
from unrolled.search import samplers as SM  # noqa: E402
from unrolled.search import study as S  # noqa: E402
from unrolled.search.space import Space, average_arch, params_from_arch, save_arch  # noqa: E402
from unrolled.search.storage import is_stale, open_storage  # noqa: E402

optuna.logging.set_verbosity(optuna.logging.WARNING)


def tiny_problem():
    return ur.Problem(ur.ProblemSpec(m=6, n=12, p=0.25, snr=float("inf"), seed=0, val_size=32, test_size=32))


def make_study(url, name="s", samples=64, trials=4, sampler="random", K=3, eval_every=1, pruner="none"):
    settings = S.settings_for(tiny_problem(), space=Space(K).record(), sampler=sampler, trials=trials,
                              samples=samples, batch=32, eval_every=eval_every, population=3, tournament=2,
                              pruner=pruner)
    return S.create_or_join(name, open_storage(url), settings)


def fork(fn) -> int:
    pid = os.fork()
    if pid == 0:
        try:
            fn()
        finally:
            os._exit(0)
    return pid


def reap(pid: int) -> int:
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def quiet_work(url, name, index=0, **kw):
    return lambda: S.work(name, url, index, log=lambda _m: None, **kw)


def wait_running(study, n=1, lease=True, timeout=60):
    """The running trials once ``n`` are training (their lease written on a journal, their first
    validation reported on an RDB: Optuna's heartbeat thread runs by then)."""
    end = time.time() + timeout
    while time.time() < end:
        running = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
                   if ("lease" in t.user_attrs if lease else bool(t.intermediate_values))]
        if len(running) >= n:
            return running
        time.sleep(0.05)
    raise AssertionError("no trial started")


def check_exactly_once(study, trials):
    """Every candidate counted once: ``trials`` completed, each failed trial re-queued exactly once
    with its parameters, and no original trial completed twice."""
    all_ = study.get_trials(deepcopy=False)
    done = [t for t in all_ if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) == trials
    origins = Counter(t.user_attrs.get("retry_of", t.number) for t in done)
    assert max(origins.values()) == 1
    failed = [t for t in all_ if t.state == optuna.trial.TrialState.FAIL]
    for f in failed:
        retries = [t for t in all_ if t.user_attrs.get("retry_of") == f.number]
        assert len(retries) == 1 and retries[0].params == f.params
    return failed


# -- space ----------------------------------------------------------------------------------------


def test_space_decisions_and_round_trip():
    space = Space(16)
    d = space.distributions()
    assert sum(n.startswith("g") for n in d) == 105 and sum(n.startswith("n") for n in d) == 16
    assert "injection" not in d and "injection" in Space(16, injections=("lwa", "naive", "momentum")).distributions()
    rng = np.random.default_rng(0)
    params = {n: dist.choices[rng.integers(len(dist.choices))] for n, dist in d.items()}
    arch = space.arch(params)
    assert check_gates(arch["gates"], 16) == arch["gates"]  # diagonal on, nothing from x^(0), lower triangle
    assert params_from_arch(arch, space) == params
    cfg = LwaConfig.from_params(params, K=16)  # the lwa config takes a trial's parameters directly
    assert cfg.gates == arch["gates"] and cfg.neurons == arch["neurons"]
    with pytest.raises(UsageError, match="not decisions"):
        LwaConfig.from_params({"g1_5": 1}, K=16)


def test_average_architecture_keeps_half(tmp_path):
    space = Space(4)
    a = [space.arch({"g2_1": 1, "g3_1": 1, "g3_2": 0, "n0": "relu"}),
         space.arch({"g2_1": 1, "g3_1": 0, "g3_2": 0, "n0": "relu"}),
         space.arch({"g2_1": 0, "g3_1": 0, "g3_2": 0, "n0": "soft"}),
         space.arch({"g2_1": 1, "g3_1": 1, "g3_2": 1, "n0": "soft"})]
    avg = average_arch(a)
    assert avg["gates"][2][1] == 1 and avg["gates"][3][1] == 1 and avg["gates"][3][2] == 0  # 3/4, 2/4 kept; 1/4
    assert avg["neurons"].split(",")[0] == "soft"  # a tie goes to soft
    path = save_arch(tmp_path / "avg.json", avg, top=4)
    assert load_arch(path) == avg


# -- samplers --------------------------------------------------------------------------------------


def test_mutation_changes_exactly_one_decision():
    space = Space(6).distributions()
    rng = np.random.RandomState(0)
    parent = {n: d.choices[0] for n, d in space.items()}
    for _ in range(50):
        child = SM.mutate(parent, space, rng)
        changed = [n for n in space if child[n] != parent[n]]
        assert len(changed) == 1 and child[changed[0]] in space[changed[0]].choices


def test_ageing_and_tournament():
    study = optuna.create_study(direction="maximize")
    for v in [5.0, 1.0, 2.0, 3.0, 0.0]:  # the best (5.0) is the oldest
        dist = {"a": optuna.distributions.CategoricalDistribution((0, 1))}
        study.add_trial(optuna.trial.create_trial(value=v, params={"a": 0}, distributions=dist))
    trials = SM.finished(study, {"a": None})
    pop = SM.population(trials, 3)
    assert [t.value for t in pop] == [2.0, 3.0, 0.0]  # the oldest died, however good
    assert SM.tournament(pop, 3, np.random.RandomState(0), maximize=True).value == 3.0


def test_evolution_children_are_one_mutation_from_the_population():
    space = Space(4)
    sampler = SM.EvolutionSampler(space, population=4, tournament=2, seed=0)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.optimize(lambda t: float(sum(space.suggest(t)["gates"][k][i] for k, i in space.gates)), n_trials=12)
    trials = study.trials
    for j in range(4, 12):
        pop = sorted(trials[:j], key=lambda t: (t.datetime_complete, t.number))[-4:]
        diffs = [sum(trials[j].params[n] != p.params[n] for n in trials[j].params) for p in pop]
        assert 1 in diffs


@pytest.mark.parametrize("name", SM.SAMPLERS)
def test_every_sampler_decides_every_decision(name):
    space = Space(5, injections=("lwa", "naive"))
    study = optuna.create_study(direction="maximize", sampler=SM.make_sampler(name, space, 0, population=3))
    study.optimize(lambda t: float(space.suggest(t)["neurons"].count("soft")), n_trials=8)
    assert all(set(t.params) == set(space.distributions()) for t in study.trials)
    assert len({tuple(sorted(t.params.items())) for t in study.trials}) > 1


def test_controller_update_raises_the_probability_of_a_rewarded_decision():
    ctl = SM.Controller([2, 3, 2], lr=0.05, seed=0)
    good, bad = [1, 2, 0], [0, 0, 1]
    assert ctl.prob(good) == pytest.approx(1 / 12)  # uniform at the start
    ctl.update(bad, -30.0)  # the first reward sets the baseline: no step
    before = ctl.prob(good)
    assert ctl.update(good, -10.0) > 0
    assert ctl.prob(good) > before
    p_bad = ctl.prob(bad)
    ctl.update(bad, -60.0)  # below the baseline: less likely
    assert ctl.prob(bad) < p_bad


def test_reinforce_sampler_replays_the_storage(tmp_path):
    url = str(tmp_path / "j.journal")
    study = make_study(url, sampler="reinforce", trials=3)
    space = S.stored_settings(study).Space
    study.sampler = SM.make_sampler("reinforce", space, 0)
    study.optimize(lambda t: -float(space.suggest(t)["neurons"].count("relu")), n_trials=6)
    a, b = SM.ReinforceSampler(space, 0), SM.ReinforceSampler(space, 0)  # new processes on the same storage
    assert a.sample_relative(study, study.trials[-1], a.space) == b.sample_relative(study, study.trials[-1], b.space)
    assert a.controller.updates == 6 and a.controller.baseline == b.controller.baseline


# -- workers and storage -----------------------------------------------------------------------------


def test_two_worker_processes_share_one_journal(tmp_path):
    url = str(tmp_path / "j.journal")
    study = make_study(url, trials=6, pruner="halving")
    pids = [fork(quiet_work(url, "s", i)) for i in range(2)]
    assert [reap(p) for p in pids] == [0, 0]
    study = optuna.load_study(study_name="s", storage=open_storage(url))
    decided = [t for t in study.trials if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)]
    # two workers that start their last trials together may decide one beyond the target (work's docstring)
    assert 6 <= len(decided) <= 7 and not study.get_trials(states=(optuna.trial.TrialState.FAIL,))
    assert all(t.intermediate_values for t in decided)  # the validation curve reaches the pruner
    assert all(np.isfinite(t.value) and t.user_attrs["seconds"] > 0 for t in decided if t.value is not None)
    with pytest.raises(UsageError, match="other settings"):
        S.create_or_join("s", open_storage(url), None, {"samples": 128})
    with pytest.raises(UsageError, match="no study 'nope'.*there are: s"):
        S.load_study("nope", open_storage(url))


def test_sigkilled_workers_lose_only_their_trial_and_resume_exactly(tmp_path):
    url = str(tmp_path / "j.journal")
    study = make_study(url, samples=32 * 300, trials=3, eval_every=100)
    pids = [fork(quiet_work(url, "s", i)) for i in range(2)]
    running = wait_running(study, 2)
    for p in pids:  # every worker killed in the middle of its trial
        os.kill(p, signal.SIGKILL)
    assert all(reap(p) == -signal.SIGKILL for p in pids)
    assert all(is_stale(t) for t in running)
    # resume, at a small budget per candidate so that the test is quick
    S.work("s", url, 0, log=lambda _m: None)
    study = optuna.load_study(study_name="s", storage=open_storage(url))
    failed = check_exactly_once(study, 3)
    assert sorted(t.number for t in failed) == sorted(t.number for t in running)


def test_report_writes_tables_and_average(tmp_path):
    from unrolled.search import report as R

    url = str(tmp_path / "j.journal")
    make_study(url, trials=3)
    S.work("s", url, 0, log=lambda _m: None)
    path = R.write_report(["s"], url, tmp_path / "rep", top=2, retrain=64, log=lambda _m: None)
    text = path.read_text()
    assert "Average architecture" in text and "dense-lista" in text
    assert load_arch(tmp_path / "rep" / "average.json")["K"] == 3
    rows = (tmp_path / "rep" / "comparison.csv").read_text().splitlines()
    models = {r.split(",")[0] for r in rows[1:]}
    assert rows[0].startswith("model,") and {"searched", "lista", "lfista", "dense-lista"} <= models


# -- PostgreSQL ---------------------------------------------------------------------------------------


def _postgres(tmp_path):
    """A throwaway PostgreSQL server in ``tmp_path`` (as ``nobody`` when we are root); its URL and stop."""
    initdb = shutil.which("initdb") or "/usr/local/bin/initdb"
    if not os.path.exists(initdb):
        pytest.skip("no PostgreSQL server binaries (initdb)")
    pytest.importorskip("psycopg2")
    tmp_path = Path(tempfile.mkdtemp(prefix="unrolled-pg-", dir="/tmp"))  # pytest's tmp is private to root
    data, sock = tmp_path / "pg", tmp_path / "sock"
    data.mkdir()
    sock.mkdir()
    prefix = []
    if os.geteuid() == 0:  # initdb refuses root
        import pwd
        nobody = pwd.getpwnam("nobody")
        for d in (tmp_path, data, sock):
            os.chown(d, nobody.pw_uid, nobody.pw_gid)
        prefix = ["runuser", "-u", "nobody", "--"]
        user = "nobody"
    else:
        import getpass
        user = getpass.getuser()
    subprocess.run(prefix + [initdb, "-D", str(data), "-A", "trust", "-U", user], check=True,
                   capture_output=True)
    ctl = os.path.join(os.path.dirname(initdb), "pg_ctl")
    subprocess.run(prefix + [ctl, "-D", str(data), "-w", "-l", str(tmp_path / "pg.log"), "-o",
                             f"-k {sock} -c listen_addresses='' -c fsync=off", "start"],
                   check=True, capture_output=True)
    url = f"postgresql://{user}@/postgres?host={sock}"

    def stop():
        subprocess.run(prefix + [ctl, "-D", str(data), "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(tmp_path, ignore_errors=True)

    return url, stop


@pytest.mark.slow
def test_postgres_workers_heartbeat_and_requeue(tmp_path):
    url, stop = _postgres(tmp_path)
    try:
        storage = open_storage(url, heartbeat=1, grace=2)
        settings = S.settings_for(tiny_problem(), space=Space(3).record(), trials=3, samples=32 * 300, batch=32,
                                  eval_every=100)
        study = S.create_or_join("pg", storage, settings)
        pid = fork(quiet_work(url, "pg", 0, heartbeat=1, grace=2))
        running = wait_running(study, 1, lease=False)
        os.kill(pid, signal.SIGKILL)
        reap(pid)
        time.sleep(3)  # past the grace period: the heartbeat is stale
        study = optuna.load_study(study_name="pg", storage=storage)
        # two workers resume; the first to start a trial fails the stale one and Optuna's callback re-queues it
        pids = [fork(quiet_work(url, "pg", i, heartbeat=1, grace=2)) for i in range(2)]
        assert [reap(p) for p in pids] == [0, 0]
        study = optuna.load_study(study_name="pg", storage=open_storage(url))
        failed = [t for t in study.trials if t.state == optuna.trial.TrialState.FAIL]
        assert [t.number for t in failed] == [running[0].number]
        done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        assert 3 <= len(done) <= 4  # two workers starting their last trials together may add one
        assert Counter(t.system_attrs.get("failed_trial", t.number) for t in done).most_common(1)[0][1] == 1
        retried = [t for t in done if t.system_attrs.get("failed_trial") == running[0].number]
        assert len(retried) == 1 and retried[0].params == running[0].params
    finally:
        stop()


@pytest.mark.slow
def test_repro_design_search_smoke_fills_the_searched_column(tmp_path):
    """`unrolled repro design-search --budget smoke`: the search, its report, and design-table1 with
    the searched column trained (minutes on a loaded 2-core machine)."""
    from unrolled.search.repro import run

    reports = run("smoke", tmp_path, log=lambda _m: None)
    assert (tmp_path / "smoke" / "_search" / "report" / "average.json").exists()
    rows = (tmp_path / "smoke" / "design-table1" / "results.csv").read_text().splitlines()
    searched = [r for r in rows if ",searched," in r]
    assert searched and not any("pending" in r for r in searched)
    assert "Search cost" in reports[0].read_text()
    table = (tmp_path / "smoke" / "design-table1" / "results.csv").read_bytes()
    run("smoke", tmp_path, log=lambda _m: None, finished_only=True)  # trains nothing, finds everything
    assert (tmp_path / "smoke" / "design-table1" / "results.csv").read_bytes() == table


def test_repro_design_search_finished_only_needs_a_search(tmp_path):
    from unrolled.search.repro import run

    with pytest.raises(UsageError, match="no search at budget smoke"):
        run("smoke", tmp_path, log=lambda _m: None, finished_only=True)


def test_design_search_budget_overrides_samplers_and_neurons(tmp_path, monkeypatch):
    """A budget's ``samplers`` and ``neurons`` replace the config's: one random study, soft neurons fixed."""
    import unrolled.search.repro as R

    override = '[budget.smoke]\nsamplers = ["random"]\nneurons = ["soft"]'
    text = R.SEARCH_CONFIG.read_text().replace("[budget.smoke]", override)
    text = text.replace("trials = 4 ", "trials = 1 ")
    (tmp_path / "search.toml").write_text(text)
    monkeypatch.setattr(R, "SEARCH_CONFIG", tmp_path / "search.toml")
    arch, _ = R.search("smoke", tmp_path / "s", log=lambda _m: None)
    studies = optuna.get_all_study_names(open_storage(str(tmp_path / "s" / "search.journal")))
    assert studies == ["design-table1-smoke-random"]
    assert set(arch["neurons"].split(",")) == {"soft"}  # one per layer
