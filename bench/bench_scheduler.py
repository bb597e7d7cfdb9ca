"""The DAG scheduler under pytest-xdist: makespan, overhead and dispatch latency.

Not a test. Run ``python bench/bench_scheduler.py`` (``--help`` for the knobs; ``--parts``
picks parts). Every run is a ``[sys.executable, "-m", "pytest", "-p", "no:cacheprovider",
"-q", ...]`` subprocess in a project generated in a temporary directory; no pytest cache
is read or written, so path weights come from each node's ``estimated_duration`` only.
Its exit status is checked, and so is the number of nodes that left their stamps.

- makespan: seeded random DAGs of sleep-only nodes (the ``sleep`` kind of
  ``bench/scheduler/conftest_stamps.py``: it sleeps in the worker process, so no process
  is spawned per node), ``estimated_duration`` = the sleep, at ``-n 5``. Node phase (first
  node start -> last node end, from the nodes' own timestamps) / lower bound
  ``max(critical path, total work / workers)``; target <= 1.10. Each DAG also runs level by
  level, as Conductor's own dispatcher does: every node of level k depends on every node
  of level k-1 (a barrier), same engine, same sleeps.
- overhead: N trivial nodes (no acceptance criteria) at ``-n 5`` against plain
  ``pytest -n 5`` on N trivial test functions; whole-command wall time, alternated, median;
  target ratio <= 1.5. Also each side's item phase (first item start -> last item end on
  the workers), which leaves out the start-up both pay.
- latency: chains of short sleep nodes with a worker to spare; a dependency's end -> its
  dependent's start, median and p90; target median <= 20 ms.
- cost: how the cost per node grows. N trivial nodes in chains of 10, each with one
  ``exists`` criterion (what plans look like), for each N of ``--cost-sizes``, at ``-n 5``
  and in-process (``-n 0``), against plain pytest with the same ``-n`` on N empty test
  functions; whole-command wall time, alternated, median; the ratio per size. Targets:
  <= 1.25 at ``-n 5``, <= 1.5 in-process. These projects have no conftest (no stamps).
- memory: peak RSS of the controller process (``ru_maxrss``) at ``--memory-nodes`` chained
  nodes under ``-n 5``, next to plain pytest's controller on as many empty tests.

Every run gets the environment of the benchmark minus ``PYTEST_*`` and
``PYTHONDONTWRITEBYTECODE`` (bytecode caches on, as users have them); in the cost part
one unmeasured run of each project and mode warms them first.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import random
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

from pytest_conductor.graph.algorithms import levels, longest_remaining, simulate, width

TARGET_MAKESPAN = 1.10
TARGET_OVERHEAD = 1.5
TARGET_LATENCY_MS = 20.0
TARGET_COST = {"xdist": 1.25, "in-process": 1.5}

CONFTEST = Path(__file__).resolve().parent / "scheduler" / "conftest_stamps.py"
TRACK = "bench"
PARTS = ("makespan", "overhead", "latency", "cost", "memory")
CHAIN = 10  # nodes per chain in the cost and memory parts
MAXRSS_CONFTEST = """
import os, resource

def pytest_unconfigure(config):
    # The controller (or the in-process run) only: workers have workerinput.
    if not hasattr(config, "workerinput"):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
        with open(os.path.join(os.environ["BENCH_STAMPS"], "maxrss"), "w") as out:
            out.write(str(peak))
"""
# Each node depends on 0-2 nodes drawn from the DAG_WINDOW nodes before it. With 60 nodes
# that gives 6-13 levels, a critical path close to total work / 5: the hard case for both
# the lower bound (neither term dominates) and for level barriers.
DAG_WINDOW = 15
DAG_MAX_DEPS = 2

Deps = dict[str, list[str]]
LABELS = {"node-level": "node-level readiness", "barrier": "level barriers"}


@dataclass(frozen=True)
class Stamp:
    """Timestamps (perf_counter seconds) one node recorded on its worker."""

    task: str
    worker: str
    protocol_start: float
    check_start: float
    check_end: float
    protocol_end: float


# --------------------------------------------------------------------------- DAGs


def random_dag(
    seed: int, nodes: int, min_sleep: float, max_sleep: float
) -> tuple[Deps, dict[str, float]]:
    """A seeded random DAG and each node's sleep (seconds, 10 ms steps), in plan order."""
    rng = random.Random(seed)
    ids = [f"n{i:02d}" for i in range(1, nodes + 1)]
    deps: Deps = {}
    sleeps: dict[str, float] = {}
    for i, task in enumerate(ids):
        window = ids[max(0, i - DAG_WINDOW) : i]
        count = min(len(window), rng.randint(0, DAG_MAX_DEPS))
        deps[task] = sorted(rng.sample(window, count))
        sleeps[task] = round(rng.uniform(min_sleep, max_sleep), 2)
    return deps, sleeps


