"""Import cost of hftrain vs transformers' Trainer, each statement timed in a fresh interpreter.

    python benchmarks/bench_import.py              # 5 repeats per statement, median
    python benchmarks/bench_import.py --repeats 1  # quick

Also ``python train.py --help`` of one HF-style script (transformers' example scripts' shape: ``HfArgumentParser((
ModelArguments, DataTrainingArguments, TrainingArguments)).parse_args_into_dataclasses()``, below) whose only
difference is the ``from ... import Trainer, TrainingArguments`` line: hftrain's vs transformers'.

For each statement: the median wall time of the statement itself (perf_counter around exec, in a fresh process),
of the whole process (launch to exit, as the parent sees it) and the process's CPU time (user + sys, getrusage),
which other load on the machine disturbs less than wall time. Then, after ``from hftrain import Trainer,
TrainingArguments``, whether ``accelerate`` and ``transformers.trainer`` were pulled into ``sys.modules``
(hftrain re-implements the Trainer, so it should need neither).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

STATEMENTS = {
    "import torch": "import torch",
    "import lightning": "import lightning",
    "import hftrain": "import hftrain",
    "from hftrain import Trainer, TrainingArguments": "from hftrain import Trainer, TrainingArguments",
    "import transformers; transformers.Trainer": "import transformers; transformers.Trainer",
}

HELP_SCRIPT = """
from dataclasses import dataclass, field

from transformers import HfArgumentParser

from {framework} import Trainer, TrainingArguments


@dataclass
class ModelArguments:
    model_name_or_path: str = field(metadata={{"help": "Path to pretrained model or model identifier"}})
    cache_dir: str | None = field(default=None, metadata={{"help": "Where to store the pretrained models"}})


@dataclass
class DataTrainingArguments:
    dataset_name: str | None = field(default=None, metadata={{"help": "The name of the dataset to use"}})
    max_seq_length: int = field(default=128, metadata={{"help": "The maximum total input sequence length"}})


def main():
    parser = HfArgumentParser((ModelArguments, DataTrainingArguments, TrainingArguments))
    model_args, data_args, training_args = parser.parse_args_into_dataclasses()


if __name__ == "__main__":
    main()
"""


def help_run(framework):
    """``python train.py --help`` of HELP_SCRIPT, as a statement (the help text goes to a buffer, not the pipe)."""
    script = HELP_SCRIPT.format(framework=framework)
    return (
        "import contextlib, io, sys\n"
        "sys.argv = ['train.py', '--help']\n"
        "try:\n"
        "    with contextlib.redirect_stdout(io.StringIO()):\n"
        f"        exec(compile({script!r}, 'train.py', 'exec'), {{'__name__': '__main__'}})\n"
        "except SystemExit as exit:\n"
        "    assert not exit.code, exit.code\n"
    )


HELP = {f"train.py --help ({framework})": help_run(framework) for framework in ("hftrain", "transformers")}
STATEMENTS.update(HELP)

CHILD = """
import json, resource, sys, time
t = time.perf_counter()
exec({stmt!r})
dt = time.perf_counter() - t
ru = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({{"s": dt, "cpu": ru.ru_utime + ru.ru_stime, "modules": {{m: m in sys.modules for m in {watch!r}}}}}))
"""

WATCH = ["accelerate", "transformers.trainer", "transformers.training_args", "torch", "lightning", "torchmetrics",
         "scipy.signal", "matplotlib", "datasets"]


def run(stmt):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    start = time.perf_counter()
    cmd = [sys.executable, "-c", CHILD.format(stmt=stmt, watch=WATCH)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if out.returncode:
        sys.exit(f"{stmt!r} failed:\n{out.stderr[-3000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return result["s"], result["cpu"], wall, result["modules"]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=5)
    a = p.parse_args()
    names = list(STATEMENTS)
    times = {n: [] for n in names}
    cpus = {n: [] for n in names}
    walls = {n: [] for n in names}
    modules = {}
    run("pass")  # warm the OS file cache once so the first statement is not penalised
    for r in range(a.repeats):
        for n in names if r % 2 == 0 else names[::-1]:
            s, cpu, wall, mods = run(STATEMENTS[n])
            times[n].append(s)
            cpus[n].append(cpu)
            walls[n].append(wall)
            modules[n] = mods
    print(f"python {sys.version.split()[0]}, median of {a.repeats} fresh processes, load1 {os.getloadavg()[0]:.1f}")
    print(f"{'statement':<48} {'import_s':>9} {'process_s':>10} {'process_cpu_s':>14}")
    for n in names:
        print(f"{n:<48} {statistics.median(times[n]):>9.3f} {statistics.median(walls[n]):>10.3f} "
              f"{statistics.median(cpus[n]):>14.3f}")
    for what, hf, tf in (
        ("Trainer import", "from hftrain import Trainer, TrainingArguments", "import transformers; transformers.Trainer"),
        ("train.py --help", *HELP),
    ):
        wall_ratio = statistics.median(walls[hf]) / statistics.median(walls[tf])
        cpu_ratio = statistics.median(cpus[hf]) / statistics.median(cpus[tf])
        print(f"{what}, hftrain / transformers: {wall_ratio:.2f}x process wall, {cpu_ratio:.2f}x process CPU")
    for n in ("import hftrain", "from hftrain import Trainer, TrainingArguments", *HELP):
        print(f"after `{n}`, in sys.modules: " + ", ".join(f"{m} {'yes' if modules[n][m] else 'no'}" for m in WATCH))


if __name__ == "__main__":
    main()