def level_barriers(deps: Mapping[str, Sequence[str]]) -> Deps:
    """The same nodes run level by level: each node of level k depends on all of level k-1."""
    by_level = levels(deps)
    barrier: Deps = {}
    for k, level in enumerate(by_level):
        for task in level:
            barrier[task] = list(by_level[k - 1]) if k else []
    return {task: barrier[task] for task in deps}  # plan order


def critical_path_length(deps: Mapping[str, Sequence[str]], weights: Mapping[str, float]) -> float:
    return max(longest_remaining(deps, weights).values(), default=0.0)


def lower_bound(
    deps: Mapping[str, Sequence[str]], weights: Mapping[str, float], workers: int
) -> float:
    """No schedule on ``workers`` workers can be shorter than this."""
    return max(critical_path_length(deps, weights), sum(weights.values()) / workers)


# --------------------------------------------------------------------------- projects


def plan_text(deps: Mapping[str, Sequence[str]], sleeps: Mapping[str, float] | None = None) -> str:
    """plan.md of a track: one node per id; with ``sleeps``, a sleep criterion and an
    ``estimated_duration`` equal to it (so the priority knows the real weights)."""
    lines = ["# Benchmark track", "", "```yaml", "dag:", "  nodes:"]
    for task, ds in deps.items():
        fields = [f'id: "{task}"']
        if ds:
            fields.append("depends_on: [" + ", ".join(f'"{d}"' for d in ds) + "]")
        if sleeps is not None:
            fields.append(f'estimated_duration: "{sleeps[task]}s"')
            fields.append(f'acceptance: [{{sleep: "{sleeps[task]}"}}]')
        lines.append("    - {" + ", ".join(fields) + "}")
    lines += ["```", ""]
    return "\n".join(lines)


def make_track_project(
    where: Path, deps: Mapping[str, Sequence[str]], sleeps: Mapping[str, float] | None
) -> Path:
    """A project whose rootdir is ``where`` (own pytest.ini, so no outer config applies)."""
    where.mkdir(parents=True)
    (where / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")
    shutil.copyfile(CONFTEST, where / "conftest.py")
    track = where / "conductor" / "tracks" / TRACK
    track.mkdir(parents=True)
    (track / "plan.md").write_text(plan_text(deps, sleeps), encoding="utf-8")
    (where / "stamps").mkdir()
    return where


def make_plain_project(where: Path, tests: int) -> Path:
    where.mkdir(parents=True)
    (where / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")
    shutil.copyfile(CONFTEST, where / "conftest.py")
    (where / "stamps").mkdir()
    body = "".join(f"def test_{i:04d}():\n    pass\n\n\n" for i in range(1, tests + 1))
    (where / "test_trivial.py").write_text(body, encoding="utf-8")
    return where


def run_pytest(project: Path, args: Sequence[str], expect_passed: int) -> float:
    """Run pytest in ``project``; returns the command's wall time. Exits on any failure."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PYTEST_", "PYTHONBREAKPOINT", "PYTHONDONTWRITEBYTECODE"))
    }
    env["BENCH_STAMPS"] = str(project / "stamps")
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", *args]
    start = time.perf_counter()
    done = subprocess.run(
        command, cwd=project, env=env, capture_output=True, text=True, timeout=900, check=False
    )
    wall = time.perf_counter() - start
    counts = re.findall(r"(\d+) passed", done.stdout)
    passed = int(counts[-1]) if counts else 0
    if done.returncode != 0 or passed != expect_passed:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-30:])
        raise SystemExit(
            f"{' '.join(command)} in {project}: exit status {done.returncode}, "
            f"{passed} passed of {expect_passed}\n{tail}"
        )
    return wall


def read_records(project: Path) -> tuple[list[dict[str, float | str]], dict[str, float]]:
    """Every item's stamps (the workers' files), and when the controller received each
    item's teardown report."""
    records: list[dict[str, float | str]] = []
    received: dict[str, float] = {}
    for path in sorted((project / "stamps").glob("*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        if path.name == "controller.json":
            received = data
        else:
            records.extend(data)
    return records, received


def read_stamps(
    project: Path, expected: Sequence[str]
) -> tuple[dict[str, Stamp], dict[str, float]]:
    """Each node's stamps (exactly one record per expected node), and the controller's."""
    records, received = read_records(project)
    stamps: dict[str, Stamp] = {}
    for raw in records:
        task = str(raw["task"])
        if task in stamps:
            raise SystemExit(f"node {task} ran twice in {project}")
        stamps[task] = Stamp(
            task=task,
            worker=str(raw["worker"]),
            protocol_start=float(raw["protocol_start"]),
            check_start=float(raw["check_start"]),
            check_end=float(raw["check_end"]),
            protocol_end=float(raw["protocol_end"]),
        )
    missing = [t for t in expected if t not in stamps]
    if missing or len(stamps) != len(expected):
        raise SystemExit(f"{project}: no stamps of {missing[:5]}, or stamps of unknown nodes")
    return stamps, received


def item_phase(project: Path, expected: int) -> float:
    """First item's start -> last item's end on the workers (pytest's run protocol)."""
    records, _ = read_records(project)
    if len(records) != expected:
        raise SystemExit(f"{project}: {len(records)} items left stamps, {expected} expected")
    starts = [float(r["protocol_start"]) for r in records]
    ends = [float(r["protocol_end"]) for r in records]
    return max(ends) - min(starts)


def check_schedule(
    deps: Mapping[str, Sequence[str]], stamps: Mapping[str, Stamp], workers: int
) -> None:
    """The run kept the rules it is measured under: dependencies first, <= workers at once."""
    for task, ds in deps.items():
        for dep in ds:
            if stamps[task].check_start < stamps[dep].check_end:
                raise SystemExit(f"engine bug: {task} started before its dependency {dep} ended")
    events = sorted(
        [(s.check_start, 1) for s in stamps.values()] + [(s.check_end, -1) for s in stamps.values()]
    )
    running = peak = 0
    for _, change in events:
        running += change
        peak = max(peak, running)
    if peak > workers:
        raise SystemExit(f"engine bug: {peak} nodes ran at once with {workers} workers")


def node_phase(stamps: Mapping[str, Stamp]) -> float:
    """First node start -> last node end."""
    return max(s.check_end for s in stamps.values()) - min(s.check_start for s in stamps.values())


# --------------------------------------------------------------------------- output


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile (``fraction`` 0.9 = p90)."""
    ordered = sorted(values)
    rank = max(1, round(fraction * len(ordered) + 0.5 - 1e-9))
    return ordered[min(rank, len(ordered)) - 1]


def load() -> str:
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:
        return "n/a"
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def verdict(ok: bool) -> str:
    return "meets" if ok else "MISSES"


def gantt(title: str, stamps: Mapping[str, Stamp]) -> str:
    """A Mermaid gantt chart of one run: a section per worker, a bar per node (ms)."""
    zero = min(s.check_start for s in stamps.values())
    lines = [
        "```mermaid",
        # Compact mode (Mermaid's gantt ``displayMode``) draws all of a worker's bars on one
        # row; without it every node gets a row of its own.
        "---",
        "displayMode: compact",
        "---",
        "gantt",
        f"    title {title}",
        "    dateFormat x",
        "    axisFormat %S.%L s",
    ]
    for worker in sorted({s.worker for s in stamps.values()}, key=lambda w: (len(w), w)):
        lines.append(f"    section {worker}")
        mine = sorted(
            (s for s in stamps.values() if s.worker == worker), key=lambda s: s.check_start
        )
        for s in mine:
            start = round((s.check_start - zero) * 1000)
            end = round((s.check_end - zero) * 1000)
            lines.append(f"    {s.task} : {start}, {end}")
    lines.append("```")
    return "\n".join(lines)


# --------------------------------------------------------------------------- parts


def track_args(args: argparse.Namespace, workers: int) -> list[str]:
    return [f"--conductor-track={TRACK}", "-n", str(workers), *args.conductor_args]


def bench_makespan(args: argparse.Namespace, tmp: Path) -> None:
    workers = args.workers
    print(
        f"makespan: {args.dags} random DAGs of {args.nodes} nodes (seeds {args.seed}.."
        f"{args.seed + args.dags - 1}; each node depends on 0-{DAG_MAX_DEPS} of the "
        f"{DAG_WINDOW} nodes before it), sleeps {args.min_sleep}-{args.max_sleep} s in-process, "
        f"estimated_duration = sleep, -n {workers}"
    )
    print(
        "  node phase = first node start -> last node end; LB = max(critical path, work/"
        f"{workers}); sim = greedy list schedule with the same priority and zero overhead"
    )
    header = (
        f"  {'seed':>4} {'lvls':>4} {'width':>5} {'crit':>6} {'work/n':>6} {'LB':>6} "
        f"{'sim':>6} {'phase':>6} {'ph/LB':>6} {'sim/LB':>6} | {'barrier':>7} {'b/LB':>6} "
        f"{'speedup':>7} | {'cmd s':>5} {'b cmd':>5}"
    )
    print(header)
    ratios: list[float] = []
    speedups: list[float] = []
    overshoot: list[float] = []
    charts: list[str] = []
    for i in range(args.dags):
        seed = args.seed + i
        deps, sleeps = random_dag(seed, args.nodes, args.min_sleep, args.max_sleep)
        barrier = level_barriers(deps)
        bound = lower_bound(deps, sleeps, workers)
        phases: list[float] = []
        walls: list[float] = []
        for name, graph in (("node-level", deps), ("barrier", barrier)):
            project = make_track_project(tmp / f"makespan-{seed}-{name}", graph, sleeps)
            walls.append(run_pytest(project, track_args(args, workers), len(graph)))
            stamps, _ = read_stamps(project, list(graph))
            check_schedule(graph, stamps, workers)
            phases.append(node_phase(stamps))
            if i == 0:
                charts.append(
                    gantt(
                        f"seed {seed}, {LABELS[name]}, -n {workers}: {phases[-1]:.2f} s "
                        f"(lower bound {bound:.2f} s)",
                        stamps,
                    )
                )
            overshoot.extend(s.check_end - s.check_start - sleeps[t] for t, s in stamps.items())
        phase, barrier_phase = phases
        sim = simulate(deps, sleeps, workers)
        ratios.append(phase / bound)
        speedups.append(barrier_phase / phase)
        print(
            f"  {seed:>4} {len(levels(deps)):>4} {width(deps):>5} "
            f"{critical_path_length(deps, sleeps):>6.2f} {sum(sleeps.values()) / workers:>6.2f} "
            f"{bound:>6.2f} {sim:>6.2f} {phase:>6.2f} {phase / bound:>6.3f} {sim / bound:>6.3f} | "
            f"{barrier_phase:>7.2f} {barrier_phase / bound:>6.3f} {barrier_phase / phase:>6.2f}x | "
            f"{walls[0]:>5.1f} {walls[1]:>5.1f}"
        )
    mean_ratio = statistics.mean(ratios)
    print(
        f"  node phase / lower bound: mean {mean_ratio:.3f}, max {max(ratios):.3f} "
        f"({verdict(max(ratios) <= TARGET_MAKESPAN)} the <= {TARGET_MAKESPAN} target)"
    )
    print(
        f"  level barriers / node-level readiness: mean {statistics.mean(speedups):.2f}x "
        f"(per DAG {', '.join(f'{s:.2f}' for s in speedups)})"
    )
    print(
        "  sleep overshoot per node (check time - sleep): median "
        f"{statistics.median(overshoot) * 1000:.1f} ms"
    )
    if args.gantt is not None:
        args.gantt.write_text("\n\n".join(charts) + "\n", encoding="utf-8")
        print(f"  gantt charts of seed {args.seed} written to {args.gantt}")


def bench_overhead(args: argparse.Namespace, tmp: Path) -> None:
    n = args.overhead_nodes
    workers = args.workers
    if args.overhead_dag == "light":
        rng = random.Random(args.seed)
        ids = [f"n{i:04d}" for i in range(1, n + 1)]
        deps: Deps = {
            t: ([rng.choice(ids[max(0, i - 50) : i])] if i and rng.random() < 0.3 else [])
            for i, t in enumerate(ids)
        }
        shape = "a light random DAG (30% of nodes depend on one of the 50 nodes before them)"
    else:
        deps = {f"n{i:04d}": [] for i in range(1, n + 1)}
        shape = "no dependencies"
    print(
        f"overhead: {n} trivial nodes (no acceptance criteria, {shape}) at -n {workers} vs plain "
        f"pytest -n {workers} on {n} empty test functions in one file; whole-command wall "
        f"time, alternated, {args.rounds} rounds"
    )
    print(
        "  whole = the pytest command's wall time (the target); items = first item start ->"
        " last item end on the workers, i.e. without start-up and shutdown"
    )
    conductor_wall: list[float] = []
    plain_wall: list[float] = []
    conductor_items: list[float] = []
    plain_items: list[float] = []
    for round_ in range(args.rounds):
        # Fresh projects each round: stamps of one run must not mix with the next.
        track = make_track_project(tmp / f"overhead-track-{round_}", deps, None)
        plain = make_plain_project(tmp / f"overhead-plain-{round_}", n)
        conductor_wall.append(run_pytest(track, track_args(args, workers), n))
        conductor_items.append(item_phase(track, n))
        plain_wall.append(run_pytest(plain, ["-n", str(workers)], n))
        plain_items.append(item_phase(plain, n))
        print(
            f"  round {round_ + 1}: whole: conductor {conductor_wall[-1]:6.2f} s, plain "
            f"{plain_wall[-1]:6.2f} s, ratio {conductor_wall[-1] / plain_wall[-1]:.2f}   "
            f"items: {conductor_items[-1]:5.2f} s / {plain_items[-1]:5.2f} s   load {load()}"
        )
    median = statistics.median
    ratio = median(conductor_wall) / median(plain_wall)
    print(
        f"  medians, whole: conductor {median(conductor_wall):.2f} s, plain "
        f"{median(plain_wall):.2f} s, ratio {ratio:.2f} "
        f"({verdict(ratio <= TARGET_OVERHEAD)} the <= {TARGET_OVERHEAD} target)"
    )
    items_c, items_p = median(conductor_items), median(plain_items)
    print(
        f"  medians, items: conductor {items_c:.2f} s ({items_c / n * 1000:.2f} ms a node), "
        f"plain {items_p:.2f} s ({items_p / n * 1000:.2f} ms a test), ratio "
        f"{items_c / items_p:.2f}"
    )


def chained_plan(n: int) -> str:
    """plan.md of ``n`` nodes in chains of :data:`CHAIN`, each checking ``marker.txt``."""
    lines = ["# Cost track", "", "```yaml", "dag:", "  nodes:"]
    for i in range(n):
        deps = f', depends_on: ["c{i - 1:05d}"]' if i % CHAIN else ""
        lines.append(f'    - {{id: "c{i:05d}"{deps}, acceptance: [{{exists: "marker.txt"}}]}}')
    lines += ["```", ""]
    return "\n".join(lines)


def make_cost_projects(where: Path, n: int, conftest: str = "") -> tuple[Path, Path]:
    """A chained track and a plain project of ``n`` empty tests, both without stamps."""
    track, plain = where / f"track-{n}", where / f"plain-{n}"
    for project in (track, plain):
        project.mkdir(parents=True)
        (project / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")
        (project / "stamps").mkdir()
        if conftest:
            (project / "conftest.py").write_text(conftest, encoding="utf-8")
    (track / "marker.txt").write_text("x\n", encoding="utf-8")
    plan = track / "conductor" / "tracks" / TRACK
    plan.mkdir(parents=True)
    (plan / "plan.md").write_text(chained_plan(n), encoding="utf-8")
    body = "".join(f"def test_{i:05d}():\n    pass\n\n\n" for i in range(n))
    (plain / "test_trivial.py").write_text(body, encoding="utf-8")
    return track, plain


def file_creation_us(folder: Path, count: int = 300) -> float:
    """Median microseconds to create (and close) an empty file in a new subfolder.

    The files are left where they are (the temporary folder goes at the end): on ext4
    without a journal, deleting them would make every file created near them in the next
    minutes slower (the kernel skips inodes freed recently; docs/performance.md).
    """
    probe = folder / f".probe-{next(_probes)}"
    probe.mkdir()
    times = []
    for i in range(count):
        start = time.perf_counter()
        os.close(os.open(probe / f"f{i}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e6


_probes = itertools.count(1)


def bench_cost(args: argparse.Namespace, tmp: Path) -> None:
    workers = args.workers
    sizes = [int(x) for x in args.cost_sizes.split(",") if x.strip()]
    print(
        f"cost: N trivial nodes in chains of {CHAIN}, one exists criterion each, vs plain "
        f"pytest on N empty tests; whole-command wall time, {args.rounds} alternating rounds, "
        "medians"
    )
    print(f"  {'case':<26} {'conductor':>10} {'plain':>8} {'ratio':>6}  target")
    for n in sizes:
        track, plain = make_cost_projects(tmp / "cost", n)
        before = file_creation_us(track)
        for label, mode in ((f"-n {workers}", "xdist"), ("-n 0", "in-process")):
            count = str(workers) if mode == "xdist" else "0"
            conductor = [f"--conductor-track={TRACK}", "-n", count, *args.conductor_args]
            run_pytest(track, conductor, n)  # warm-up: bytecode and assertion-rewrite caches
            run_pytest(plain, ["-n", count], n)
            walls: dict[str, list[float]] = {"conductor": [], "plain": []}
            for _ in range(args.rounds):
                walls["conductor"].append(run_pytest(track, conductor, n))
                walls["plain"].append(run_pytest(plain, ["-n", count], n))
            c, p = statistics.median(walls["conductor"]), statistics.median(walls["plain"])
            target = TARGET_COST[mode]
            print(
                f"  {f'{n:,} chained, {label}':<26} {c:9.2f}s {p:7.2f}s {c / p:6.2f}  "
                f"<= {target} {verdict(c / p <= target)}   load {load()}"
            )
        print(
            f"  (creating an empty file in the {n:,}-node project's folder took "
            f"{before:.0f} us before these runs, {file_creation_us(track):.0f} us after: a run"
            " creates one event file per node, plain pytest none; on some file systems this"
            " varies from minute to minute, see docs/performance.md)"
        )


def bench_memory(args: argparse.Namespace, tmp: Path) -> None:
    n = args.memory_nodes
    workers = args.workers
    track, plain = make_cost_projects(tmp / "memory", n, MAXRSS_CONFTEST)
    run_pytest(track, [f"--conductor-track={TRACK}", "-n", str(workers)], n)
    run_pytest(plain, ["-n", str(workers)], n)
    peak = {p.name: int((p / "stamps" / "maxrss").read_text()) / 1024 for p in (track, plain)}
    print(
        f"memory: peak RSS of the controller at {n:,} chained nodes, -n {workers}: conductor "
        f"{peak[track.name]:.0f} MiB, plain pytest on {n:,} empty tests "
        f"{peak[plain.name]:.0f} MiB"
    )


def bench_latency(args: argparse.Namespace, tmp: Path) -> None:
    chains, length, workers = args.chains, args.chain_length, args.latency_workers
    deps: Deps = {}
    for c in range(1, chains + 1):
        for j in range(1, length + 1):
            deps[f"c{c}_{j:02d}"] = [f"c{c}_{j - 1:02d}"] if j > 1 else []
    sleeps = dict.fromkeys(deps, args.latency_sleep)
    edges = [(dep, task) for task, ds in deps.items() for dep in ds]
    print(
        f"latency: {chains} chains of {length} nodes sleeping {args.latency_sleep} s at "
        f"-n {workers} (a worker always idle), {len(edges)} edges: dependency's check end -> "
        "dependent's check start"
    )
    project = make_track_project(tmp / "latency", deps, sleeps)
    run_pytest(project, track_args(args, workers), len(deps))
    stamps, received = read_stamps(project, list(deps))
    check_schedule(deps, stamps, workers)
    total = [(stamps[t].check_start - stamps[d].check_end) * 1000 for d, t in edges]
    missing = [d for d, _ in edges if d not in received]
    if missing:
        raise SystemExit(f"the controller recorded no teardown report of {missing[0]}")
    parts = [
        ("end to end", total),
        (
            "  check end -> controller has the teardown report",
            [(received[d] - stamps[d].check_end) * 1000 for d, _ in edges],
        ),
        (
            "  controller has it -> dependent's item starts on a worker",
            [(stamps[t].protocol_start - received[d]) * 1000 for d, t in edges],
        ),
        (
            "  item start -> check start (setup)",
            [(stamps[t].check_start - stamps[t].protocol_start) * 1000 for _, t in edges],
        ),
    ]
    for name, values in parts:
        print(
            f"  {name:58} median {statistics.median(values):6.1f} ms   "
            f"p90 {percentile(values, 0.9):6.1f} ms   max {max(values):6.1f} ms"
        )
    median = statistics.median(total)
    print(
        f"  median {median:.1f} ms ({verdict(median <= TARGET_LATENCY_MS)} the "
        f"<= {TARGET_LATENCY_MS:.0f} ms target)"
    )


# --------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0] if __doc__ else None,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}"
    )
    parser.add_argument("--workers", type=int, default=5, help="-n of makespan and overhead")
    parser.add_argument("--dags", type=int, default=5, help="random DAGs (makespan)")
    parser.add_argument("--nodes", type=int, default=60, help="nodes per random DAG")
    parser.add_argument("--seed", type=int, default=1, help="first seed; DAG i uses seed + i")
    parser.add_argument("--min-sleep", type=float, default=0.1, help="seconds (makespan)")
    parser.add_argument("--max-sleep", type=float, default=0.5, help="seconds (makespan)")
    parser.add_argument(
        "--gantt", type=Path, help="write Mermaid gantt charts of the first DAG's two runs here"
    )
    parser.add_argument("--overhead-nodes", type=int, default=1000, help="nodes, and plain tests")
    parser.add_argument(
        "--overhead-dag",
        choices=("none", "light"),
        default="none",
        help="overhead nodes without dependencies, or 30%% depending on one recent node",
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="alternating overhead and cost rounds"
    )
    parser.add_argument("--cost-sizes", default="300,1000,3000", help="node counts (cost)")
    parser.add_argument("--memory-nodes", type=int, default=10000, help="nodes (memory)")
    parser.add_argument("--chains", type=int, default=2, help="independent chains (latency)")
    parser.add_argument("--chain-length", type=int, default=31, help="nodes per chain")
    parser.add_argument("--latency-workers", type=int, default=3, help="-n of latency")
    parser.add_argument("--latency-sleep", type=float, default=0.02, help="seconds per node")
    parser.add_argument(
        "--conductor-args",
        type=shlex.split,
        default=[],
        help="extra pytest arguments for every --conductor-track run, e.g. "
        "--conductor-args='-p no:conductor-report'; plain pytest runs do not get them",
    )
    parser.add_argument("--keep", type=Path, help="generate the projects here and keep them")
    args = parser.parse_args(argv)
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        parser.error(f"unknown parts {unknown}; choose from {','.join(PARTS)}")

    print("machine")
    print(f"  cpus: {os.cpu_count()}  platform: {platform.platform()}")
    print(f"  python: {sys.version.split()[0]} ({platform.python_implementation()})")
    print(
        f"  pytest {version('pytest')}, pytest-xdist {version('pytest-xdist')}, "
        f"execnet {version('execnet')}, pytest-conductor {version('pytest-conductor')}"
    )
    print(f"  date: {time.strftime('%Y-%m-%d %H:%M %Z')}  load average: {load()}")
    print("  every run: python -m pytest -p no:cacheprovider -q (no cache: weights come from")
    print("  estimated_duration only)")
    if args.conductor_args:
        print(f"  conductor runs also get: {shlex.join(args.conductor_args)}")

    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
        tmp_ctx: tempfile.TemporaryDirectory[str] | None = None
        tmp = Path(tempfile.mkdtemp(prefix="bench-scheduler-", dir=args.keep))
    else:
        tmp_ctx = tempfile.TemporaryDirectory(prefix="bench-scheduler-")
        tmp = Path(tmp_ctx.name)
    try:
        for part in PARTS:
            if part in parts:
                {
                    "makespan": bench_makespan,
                    "overhead": bench_overhead,
                    "latency": bench_latency,
                    "cost": bench_cost,
                    "memory": bench_memory,
                }[part](args, tmp)
                print(f"  load average after {part}: {load()}")
    finally:
        if tmp_ctx is not None:
            tmp_ctx.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
